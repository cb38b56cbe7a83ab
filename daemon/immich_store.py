"""The Immich poller's store, backed by the event log: watermarks, deferrals and imports are events.

It reads straight from the log (not from a projection that the main loop updates), so a value it
has just written is visible at once to every poller thread.
"""

from __future__ import annotations

import json
from typing import Callable

from state import events as ev
from state.eventlog import EventLog

from .immich.store import StagedAsset


class EventLogImportStore:
    """ImportStore on the event log. `on_import(asset)` returns the events that hand the photo to the
    inbox pipeline; they are appended in the same transaction as the import record."""

    def __init__(self, log: EventLog, on_import: Callable[[StagedAsset], list[ev.Event]]) -> None:
        self.log = log
        self.on_import = on_import

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
            self.log.append([ev.ImmichWatermarkAdvanced(server=server, user=user, value=value)])

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
            faces=asset.faces,
        )
        self.log.append([record, *self.on_import(asset)])

    def deferred(self, server: str, user: str) -> set[str]:
        out: set[str] = set()
        for e in self._latest(ev.ImmichAssetDeferred.KIND, f"immich:{server}:{user}"):
            (out.discard if e["undeferred"] else out.add)(e["asset_id"])
        return out

    def defer(self, server: str, user: str, asset_id: str) -> None:
        if asset_id not in self.deferred(server, user):
            self.log.append([ev.ImmichAssetDeferred(server=server, user=user, asset_id=asset_id)])

    def undefer(self, server: str, user: str, asset_id: str) -> None:
        if asset_id in self.deferred(server, user):
            self.log.append([ev.ImmichAssetDeferred(server=server, user=user, asset_id=asset_id, undeferred=True)])
