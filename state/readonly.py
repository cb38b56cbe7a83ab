"""A read-only view of the event log and the corpus state, for readers beside the writer (the review pages).

It opens its own SQLite connection with `mode=ro`: it can never write, takes no write lock, and reads what the
writer (the daemon's worker, or `facesetd review`'s own pipeline) has committed. The named reads are the same
as the writer's (state/queries.py), so a page asks `reader.faceset_summaries()` exactly as `facesetd status`
does.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from .correction_queries import StateQueries
from .errors import LogError
from .eventlog import DEFAULT_BUSY_TIMEOUT_S, EventLog


class ReadOnlyLog(EventLog):
    """EventLog's reads on a read-only connection (no migration: the writer made the schema)."""

    def __init__(self, path: Path, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        if not self.path.is_file():
            raise LogError(f"no event log at {self.path}")
        self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=busy_timeout_s,
                                    isolation_level=None, check_same_thread=False)
        self.lock = threading.RLock()


class ReadOnlyState(StateQueries):
    """The corpus state's named reads over a ReadOnlyLog; thread-safe (one lock around the connection)."""

    def __init__(self, log_path: Path) -> None:
        self.log = ReadOnlyLog(log_path)

    def close(self) -> None:
        self.log.close()
