"""The pool's clusters as a projection beside the log: what handlers/pool_clusters.py keeps in memory, stored in
the state database so a restart and `facesetd status` read it instead of clustering the pool again.

Three tables, in the same SQLite file as the log and the corpus state (one tracked transaction updates them with
their position, state/processor.py `commit`, like every other follower):
- `pool_cluster`: every pool face at the projection's position, with its average-linkage cluster (the cluster's
  first face id; NULL for a face in no cluster of two or more, and for a held face),
- `pool_edges`: the pairs of pool faces within cluster_distance (the graph the clusters are cut from), by face id,
- `pool_held`: the faces a person held back from the promotion (PoolFacesHeld; they stay out of every cluster).
Its position (tracking `pool_clusters:<cluster_distance>`: pairs and clusters hold for one distance) is the last
pool event it reflects (POOL_EVENT_KINDS): a live daemon and a rebuild over the same log record the same position,
and the same rows (dump()).

Why tables and not a file: the projection changes a few rows per photo (its faces, the pairs they make, the
clusters of the components they touch); SQLite updates those in place, in the transaction that moves its position,
where a file would be rewritten whole (tens of MB at 200,000 faces) on every photo.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from . import events as ev
from .corpus_state import PROCESSOR as STATE
from .eventlog import EventLog
from .faults import crash_point
from .processor import commit

POOL_CLUSTERS = "pool_clusters"  # the projection's position in the log's tracking table: "pool_clusters:0.55"
# The events that change the pool's clusters: faces in, faces out, faces held back.
POOL_EVENT_KINDS = (ev.PoolFaceAdded.KIND, ev.FacesetPromoted.KIND, ev.PoolFacesMatched.KIND,
                    ev.PoolFacesSeeded.KIND, ev.FaceMoved.KIND, ev.PoolFacesHeld.KIND)

TABLES = """
CREATE TABLE IF NOT EXISTS pool_cluster (
    face_id  TEXT PRIMARY KEY,
    cluster  TEXT,             -- the first face id of its cluster of 2+ faces (NULL: none)
    photo_sha256 TEXT NOT NULL -- its photo (status counts a cluster's photos without reading the pool's rows)
) WITHOUT ROWID;
-- status counts each cluster's faces and photos from this index alone (it holds the face id too)
CREATE INDEX IF NOT EXISTS pool_cluster_photos ON pool_cluster(cluster, photo_sha256);
CREATE TABLE IF NOT EXISTS pool_edges (
    a  TEXT NOT NULL,          -- face ids, a < b
    b  TEXT NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pool_edges_b ON pool_edges(b);
CREATE TABLE IF NOT EXISTS pool_held (face_id TEXT PRIMARY KEY) WITHOUT ROWID;
"""
PROJECTION_TABLES = ("pool_cluster", "pool_edges", "pool_held")
CLUSTER_COLUMNS = ("face_id", "cluster", "photo_sha256")  # pool_cluster's layout (another is dropped at open)
_IN_CHUNK = 500  # bound parameters per IN (...) list


def follower(cluster_distance: float) -> str:
    """The projection's tracking name: its pairs and clusters are those of one cluster_distance."""
    return f"{POOL_CLUSTERS}:{cluster_distance}"


@dataclass
class PoolChange:
    """What changed since the last save (or, `full`, everything there is): the rows to write."""

    full: bool = False
    faces: list[tuple[str, str | None, str]] = field(default_factory=list)  # (face_id, cluster, photo) upserted
    gone: list[str] = field(default_factory=list)  # faces out of the pool (their row and pairs deleted)
    unpaired: list[str] = field(default_factory=list)  # faces whose pairs are all deleted (held, gone)
    edges: list[tuple[str, str]] = field(default_factory=list)  # pairs inserted (a < b)
    held: list[str] = field(default_factory=list)


class ClusterSize(NamedTuple):
    """A stored cluster of two or more faces still in the pool: its key, faces and distinct photos."""

    cluster: str
    faces: int
    photos: int


class StoredFace(NamedTuple):
    """A face of the projection with its embedding in the pool table now (None: it left the pool since)."""

    face_id: str
    cluster: str | None
    photo_sha256: str
    embedding: bytes | None


class PoolProjection:
    """The projection's named reads and its one write (`save`)."""

    def __init__(self, log: EventLog, cluster_distance: float) -> None:
        self.log = log
        self.follower = follower(cluster_distance)
        with log.transaction() as conn:
            columns = [r[1] for r in conn.execute("PRAGMA table_info(pool_cluster)")]
            if columns and columns != list(CLUSTER_COLUMNS):  # another layout: dropped, written again from the log
                for table in PROJECTION_TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute("DELETE FROM tracking WHERE processor LIKE ?", (f"{POOL_CLUSTERS}:%",))
            for statement in TABLES.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)

    def position(self) -> int:
        """The last pool event the stored clusters reflect (0: none stored yet)."""
        return self.log.tracked(self.follower)

    def exists(self) -> bool:
        """Whether clusters were stored for this cluster_distance (an empty pool's included)."""
        with self.log.lock:
            return self.log.conn.execute("SELECT 1 FROM tracking WHERE processor=?", (self.follower,)).fetchone() \
                is not None

    def is_behind(self) -> bool:
        """Whether a pool event in the log is past the projection's position (one indexed read)."""
        return self.log.has_kinds_since(self.position(), POOL_EVENT_KINDS)

    def behind(self) -> int:
        """Pool events in the log past the projection's position (0: it is current)."""
        return self.log.count_kinds_since(self.position(), POOL_EVENT_KINDS)

    def last_pool_event(self, upto: int) -> int:
        """The position of the last pool event at or before `upto` (0: none): where a save records itself."""
        found = self.log.read_newest(POOL_EVENT_KINDS, 1, before=upto + 1)
        return found[0].position if found else 0

    def save(self, after: int, upto: int, change: PoolChange) -> bool:
        """Write `change` and move the position from `after` to `upto`, in one transaction; False (nothing
        written) when another process moved the position first."""
        def apply(conn: sqlite3.Connection) -> None:
            if change.full:  # (and the positions of other distances: their rows are these tables')
                for table in PROJECTION_TABLES:
                    conn.execute(f"DELETE FROM {table}")
                conn.execute("DELETE FROM tracking WHERE processor LIKE ? AND processor != ?",
                             (f"{POOL_CLUSTERS}:%", self.follower))
            conn.executemany("DELETE FROM pool_cluster WHERE face_id=?", [(f,) for f in change.gone])
            conn.executemany("DELETE FROM pool_edges WHERE a=?", [(f,) for f in change.unpaired])
            conn.executemany("DELETE FROM pool_edges WHERE b=?", [(f,) for f in change.unpaired])
            crash_point("pool_projection:mid_save")  # rows deleted, none written yet: the transaction is open
            conn.executemany("INSERT OR REPLACE INTO pool_cluster(face_id, cluster, photo_sha256) VALUES (?,?,?)",
                             change.faces)
            conn.executemany("INSERT OR IGNORE INTO pool_edges(a, b) VALUES (?,?)", change.edges)
            conn.executemany("INSERT OR IGNORE INTO pool_held(face_id) VALUES (?)", [(f,) for f in change.held])

        pool_clusters = self.follower  # (the tracking name, as tests/test_flow.py finds it)
        return commit(self.log, pool_clusters, after, (), upto, apply=apply) is not None

    def reset(self) -> None:
        """Forget the stored clusters (for `facesetd rebuild`): the next pass writes them again from the log."""
        with self.log.transaction() as conn:
            for table in PROJECTION_TABLES:
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM tracking WHERE processor LIKE ?", (f"{POOL_CLUSTERS}:%",))

    # Reads for `facesetd status` ----------------------------------------------------------------------------
    def cluster_sizes(self, current: bool = False) -> list[ClusterSize]:
        """Every stored cluster with two faces or more still in the pool, by key (`current`: the projection is
        not behind, so every face it holds is in the pool: not looked up)."""
        still = "" if current else " AND EXISTS (SELECT 1 FROM pool p WHERE p.face_id = c.face_id)"
        with self.log.lock:
            rows = self.log.conn.execute(
                "SELECT c.cluster, COUNT(*), COUNT(DISTINCT c.photo_sha256) FROM pool_cluster c"
                f" WHERE c.cluster IS NOT NULL{still} GROUP BY c.cluster HAVING COUNT(*) >= 2").fetchall()
        return [ClusterSize(*r) for r in rows]

    def members(self, clusters: Sequence[str]) -> dict[str, list[str]]:
        """cluster key -> its face ids still in the pool (in face-id order)."""
        out: dict[str, list[str]] = {c: [] for c in clusters}
        for i in range(0, len(clusters), _IN_CHUNK):
            chunk = tuple(clusters[i : i + _IN_CHUNK])
            with self.log.lock:
                rows = self.log.conn.execute(
                    "SELECT c.cluster, c.face_id FROM pool_cluster c WHERE c.cluster IN"
                    f" ({','.join('?' * len(chunk))}) AND EXISTS (SELECT 1 FROM pool p WHERE p.face_id = c.face_id)"
                    " ORDER BY c.face_id", chunk).fetchall()
            for key, face in rows:
                out[key].append(face)
        return out

    def dump(self) -> bytes:
        """The stored projection as canonical text (its position, then every row in key order): two projections
        of the same log give the same bytes."""
        lines = [f"position {self.position()}"]
        with self.log.lock:
            for table, cols in (("pool_cluster", "face_id, cluster, photo_sha256"), ("pool_edges", "a, b"),
                                ("pool_held", "face_id")):
                lines += [f"{table} " + " ".join(str(v) for v in row) for row in
                          self.log.conn.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}")]
        return ("\n".join(lines) + "\n").encode()


class ProjectionSnapshot:
    """The stored projection joined with the pool table, read as of one moment on a read-only connection of its own
    (as state/queries.py PoolSnapshot reads the pool): a restart loads it a chunk at a time between the daemon's
    other work, and every chunk reads the same snapshot.

    `usable` says whether it can be loaded: it exists, and the state's pool table is not behind it (a state being
    rebuilt is; then the pool is loaded and clustered from the state instead)."""

    def __init__(self, log: EventLog, cluster_distance: float) -> None:
        name = follower(cluster_distance)
        self._conn = sqlite3.connect(f"file:{log.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        self._conn.execute("BEGIN")  # deferred: the first SELECT fixes the snapshot for the rest of the read
        positions = dict(self._conn.execute("SELECT processor, position FROM tracking WHERE processor IN (?, ?)",
                                            (name, STATE)).fetchall())
        self.position = int(positions.get(name, 0))
        self.state_position = int(positions.get(STATE, 0))
        self.usable = name in positions and self.state_position >= self.position
        self.faces = int(self._conn.execute("SELECT COUNT(*) FROM pool_cluster").fetchone()[0]) if self.usable else 0
        self._rows = self._conn.execute(
            "SELECT c.face_id, c.cluster, c.photo_sha256, p.embedding FROM pool_cluster c"
            " LEFT JOIN pool p ON p.face_id = c.face_id ORDER BY c.face_id") if self.usable else None

    def fetch(self, n: int) -> list[StoredFace]:
        """The next `n` stored faces (by face id); fewer at the end, then none."""
        return [StoredFace(*r) for r in self._rows.fetchmany(n)] if self._rows is not None else []

    def edges(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self._conn.execute("SELECT a, b FROM pool_edges")]

    def held(self) -> set[str]:
        return {f for (f,) in self._conn.execute("SELECT face_id FROM pool_held")}

    def close(self) -> None:
        self._conn.close()

