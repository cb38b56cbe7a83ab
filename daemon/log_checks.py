"""The daemon's checks of its own event log (state/logcheck.py): at its start, then every
[queue] log_check_interval_s, each worked through a slice per turn of the main loop.

At start, SQLite's structure check runs before anything can write (before the watchers, Immich and the control
socket start): a log whose pages are damaged is never written to, since SQLite writing through a damaged page can
spread the damage. The rest of the start-up pass (every event read back) then runs on the loop, a slice per turn,
and the loop does nothing else until it passes, so no photo is taken in on a log not known sound. A later pass
runs a slice per turn beside the usual work. A pass that finds damage raises LogDamaged: the daemon logs its one
line, stops without writing, and exits EXIT_LOG_DAMAGED (65), which systemd's unit does not restart on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from state.errors import LogDamaged
from state.logcheck import LogCheck, damage_behind, is_damage, record

log = structlog.get_logger("facesetd.daemon")

SLICE_S = 0.05  # seconds of checking per turn of the loop (300,000 events take about 3 s: some 60 turns)


class LogChecks:
    """The pass in progress, if any. `interrupt` (the stop request) gives up SQLite's structure check midway."""

    def __init__(self, path: Path, interrupt: Callable[[], bool]) -> None:
        self.path = path
        self.interrupt = interrupt
        self.current: LogCheck | None = LogCheck(path, interrupt)  # the start-up pass
        self.starting = True  # the start-up pass has not passed yet

    def start(self) -> None:
        """The start-up pass's first unit, SQLite's structure check, now; damaged pages raise LogDamaged here, after
        the rest of the pass has named the positions they hold (reads only)."""
        check = self.current
        assert check is not None
        check.step(0)
        if check.found.structure or check.found.fatal:
            check.step()
            self._finished(check)

    def begin(self) -> None:
        """The scheduled job's work, on the loop: a new pass, unless one is under way."""
        if self.current is None:
            self.current = LogCheck(self.path, self.interrupt)

    def step(self) -> bool:
        """A slice of the pass under way. True while the start-up pass has not passed: the loop does nothing
        else this turn. Raises LogDamaged when the pass found damage."""
        check = self.current
        if check is None:
            return False
        if check.step(SLICE_S):
            self.current = None
            if not check.abandoned:  # given up for a stop request: no outcome, the next start checks again
                self._finished(check)
        return self.starting

    def _finished(self, check: LogCheck) -> None:
        record(check)
        if check.damage is not None:
            raise check.damage.error()
        log.info("event log checked", positions=check.head, took_s=round(check.took_s, 2),
                 at="start" if self.starting else "schedule")
        self.starting = False

    def damage_in(self, error: Exception) -> LogDamaged | None:
        """The LogDamaged an error means: itself, or for an SQLite error saying a page is damaged (a query of the
        state tables met it) the damage a check of the whole log names; None for any other error."""
        if isinstance(error, LogDamaged):
            return error
        return damage_behind(self.path, error) if is_damage(error) else None
