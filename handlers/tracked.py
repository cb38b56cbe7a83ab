"""The checks' place in the log's tracking table, apart from the dispatcher (handlers/dispatch.py) that moves it:
what only counts the events the checks have left (`facesetd status`) imports none of them."""

from __future__ import annotations

from state.eventlog import EventLog

PROCESSOR = "handlers"  # the checks' position in the log's tracking table


def unhandled(log: EventLog) -> int:
    """Events recorded past the checks' position: not handled yet."""
    return log.head() - log.tracked(PROCESSOR)
