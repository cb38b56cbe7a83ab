"""The corpus state: SQLite tables derived from the log, applied exactly once per event.

These tables are a projection: `facesetd rebuild` drops them and replays the whole log. Each
applier is a plain function registered for one event kind; `CorpusState.catch_up()` applies the
events after the tracked position and records the new position in the same transaction.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar, overload

from . import events as ev
from .correction_queries import StateQueries
from .correction_tables import CORRECTION_PROJECTION_TABLES, CORRECTION_TABLES
from .eventlog import EventLog, StoredEvent
from .layout import parse_face_path
from .processor import commit
from .queries import EMBEDDING_SQL, DeferredPhoto

# numpy is imported by the appliers that store a vector, not here: `facesetd status` and `rebuild` read these
# tables, and a log they find applied decodes no vector (as state/events.py, which imports it to decode one).

PROCESSOR = "corpus_state"

TABLES = """
CREATE TABLE IF NOT EXISTS facesets (
    name    TEXT PRIMARY KEY,
    area    TEXT NOT NULL,
    created INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    adopted TEXT,             -- the per-faceset manifest as adopted (JSON), for provenance
    members_changed INTEGER NOT NULL DEFAULT 0  -- position of the last change to its kept faces or its area
);
-- The routing's centroid cache (handlers/centroids.py) recomputes the facesets changed after its position.
CREATE INDEX IF NOT EXISTS facesets_members ON facesets(members_changed);
CREATE TABLE IF NOT EXISTS faces (
    path     TEXT PRIMARY KEY,  -- where the PNG is now (relative to the corpus root)
    faceset  TEXT NOT NULL,
    name     TEXT NOT NULL,
    dropped  INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    source   TEXT NOT NULL,     -- JSON: the original photo or the Immich asset
    added    INTEGER NOT NULL,  -- position of the event that added it
    changed  INTEGER NOT NULL,  -- position of the last add/change (checks re-run past it)
    scores   TEXT NOT NULL DEFAULT '{}',  -- JSON: det_score, quality, mask, sunglasses, ...
    quality  REAL,
    era      TEXT,
    analyzed INTEGER,           -- position of the FaceAnalyzed event holding its embedding (EMBEDDING_SQL)
    pruned_by INTEGER           -- decision position while in _dropped/
);
CREATE INDEX IF NOT EXISTS faces_faceset ON faces(faceset, dropped);
CREATE INDEX IF NOT EXISTS faces_sha ON faces(sha256);
CREATE INDEX IF NOT EXISTS faces_era ON faces(era);  -- an era bucket finds the PNGs slotted into it
CREATE TABLE IF NOT EXISTS decisions (
    position INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    check_name TEXT NOT NULL,
    sha256   TEXT,
    moves    TEXT NOT NULL,     -- JSON [[src, dest], ...]
    state    TEXT NOT NULL      -- pending | done | failed | reverted
);
CREATE TABLE IF NOT EXISTS overrides (
    faceset  TEXT NOT NULL,
    check_name TEXT NOT NULL,
    sha256   TEXT NOT NULL,     -- a restored decision holds while the bytes stay the same
    PRIMARY KEY (faceset, check_name, sha256)
);
CREATE TABLE IF NOT EXISTS dirty (faceset TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Bump when a projection table's layout changes: existing state is dropped and rebuilt from the log.
PROJECTION_VERSION = 4

PROJECTION_TABLES: tuple[str, ...] = ("facesets", "faces", "decisions", "overrides", "dirty", "meta")

# --- The inbox: photos seen, the pool of unassigned faces, routing embeddings ----------------------
INBOX_TABLES = """
CREATE TABLE IF NOT EXISTS photos (
    position INTEGER PRIMARY KEY,  -- of its PhotoReceived
    root     TEXT NOT NULL,
    path     TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    state    TEXT NOT NULL,        -- received | processed | rejected | deferred | superseded
    dest     TEXT,
    reason   TEXT,                 -- why it is deferred (PhotoDeferred.reason), while it is
    left_in_place TEXT NOT NULL DEFAULT ''  -- why it is still where it was received (PhotoProcessed.left)
);
CREATE INDEX IF NOT EXISTS photos_path ON photos(root, path, state);
CREATE INDEX IF NOT EXISTS photos_sha ON photos(sha256, state);
CREATE TABLE IF NOT EXISTS pool (
    face_id  TEXT PRIMARY KEY,
    path     TEXT NOT NULL,        -- _pool/<id>.png, relative to the corpus
    sha256   TEXT NOT NULL,
    photo_sha256 TEXT NOT NULL,
    quality  REAL NOT NULL,
    source   TEXT NOT NULL,        -- JSON
    embedding BLOB NOT NULL,
    added    INTEGER NOT NULL
);
-- `status` counts the pool's photos from this index, not from the rows (each holds a 2 KB embedding).
CREATE INDEX IF NOT EXISTS pool_photo ON pool(photo_sha256);
CREATE TABLE IF NOT EXISTS routed (
    sha256   TEXT PRIMARY KEY,     -- of the crop: follows the PNG wherever it moves
    embedding BLOB NOT NULL
);
-- Not a projection: embeddings computed on demand for faces the log has none for (keyed by bytes).
CREATE TABLE IF NOT EXISTS embedding_cache (
    sha256   TEXT PRIMARY KEY,
    embedding BLOB
);
"""
INBOX_PROJECTION_TABLES = ("photos", "pool", "routed")
PROJECTION_TABLES += INBOX_PROJECTION_TABLES

# --- Era buckets made by `facesetd eras split` (ErasSplit); configured and adopted ones are not in the log ------
ERA_TABLES = """
CREATE TABLE IF NOT EXISTS era_buckets (
    faceset  TEXT PRIMARY KEY,  -- the bucket (a faceset of its own, with no PNG of its own)
    family   TEXT NOT NULL,     -- the faceset whose faces it holds
    year     INTEGER NOT NULL,  -- the anchors' median year (what slotting compares a photo's year with)
    first_year INTEGER NOT NULL,
    last_year  INTEGER NOT NULL,
    decision INTEGER NOT NULL   -- position of the ErasSplit that made it
);
CREATE TABLE IF NOT EXISTS era_anchors (
    bucket   TEXT NOT NULL,
    sha256   TEXT NOT NULL,     -- a face of the family (by bytes: it stays an anchor wherever it is renamed)
    year     INTEGER NOT NULL,
    PRIMARY KEY (bucket, sha256)
);
"""
PROJECTION_TABLES += ("era_buckets", "era_anchors")
PROJECTION_TABLES += CORRECTION_PROJECTION_TABLES  # candidates, vetoes, labels (state/corrections_state.py)
MASTER_DIRTY = "*"  # the master manifest's row in `dirty`
# meta key: position of the last event that marked the master manifest dirty (its provenance.log_position).
# Recorded by catch_up, so it is a function of the log: a rebuild finds the same value.
MASTER_POSITION = "master_position"

E = TypeVar("E", bound=ev.Event)
E2 = TypeVar("E2", bound=ev.Event)
E3 = TypeVar("E3", bound=ev.Event)
# An applier of one kind takes that kind (`StoredEvent[ev.FaceAdded]`, or a union for an applier of several);
# the registry holds them all, and `_apply` hands each only the kinds it was registered for.
Applier = Callable[[sqlite3.Connection, StoredEvent[Any]], None]
APPLIERS: dict[str, Applier] = {}
ApplierOf = Callable[[sqlite3.Connection, StoredEvent[E]], None]


@overload
def applies(k1: type[E], /) -> Callable[[ApplierOf[E]], ApplierOf[E]]: ...
@overload
def applies(k1: type[E], k2: type[E2], /) -> Callable[[ApplierOf[E | E2]], ApplierOf[E | E2]]: ...
@overload
def applies(k1: type[E], k2: type[E2], k3: type[E3], /) -> Callable[[ApplierOf[E | E2 | E3]],
                                                                    ApplierOf[E | E2 | E3]]: ...
def applies(*kinds: type[ev.Event]) -> Callable[[Applier], Applier]:
    """Register the decorated function as the projection applier of `kinds` (its parameter names them)."""
    def register(fn: Applier) -> Applier:
        for kind in kinds:
            APPLIERS[kind.KIND] = fn
        return fn

    return register


# While `catch_up` applies a chunk, dirty marks collect here and are written once at its end.
_dirty_buffer: set[str] | None = None
# Counts mark_dirty calls, so that catch_up sees which events changed what the master manifest shows.
_master_marks = 0


BatchApplier = Callable[[sqlite3.Connection, list[StoredEvent[Any]]], None]
# The kinds that come in long runs (a scan, a replay) are applied a run at a time: one executemany per run
# (a run of one included), and these kinds have no single-event applier.
BATCH_APPLIERS: dict[str, BatchApplier] = {}


def applies_in_batches(kind: type[E]) -> Callable[[Callable[[sqlite3.Connection, list[StoredEvent[E]]], None]],
                                                   Callable[[sqlite3.Connection, list[StoredEvent[E]]], None]]:
    def register(fn: Callable[[sqlite3.Connection, list[StoredEvent[E]]], None]
                 ) -> Callable[[sqlite3.Connection, list[StoredEvent[E]]], None]:
        BATCH_APPLIERS[kind.KIND] = fn
        return fn

    return register


def mark_dirty(conn: sqlite3.Connection, *facesets: str) -> None:
    """Mark facesets (and always the master manifest) for re-rendering, in the applier's transaction."""
    global _master_marks
    _master_marks += 1
    if _dirty_buffer is not None:
        _dirty_buffer.update(facesets)
        _dirty_buffer.add(MASTER_DIRTY)
        return
    conn.executemany("INSERT OR IGNORE INTO dirty(faceset) VALUES (?)", [(f,) for f in facesets + (MASTER_DIRTY,)])


def mark_members(conn: sqlite3.Connection, position: int, *facesets: str) -> None:
    """Record that these facesets' kept faces, their embeddings or their area changed at `position`.

    Unlike `dirty` (cleared by the renderer) the mark stays: the centroid cache (handlers/centroids.py) asks
    which facesets changed after the position it was built at. A superset is harmless (one recomputation)."""
    conn.executemany("UPDATE facesets SET members_changed = MAX(members_changed, ?) WHERE name=?",
                     [(position, f) for f in sorted(set(facesets))])


def _ensure_faceset(conn: sqlite3.Connection, name: str, area: str, position: int, reason: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO facesets(name, area, created, reason) VALUES (?,?,?,?)", (name, area, position, reason)
    )


@applies(ev.CorpusAdopted)
def _adopted(conn: sqlite3.Connection, se: StoredEvent[ev.CorpusAdopted]) -> None:
    e = se.event
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('adopted_master', ?)", (json.dumps(e.master),))
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('adopted_at', ?)", (str(se.position),))
    mark_dirty(conn)


@applies(ev.FacesetCreated)
def _faceset_created(conn: sqlite3.Connection, se: StoredEvent[ev.FacesetCreated]) -> None:
    e = se.event
    _ensure_faceset(conn, e.faceset, e.area, se.position, e.reason)
    if e.manifest:
        conn.execute("UPDATE facesets SET adopted=? WHERE name=?", (json.dumps(e.manifest, sort_keys=True), e.faceset))
    mark_dirty(conn, e.faceset)


@applies(ev.FaceChanged)
def _face_changed(conn: sqlite3.Connection, se: StoredEvent[ev.FaceChanged]) -> None:
    e = se.event
    # New bytes: the old analysis no longer holds.
    conn.execute(
        "UPDATE faces SET sha256=?, size=?, mtime_ns=?, changed=?, scores='{}', quality=NULL, era=NULL,"
        " analyzed=NULL WHERE path=?",
        (e.sha256, e.size, e.mtime_ns, se.position, e.path),
    )
    _dirty_for_path(conn, e.path)
    _members_for_path(conn, se.position, e.path)


@applies(ev.FaceMissing)
def _face_missing(conn: sqlite3.Connection, se: StoredEvent[ev.FaceMissing]) -> None:
    e = se.event
    _dirty_for_path(conn, e.path)
    _members_for_path(conn, se.position, e.path)
    conn.execute("DELETE FROM faces WHERE path=?", (e.path,))


@applies(ev.FaceMovedExternally)
def _face_moved_externally(conn: sqlite3.Connection, se: StoredEvent[ev.FaceMovedExternally]) -> None:
    e = se.event
    _dirty_for_path(conn, e.path)
    _move_face_row(conn, e.path, e.dest, at=se.position)
    conn.execute("UPDATE faces SET size=?, mtime_ns=? WHERE path=?", (e.size, e.mtime_ns, e.dest))


def _dirty_for_path(conn: sqlite3.Connection, path: str) -> None:
    fp = parse_face_path(path)
    if fp is not None:
        mark_dirty(conn, fp.faceset)


def _members_for_path(conn: sqlite3.Connection, position: int, path: str) -> None:
    fp = parse_face_path(path)
    if fp is not None:
        mark_members(conn, position, fp.faceset)


def _move_face_row(conn: sqlite3.Connection, src: str, dest: str, pruned_by: int | None = None, *,
                   at: int) -> None:
    """Move one face row from src to dest (pruned_by: the decision, for a move into _dropped/; at: the event's
    position, for the membership marks)."""
    _members_for_path(conn, at, src)
    _dirty_for_path(conn, src)  # the faceset it leaves (a merge, its restore) lists it no more
    fp = parse_face_path(dest)
    if fp is None:  # out of the facesets (into the pool): the faceset it leaves changes
        _dirty_for_path(conn, src)
        conn.execute("DELETE FROM faces WHERE path=?", (src,))
        return
    if src != dest:
        conn.execute("DELETE FROM faces WHERE path=?", (dest,))  # a stale row the file is replacing
    conn.execute(
        "UPDATE faces SET path=?, faceset=?, name=?, dropped=?, pruned_by=? WHERE path=?",
        (dest, fp.faceset, fp.name, int(fp.dropped), pruned_by, src),
    )
    from_fp = parse_face_path(src)
    if from_fp is None or from_fp.faceset != fp.faceset:
        _ensure_faceset(conn, fp.faceset, fp.area, 0, "moved in")
    mark_dirty(conn, fp.faceset)
    mark_members(conn, at, fp.faceset)


def apply_moves(conn: sqlite3.Connection, moves: tuple[tuple[str, str], ...], pruned_by: int | None = None, *,
                at: int) -> None:
    """Move rows the way the files will move: single PNGs, or whole faceset folders (`at`: the event's position)."""
    for src, dest in moves:
        fp = parse_face_path(src)
        if fp is not None:
            _move_face_row(conn, src, dest, pruned_by, at=at)
            continue
        # A faceset folder: src/dest are "[area/]faceset_NNN"; every face under it moves with it.
        name = dest.split("/")[-1]
        area = dest.split("/")[0] if "/" in dest else ""
        conn.execute(
            "UPDATE faces SET path = ? || substr(path, ?) WHERE path LIKE ? ESCAPE '\\'",
            (dest, len(src) + 1, _like_prefix(src)),
        )
        conn.execute("UPDATE facesets SET area=? WHERE name=?", (area, name))
        mark_dirty(conn, name)
        mark_members(conn, at, name)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"


def record_decision(conn: sqlite3.Connection, position: int, e: ev.Decision, sha256: str | None = None) -> None:
    """A decision's row, pending until the Mover records its moves done (or failed)."""
    conn.execute(
        "INSERT INTO decisions(position, kind, subject, check_name, sha256, moves, state) VALUES (?,?,?,?,?,?,?)",
        (position, e.KIND, e.subject, e.check, sha256, json.dumps(e.moves), "pending"),
    )


@applies(ev.FacePruned, ev.FacesetQuarantined, ev.FaceUnrouted)
def _decided(conn: sqlite3.Connection,
             se: StoredEvent[ev.FacePruned | ev.FacesetQuarantined | ev.FaceUnrouted]) -> None:
    e = se.event
    record_decision(conn, se.position, e, getattr(e, "sha256", None))
    # A face taken out of its faceset by the user sits in _dropped/ like a pruned one (restorable the same way).
    apply_moves(conn, e.moves, se.position if isinstance(e, (ev.FacePruned, ev.FaceUnrouted)) else None,
                at=se.position)


@applies(ev.FacesetReturned)
def _faceset_returned(conn: sqlite3.Connection, se: StoredEvent[ev.FacesetReturned]) -> None:
    """A thin faceset back among the active ones: its rows move with its folder, as for a quarantine."""
    record_decision(conn, se.position, se.event)
    apply_moves(conn, se.event.moves, at=se.position)


@applies(ev.DecisionReverted)
def _reverted(conn: sqlite3.Connection, se: StoredEvent[ev.DecisionReverted]) -> None:
    e = se.event
    row = conn.execute("SELECT check_name, sha256, subject FROM decisions WHERE position=?", (e.target,)).fetchone()
    record_decision(conn, se.position, e)
    conn.execute("UPDATE decisions SET state='reverted' WHERE position=?", (e.target,))
    apply_moves(conn, e.moves, at=se.position)
    _eras_unmade(conn, e.target)
    if row is not None and check_is_merge(row[0]):
        _override_merge_pairs(conn, e.target)
    elif row is not None:
        check, sha, subject = row
        fp = parse_face_path(subject)
        faceset = fp.faceset if fp is not None else subject.split("/")[-1]
        # An override pins the restored file (or, for a faceset, the check on that faceset).
        conn.execute(
            "INSERT OR IGNORE INTO overrides(faceset, check_name, sha256) VALUES (?,?,?)", (faceset, check, sha or "*")
        )


@applies(ev.ErasSplit)
def _eras_split(conn: sqlite3.Connection, se: StoredEvent[ev.ErasSplit]) -> None:
    e = se.event
    record_decision(conn, se.position, e)
    for b in e.buckets:
        bucket = b["faceset"]
        _ensure_faceset(conn, bucket, "", se.position, f"era bucket of {e.faceset} ({b['first_year']}-{b['last_year']})")
        conn.execute("INSERT OR REPLACE INTO era_buckets(faceset, family, year, first_year, last_year, decision)"
                     " VALUES (?,?,?,?,?,?)", (bucket, e.faceset, b["year"], b["first_year"], b["last_year"], se.position))
        for path, sha, year in b["anchors"]:
            conn.execute("INSERT OR REPLACE INTO era_anchors(bucket, sha256, year) VALUES (?,?,?)", (bucket, sha, year))
            conn.execute("UPDATE faces SET era=? WHERE path=? AND sha256=?", (bucket, path, sha))
        mark_dirty(conn, bucket)
    mark_dirty(conn, e.faceset)


def _eras_unmade(conn: sqlite3.Connection, split: int) -> None:
    """The buckets ErasSplit `split` made are no longer era buckets (its restore): every face leaves them."""
    made = [b for (b,) in conn.execute("SELECT faceset FROM era_buckets WHERE decision=? ORDER BY faceset", (split,))]
    for bucket in made:
        holders = [f for (f,) in conn.execute("SELECT DISTINCT faceset FROM faces WHERE era=?", (bucket,))]
        conn.execute("UPDATE faces SET era=NULL WHERE era=?", (bucket,))
        conn.execute("DELETE FROM era_anchors WHERE bucket=?", (bucket,))
        mark_dirty(conn, bucket, *holders)
    conn.execute("DELETE FROM era_buckets WHERE decision=?", (split,))


@applies(ev.FacesetsMerged)
def _facesets_merged(conn: sqlite3.Connection, se: StoredEvent[ev.FacesetsMerged]) -> None:
    # The kept PNGs move into the survivor, the emptied folders to _merged/; the FaceAdded events appended right
    # after this one give the moved faces fresh rows, so the checks run on them as on any new face.
    e = se.event
    record_decision(conn, se.position, e)
    apply_moves(conn, e.moves, at=se.position)


MERGE_CHECK = "merge"  # the check of a FacesetsMerged (handlers/merge_identities.py)


def check_is_merge(check: str) -> bool:
    return check == MERGE_CHECK


def _override_merge_pairs(conn: sqlite3.Connection, target: int) -> None:
    """A restored merge: each merged faceset and its survivor are kept apart from now on (the pair, both ways)."""
    row = conn.execute("SELECT subject, moves FROM decisions WHERE position=?", (target,)).fetchone()
    into, moves = row[0], json.loads(row[1])
    pairs = [(src, into) for src, _dest in moves if "/" not in src]
    conn.executemany("INSERT OR IGNORE INTO overrides(faceset, check_name, sha256) VALUES (?,?,?)",
                     [(a, MERGE_CHECK, b) for x, y in pairs for a, b in ((x, y), (y, x))])


@applies(ev.MoveFailed)
def _move_failed(conn: sqlite3.Connection, se: StoredEvent[ev.MoveFailed]) -> None:
    e = se.event
    row = conn.execute("SELECT moves FROM decisions WHERE position=?", (e.decision,)).fetchone()
    conn.execute("UPDATE decisions SET state='failed' WHERE position=?", (e.decision,))
    if row is not None:  # the files stayed where they were: put the rows back
        apply_moves(conn, tuple((d, s) for s, d in reversed(json.loads(row[0]))), at=se.position)


@applies_in_batches(ev.FaceAdded)
def _faces_added(conn: sqlite3.Connection, batch: list[StoredEvent[ev.FaceAdded]]) -> None:
    rows: list[tuple[Any, ...]] = []
    facesets: dict[str, tuple[str, str, int, str]] = {}
    last: dict[str, int] = {}  # faceset -> position of its last face added in this run
    for se in batch:
        e = se.event
        fp = parse_face_path(e.path)
        if fp is None:
            continue
        facesets.setdefault(fp.faceset, (fp.faceset, fp.area, se.position, "found on disk"))
        last[fp.faceset] = se.position
        rows.append((e.path, fp.faceset, fp.name, int(fp.dropped), e.sha256, e.size, e.mtime_ns,
                     json.dumps(e.source, sort_keys=True), se.position, se.position))
    conn.executemany("INSERT OR IGNORE INTO facesets(name, area, created, reason) VALUES (?,?,?,?)",
                     list(facesets.values()))
    conn.executemany(
        "INSERT OR REPLACE INTO faces(path, faceset, name, dropped, sha256, size, mtime_ns, source, added, changed)"
        " VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    mark_dirty(conn, *facesets)
    _mark_members_at(conn, last)


@applies_in_batches(ev.FaceAnalyzed)
def _analyzed_batch(conn: sqlite3.Connection, batch: list[StoredEvent[ev.FaceAnalyzed]]) -> None:
    rows = []
    last: dict[str, int] = {}  # faceset -> position of its last analysis in this run (its embedding may route)
    for se in batch:
        e = se.event
        scores = {"det_score": round(e.det_score, 6), "face_count": e.face_count}
        analyzed = None if e.embedding is None else se.position
        rows.append((json.dumps(scores), e.quality, analyzed, e.path, e.sha256))
        if "/faces/" in e.path:
            last[e.path.split("/faces/")[0].rsplit("/", 1)[-1]] = se.position
    conn.executemany(
        "UPDATE faces SET scores=json_patch(scores, ?), quality=?, analyzed=? WHERE path=? AND sha256=?", rows)
    _dirty_for_paths(conn, [r[3] for r in rows])
    _mark_members_at(conn, last)


def _mark_members_at(conn: sqlite3.Connection, last: dict[str, int]) -> None:
    """mark_members for a run: each faceset at the position of its own last event (as one by one would)."""
    conn.executemany("UPDATE facesets SET members_changed = MAX(members_changed, ?) WHERE name=?",
                     [(p, f) for f, p in sorted(last.items())])


@applies_in_batches(ev.OcclusionScored)
def _occlusion_batch(conn: sqlite3.Connection, batch: list[StoredEvent[ev.OcclusionScored]]) -> None:
    rows = []
    for se in batch:
        e = se.event
        rows.append((json.dumps({"mask": round(e.mask, 6), "sunglasses": round(e.sunglasses, 6)}), e.path, e.sha256))
    conn.executemany("UPDATE faces SET scores=json_patch(scores, ?) WHERE path=? AND sha256=?", rows)
    _dirty_for_paths(conn, [r[1] for r in rows])


@applies_in_batches(ev.FaceTouched)
def _touched_batch(conn: sqlite3.Connection, batch: list[StoredEvent[ev.FaceTouched]]) -> None:
    conn.executemany("UPDATE faces SET size=?, mtime_ns=? WHERE path=?",
                     [(se.event.size, se.event.mtime_ns, se.event.path) for se in batch])


@applies_in_batches(ev.MoveCompleted)
def _moves_completed(conn: sqlite3.Connection, batch: list[StoredEvent[ev.MoveCompleted]]) -> None:
    conn.executemany("UPDATE decisions SET state='done' WHERE position=? AND state='pending'",
                     [(se.event.decision,) for se in batch])
    mark_dirty(conn)


def _dirty_for_paths(conn: sqlite3.Connection, paths: list[str]) -> None:
    # A superset is harmless: re-rendering an unchanged faceset writes nothing.
    mark_dirty(conn, *{p.split("/faces/")[0].rsplit("/", 1)[-1] for p in paths if "/faces/" in p})


@applies(ev.FaceSlotted)
def _slotted(conn: sqlite3.Connection, se: StoredEvent[ev.FaceSlotted]) -> None:
    e = se.event
    conn.execute("UPDATE faces SET era=? WHERE path=? AND sha256=?", (e.era, e.path, e.sha256))
    _dirty_for_path(conn, e.path)
    mark_dirty(conn, e.era)


@applies(ev.FaceUnslotted)
def _unslotted(conn: sqlite3.Connection, se: StoredEvent[ev.FaceUnslotted]) -> None:
    e = se.event
    conn.execute("UPDATE faces SET era=NULL WHERE path=? AND sha256=?", (e.path, e.sha256))


@applies(ev.ThinErasListed)
def _thin_eras(conn: sqlite3.Connection, se: StoredEvent[ev.ThinErasListed]) -> None:
    e = se.event
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('thin_eras', ?)", (json.dumps(list(e.eras)),))
    mark_dirty(conn)


def _apply_with_marks(conn: sqlite3.Connection, batch: list[StoredEvent[ev.Event]]) -> None:
    """Apply a chunk (`_apply`) with its dirty marks collected and written once, and the master manifest's
    position noted: the projection's work inside its tracked transaction (CorpusState.catch_up)."""
    global _dirty_buffer
    _dirty_buffer = set()
    try:
        master_at = _apply(conn, batch)
        dirty, _dirty_buffer = _dirty_buffer, None
        conn.executemany("INSERT OR IGNORE INTO dirty(faceset) VALUES (?)", [(f,) for f in sorted(dirty)])
        if master_at:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (MASTER_POSITION, str(master_at)))
    finally:
        _dirty_buffer = None


def _apply(conn: sqlite3.Connection, batch: list[StoredEvent[ev.Event]]) -> int:
    """Apply a batch run by run; returns the position of its last event that marked anything dirty (0: none).

    A batch applier marks once for its whole run, so the run's last event counts: however catch_up's
    chunks cut a run, its last event is the same, and so is the position."""
    master_at = 0
    for run in _runs(batch):
        many = BATCH_APPLIERS.get(run[0].kind)
        if many is not None:
            before = _master_marks
            many(conn, run)
            if _master_marks != before:
                master_at = run[-1].position
            continue
        fn = APPLIERS.get(run[0].kind)
        if fn is not None:
            for se in run:
                before = _master_marks
                fn(conn, se)
                if _master_marks != before:
                    master_at = se.position
    return master_at


def _runs(batch: list[StoredEvent[ev.Event]]) -> list[list[StoredEvent[ev.Event]]]:
    """Split a batch into runs of consecutive events of the same kind (order is kept)."""
    runs: list[list[StoredEvent[ev.Event]]] = []
    for se in batch:
        if runs and runs[-1][0].kind == se.kind:
            runs[-1].append(se)
        else:
            runs.append([se])
    return runs


# --- The inbox -------------------------------------------------------------------------------------


@applies(ev.PhotoReceived)
def _photo_received(conn: sqlite3.Connection, se: StoredEvent[ev.PhotoReceived]) -> None:
    e = se.event
    # A photo deferred at this path is superseded by this receipt (the writer's next bytes, or a retry of the
    # same ones): every receipt ends processed, rejected or superseded, so each photo is accounted for once.
    conn.execute("UPDATE photos SET state='superseded' WHERE root=? AND path=? AND state='deferred'",
                 (e.root, e.path))
    conn.execute(
        "INSERT OR REPLACE INTO photos(position, root, path, sha256, state) VALUES (?,?,?,?,'received')",
        (se.position, e.root, e.path, e.sha256),
    )


@applies(ev.PhotoDeferred)
def _photo_deferred(conn: sqlite3.Connection, se: StoredEvent[ev.PhotoDeferred]) -> None:
    e = se.event
    conn.execute(
        "UPDATE photos SET state='deferred', dest=NULL, reason=? WHERE root=? AND path=? AND sha256=?"
        " AND state='received'",
        (e.reason, e.root, e.path, e.sha256),
    )


@applies(ev.PhotoProcessed, ev.PhotoRejected)
def _photo_done(conn: sqlite3.Connection, se: StoredEvent[ev.PhotoProcessed | ev.PhotoRejected]) -> None:
    e = se.event
    done = "processed" if isinstance(e, ev.PhotoProcessed) else "rejected"
    # 'deferred' too: logs written before daemon.deferred received a vanished deferred photo again closed it directly.
    conn.execute(
        "UPDATE photos SET state=?, dest=?, left_in_place=? WHERE root=? AND path=? AND sha256=?"
        " AND state IN ('received', 'deferred')",
        (done, e.dest, e.left, e.root, e.path, e.sha256),
    )


@applies(ev.FaceRouted)
def _face_routed(conn: sqlite3.Connection, se: StoredEvent[ev.FaceRouted]) -> None:
    e = se.event
    if e.embedding is not None:
        import numpy as np

        conn.execute(
            "INSERT OR REPLACE INTO routed(sha256, embedding) VALUES (?,?)",
            (e.sha256, np.asarray(e.embedding, dtype="<f4").tobytes()),
        )
        # The routing embedding is the centroid's input for every kept face with these bytes, wherever it is.
        conn.execute("UPDATE facesets SET members_changed = MAX(members_changed, ?)"
                     " WHERE name IN (SELECT faceset FROM faces WHERE sha256=?)", (se.position, e.sha256))


@applies(ev.PoolFaceAdded)
def _pool_face_added(conn: sqlite3.Connection, se: StoredEvent[ev.PoolFaceAdded]) -> None:
    import numpy as np

    e = se.event
    conn.execute(
        "INSERT OR REPLACE INTO pool(face_id, path, sha256, photo_sha256, quality, source, embedding, added)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (e.face_id, e.path, e.sha256, e.photo_sha256, e.quality, json.dumps(e.source, sort_keys=True),
         np.asarray(e.embedding, dtype="<f4").tobytes(), se.position),
    )


@applies(ev.FacesetPromoted, ev.PoolFacesMatched, ev.PoolFacesSeeded)
def _faceset_promoted(conn: sqlite3.Connection,
                      se: StoredEvent[ev.FacesetPromoted | ev.PoolFacesMatched | ev.PoolFacesSeeded]) -> None:
    # The moves (_pool/x.png -> faceset/faces/x.png) are carried out by the Mover (a seed's by the router
    # itself, before it records them); the FaceAdded events appended right after this one create the face rows.
    e = se.event
    record_decision(conn, se.position, e)
    _ensure_faceset(conn, e.faceset, "", se.position, e.reason)
    conn.executemany("DELETE FROM pool WHERE face_id=?", [(f,) for f in e.face_ids])
    mark_dirty(conn, e.faceset)


class CorpusState(StateQueries):
    """Applies the log to the state tables; its named reads (state/queries.py) serve the other processors."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        with log.transaction() as conn:
            found = conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            version = conn.execute(
                "SELECT value FROM meta WHERE key='projection_version'").fetchone() if found else None
            if version is not None and version[0] != str(PROJECTION_VERSION):
                # The tables' layout changed: drop them and replay the log into the new layout.
                for table in PROJECTION_TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute("DELETE FROM tracking WHERE processor=?", (PROCESSOR,))
            for statement in (TABLES + INBOX_TABLES + ERA_TABLES + CORRECTION_TABLES).strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version is None or version[0] != str(PROJECTION_VERSION):  # else opening writes nothing
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('projection_version', ?)",
                             (str(PROJECTION_VERSION),))

    @property
    def conn(self) -> sqlite3.Connection:
        return self.log.conn

    def catch_up(self, chunk: int = 5000) -> int:
        """Apply every event past the tracked position; returns how many were applied."""
        applied = 0
        while True:
            after = self.log.tracked(PROCESSOR)
            batch = self.log.read(after, chunk)
            if not batch:
                return applied
            if commit(self.log, PROCESSOR, after, (), batch[-1].position,
                      apply=functools.partial(_apply_with_marks, batch=batch)) is not None:
                applied += len(batch)

    def applied_position(self) -> int:
        """Position of the last event applied to the state tables (0: none)."""
        return self.log.tracked(PROCESSOR)

    def master_position(self) -> int:
        """Position of the last event that changed what the master manifest shows (0: none yet)."""
        rows = self.query("SELECT value FROM meta WHERE key=?", (MASTER_POSITION,))
        return int(rows[0][0]) if rows else 0

    def reset(self) -> None:
        """Forget the derived tables (for `facesetd rebuild`); other processors keep their positions."""
        with self.log.transaction() as conn:
            for t in PROJECTION_TABLES:
                conn.execute(f"DELETE FROM {t}")
            conn.execute("DELETE FROM tracking WHERE processor=?", (PROCESSOR,))

    def clear_dirty(self, names: list[str]) -> None:
        with self.log.transaction() as conn:
            conn.executemany("DELETE FROM dirty WHERE faceset=?", [(n,) for n in names])


# The appliers of the corrections and candidates register themselves on import (they use the helpers above).
from . import corrections_state  # noqa: F401

__all__ = ["CorpusState", "DeferredPhoto", "EMBEDDING_SQL", "APPLIERS", "BATCH_APPLIERS", "applies", "applies_in_batches", "mark_dirty",
           "mark_members"]
