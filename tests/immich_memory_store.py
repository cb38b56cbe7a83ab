"""An ImportStore in memory, for the poller's and the scheduler's tests and bench/immich.py.

The daemon's store is daemon.immich.store.EventLogImportStore; tests/test_immich_store_contract.py holds
both to the same contract. Delivered originals stay where the poller staged them.
"""

from __future__ import annotations

import threading

from daemon.immich.store import Refusal, StagedAsset


class MemoryImportStore:
    """A thread-safe ImportStore in memory; `delivered` and `watermarks` are there for tests to inspect."""

    def __init__(self) -> None:
        self.delivered: list[StagedAsset] = []
        self.watermarks: dict[tuple[str, str], str] = {}
        self._sha: set[str] = set()
        self._deferred: dict[tuple[str, str], set[str]] = {}
        self.refused: list[Refusal] = []
        self._lock = threading.Lock()

    def watermark(self, server: str, user: str) -> str | None:
        with self._lock:
            return self.watermarks.get((server, user))

    def advance_watermark(self, server: str, user: str, value: str) -> None:
        with self._lock:
            self.watermarks[(server, user)] = value

    def known_sha256(self, sha256: str) -> bool:
        with self._lock:
            return sha256 in self._sha

    def deliver(self, asset: StagedAsset) -> None:
        with self._lock:
            self._sha.add(asset.sha256)
            self.delivered.append(asset)

    def imported_checksums(self, server: str) -> dict[str, str]:
        """asset id -> the checksum it had when last delivered, for the assets of `server`."""
        with self._lock:
            return {d.asset_id: d.checksum for d in self.delivered if d.server == server and d.checksum}

    def refuse(self, refusal: Refusal) -> bool:
        key = (refusal.server, refusal.asset_id, refusal.reason, refusal.checksum, refusal.error)
        with self._lock:
            if any((r.server, r.asset_id, r.reason, r.checksum, r.error) == key for r in self.refused):
                return False
            self.refused.append(refusal)
            return True

    def refusals(self, server: str, reason: str) -> dict[str, str]:
        with self._lock:
            return {r.asset_id: r.checksum for r in self.refused if r.server == server and r.reason == reason
                    and r.asset_id}

    def deferred(self, server: str, user: str) -> set[str]:
        with self._lock:
            return set(self._deferred.get((server, user), ()))

    def defer(self, server: str, user: str, asset_id: str) -> None:
        with self._lock:
            self._deferred.setdefault((server, user), set()).add(asset_id)

    def undefer(self, server: str, user: str, asset_id: str) -> None:
        with self._lock:
            self._deferred.get((server, user), set()).discard(asset_id)
