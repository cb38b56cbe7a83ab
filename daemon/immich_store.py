"""The Immich poller's store, backed by the event log: watermarks, deferrals and imports are events.

It reads straight from the log (not from a projection that the main loop updates), so a value it
has just written is visible at once to every poller thread.

When another process holds the log's write lock past the busy timeout, an append raises LogBusy and
the pass ends there: the watermark does not move past what was not recorded, a staged original is
placed again (same name) next time, and the scheduler runs the job again at its next interval. For
BUSY_HOLD_S after a LogBusy the other appends of that pass fail at once instead of each waiting the
busy timeout again, and the spell is logged once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable, Sequence

import structlog

from state import events as ev
from state.eventlog import EventLog, LogBusy

from .immich.store import StagedAsset

log = structlog.get_logger("facesetd.immich")

BUSY_HOLD_S = 30.0  # after a LogBusy, further appends fail at once for this long (the pass ends quickly)


class EventLogImportStore:
    """ImportStore on the event log. `on_import(asset)` returns the events that hand the photo to the
    inbox pipeline; they are appended in the same transaction as the import record."""

    def __init__(self, log: EventLog, on_import: Callable[[StagedAsset], list[ev.Event]],
                 busy_hold_s: float = BUSY_HOLD_S) -> None:
        self.log = log
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

    def _latest(self, kind: str, subject: str) -> list[dict]:
        with self.log.lock:
            rows = self.log.conn.execute(
                "SELECT payload FROM events WHERE subject=? AND kind=? ORDER BY position", (subject, kind)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def watermark(self, server: str, user: str) -> str | None:
        found = self._latest(ev.ImmichWatermarkAdvanced.KIND, f"immich:{server}:{user}")
        return found[-1]["value"] if found else None

    def advance_watermark(self, server: str, user: str, value: str) -> None:
        if self.watermark(server, user) != value:
            self._append([ev.ImmichWatermarkAdvanced(server=server, user=user, value=value)])

    def known_sha256(self, sha256: str) -> bool:
        with self.log.lock:
            imported = self.log.conn.execute(
                "SELECT 1 FROM events WHERE subject=? AND kind=? LIMIT 1",
                (f"sha256:{sha256}", ev.ImmichAssetImported.KIND),
            ).fetchone()
            # The same bytes already in the corpus (a PNG exported from the corpus into Immich, say).
            in_corpus = self.log.conn.execute(
                "SELECT 1 FROM faces WHERE sha256=? LIMIT 1", (sha256,)
            ).fetchone() if imported is None else None
        return imported is not None or in_corpus is not None

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
        with self.log.lock:
            rows = self.log.conn.execute(
                "SELECT json_extract(payload, '$.asset_id'), json_extract(payload, '$.checksum') FROM events"
                " WHERE kind=? AND json_extract(payload, '$.server')=? ORDER BY position",
                (ev.ImmichAssetImported.KIND, server),
            ).fetchall()
        return {aid: checksum for aid, checksum in rows if aid and checksum}

    def deferred(self, server: str, user: str) -> set[str]:
        out: set[str] = set()
        for e in self._latest(ev.ImmichAssetDeferred.KIND, f"immich:{server}:{user}"):
            (out.discard if e["undeferred"] else out.add)(e["asset_id"])
        return out

    def defer(self, server: str, user: str, asset_id: str) -> None:
        if asset_id not in self.deferred(server, user):
            self._append([ev.ImmichAssetDeferred(server=server, user=user, asset_id=asset_id)])

    def undefer(self, server: str, user: str, asset_id: str) -> None:
        if asset_id in self.deferred(server, user):
            self._append([ev.ImmichAssetDeferred(server=server, user=user, asset_id=asset_id, undeferred=True)])
