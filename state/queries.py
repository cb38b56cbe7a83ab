"""The named reads of the corpus state: every question daemon/ and handlers/ ask its tables, in one place.

`Queries` is a mixin of `CorpusState` (state/corpus_state.py), so a caller asks `state.pool_rows()` instead of
writing SQL; questions about the events table itself are EventLog methods (state/eventlog.py). Each method
keeps the exact statement (and ORDER BY) its caller used to run, so results and their order are unchanged.
Rows come back as NamedTuples: they unpack and index like the plain rows they replace. They are grouped by what
they read (the faces, the era buckets, the facesets, the decisions, the inbox photos, the pool, the embedding cache,
the dirty marks and meta), not by who asks: a new question goes beside the others about the same table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from .eventlog import EventLog
from .topn import TopInput, choose_top

# A face's embedding, read from the log itself: the FaceAnalyzed event keeps it as float32 bytes, so the
# state stores only that event's position instead of a second copy (which made replays twice as slow).
EMBEDDING_SQL = "(SELECT vector FROM events WHERE position = faces.analyzed)"

# SQLite's default limit on bound parameters is 999 on older builds: `IN (...)` lists go in chunks.
_IN_CHUNK = 500


class DeferredPhoto(NamedTuple):
    """A row of `photos` in state 'deferred'."""

    position: int  # of its PhotoReceived
    root: str
    path: str
    sha256: str  # "" for a photo never read (deferred because it could not be opened)
    reason: str  # PhotoDeferred.reason: incomplete | permission | blocked


class LeftPhoto(NamedTuple):
    """A photo handled but still where it was received: its folder did not let facesetd move it."""

    root: str
    path: str
    sha256: str
    left: str  # why (PhotoProcessed.left / PhotoRejected.left)


class FaceStat(NamedTuple):
    """What the state knows of a face file's bytes on disk."""

    size: int
    mtime_ns: int
    sha256: str


class ActiveFaceRow(NamedTuple):
    """A face not pruned, in an active faceset (scores and source are JSON text)."""

    faceset: str
    sha256: str
    scores: str
    quality: float | None
    changed: int
    source: str


class FacesetCount(NamedTuple):
    """A faceset with its kept and dropped faces."""

    name: str
    area: str
    kept: int
    dropped: int


class PoolEmbedding(NamedTuple):
    """A pool face's photo and embedding (float32 bytes), for clustering."""

    face_id: str
    photo_sha256: str
    embedding: bytes


class PoolSnapshot:
    """Every pool face as of one state position, read a chunk at a time on a read-only connection of its own:
    its read transaction keeps that snapshot while the process goes on appending and applying events, so a big
    pool is loaded in slices (between them the daemon routes photos) and still reads as of one position."""

    def __init__(self, log: EventLog, processor: str) -> None:
        self._conn = sqlite3.connect(f"file:{log.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        self._conn.execute("BEGIN")  # deferred: the first SELECT fixes the snapshot for the rest of the read
        row = self._conn.execute("SELECT position FROM tracking WHERE processor=?", (processor,)).fetchone()
        self.position = int(row[0]) if row else 0  # the state's position the rows below reflect
        self._rows = self._conn.execute("SELECT face_id, photo_sha256, embedding FROM pool ORDER BY face_id")

    def fetch(self, n: int) -> list[PoolEmbedding]:
        """The next `n` pool faces (by face id); fewer at the end, then none."""
        return [PoolEmbedding(*r) for r in self._rows.fetchmany(n)]

    def held(self) -> set[str]:
        """Every face a person held back from the promotion (PoolFacesHeld), as of the same snapshot."""
        return {f for (f,) in self._conn.execute("SELECT face_id FROM vetoes WHERE faceset = '*'")}

    def close(self) -> None:
        self._conn.close()


class PoolRow(NamedTuple):
    """A face waiting in the pool (source is JSON text, embedding float32 bytes)."""

    face_id: str
    path: str
    sha256: str
    photo_sha256: str
    quality: float
    source: str
    embedding: bytes


class PhotoPoolFace(NamedTuple):
    """A pool face of one known photo (source is JSON text, embedding float32 bytes)."""

    face_id: str
    path: str
    sha256: str
    quality: float
    source: str
    embedding: bytes


class CentroidInput(NamedTuple):
    """An active face and the embeddings it may have: from routing, from its FaceAnalyzed (bytes or None)."""

    faceset: str
    path: str
    sha256: str
    routed: bytes | None
    analyzed: bytes | None


class ChangedFaceset(NamedTuple):
    """A faceset whose kept faces (or their embeddings, or its area) changed after a given position."""

    name: str
    area: str
    members_changed: int


class NearDupFace(NamedTuple):
    """An analysed kept face of a faceset, with the position of its last change (near-dup compares the older)."""

    path: str
    sha256: str
    quality: float | None
    embedding: bytes
    changed: int


class Removal(NamedTuple):
    """The last decision that took a face out (not reverted)."""

    position: int
    kind: str
    check_name: str


class FaceScores(NamedTuple):
    """A face of a faceset, dropped or not, with its scores (JSON text)."""

    path: str
    dropped: int
    scores: str


class MadeEraBucket(NamedTuple):
    """An era bucket `facesetd eras split` made (ErasSplit), with its window and how many anchors it keeps."""

    faceset: str
    family: str
    year: int
    first_year: int
    last_year: int
    decision: int
    anchors: int  # anchors still kept in the family (not pruned, same bytes)


class SplitCandidate(NamedTuple):
    """A kept face of a faceset and whether it has an embedding (an era anchor needs one); source is JSON text."""

    path: str
    sha256: str
    source: str
    analyzed: bool


class KeptFace(NamedTuple):
    """A kept face of a faceset as the merge moves it (source is JSON text)."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    source: str


class MergeInEffect(NamedTuple):
    """A faceset in _merged/ by a merge decision not restored: the decision and the faceset it joined."""

    faceset: str
    into: str
    decision: int


class FaceWhere(NamedTuple):
    """Where a face with given bytes is now within a faceset, and the decision that put it in _dropped/."""

    path: str
    dropped: int
    pruned_by: int | None


class Queries:
    """Named reads of the state tables (mixed into CorpusState, which supplies `log`)."""

    log: EventLog

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement; for state/ itself (daemon/ and handlers/ call the named reads below)."""
        with self.log.lock:
            return self.log.conn.execute(sql, params).fetchall()

    # Faces (the faces table: every PNG of every faceset, dropped ones included) ---------------------------------
    def files(self) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, sha256) for every face the log knows."""
        return {p: (s, m, h) for p, s, m, h in self.query("SELECT path, size, mtime_ns, sha256 FROM faces")}

    def face_stat(self, path: str) -> FaceStat | None:
        """Size, mtime and sha256 recorded for the face at `path`, or None when the state has none there."""
        rows = self.query("SELECT size, mtime_ns, sha256 FROM faces WHERE path=?", (path,))
        return FaceStat(*rows[0]) if rows else None

    def has_face_at(self, path: str) -> bool:
        """Whether the state has a face at `path` (dropped ones included)."""
        return bool(self.query("SELECT 1 FROM faces WHERE path=?", (path,)))

    def has_face_sha256(self, sha256: str) -> bool:
        """Whether a face with these bytes is in the corpus (in any faceset, dropped ones included)."""
        return bool(self.query("SELECT 1 FROM faces WHERE sha256=? LIMIT 1", (sha256,)))

    def active_face(self, path: str) -> ActiveFaceRow | None:
        """The face at `path` when it is not dropped and its faceset is active, else None."""
        rows = self.query(
            "SELECT x.faceset, x.sha256, x.scores, x.quality, x.changed, x.source FROM faces x"
            " JOIN facesets f ON f.name = x.faceset WHERE x.path=? AND x.dropped=0 AND f.area=''",
            (path,),
        )
        return ActiveFaceRow(*rows[0]) if rows else None

    def faces_of(self, faceset: str) -> list[FaceScores]:
        """Every face of `faceset` (dropped ones too) with its scores, in the table's order."""
        return [FaceScores(*r) for r in self.query("SELECT path, dropped, scores FROM faces WHERE faceset=?",
                                                   (faceset,))]

    def active_paths_of(self, faceset: str, sha256: str) -> list[str]:
        """Paths of the kept faces of `faceset` with these bytes, by path."""
        rows = self.query(
            "SELECT path FROM faces WHERE faceset=? AND sha256=? AND dropped=0 ORDER BY path", (faceset, sha256))
        return [p for (p,) in rows]

    def face_pruned_by(self, position: int) -> str | None:
        """Path of the face the decision at `position` moved to _dropped/ (while it is still there), or None."""
        rows = self.query("SELECT path FROM faces WHERE pruned_by=?", (position,))
        return rows[0][0] if rows else None

    def faces_without_analysis(self) -> list[tuple[str, str]]:
        """(path, sha256) of the kept faces of active facesets with no analysis and no face count, by path."""
        rows = self.query(
            "SELECT f.path, f.sha256 FROM faces f JOIN facesets s ON s.name = f.faceset"
            " WHERE s.area = '' AND f.dropped = 0 AND f.analyzed IS NULL"
            " AND json_extract(f.scores, '$.face_count') IS NULL ORDER BY f.path"
        )
        return [(p, h) for p, h in rows]

    def image_counts(self) -> tuple[int, int]:
        """(kept, dropped) faces over the whole corpus."""
        kept, dropped = self.query("SELECT COALESCE(SUM(1 - dropped), 0), COALESCE(SUM(dropped), 0) FROM faces")[0]
        return kept, dropped

    def photo_shas_in(self, faceset: str) -> set[str]:
        """sha256 of the photos `faceset`'s faces were cropped from (dropped faces included)."""
        return {p for (p,) in self.query(
            "SELECT DISTINCT json_extract(source, '$.photo_sha256') FROM faces WHERE faceset=?", (faceset,))}

    def facesets_with_photo(self, photo_sha256: str) -> list[str]:
        """Facesets holding a kept face cropped from this photo (once per face), by faceset."""
        rows = self.query(
            "SELECT faceset FROM faces WHERE json_extract(source, '$.photo_sha256')=? AND dropped=0 ORDER BY faceset",
            (photo_sha256,))
        return [f for (f,) in rows]

    def byte_twins(self, sha256: str, changed_before: int) -> list[tuple[str, str]]:
        """(path, faceset) of kept faces in active facesets with these bytes, changed before `changed_before`,
        oldest change first."""
        rows = self.query(
            "SELECT x.path, x.faceset FROM faces x JOIN facesets f ON f.name = x.faceset"
            " WHERE x.sha256=? AND x.dropped=0 AND f.area='' AND x.changed < ? ORDER BY x.changed",
            (sha256, changed_before))
        return [(p, f) for p, f in rows]

    def near_dup_faces(self, faceset: str) -> list[NearDupFace]:
        """The analysed kept faces of `faceset`, by path (the candidates of every new face of it at once)."""
        rows = self.query(
            f"SELECT path, sha256, quality, {EMBEDDING_SQL}, changed FROM faces WHERE faceset=? AND dropped=0"
            " AND analyzed IS NOT NULL ORDER BY path", (faceset,))
        return [NearDupFace(*r) for r in rows]

    def anchor_embeddings(self, bucket: str) -> list[bytes]:
        """Embeddings (float32 bytes) of the analysed kept faces of the era bucket `bucket`, by path."""
        rows = self.query(f"SELECT {EMBEDDING_SQL} FROM faces WHERE faceset=? AND dropped=0 AND analyzed IS NOT NULL"
                          " ORDER BY path", (bucket,))
        return [r[0] for r in rows]

    def kept_count(self, faceset: str) -> int:
        """How many faces `faceset` keeps (not dropped)."""
        return int(self.query("SELECT COUNT(*) FROM faces WHERE faceset=? AND dropped=0", (faceset,))[0][0])

    def centroid_inputs(self) -> list[CentroidInput]:
        """Every kept face of an active faceset with its routing and analysis embeddings, by path."""
        rows = self.query(
            f"SELECT faces.faceset, faces.path, faces.sha256, r.embedding, {EMBEDDING_SQL}"
            " FROM faces"
            " JOIN facesets s ON s.name = faces.faceset LEFT JOIN routed r ON r.sha256 = faces.sha256"
            " WHERE faces.dropped = 0 AND s.area = '' ORDER BY faces.path"
        )
        return [CentroidInput(*r) for r in rows]

    def centroid_inputs_of(self, facesets: Sequence[str]) -> list[CentroidInput]:
        """centroid_inputs restricted to `facesets` (each faceset's faces by path, as there)."""
        found: list[CentroidInput] = []
        for i in range(0, len(facesets), _IN_CHUNK):
            chunk = tuple(facesets[i : i + _IN_CHUNK])
            rows = self.query(
                f"SELECT faces.faceset, faces.path, faces.sha256, r.embedding, {EMBEDDING_SQL}"
                " FROM faces"
                " JOIN facesets s ON s.name = faces.faceset LEFT JOIN routed r ON r.sha256 = faces.sha256"
                f" WHERE faces.dropped = 0 AND s.area = '' AND faces.faceset IN ({','.join('?' * len(chunk))})"
                " ORDER BY faces.path", chunk)
            found.extend(CentroidInput(*r) for r in rows)
        return found

    def top_inputs(self, faceset: str | None = None) -> dict[str, list[TopInput]]:
        """faceset -> the faces its top N is chosen from (state/topn.py): its kept faces by name, then, for an era
        bucket, the kept faces of active facesets slotted into it by corpus path (the render's faces and slotted),
        each with its quality, source, both embeddings and its analysis's landmarks. Every faceset, or one."""
        columns = ("x.sha256, x.quality, x.source, r.embedding,"
                   " (SELECT vector FROM events WHERE position = x.analyzed),"
                   " (SELECT json_extract(payload, '$.kps') FROM events WHERE position = x.analyzed)")
        own = (f"SELECT x.faceset, x.name, {columns} FROM faces x LEFT JOIN routed r ON r.sha256 = x.sha256"
               " WHERE x.dropped = 0")
        slotted = (f"SELECT x.era, x.path, {columns} FROM faces x JOIN facesets s ON s.name = x.faceset"
                   " LEFT JOIN routed r ON r.sha256 = x.sha256"
                   " WHERE x.era IS NOT NULL AND x.dropped = 0 AND s.area = '' AND x.faceset != x.era")
        if faceset is None:
            rows = self.query(f"{own} UNION ALL {slotted}")
        else:
            rows = self.query(f"{own} AND x.faceset = ? UNION ALL {slotted} AND x.era = ?", (faceset, faceset))
        found: dict[str, list[TopInput]] = {}
        for name, *face in rows:
            found.setdefault(name, []).append(TopInput(*face))
        return found

    def top_faces_by_faceset(self, n: int) -> dict[str, list[str]]:
        """faceset -> sha256 of the faces of its top-N .fsz, in the order chosen (state/topn.py `choose_top`, the
        renderer's rule): every faceset with a kept face."""
        found: dict[str, list[str]] = {}
        for faceset, faces in sorted(self.top_inputs().items()):
            shas = {f.file: f.sha256 for f in faces}
            found[faceset] = [shas[f] for f in choose_top(faces, n).files]
        return found

    def file_with_sha256(self, sha256: str) -> str | None:
        """A corpus path (a face, dropped or not, or a pool crop) holding these bytes, or None."""
        rows = self.query("SELECT path FROM faces WHERE sha256=? UNION ALL SELECT path FROM pool WHERE sha256=?"
                          " LIMIT 1", (sha256, sha256))
        return rows[0][0] if rows else None

    def face_source(self, sha256: str) -> dict[str, Any]:
        """The source (photo, provenance) of a face or pool crop with these bytes, or {}."""
        rows = self.query("SELECT source FROM faces WHERE sha256=? UNION ALL SELECT source FROM pool WHERE sha256=?"
                          " LIMIT 1", (sha256, sha256))
        found: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
        return found

    def shas_at(self, paths: Sequence[str]) -> dict[str, str]:
        """path -> sha256 for those of `paths` where the state has a face or a pool crop."""
        found: dict[str, str] = {}
        for i in range(0, len(paths), _IN_CHUNK):
            chunk = tuple(paths[i : i + _IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            found.update(self.query(f"SELECT path, sha256 FROM faces WHERE path IN ({marks})"
                                    f" UNION ALL SELECT path, sha256 FROM pool WHERE path IN ({marks})", chunk + chunk))
        return found

    def kept_faces_of(self, faceset: str) -> list[KeptFace]:
        """The kept (not dropped) faces of `faceset`, by path."""
        rows = self.query("SELECT path, sha256, size, mtime_ns, source FROM faces WHERE faceset=? AND dropped=0"
                          " ORDER BY path", (faceset,))
        return [KeptFace(*r) for r in rows]

    def faces_with_sha_in(self, faceset: str, sha256: str) -> list[FaceWhere]:
        """The faces of `faceset` (kept or dropped) with these bytes, kept ones first, by path."""
        rows = self.query("SELECT path, dropped, pruned_by FROM faces WHERE faceset=? AND sha256=?"
                          " ORDER BY dropped, path", (faceset, sha256))
        return [FaceWhere(*r) for r in rows]

    # Era buckets (faces slotted into eras, the buckets `facesetd eras split` made) ------------------------------
    def made_era_buckets(self) -> list[MadeEraBucket]:
        """Every era bucket an ErasSplit made (and no restore unmade), by family then first year."""
        rows = self.query(
            "SELECT b.faceset, b.family, b.year, b.first_year, b.last_year, b.decision,"
            " (SELECT COUNT(*) FROM era_anchors a JOIN faces x ON x.sha256 = a.sha256 AND x.faceset = b.family"
            "  WHERE a.bucket = b.faceset AND x.dropped = 0)"
            " FROM era_buckets b ORDER BY b.family, b.first_year, b.faceset")
        return [MadeEraBucket(*r) for r in rows]

    def era_anchor_embeddings(self, bucket: str) -> list[bytes]:
        """Embeddings (float32 bytes) of the anchors an ErasSplit gave `bucket`: the family's analysed kept faces
        with those bytes, by path (none for a configured or adopted bucket)."""
        rows = self.query(
            f"SELECT {EMBEDDING_SQL} FROM faces JOIN era_buckets b ON b.faceset = ? AND faces.faceset = b.family"
            " JOIN era_anchors a ON a.bucket = b.faceset AND a.sha256 = faces.sha256"
            " WHERE faces.dropped = 0 AND faces.analyzed IS NOT NULL ORDER BY faces.path", (bucket,))
        return [r[0] for r in rows]

    def split_candidates(self, faceset: str) -> list[SplitCandidate]:
        """The kept faces of `faceset` (the faces an era split may make anchors of), by path."""
        rows = self.query("SELECT path, sha256, source, analyzed IS NOT NULL FROM faces WHERE faceset=? AND dropped=0"
                          " ORDER BY path", (faceset,))
        return [SplitCandidate(p, h, src, bool(a)) for p, h, src, a in rows]

    def slotted_count(self, era: str) -> int:
        """How many kept faces are slotted into the era bucket `era`."""
        return int(self.query("SELECT COUNT(*) FROM faces WHERE era=? AND dropped=0", (era,))[0][0])

    # Facesets (the facesets table: name, area, label, when it last changed) -------------------------------------
    def facesets_changed_after(self, position: int) -> list[ChangedFaceset]:
        """Facesets whose kept faces, their embeddings or their area changed after `position`, by name."""
        rows = self.query("SELECT name, area, members_changed FROM facesets WHERE members_changed > ? ORDER BY name",
                          (position,))
        return [ChangedFaceset(*r) for r in rows]

    def facesets(self) -> list[tuple[str, str]]:
        """(name, area) of every faceset, by name."""
        return [(n, a) for n, a in self.query("SELECT name, area FROM facesets ORDER BY name")]

    def faceset_names(self) -> list[str]:
        """The name of every faceset, in the table's order."""
        return [n for (n,) in self.query("SELECT name FROM facesets")]

    def faceset_area(self, name: str) -> str | None:
        """The area of faceset `name` ("" = active), or None when there is no such faceset."""
        rows = self.query("SELECT area FROM facesets WHERE name=?", (name,))
        return rows[0][0] if rows else None

    def faceset_counts_by_area(self) -> dict[str, int]:
        """area -> how many facesets it holds."""
        return {a: n for a, n in self.query("SELECT area, COUNT(*) FROM facesets GROUP BY area")}

    def faceset_summaries(self) -> list[FacesetCount]:
        """Every faceset with its kept and dropped faces, by name."""
        rows = self.query(
            "SELECT s.name, s.area, COALESCE(SUM(1 - f.dropped), 0), COALESCE(SUM(f.dropped), 0)"
            " FROM facesets s LEFT JOIN faces f ON f.faceset = s.name GROUP BY s.name ORDER BY s.name")
        return [FacesetCount(*r) for r in rows]

    def emptied_facesets(self) -> set[str]:
        """Facesets out of the active ones (_masked/, _merged/, _thin/) that hold no face, kept or dropped, and
        are no merge's record: the husk an undo leaves (a promotion restored: its faces back in the pool; an era
        split restored: its buckets never held a PNG). Their folders stay on disk; `status` and the master
        manifest leave them out until a face comes into one again."""
        rows = self.query("SELECT s.name FROM facesets s WHERE s.area != ''"
                          " AND NOT EXISTS (SELECT 1 FROM faces f WHERE f.faceset = s.name)")
        return {name for (name,) in rows} - set(self.merges_in_effect())

    # Decisions and what overrides them (decisions, overrides) ---------------------------------------------------
    def pending_decisions(self) -> list[tuple[int, list[tuple[str, str]]]]:
        """(position, moves) of every decision whose moves are not done yet, oldest first."""
        rows = self.query("SELECT position, moves FROM decisions WHERE state='pending' ORDER BY position")
        return [(p, [(src, dest) for src, dest in json.loads(moves)]) for p, moves in rows]

    def decision_state(self, position: int) -> str | None:
        """pending | done | failed | reverted for the decision at `position`, or None when it is none."""
        rows = self.query("SELECT state FROM decisions WHERE position=?", (position,))
        return rows[0][0] if rows else None

    def last_removal(self, sha256: str, kinds: Sequence[str]) -> Removal | None:
        """The newest decision of one of the two `kinds` on these bytes that was not reverted, or None."""
        first, second = kinds
        rows = self.query(
            "SELECT position, kind, check_name FROM decisions WHERE sha256=? AND kind IN (?, ?) AND state != 'reverted'"
            " ORDER BY position DESC LIMIT 1", (sha256, first, second))
        return Removal(*rows[0]) if rows else None

    def own_prunes(self, faceset: str, check: str) -> int:
        """How many of `faceset`'s own PNGs a `check` prune holds in _dropped/ (pending or done): those found on
        disk, not crops routed from the inbox (such a crop pruned on arrival leaves the faceset as it was)."""
        return int(self.query(
            "SELECT COUNT(*) FROM faces x JOIN decisions d ON d.position = x.pruned_by"
            " WHERE x.faceset=? AND x.dropped=1 AND d.check_name=? AND d.state IN ('pending','done')"
            " AND json_extract(x.source, '$.photo_sha256') IS NULL", (faceset, check))[0][0])

    def decision_kinds(self, positions: Sequence[int]) -> dict[int, str]:
        """position -> kind of the decisions among `positions`."""
        return self._decision_column("kind", positions)

    def _decision_column(self, column: str, positions: Sequence[int]) -> dict[int, str]:
        """position -> `column` (kind or state) of the decisions among `positions`, read in chunks."""
        assert column in ("kind", "state")
        found: dict[int, str] = {}
        for i in range(0, len(positions), _IN_CHUNK):
            chunk = tuple(positions[i : i + _IN_CHUNK])
            found.update(self.query(
                f"SELECT position, {column} FROM decisions WHERE position IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def is_overridden(self, faceset: str, check: str, sha256: str = "*") -> bool:
        """Whether the user restored a decision of `check` in `faceset` on these bytes, or on the whole faceset."""
        return bool(self.query(
            "SELECT 1 FROM overrides WHERE faceset=? AND check_name=? AND sha256 IN (?, '*')", (faceset, check, sha256)
        ))

    def quarantines(self) -> dict[str, tuple[int, str]]:
        """faceset -> (position, check) of the quarantine that holds it (pending or done)."""
        rows = self.query("SELECT position, subject, check_name FROM decisions WHERE kind='faceset_quarantined'"
                          " AND state IN ('pending','done') ORDER BY position")
        return {subject.split("/")[-1]: (pos, check) for pos, subject, check in rows}

    def decision_states(self, positions: Sequence[int]) -> dict[int, str]:
        """position -> pending | done | failed | reverted for those of `positions` that are decisions."""
        return self._decision_column("state", positions)

    def merges_in_effect(self) -> dict[str, MergeInEffect]:
        """faceset -> the merge that moved it to _merged/ (decisions pending or done, not restored)."""
        found: dict[str, MergeInEffect] = {}
        for position, into, moves in self.query(
                "SELECT position, subject, moves FROM decisions WHERE kind='facesets_merged'"
                " AND state IN ('pending','done') ORDER BY position"):
            for src, dest in json.loads(moves):
                if "/" not in src and dest.endswith(f"/{src}"):  # a whole faceset folder: "faceset_NNN"
                    found[src] = MergeInEffect(src, into, position)
        return found

    def merge_overrides(self) -> set[tuple[str, str]]:
        """(faceset, faceset) pairs whose merge the user restored: the merge check leaves them apart."""
        return {(a, b) for a, b in self.query(
            "SELECT faceset, sha256 FROM overrides WHERE check_name='merge' AND sha256 != '*'")}

    # Inbox photos (the photos table: received, processed, rejected, deferred, left in place) --------------------
    def photo_waiting(self, root: str, path: str, sha256: str) -> bool:
        """Whether this photo (these bytes at this path) is received and not yet handled, or deferred.

        The inbox must not receive it again then: a deferred photo is retried by daemon.deferred.retry_due.
        """
        return bool(self.query(
            "SELECT 1 FROM photos WHERE root=? AND path=? AND sha256=? AND state IN ('received', 'deferred')"
            " LIMIT 1", (root, path, sha256)))

    def processed_photo_with(self, sha256: str) -> tuple[str, str] | None:
        """(root, path) of a photo with these bytes already processed, or None."""
        rows = self.query("SELECT root, path FROM photos WHERE sha256=? AND state='processed' LIMIT 1", (sha256,))
        return (rows[0][0], rows[0][1]) if rows else None

    def photo_recorded_with(self, sha256: str) -> bool:
        """Whether a photo with these bytes was received at all (waiting, deferred, processed or rejected): what
        `facesetd backfill` never copies into the inbox again."""
        return bool(self.query("SELECT 1 FROM photos WHERE sha256=? LIMIT 1", (sha256,)))

    def deferred_photos(self) -> list[DeferredPhoto]:
        """Photos left in place because they did not decode or could not be read yet, or wait for a blocked folder;
        oldest receipt first."""
        rows = self.query(
            "SELECT position, root, path, sha256, COALESCE(reason, '') FROM photos WHERE state='deferred'"
            " ORDER BY position")
        return [DeferredPhoto(*r) for r in rows]

    def photo_left_in_place(self, root: str, path: str, sha256: str) -> bool:
        """Whether these bytes at this path were handled and left where they are (their folder kept them)."""
        return bool(self.query(
            "SELECT 1 FROM photos WHERE root=? AND path=? AND sha256=? AND state IN ('processed', 'rejected')"
            " AND left_in_place != '' LIMIT 1", (root, path, sha256)))

    def left_photos(self) -> list[LeftPhoto]:
        """Every photo handled but left where it was received (the latest handling of each path), by path."""
        rows = self.query(
            "SELECT root, path, sha256, left_in_place FROM photos p WHERE left_in_place != '' AND position ="
            " (SELECT MAX(position) FROM photos q WHERE q.root = p.root AND q.path = p.path) ORDER BY root, path")
        return [LeftPhoto(*r) for r in rows]

    # The pool (faces waiting for their person) ------------------------------------------------------------------
    def pool_size(self) -> int:
        """How many faces wait in the pool."""
        return int(self.query("SELECT COUNT(*) FROM pool")[0][0])

    def pool_counts(self) -> tuple[int, int]:
        """Faces waiting in the pool, and the distinct photos they come from."""
        faces, photos = self.query("SELECT COUNT(*), COUNT(DISTINCT photo_sha256) FROM pool")[0]
        return int(faces), int(photos)

    def pool_rows(self) -> list[PoolRow]:
        """Every face waiting in the pool, by face id."""
        rows = self.query(
            "SELECT face_id, path, sha256, photo_sha256, quality, source, embedding FROM pool ORDER BY face_id")
        return [PoolRow(*r) for r in rows]

    def pool_rows_of(self, face_ids: Sequence[str]) -> list[PoolRow]:
        """The pool rows of these faces (those still in the pool), by face id."""
        found: list[PoolRow] = []
        for i in range(0, len(face_ids), _IN_CHUNK):
            chunk = tuple(face_ids[i : i + _IN_CHUNK])
            found.extend(PoolRow(*r) for r in self.query(
                "SELECT face_id, path, sha256, photo_sha256, quality, source, embedding FROM pool"
                f" WHERE face_id IN ({','.join('?' * len(chunk))})", chunk))
        return sorted(found, key=lambda r: r.face_id)

    def pool_faces_of_photo(self, photo_sha256: str) -> list[PhotoPoolFace]:
        """The pool faces cropped from this photo, by face id."""
        rows = self.query(
            "SELECT face_id, path, sha256, quality, source, embedding FROM pool WHERE photo_sha256=? ORDER BY face_id",
            (photo_sha256,))
        return [PhotoPoolFace(*r) for r in rows]

    # The embedding cache (by the bytes of a crop) ---------------------------------------------------------------
    def cached_embeddings(self, shas: Sequence[str]) -> dict[str, bytes | None]:
        """sha256 -> cached embedding (float32 bytes; None: no face found) for those of `shas` in the cache."""
        found: dict[str, bytes | None] = {}
        for i in range(0, len(shas), _IN_CHUNK):
            chunk = tuple(shas[i : i + _IN_CHUNK])
            found.update(self.query(
                f"SELECT sha256, embedding FROM embedding_cache WHERE sha256 IN ({','.join('?' * len(chunk))})",
                chunk,
            ))
        return found

    def cache_embeddings(self, rows: Sequence[tuple[str, bytes | None]]) -> None:
        """Store computed embeddings by sha256 (not a projection: a rebuild keeps them)."""
        with self.log.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO embedding_cache(sha256, embedding) VALUES (?,?)", rows)

    # Dirty marks and meta (what the renderer must write again; what was adopted) --------------------------------
    def dirty(self) -> list[str]:
        """Facesets (and MASTER_DIRTY) whose rendered files are out of date, by name."""
        return [r[0] for r in self.query("SELECT faceset FROM dirty ORDER BY faceset")]

    def adopted_master(self) -> dict[str, Any]:
        """The master manifest as adopted (JSON object), or {} when none was."""
        rows = self.query("SELECT value FROM meta WHERE key='adopted_master'")
        found: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
        return found

    def thin_eras_listed(self) -> list[str] | None:
        """The era buckets the last ThinErasListed named, or None when none was recorded."""
        rows = self.query("SELECT value FROM meta WHERE key='thin_eras'")
        listed: list[str] | None = json.loads(rows[0][0]) if rows else None
        return listed
