"""The tracked transaction, written once: a follower of the log records what it made of the events past its tracked
position, and its new position, in one transaction.

Every follower of the log works the same way (eventsourcing's ProcessApplication over a ProcessRecorder): it reads
its tracked position, does its work on the events past it (outside any transaction: checks write crop files, the
pool clustering takes seconds), then commits. The commit checks that the position is still the one it started
from (another process, or a restart's second pass, may have got there first: then nothing is recorded and the
caller looks again), appends the new events and moves the position, atomically. A crash anywhere before the
commit leaves the position where it was, so the work is done again; after it, never.

The followers and their tracking names: the corpus state's projection (`corpus_state`, state/corpus_state.py:
applies, appends nothing), the checks (`handlers`, handlers/dispatch.py), the pool promotion (`promoter`,
daemon/pipeline.py) and the identity merge (`merger:<distance>`, daemon/pipeline.py); tests/test_processor.py
holds every `track` of the tree to this one place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from .eventlog import EventLog
from .events import Event

# Where a follower's position moves to, given the positions its own events got (empty when it made none).
Upto = int | Callable[[list[int]], int]


def commit(log: EventLog, follower: str, after: int, events: Sequence[Event], upto: Upto,
           apply: Callable[[sqlite3.Connection], None] | None = None) -> list[int] | None:
    """In one transaction: unless `follower`'s tracked position moved from `after` meanwhile, `apply` (a
    projection's own table updates, on the transaction's connection), append `events` and track `upto` (or
    `upto(positions)`). Returns the appended events' positions, or None when another process moved the position
    first (nothing recorded). Raises LogBusy as EventLog.transaction does."""
    with log.transaction() as conn:
        if log.tracked(follower, conn) != after:
            return None
        if apply is not None:
            apply(conn)
        positions = log.append(list(events), conn=conn)
        log.track(follower, upto(positions) if callable(upto) else upto, conn)
    return positions
