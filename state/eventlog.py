"""The append-only event log on SQLite (WAL): the only source of truth.

- `events.position` is the rowid: gapless and increasing, also with several processes appending,
  because every append takes the write lock first (BEGIN IMMEDIATE) and nothing is ever deleted.
- Triggers make the database itself refuse UPDATE and DELETE on `events`.
- Embeddings are stored as raw float32 bytes in `vector`, not as JSON text.
- `tracking` records, per downstream processor, the last position it applied; a processor updates
  it in the same transaction as its own state (exactly-once replay, as in pyeventsourcing).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from .errors import LogError
from .events import Decision, DecisionReverted, Event, decode_event, encode_event
from .logcheck import damage_behind, is_damage, refusal

SCHEMA_VERSION = 1

# Each entry migrates the schema from version i to i+1; run in order inside one transaction.
MIGRATIONS: list[str] = [
    # 0 -> 1: the log, its guards, and the tracking table.
    """
    CREATE TABLE events (
        position INTEGER PRIMARY KEY,
        kind     TEXT NOT NULL,
        subject  TEXT NOT NULL,
        time     REAL NOT NULL,
        payload  TEXT NOT NULL,
        vector   BLOB
    );
    CREATE INDEX events_kind ON events(kind, position);
    CREATE INDEX events_subject ON events(subject, position);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;
    CREATE TABLE tracking (
        processor TEXT PRIMARY KEY,
        position  INTEGER NOT NULL
    );
    """,
]

log = structlog.get_logger("facesetd.eventlog")


def _log_appended(event: Event, kind: str, position: int, subject: str) -> None:
    """A decision (prune, quarantine, promotion, pool match, restore) is one INFO line with its reason and
    its event id (what `facesetd restore` takes); every other event is a DEBUG line."""
    if not isinstance(event, Decision):
        log.debug("event appended", kind=kind, position=position, subject=subject)
        return
    fields: dict[str, Any] = {"event_id": position, "kind": kind, "check": event.check, "subject": subject}
    if len(event.moves) == 1:
        fields["to"] = event.moves[0][1]
    else:
        fields["moves"] = len(event.moves)
    if isinstance(event, DecisionReverted):
        fields["undoes"] = event.target
    log.info(kind.replace("_", " "), **fields, reason=event.reason)


E_co = TypeVar("E_co", bound=Event, covariant=True)


@dataclass(frozen=True)
class StoredEvent(Generic[E_co]):
    """An event as read back from the log, with its position and time. Generic in its event, so a handler or
    applier of one kind declares `StoredEvent[FaceAdded]` and reads the fields of that kind, checked."""

    position: int
    time: float
    event: E_co

    @property
    def kind(self) -> str:
        return self.event.KIND


DEFAULT_BUSY_TIMEOUT_S = 30.0


class LogBusy(LogError):
    """Another process held the log's write lock longer than this connection's busy timeout.

    Nothing was written: whatever was being recorded can simply be tried again later."""

    def __init__(self, path: Path, waited_s: float) -> None:
        self.path = Path(path)
        self.waited_s = waited_s
        super().__init__(
            f"event log {self.path} is locked by another process (waited {waited_s:g} s for its write lock); "
            "try again when that process has finished"
        )


def is_busy(error: sqlite3.Error) -> bool:
    """Whether SQLite gave up waiting for another connection's lock (SQLITE_BUSY)."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) == sqlite3.SQLITE_BUSY
    return "database is locked" in str(error)  # pragma: no cover - Python < 3.11


def connect(path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, waiting up to `busy_timeout_s`
    for another process's write lock."""
    conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _migrate(conn: sqlite3.Connection, path: Path, busy_timeout_s: float) -> None:
    """Bring the schema to SCHEMA_VERSION. A log already there is only read: opening it writes nothing, so a verb
    that finds the log damaged (state/logcheck.py) leaves its bytes as they were."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    _begin(conn, path, busy_timeout_s)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LogError(f"{path}: event log schema {version} is newer than this facesetd ({SCHEMA_VERSION})")
        for i in range(version, SCHEMA_VERSION):
            for statement in _split_sql(MIGRATIONS[i]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _begin(conn: sqlite3.Connection, path: Path, busy_timeout_s: float) -> None:
    """BEGIN IMMEDIATE: take the write lock now (SQLite waits up to the busy timeout), or raise LogBusy."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if is_busy(e):
            raise LogBusy(path, busy_timeout_s) from e
        raise


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (triggers contain ';' inside BEGIN...END)."""
    out, buf = [], ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


class EventLog:
    """Append and read events. Thread-safe; several processes may append to the same file.

    A write that cannot get the write lock within `busy_timeout_s` raises LogBusy (nothing written);
    a resident caller backs off and tries again (BusyBackoff), a one-shot verb stops with its message.
    A log a check found damaged is not opened, and a read that meets damage raises LogDamaged naming it
    (state/logcheck.py): one line, never a traceback."""

    def __init__(self, path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        refused = refusal(self.path)  # a check found this file damaged: neither read nor write it again
        if refused is not None:
            raise refused
        try:
            self.conn = connect(self.path, busy_timeout_s)
            _migrate(self.conn, self.path, busy_timeout_s)
        except sqlite3.DatabaseError as e:
            if is_busy(e):  # e.g. switching a fresh file to WAL while another process writes
                raise LogBusy(self.path, busy_timeout_s) from e
            if is_damage(e):  # not an SQLite file any more, say: one line naming what is wrong
                raise (damage_behind(self.path, e) or LogError(f"cannot open event log {self.path}: {e}")) from e
            raise LogError(f"cannot open event log {self.path}: {e}") from e
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # Transactions ---------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): appends and projection updates commit together.

        Raises LogBusy when another process keeps the write lock past the busy timeout."""
        with self.lock:
            _begin(self.conn, self.path, self.busy_timeout_s)
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    # Appending -----------------------------------------------------------------------------------
    def append(self, events: Sequence[Event], *, conn: sqlite3.Connection | None = None) -> list[int]:
        """Append events atomically; returns their positions. Pass `conn` to join an open transaction."""
        if not events:
            return []
        if conn is None:
            with self.transaction() as c:
                return self.append(events, conn=c)
        now = time.time()
        start = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0] + 1
        rows = []
        for offset, event in enumerate(events):
            kind, subject, payload, vector = encode_event(event)
            rows.append((start + offset, kind, subject, now, payload, vector))
        conn.executemany(
            "INSERT INTO events(position, kind, subject, time, payload, vector) VALUES (?,?,?,?,?,?)", rows
        )
        for (position, kind, subject, _t, _p, _v), event in zip(rows, events):
            _log_appended(event, kind, position, subject)
        return [r[0] for r in rows]

    # Reading -------------------------------------------------------------------------------------
    def head(self) -> int:
        with self.lock:
            return int(self.conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0])

    def read(
        self, after: int = 0, limit: int | None = None, kinds: Sequence[str] | None = None
    ) -> list[StoredEvent[Event]]:
        sql = "SELECT position, kind, time, payload, vector FROM events WHERE position > ?"
        params: list[Any] = [after]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        sql += " ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._select(sql, params)

    def iter_all(self, after: int = 0, chunk: int = 5000) -> Iterator[StoredEvent[Event]]:
        while True:
            batch = self.read(after, chunk)
            if not batch:
                return
            yield from batch
            after = batch[-1].position

    def has_kinds_since(self, after: int, kinds: Sequence[str]) -> bool:
        """Whether an event of one of `kinds` was appended after position `after`."""
        sql = f"SELECT 1 FROM events WHERE position > ? AND kind IN ({','.join('?' * len(kinds))}) LIMIT 1"
        with self.lock:
            return self.conn.execute(sql, (after, *kinds)).fetchone() is not None

    def read_subject(self, subject: str, kinds: Sequence[str] | None = None) -> list[StoredEvent[Event]]:
        """Every event about `subject` (of one of `kinds`, when given), oldest first."""
        sql = "SELECT position, kind, time, payload, vector FROM events WHERE subject = ?"
        params: list[Any] = [subject]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        return self._select(sql + " ORDER BY position", params)

    def latest(self, subject: str, kind: str) -> StoredEvent[Event] | None:
        """The last event of `kind` about `subject`, or None."""
        found = self._select("SELECT position, kind, time, payload, vector FROM events WHERE subject = ? AND kind = ?"
                             " ORDER BY position DESC LIMIT 1", [subject, kind])
        return found[0] if found else None

    def has_subject(self, subject: str, kinds: Sequence[str]) -> bool:
        """Whether an event of one of `kinds` about `subject` was ever appended."""
        sql = f"SELECT 1 FROM events WHERE subject = ? AND kind IN ({','.join('?' * len(kinds))}) LIMIT 1"
        with self.lock:
            return self.conn.execute(sql, (subject, *kinds)).fetchone() is not None

    def count_kinds_since(self, after: int, kinds: Sequence[str]) -> int:
        """How many events of one of `kinds` were appended after position `after`."""
        sql = f"SELECT COUNT(*) FROM events WHERE position > ? AND kind IN ({','.join('?' * len(kinds))})"
        with self.lock:
            return int(self.conn.execute(sql, (after, *kinds)).fetchone()[0])

    def last_position(self, subject: str, kind: str) -> int | None:
        """Position of the last event of `kind` about `subject`, or None (reads no payload)."""
        with self.lock:
            row = self.conn.execute("SELECT MAX(position) FROM events WHERE subject=? AND kind=?",
                                    (subject, kind)).fetchone()
        return row[0] if row else None

    def photo_trail(self, shas: Collection[str], photo_kinds: Sequence[str],
                    decision_kinds: Sequence[str]) -> set[int]:
        """Positions of the events that followed photos with these bytes: their photo events (of
        `photo_kinds`), the events of the face crops cut from them, and the decisions (of `decision_kinds`)
        that moved those crops. One read, under the lock, so the three answers agree."""
        marks = ",".join("?" * len(shas))
        with self.lock:
            # Photo events of the same bytes (e.g. "already processed as ..."), and the crops: their events carry
            # the photo's sha256 (pool faces) or source.photo_sha256 (faces added to a faceset).
            rows = self.conn.execute(
                f"SELECT position, kind, subject FROM events WHERE (kind IN ({','.join('?' * len(photo_kinds))})"
                f" AND json_extract(payload, '$.sha256') IN ({marks}))"
                f" OR json_extract(payload, '$.photo_sha256') IN ({marks})"
                f" OR json_extract(payload, '$.source.photo_sha256') IN ({marks})",
                (*photo_kinds, *shas, *shas, *shas)).fetchall()
            found = {p for p, _k, _s in rows}
            crops = sorted({s for _p, k, s in rows if k not in photo_kinds})
            if crops:
                # What happened to those crops afterwards: analysed, routed, pruned, moved ...
                more = self.conn.execute(
                    f"SELECT position FROM events WHERE subject IN ({','.join('?' * len(crops))})", crops).fetchall()
                found |= {p for (p,) in more}
                # The decisions that moved them (a pool crop promoted into a new faceset, a face pruned).
                moved = self.conn.execute(
                    f"SELECT DISTINCT e.position FROM events e, json_each(e.payload, '$.moves') m"
                    f" WHERE e.kind IN ({','.join('?' * len(decision_kinds))})"
                    f" AND json_extract(m.value, '$[0]') IN ({','.join('?' * len(crops))})",
                    (*decision_kinds, *crops)).fetchall()
                found |= {p for (p,) in moved}
        return found

    def read_matching(self, kind: str, **fields: str | int | bool | None) -> list[StoredEvent[Event]]:
        """The events of `kind` whose payload has these field values (e.g. server=url), oldest first."""
        sql = "SELECT position, kind, time, payload, vector FROM events WHERE kind = ?"
        params: list[Any] = [kind]
        for name, value in fields.items():
            # The field name goes in as a bound JSON path, never into the SQL text.
            sql += " AND json_extract(payload, ?) IS ?"
            params.extend([f"$.{name}", value])
        return self._select(sql + " ORDER BY position", params)

    def read_newest(self, kinds: Sequence[str], limit: int, before: int | None = None) -> list[StoredEvent[Event]]:
        """The newest `limit` events of one of `kinds` (before position `before`, when given), newest first."""
        sql = f"SELECT position, kind, time, payload, vector FROM events WHERE kind IN ({','.join('?' * len(kinds))})"
        params: list[Any] = list(kinds)
        if before is not None:
            sql += " AND position < ?"
            params.append(before)
        return self._select(sql + " ORDER BY position DESC LIMIT ?", [*params, limit])

    def read_positions(self, positions: Collection[int]) -> dict[int, StoredEvent[Event]]:
        """position -> event for those of `positions` in the log."""
        found: dict[int, StoredEvent[Event]] = {}
        wanted = sorted(set(positions))
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            found.update((se.position, se) for se in self._select(
                "SELECT position, kind, time, payload, vector FROM events"
                f" WHERE position IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def _select(self, sql: str, params: Sequence[Any]) -> list[StoredEvent[Event]]:
        """The events a SELECT of (position, kind, time, payload, vector) finds, decoded. Where a row cannot be read
        or decoded, the whole log is checked and LogDamaged names the damage (state/logcheck.py)."""
        try:
            with self.lock:
                rows = self.conn.execute(sql, params).fetchall()
            return [StoredEvent(p, t, decode_event(k, payload, vec)) for p, k, t, payload, vec in rows]
        except (sqlite3.DatabaseError, ValueError, TypeError, AttributeError) as e:
            if isinstance(e, sqlite3.DatabaseError) and not is_damage(e):
                raise
            found = damage_behind(self.path, e)
            if found is None:  # the log is sound: not damage, a bug
                raise
            raise found from e

    def get(self, position: int) -> StoredEvent[Event] | None:
        found = self.read(position - 1, 1)
        return found[0] if found and found[0].position == position else None

    # Tracking ------------------------------------------------------------------------------------
    def tracked(self, processor: str, conn: sqlite3.Connection | None = None) -> int:
        c = conn or self.conn
        with self.lock:
            row = c.execute("SELECT position FROM tracking WHERE processor=?", (processor,)).fetchone()
        return int(row[0]) if row else 0

    def track(self, processor: str, position: int, conn: sqlite3.Connection) -> None:
        """Record `position` as applied by `processor`; call inside the processor's own transaction."""
        conn.execute(
            "INSERT INTO tracking(processor, position) VALUES (?, ?) "
            "ON CONFLICT(processor) DO UPDATE SET position=excluded.position",
            (processor, position),
        )


def copy_log(source: Path, dest: Path) -> None:
    """Copy the event log at `source` (if any) to `dest` with SQLite's backup API, opening it read-only.

    A read-only connection neither checkpoints nor migrates, so the real file stays byte-identical. Without a
    -wal file beside it (no other process has it open: the last one to close folds the WAL in and removes it)
    it is opened immutable, because even a read-only open would leave an empty -wal and a -shm behind."""
    target = sqlite3.connect(str(dest))
    try:
        if source.exists():
            wal = source.with_name(source.name + "-wal")
            mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
            src = sqlite3.connect(f"{source.resolve().as_uri()}?{mode}", uri=True)
            try:
                src.backup(target)
            finally:
                src.close()
    finally:
        target.close()


class BusyBackoff:
    """For a resident loop: what to do after LogBusy, so a long-held lock is logged once, not fatal.

    `failed(e)` logs the first LogBusy of a spell (a warning, once) and schedules the next try with a
    doubling wait; `waiting()` is true until then (skip the log work, keep pinging systemd);
    `succeeded()` ends the spell and logs once that the log is writable again."""

    def __init__(self, first_s: float = 1.0, max_s: float = 10.0, logger: Any = None) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.log = logger or log
        self.since: float | None = None  # monotonic start of the current spell, None when not busy
        self.retry_at = 0.0
        self.delay_s = first_s
        self.failures = 0

    def waiting(self, now: float | None = None) -> bool:
        """True while backing off: do not touch the log this turn."""
        return self.since is not None and (time.monotonic() if now is None else now) < self.retry_at

    def failed(self, error: LogBusy, now: float | None = None) -> None:
        """Record one LogBusy: log it when a spell starts, then wait longer before each new try."""
        now = time.monotonic() if now is None else now
        if self.since is None:
            self.since, self.delay_s = now, self.first_s
            self.log.warning("event log busy: another process holds its write lock; backing off and retrying",
                             path=str(error.path), waited_s=error.waited_s)
        else:
            self.delay_s = min(self.max_s, self.delay_s * 2)
        self.failures += 1
        self.retry_at = now + self.delay_s

    def succeeded(self, now: float | None = None) -> None:
        """A turn touched the log without LogBusy: end the spell (logged once)."""
        if self.since is None:
            return
        now = time.monotonic() if now is None else now
        self.log.info("event log writable again", busy_s=round(now - self.since, 1), tries=self.failures)
        self.since, self.failures, self.retry_at = None, 0, 0.0
