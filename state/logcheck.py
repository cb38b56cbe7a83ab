"""Is the event log sound? SQLite's structure check, then every stored event read back, in slices.

Bytes damaged inside events.sqlite3 (a failing disk, a bad copy or restore) are found here, and named: the first
and last log position affected and what is wrong, in one line (LogDamage.line). What is checked:

- `PRAGMA quick_check`: SQLite's own check of the file's structure (b-tree pages, cells, overflow chains, the free
  list; not whether the indexes agree with the table, which `integrity_check` would add at twice the cost).
- every row of `events`, by position, in windows of WINDOW positions: the positions run 1..N (a row that vanished
  is damage), each row can be read (an unreadable page names the positions on it, found by halving the window),
  its columns have their types, and each event is what encode_event writes (state/events.py stored_problem).

A LogCheck reads through a read-only connection of its own: it never writes, never waits for or blocks a writer
(WAL), and each window is a short read transaction of its own, so checkpoints are not held back. `step(budget_s)`
works for about that long and returns, so a resident loop runs it a slice per turn; `check_log(path)` runs it to
the end. A value flipped inside a string or a number still decodes, and cannot be told from what was written.

The outcome is recorded beside the log, in log_check.json (`record`, `last_check`), not in the log: a damaged log
is not written to (SQLite writing through a damaged page can spread the damage). `facesetd status` shows the last
outcome without reading the whole log, and while the file is the one found damaged, every process stops at opening
it with the recorded line (`refusal`, asked by EventLog).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import LogDamaged
from .events import stored_problem

WINDOW = 2000  # positions read and decoded per query: a few MB and ~15 ms of decoding (state/events.py)
PROBE_BELOW = 8  # a failing window narrower than this is read one position at a time (a seek reads no neighbour)
STRUCTURE_FINDINGS = 10  # quick_check stops after this many findings; the line shows the first
INTERRUPT_EVERY = 10_000  # SQLite steps between two asks whether to give up (a stop request during quick_check)
RECORD_NAME = "log_check.json"  # beside events.sqlite3: the last check's outcome (`status`, `refusal`)
ADVICE = "facesetd writes nothing more into it; move it aside and restore it from a backup (docs/reliability.md)"

# Whether every column has the type the log writes, in one value (the types are read out only where it is 0).
_TYPED = ("typeof(kind) = 'text' AND typeof(subject) = 'text' AND typeof(time) IN ('real', 'integer')"
          " AND typeof(payload) = 'text' AND typeof(vector) IN ('blob', 'null')")
_COLUMNS = f"position, {_TYPED}, kind, subject, payload, vector"
_RANGE = f"SELECT {_COLUMNS} FROM events WHERE position BETWEEN ? AND ? ORDER BY position"
_ONE = f"SELECT {_COLUMNS} FROM events WHERE position = ?"
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def is_damage(error: BaseException) -> bool:
    """Whether an error from SQLite says the file's bytes are damaged (not a lock, a full disk or a bug)."""
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        if (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return True
    elif any(s in str(error) for s in ("malformed", "not a database")):  # pragma: no cover - Python < 3.11
        return True
    return str(error).startswith("Could not decode to UTF-8")  # a text column whose bytes are not UTF-8


@dataclass(frozen=True)
class LogDamage:
    """What a check found: the first and last position affected (None when no position can be named, e.g. an
    index page or the file's header), how many events, and what is wrong."""

    path: str
    first: int | None
    last: int | None
    events: int
    what: str

    def line(self) -> str:
        """The one line a person reads (a CLI error, the daemon's log line, `facesetd status`)."""
        if self.first is None:
            where = ""
        elif self.first == self.last:
            where = f" at log position {self.first}"
        else:
            where = f" at log positions {self.first}-{self.last} ({self.events} events)"
        return f"event log {self.path} is damaged{where}: {self.what}; {ADVICE}"

    def error(self) -> LogDamaged:
        return LogDamaged(self.line())


@dataclass
class _Findings:
    """Problems found so far: the first and the last run of damaged positions with what is wrong there, how many
    positions in all (the runs never overlap), SQLite's structure findings, and why no position could be read."""

    first: tuple[int, int, str] | None = None
    last: tuple[int, int, str] | None = None
    count: int = 0
    structure: list[str] = field(default_factory=list)
    fatal: str = ""

    def at(self, first: int, last: int, what: str) -> None:
        """Positions first..last are damaged."""
        self.count += last - first + 1
        if self.first is None or first < self.first[0]:
            self.first = (first, last, what)
        if self.last is None or last > self.last[1]:
            self.last = (first, last, what)

    def damage(self, path: Path) -> LogDamage | None:
        parts = [self.fatal] if self.fatal else []
        if self.first is not None and self.last is not None:
            parts.append(self.first[2] if self.first == self.last else f"{self.first[2]}; ...; {self.last[2]}")
        if self.structure:
            more = f" (and {len(self.structure) - 1} more)" if len(self.structure) > 1 else ""
            parts.append(f"SQLite's structure check: {self.structure[0]}{more}")
        if not parts:
            return None
        first = self.first[0] if self.first is not None else None
        last = self.last[1] if self.last is not None else None
        return LogDamage(str(path), first, last, self.count, "; ".join(parts))


class LogCheck:
    """One pass over the log at `path`, in slices (`step`). `interrupt`, when given, is asked now and then during
    SQLite's structure check; when it says yes the pass is given up (`abandoned`), with no outcome.

    `change_nothing`: not even SQLite's side files appear. A read-only connection to a log in WAL mode makes an
    empty -wal and a -shm beside it; where there is no -wal (no process has the log open) the file is opened
    immutable instead, as copy_log does, which is sound only while no process starts writing it meanwhile."""

    def __init__(self, path: Path, interrupt: Callable[[], bool] | None = None, change_nothing: bool = False) -> None:
        self.path = Path(path)
        self.interrupt = interrupt
        self.change_nothing = change_nothing
        self.found = _Findings()
        self.conn: sqlite3.Connection | None = None
        self.head: int | None = None  # the last position, once the structure check has passed
        self.next = 1  # the next position to read
        self.done = False
        self.abandoned = False
        self.started = time.monotonic()
        self.took_s = 0.0

    @property
    def damage(self) -> LogDamage | None:
        """What the pass found (None: nothing, or not finished)."""
        return self.found.damage(self.path) if self.done and not self.abandoned else None

    def step(self, budget_s: float = float("inf")) -> bool:
        """Work for about `budget_s` seconds (at least one unit: the structure check, or one window); True once
        the pass is over."""
        deadline = time.monotonic() + budget_s
        try:
            while not self.done:
                self._advance()
                if time.monotonic() >= deadline:
                    break
        except sqlite3.OperationalError as e:
            if str(e) != "interrupted":
                self.close()
                raise
            self.abandoned = True
            self._finish()
        except BaseException:
            self.close()
            raise
        return self.done

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _finish(self) -> None:
        self.done = True
        self.took_s = time.monotonic() - self.started
        self.close()

    def _advance(self) -> None:
        if self.head is None:
            self._start()
        elif self.next > self.head:
            self._finish()
        else:
            self._window(self.next, min(self.head, self.next + WINDOW - 1))

    def _start(self) -> None:
        """Open the file read-only, run SQLite's structure check, and find the last position."""
        if not self.path.exists():  # no log yet: nothing to check
            self.head = 0
            return
        idle = self.change_nothing and not self.path.with_name(self.path.name + "-wal").exists()
        mode = "mode=ro&immutable=1" if idle else "mode=ro"
        conn = self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?{mode}", uri=True, timeout=30,
                                           check_same_thread=False)
        conn.text_factory = bytes  # a text column that is not UTF-8 is a finding, not an error
        if self.interrupt is not None:
            stop = self.interrupt
            conn.set_progress_handler(lambda: 1 if stop() else 0, INTERRUPT_EVERY)
        try:
            rows = conn.execute(f"PRAGMA quick_check({STRUCTURE_FINDINGS})").fetchall()
            self.found.structure = [line for (text,) in rows for line in _lines(text) if line != "ok"]
        except sqlite3.DatabaseError as e:
            if not is_damage(e):
                raise
            if "not a database" in str(e):
                self.found.fatal = "it is not an SQLite database any more (its first page is damaged)"
                self.head = 0
                return
            self.found.structure = [str(e)]
        self.head = self._last_position()

    def _last_position(self) -> int:
        """The highest position: from the table, else from an index (another b-tree, which may have survived)."""
        assert self.conn is not None
        errors = []
        for sql in ("SELECT MAX(position) FROM events", "SELECT MAX(position) FROM events INDEXED BY events_kind"):
            try:
                return int(self.conn.execute(sql).fetchone()[0] or 0)
            except sqlite3.OperationalError as e:
                if "no such table" in str(e):  # an empty file: no log was ever written into it
                    return 0
                if not is_damage(e):
                    raise
                errors.append(str(e))
            except sqlite3.DatabaseError as e:
                if not is_damage(e):
                    raise
                errors.append(str(e))
        self.found.fatal = f"no event can be read (SQLite: {errors[0]})"
        return 0

    def _window(self, lo: int, hi: int) -> None:
        assert self.conn is not None
        rows, unreadable = self._read(lo, hi)
        if not rows and not unreadable:  # none here: a gap (or a damaged MAX), up to the next row that exists
            self.next = self._seek(hi)
            self._gap(lo, self.next - 1)
            return
        absent = [p for p in range(lo, hi + 1) if p not in rows and p not in unreadable]
        if absent:  # a scan may stop at a damaged page: a seek of each position can still find the rows past it
            found, failed = self._probe(absent)
            rows.update(found)
            unreadable.update(failed)
        for first, last in _runs(sorted(unreadable)):
            span = f"events {first}-{last}" if last > first else f"event {first}"
            self.found.at(first, last, f"{span} cannot be read (SQLite: {unreadable[first]})")
        for first, last in _runs([p for p in absent if p not in rows and p not in unreadable]):
            self._gap(first, last)
        for position, row in rows.items():
            problem = _row_problem(self.conn, row)
            if problem:
                self.found.at(position, position, f"event {position}: {problem}")
        self.next = hi + 1

    def _gap(self, first: int, last: int) -> None:
        if last >= first:
            span = f"events {first}-{last} are" if last > first else f"event {first} is"
            self.found.at(first, last, f"{span} missing (the log's positions have a gap)")

    def _seek(self, after: int) -> int:
        """The position of the first row past `after` (past the head when there is none)."""
        assert self.conn is not None and self.head is not None
        try:
            found = self.conn.execute("SELECT MIN(position) FROM events WHERE position > ?", (after,)).fetchone()[0]
        except sqlite3.DatabaseError as e:
            if not is_damage(e):
                raise
            self.found.at(after + 1, self.head, f"events {after + 1}-{self.head} cannot be read (SQLite: {e})")
            return self.head + 1
        return self.head + 1 if found is None else int(found)

    def _read(self, lo: int, hi: int) -> tuple[dict[int, tuple[Any, ...]], dict[int, str]]:
        """The rows at positions lo..hi, and the positions whose rows cannot be read (with SQLite's reason): a
        failing range is halved until it narrows to positions read one at a time."""
        assert self.conn is not None
        try:
            return {r[0]: r for r in self.conn.execute(_RANGE, (lo, hi)).fetchall()}, {}
        except sqlite3.DatabaseError as e:
            if not is_damage(e):
                raise
        if hi - lo + 1 < PROBE_BELOW:
            return self._probe(range(lo, hi + 1))
        mid = (lo + hi) // 2
        rows_a, failed_a = self._read(lo, mid)
        rows_b, failed_b = self._read(mid + 1, hi)
        return {**rows_a, **rows_b}, {**failed_a, **failed_b}

    def _probe(self, positions: Iterable[int]) -> tuple[dict[int, tuple[Any, ...]], dict[int, str]]:
        """Each position read on its own (a seek: it reads no neighbouring page)."""
        assert self.conn is not None
        rows: dict[int, tuple[Any, ...]] = {}
        failed: dict[int, str] = {}
        for p in positions:
            try:
                row = self.conn.execute(_ONE, (p,)).fetchone()
            except sqlite3.DatabaseError as e:
                if not is_damage(e):
                    raise
                failed[p] = str(e)
                continue
            if row is not None:
                rows[p] = row
        return rows, failed


def _row_problem(conn: sqlite3.Connection, row: tuple[Any, ...]) -> str | None:
    """What is wrong with one row as read (text columns as bytes), or None."""
    position, typed, kind, subject, payload, vector = row
    if not typed:
        types = conn.execute("SELECT typeof(kind), typeof(subject), typeof(time), typeof(payload), typeof(vector)"
                             " FROM events WHERE position = ?", (position,)).fetchone()
        named = ", ".join(f"{name} {t.decode() if isinstance(t, bytes) else t}"
                          for name, t in zip(("kind", "subject", "time", "payload", "vector"), types))
        return f"a column has the wrong type ({named})"
    try:
        kind_s = kind.decode()
        subject.decode()
    except UnicodeDecodeError as e:
        return f"its kind or subject is not UTF-8 ({e.reason} at byte {e.start})"
    return stored_problem(kind_s, payload, vector)


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """Sorted positions as runs of consecutive ones: [3, 4, 5, 9] -> [(3, 5), (9, 9)]."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and p == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def _lines(text: Any) -> list[str]:
    """quick_check's findings as single lines (it joins several with newlines, under a '*** in database' line)."""
    s = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return [line.strip() for line in s.splitlines() if line.strip() and not line.startswith("***")]


def check_log(path: Path, change_nothing: bool = False) -> LogCheck:
    """Check the log at `path` to the end (a one-shot verb's check); `.damage` says what it found."""
    check = LogCheck(path, change_nothing=change_nothing)
    check.step()
    return check


def record_path(log_path: Path) -> Path:
    return Path(log_path).with_name(RECORD_NAME)


def _fingerprint(log_path: Path) -> list[int] | None:
    """Which file the log is, and whether it changed: (inode, size, mtime). A log found damaged is not written to
    again, so its fingerprint stays until the file is repaired or replaced."""
    try:
        st = Path(log_path).stat()
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def record(check: LogCheck) -> bool:
    """Keep a finished check's outcome beside the log (`last_check`, `refusal`); False when it cannot be written
    (a data folder this user may only read): the outcome was said anyway."""
    from .atomic import atomic_write

    if not check.path.exists():  # no log yet: nothing was checked
        return False
    damage = check.damage
    outcome = {
        "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "head": check.head or 0,
        "took_s": round(check.took_s, 3),
        "file": _fingerprint(check.path),
        "damage": None if damage is None else {**asdict(damage), "line": damage.line()},
    }
    try:
        # Not fsynced: a record lost in a crash only means the next check (or read) finds the damage again.
        atomic_write(record_path(check.path), (json.dumps(outcome, sort_keys=True) + "\n").encode(), durable=False)
    except OSError:
        return False
    return True


def last_check(log_path: Path) -> dict[str, Any] | None:
    """The last recorded outcome (`record`), or None when the log was never checked (or the record is unreadable)."""
    try:
        outcome = json.loads(record_path(log_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return outcome if isinstance(outcome, dict) else None


def refusal(log_path: Path) -> LogDamaged | None:
    """The recorded damage, while the log is still the file found damaged: every facesetd process then stops at
    opening it (with that one line) instead of reading or writing it. None once a check found it sound, or once
    it was replaced or repaired (its inode, size or mtime changed: `facesetd doctor` checks it again)."""
    if not record_path(log_path).exists():  # the common case: one stat
        return None
    outcome = last_check(log_path)
    damage = outcome.get("damage") if outcome else None
    if not isinstance(damage, dict) or outcome is None or outcome.get("file") != _fingerprint(log_path):
        return None
    return LogDamaged(str(damage.get("line") or f"event log {log_path} is damaged; {ADVICE}"))


def verify(log_path: Path, change_nothing: bool = False) -> LogCheck:
    """Check the log to the end and record the outcome (with `change_nothing`, no record and no side file: see
    LogCheck); raise LogDamaged (its one line) when it is damaged."""
    check = check_log(log_path, change_nothing)
    if not change_nothing:
        record(check)
    if check.damage is not None:
        raise check.damage.error()
    return check


def damage_behind(log_path: Path, error: BaseException) -> LogDamaged | None:
    """Where reading the log failed with `error` (a page SQLite calls malformed, a payload that does not decode):
    the LogDamaged naming the whole damage, found by checking the log now (and recorded); None when the check
    finds the log sound, so the failure was something else (a bug: the caller re-raises it)."""
    check = check_log(log_path)
    if check.damage is None:
        return None
    record(check)
    return check.damage.error()


__all__ = ["LogCheck", "LogDamage", "check_log", "damage_behind", "is_damage", "last_check", "record", "refusal",
           "verify"]
