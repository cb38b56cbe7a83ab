"""The Immich poller's store: what the poller needs from the rest of the daemon, and the event log behind it.

ImportStore is the protocol the poller writes through (a watermark, sha256 dedup, delivery, deferrals,
refusals); EventLogImportStore is the daemon's one implementation: watermarks, deferrals, imports and refusals
are events. It
reads the log through named EventLog / CorpusState reads (never SQL), straight from the log rather than
from a projection the main loop updates, so a value it has just written is visible at once to every
poller thread. tests/immich_memory_store.py holds an in-memory ImportStore for the poller's own tests;
tests/test_immich_store_contract.py runs one contract suite against both.

When another process holds the log's write lock past the busy timeout, an append raises LogBusy and
the pass ends there: the watermark does not move past what was not recorded, a staged original is
placed again (same name) next time, and the scheduler runs the job again at its next interval. For
BUSY_HOLD_S after a LogBusy the other appends of that pass fail at once instead of each waiting the
busy timeout again, and the spell is logged once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import structlog

from state import events as ev
from state.eventlog import EventLog, LogBusy

if TYPE_CHECKING:
    from state.corpus_state import CorpusState

log = structlog.get_logger("facesetd.immich")

BUSY_HOLD_S = 30.0  # after a LogBusy, further appends fail at once for this long (the pass ends quickly)


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


@dataclass(frozen=True)
class Refusal:
    """Why one asset is not imported (recorded as an ImmichAssetRefused)."""

    server: str
    user: str
    asset_id: str  # "" when the listed item had no well-formed id
    reason: str  # malformed | too_large
    error: str  # what was wrong, in words
    checksum: str = ""  # the asset's Immich checksum when it was refused
    size: int = 0  # too_large: the bytes declared, or received before the download was abandoned


@runtime_checkable
class ImportStore(Protocol):
    """What one poll pass reads and records; every method may be called from several poller threads."""

    def watermark(self, server: str, user: str) -> str | None:
        """The last watermark recorded for this user (None: never polled to completion)."""
        ...

    def advance_watermark(self, server: str, user: str, value: str) -> None:
        """Record that every asset of this user updated up to `value` is handled."""
        ...

    def known_sha256(self, sha256: str) -> bool:
        """Whether these bytes were imported before (from any server or user) or are already in the corpus."""
        ...

    def deliver(self, asset: StagedAsset) -> None:
        """Record the import of a staged original and hand it to the inbox pipeline."""
        ...

    def imported_checksums(self, server: str) -> dict[str, str]:
        """asset id -> the Immich checksum it had at its last import, for the assets of `server` (any user)."""
        ...

    def refuse(self, refusal: Refusal) -> bool:
        """Record why an asset is not imported; the same refusal (server, asset, reason, checksum, error) once.
        True when it was recorded now, False when it had been before."""
        ...

    def refusals(self, server: str, reason: str) -> dict[str, str]:
        """asset id -> the checksum it had when last refused for `reason`, for the assets of `server` (any user)."""
        ...

    def deferred(self, server: str, user: str) -> set[str]:
        """The asset ids of this user waiting for Immich's face detection."""
        ...

    def defer(self, server: str, user: str, asset_id: str) -> None:
        """Look at this asset again on a later pass."""
        ...

    def undefer(self, server: str, user: str, asset_id: str) -> None:
        """Stop asking about this asset (it was imported, skipped or is gone)."""
        ...


def _user_subject(server: str, user: str) -> str:
    """The subject of a user's watermark and deferral events (see state.events)."""
    return ev.ImmichWatermarkAdvanced(server=server, user=user).subject


class EventLogImportStore:
    """ImportStore on the event log. `on_import(asset)` returns the events that hand the photo to the
    inbox pipeline; they are appended in the same transaction as the import record.

    `corpus` answers whether bytes are already in the corpus; without it the store opens the corpus
    state's tables on `log` itself (the daemon passes its pipeline's)."""

    def __init__(self, log: EventLog, on_import: Callable[[StagedAsset], list[ev.Event]],
                 busy_hold_s: float = BUSY_HOLD_S, corpus: CorpusState | None = None) -> None:
        if corpus is None:
            from state.corpus_state import CorpusState

            corpus = CorpusState(log)
        self.log = log
        self.corpus = corpus
        self.on_import = on_import
        self.busy_hold_s = busy_hold_s
        self._busy: LogBusy | None = None  # the last LogBusy, while its hold lasts
        self._busy_until = 0.0
        self._busy_lock = threading.Lock()

    def _append(self, events: Sequence[ev.Event]) -> None:
        """Append, or raise LogBusy: at once while a recent LogBusy holds, else after the busy timeout."""
        with self._busy_lock:
            if self._busy is not None and time.monotonic() < self._busy_until:
                raise LogBusy(self._busy.path, self._busy.waited_s)
        try:
            self.log.append(events)
        except LogBusy as e:
            with self._busy_lock:
                if self._busy is None:
                    log.warning("immich import paused: the event log is busy; the next poll tries again",
                                path=str(e.path), waited_s=e.waited_s)
                self._busy, self._busy_until = e, time.monotonic() + self.busy_hold_s
            raise
        with self._busy_lock:
            self._busy = None

    def watermark(self, server: str, user: str) -> str | None:
        last = self.log.latest(_user_subject(server, user), ev.ImmichWatermarkAdvanced.KIND)
        e = last.event if last is not None else None
        return e.value if isinstance(e, ev.ImmichWatermarkAdvanced) else None

    def advance_watermark(self, server: str, user: str, value: str) -> None:
        if self.watermark(server, user) != value:
            self._append([ev.ImmichWatermarkAdvanced(server=server, user=user, value=value)])

    def known_sha256(self, sha256: str) -> bool:
        imported = ev.ImmichAssetImported(sha256=sha256).subject
        # The same bytes already in the corpus count too (a PNG exported from the corpus into Immich, say).
        return self.log.has_subject(imported, [ev.ImmichAssetImported.KIND]) or self.corpus.has_face_sha256(sha256)

    def deliver(self, asset: StagedAsset) -> None:
        record = ev.ImmichAssetImported(
            server=asset.server, user=asset.user, asset_id=asset.asset_id, sha256=asset.sha256,
            staged=str(asset.path), original_file_name=asset.original_file_name, taken_at=asset.taken_at,
            faces=asset.faces, checksum=asset.checksum,
        )
        self._append([record, *self.on_import(asset)])

    def imported_checksums(self, server: str) -> dict[str, str]:
        """asset id -> the Immich checksum it had at its last import, for the assets of `server` (any user).

        One read per pass: imports recorded before checksums were kept have none, and are downloaded once more.
        """
        out: dict[str, str] = {}
        for stored in self.log.read_matching(ev.ImmichAssetImported.KIND, server=server):
            e = stored.event
            if isinstance(e, ev.ImmichAssetImported) and e.asset_id and e.checksum:
                out[e.asset_id] = e.checksum
        return out

    def refuse(self, refusal: Refusal) -> bool:
        fields = {"server": refusal.server, "asset_id": refusal.asset_id, "reason": refusal.reason,
                  "checksum": refusal.checksum, "error": refusal.error}
        if self.log.read_matching(ev.ImmichAssetRefused.KIND, **fields):
            return False
        self._append([ev.ImmichAssetRefused(user=refusal.user, size=refusal.size, **fields)])
        return True

    def refusals(self, server: str, reason: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for stored in self.log.read_matching(ev.ImmichAssetRefused.KIND, server=server, reason=reason):
            e = stored.event
            if isinstance(e, ev.ImmichAssetRefused) and e.asset_id:
                out[e.asset_id] = e.checksum
        return out

    def deferred(self, server: str, user: str) -> set[str]:
        out: set[str] = set()
        for stored in self.log.read_subject(_user_subject(server, user), [ev.ImmichAssetDeferred.KIND]):
            e = stored.event
            if isinstance(e, ev.ImmichAssetDeferred):
                (out.discard if e.undeferred else out.add)(e.asset_id)
        return out

    def defer(self, server: str, user: str, asset_id: str) -> None:
        if asset_id not in self.deferred(server, user):
            self._append([ev.ImmichAssetDeferred(server=server, user=user, asset_id=asset_id)])

    def undefer(self, server: str, user: str, asset_id: str) -> None:
        if asset_id in self.deferred(server, user):
            self._append([ev.ImmichAssetDeferred(server=server, user=user, asset_id=asset_id, undeferred=True)])
