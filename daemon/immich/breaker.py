"""The outage breaker: after `threshold` consecutive failed passes, polling pauses.

While open, each scheduled run only probes the server (a cheap public ping) and returns; the first
probe that answers closes it and the pass runs. Opening and closing are logged once each, so a
long outage is two log lines, not one per interval. One breaker per server, shared by its users.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("facesetd.immich")


class OutageBreaker:
    def __init__(self, server: str, threshold: int = 3) -> None:
        self.server = server
        self.threshold = max(1, threshold)
        self.failures = 0
        self.open = False
        self._lock = threading.Lock()

    def record_success(self) -> None:
        with self._lock:
            was_open, self.open, self.failures = self.open, False, 0
        if was_open:
            log.info("immich_polling_resumed", server=self.server)

    def record_failure(self, reason: str) -> None:
        with self._lock:
            self.failures += 1
            opened = not self.open and self.failures >= self.threshold
            if opened:
                self.open = True
        if opened:
            log.warning("immich_polling_paused", server=self.server, failures=self.failures, reason=reason)

    def allow(self, probe: Callable[[], bool]) -> bool:
        """True when a pass may run: closed, or open and `probe()` says the server answers again."""
        if not self.open:
            return True
        try:
            ok = bool(probe())
        except Exception:  # noqa: BLE001 - any failure of the probe means: still down
            ok = False
        if ok:
            self.record_success()
        return ok
