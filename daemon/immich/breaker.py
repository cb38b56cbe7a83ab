"""The outage breaker: after `threshold` consecutive failed passes, polling pauses and backs off.

A pass fails when the server does not answer (connection errors, deadlines) or answers with errors (5xx after
the retries, a listing that is not one). While the breaker is open, a scheduled run does nothing until its
backoff has passed; then it pings the server and, when that answers, runs one pass as a trial. Only a trial
pass that succeeds closes the breaker: a server whose ping answers while its API fails stays paused. Each
failed trial doubles the wait, from `base_s` (one polling interval) up to `max_s`.

Opening and closing are logged once each (warning, info), so a long outage is two log lines, not one per
interval; each failed trial is a debug line with the next wait. One breaker per server, shared by its users.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("facesetd.immich")

# The longest wait between two trials of an open breaker: a server back after a long outage is polled again
# within this long (or one polling interval, when that is longer).
MAX_BACKOFF_S = 3600.0


class OutageBreaker:
    def __init__(self, server: str, threshold: int = 3, base_s: float = 60.0, max_s: float = MAX_BACKOFF_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.threshold = max(1, threshold)
        self.base_s = base_s
        self.max_s = max(max_s, base_s)
        self.clock = clock
        self.failures = 0  # consecutive failed passes while closed
        self.open = False
        self.backoff_s = 0.0  # while open: the wait after the last failed trial
        self.retry_at = 0.0  # while open: when the next trial may run (clock time)
        self.trials = 0  # while open: failed trials so far
        self._lock = threading.Lock()

    def record_success(self) -> None:
        with self._lock:
            was_open, trials = self.open, self.trials
            self.open, self.failures, self.trials, self.backoff_s = False, 0, 0, 0.0
        if was_open:
            log.info("immich_polling_resumed", server=self.server, failed_trials=trials)

    def record_failure(self, reason: str) -> None:
        """A pass failed: one more towards opening while closed; while open, a failed trial doubles the wait."""
        with self._lock:
            now = self.clock()
            if self.open:
                self.trials += 1
                self.backoff_s = min(self.backoff_s * 2, self.max_s)
                self.retry_at = now + self.backoff_s
                opened, wait = False, self.backoff_s
            else:
                self.failures += 1
                opened = self.failures >= self.threshold
                if opened:
                    self.open, self.trials, self.backoff_s = True, 0, self.base_s
                    self.retry_at = now + self.base_s
                wait = self.backoff_s
        if opened:
            log.warning("immich_polling_paused", server=self.server, failures=self.failures, reason=reason,
                        retry_in_s=wait)
        elif self.open:
            log.debug("immich_polling_still_paused", server=self.server, failed_trials=self.trials, reason=reason,
                      retry_in_s=wait)

    def allow(self, probe: Callable[[], bool]) -> bool:
        """True when a pass may run: closed, or open with its wait over and `probe()` answering (a trial pass,
        whose outcome the caller records). One trial at a time: the others wait for its outcome."""
        with self._lock:
            if not self.open:
                return True
            if self.clock() < self.retry_at:
                return False
            self.retry_at = self.clock() + self.backoff_s  # the other users' jobs wait for this trial
        try:
            ok = bool(probe())
        except Exception:  # noqa: BLE001 - any failure of the probe means: still down
            ok = False
        if not ok:
            self.record_failure("the server does not answer its ping")
        return ok
