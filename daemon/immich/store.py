"""What the poller needs from the rest of the daemon: a watermark, sha256 dedup, delivery, deferrals.

The daemon backs this with the event log and the inbox pipeline; MemoryImportStore is the in-memory
implementation used by the tests, the benchmark and `facesetd immich poll --once` until that is wired.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StagedAsset:
    path: Path  # the staged original, inside the staging folder
    sha256: str
    server: str  # the server url
    user: str  # the configured user name
    asset_id: str
    original_file_name: str  # as the server gave it (the sanitised name is in `path`)
    # the asset's localDateTime (the photographer's wall-clock time, timezone-agnostic: the right
    # calendar date for eras), falling back to fileCreatedAt (UTC); see poller.taken_at.
    taken_at: str | None
    faces: tuple[tuple[float, float, float, float], ...]  # kept boxes (x1, y1, x2, y2) in ORIGINAL pixels
    checksum: str = ""  # the asset's `checksum` as Immich reported it when listed (base64 SHA-1 of its bytes)


class ImportStore(Protocol):
    def watermark(self, server: str, user: str) -> str | None: ...

    def advance_watermark(self, server: str, user: str, value: str) -> None: ...

    def known_sha256(self, sha256: str) -> bool: ...

    def deliver(self, asset: StagedAsset) -> None: ...

    def imported_checksums(self, server: str) -> dict[str, str]: ...

    def deferred(self, server: str, user: str) -> set[str]: ...

    def defer(self, server: str, user: str, asset_id: str) -> None: ...

    def undefer(self, server: str, user: str, asset_id: str) -> None: ...


class MemoryImportStore:
    """A thread-safe ImportStore in memory.

    With `deliver_dir`, delivered originals are moved there (as the inbox pipeline would take them);
    otherwise they stay in the staging folder.
    """

    def __init__(self, deliver_dir: Path | None = None) -> None:
        self.deliver_dir = deliver_dir
        self.delivered: list[StagedAsset] = []
        self.watermarks: dict[tuple[str, str], str] = {}
        self._sha: set[str] = set()
        self._deferred: dict[tuple[str, str], set[str]] = {}
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
        if self.deliver_dir is not None:
            self.deliver_dir.mkdir(parents=True, exist_ok=True)
            target = self.deliver_dir / asset.path.name
            shutil.move(str(asset.path), target)
            asset = StagedAsset(**{**asset.__dict__, "path": target})
        with self._lock:
            self._sha.add(asset.sha256)
            self.delivered.append(asset)

    def imported_checksums(self, server: str) -> dict[str, str]:
        """asset id -> the checksum it had when last delivered, for the assets of `server`."""
        with self._lock:
            return {d.asset_id: d.checksum for d in self.delivered if d.server == server and d.checksum}

    def deferred(self, server: str, user: str) -> set[str]:
        with self._lock:
            return set(self._deferred.get((server, user), ()))

    def defer(self, server: str, user: str, asset_id: str) -> None:
        with self._lock:
            self._deferred.setdefault((server, user), set()).add(asset_id)

    def undefer(self, server: str, user: str, asset_id: str) -> None:
        with self._lock:
            self._deferred.get((server, user), set()).discard(asset_id)
