"""One polling pass for one user: list changed assets, read their faces, stage originals, deliver.

The watermark. Immich's POST /search/metadata pages by offset and always sorts by fileCreatedAt,
even when filtering on updatedAt, so the listing is not in updatedAt order. A pass therefore lists
the whole window `updatedAfter = watermark` .. `updatedBefore = pass start` (both inclusive; see
list_window for how paging avoids offset shifts), de-duplicating by asset id, handles the assets in
a thread pool, and then advances the watermark to the updatedAt of the last asset of the longest
fully handled prefix in (updatedAt, id) order. It never moves when the listing did not finish. An
asset at the watermark itself is listed again next pass: one imported before whose `checksum` (in the
asset DTO) is unchanged is skipped without a download; sha256 dedup catches the rest.

Faces. Immich reports boxes in the pixels of the preview it ran detection on
(imageWidth/imageHeight); they are scaled by asset.width/imageWidth and asset.height/imageHeight to
original pixels before the size rule (short side >= min_face_px). Detection is asynchronous and
does not bump updatedAt, so an asset with no faces yet is deferred and re-checked on later passes
until it has been in Immich for DEFER_GIVE_UP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import structlog

from .client import UUID_RE, ImmichClient, ImmichNotFound, ImmichRequestError, ImmichUnavailable
from .staging import Staging
from .store import ImportStore, StagedAsset

log = structlog.get_logger("facesetd.immich")

# An asset with no faces is re-checked on later passes until it has been in Immich this long
# (by its createdAt, the upload time); by then face detection has run or never will.
DEFER_GIVE_UP = timedelta(days=7)

# Outcomes of one asset. All but FAILED and NOT_TRIED count as fully handled. UNCHANGED: imported
# before with the checksum Immich still reports (the asset at the watermark, listed again each pass).
DELIVERED, DUPLICATE, NO_FACES, DEFERRED, SMALL_FACES, DELETED, SKIPPED, UNCHANGED = (
    "delivered", "duplicate", "no_faces", "deferred", "small_faces", "deleted", "skipped", "unchanged",
)
FAILED, NOT_TRIED = "failed", "not_tried"
HANDLED = {DELIVERED, DUPLICATE, NO_FACES, DEFERRED, SMALL_FACES, DELETED, SKIPPED, UNCHANGED}

# known_sha256 + deliver must be atomic across threads and users, or two copies of one photo in a
# pass would both be delivered.
_deliver_lock = threading.Lock()


@dataclass
class PollResult:
    server: str
    user: str
    listed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    watermark_before: str | None = None
    watermark_after: str | None = None
    failure: str | None = None

    def add(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    @property
    def delivered(self) -> int:
        return self.counts.get(DELIVERED, 0)


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_ts(value: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a Z: the shape Immich's date-time pattern requires."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def taken_at(asset: dict[str, Any]) -> str | None:
    """localDateTime (the wall-clock capture time, right for calendar eras), else fileCreatedAt."""
    return asset.get("localDateTime") or asset.get("fileCreatedAt")


def scale_faces(
    faces: Iterable[dict[str, Any]], width: int, height: int, min_px: float
) -> tuple[tuple[float, float, float, float], ...]:
    """Boxes scaled from preview pixels to the original's `width` x `height`, keeping short side >= min_px."""
    kept = []
    for f in faces:
        iw, ih = f.get("imageWidth") or 0, f.get("imageHeight") or 0
        if iw <= 0 or ih <= 0:
            continue
        sx, sy = width / iw, height / ih
        x1, x2 = sorted((f["boundingBoxX1"] * sx, f["boundingBoxX2"] * sx))
        y1, y2 = sorted((f["boundingBoxY1"] * sy, f["boundingBoxY2"] * sy))
        if min(x2 - x1, y2 - y1) >= min_px:
            kept.append((round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)))
    return tuple(kept)


def _image_size(path: Path) -> tuple[int, int] | None:
    """The displayed size (EXIF orientation applied) of a downloaded original, for assets Immich gave no size.

    From the header alone: a decompression bomb is sized, not decoded (the inbox router rejects it as too_large).
    """
    try:
        from gpu_agent.image_header import header_exif, open_header

        with open_header(path) as im:
            w, h = im.size
            if header_exif(im).get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
            return w, h
    except Exception:  # noqa: BLE001 - not an image Pillow reads: no size, the asset is skipped
        return None


class _Pass:
    def __init__(
        self,
        client: ImmichClient,
        store: ImportStore,
        staging: Staging,
        user: str,
        min_face_px: float,
        now: datetime,
    ) -> None:
        self.client, self.store, self.staging, self.user = client, store, staging, user
        self.server = client.url
        self.min_face_px = min_face_px
        self.now = now
        self.stop = threading.Event()  # set on the first outage: the rest of the pass is not tried
        self.failure: str | None = None
        self.deferred: set[str] = store.deferred(client.url, user)
        # asset id -> checksum at its last import: read once, as each asset is handled once per pass
        self.imported: dict[str, str] = store.imported_checksums(client.url)

    def handle(self, asset: dict[str, Any], from_deferred: bool = False) -> str:
        if self.stop.is_set():
            return NOT_TRIED
        try:
            return self._handle(asset, from_deferred)
        except ImmichNotFound:
            log.info("immich_asset_gone", server=self.server, user=self.user, asset_id=asset.get("id"))
            self.store.undefer(self.server, self.user, asset["id"])
            return DELETED
        except ImmichUnavailable as e:
            self.failure = str(e)
            self.stop.set()
            return FAILED
        except ImmichRequestError as e:
            # A 4xx other than auth: retrying will not help, and blocking the watermark forever on
            # one odd asset would stall the user; log it and move on.
            log.warning("immich_asset_skipped", server=self.server, user=self.user, asset_id=asset.get("id"), error=str(e))
            return SKIPPED

    def _handle(self, asset: dict[str, Any], from_deferred: bool) -> str:
        aid = asset.get("id", "")
        if not UUID_RE.match(str(aid)) or asset.get("type") != "IMAGE" or asset.get("isTrashed"):
            return SKIPPED
        if asset.get("isEdited"):
            # Boxes of edited assets are in edited-image space, not preview space (API_NOTES §3).
            log.info("immich_edited_skipped", server=self.server, user=self.user, asset_id=aid)
            return SKIPPED
        checksum = str(asset.get("checksum") or "")
        if checksum and self.imported.get(aid) == checksum:
            return UNCHANGED  # the same bytes were imported: neither its faces nor its original are fetched
        faces = self.client.faces(aid)
        if not faces:
            created = asset.get("createdAt")
            if created and self.now - parse_ts(created) < DEFER_GIVE_UP:
                self.store.defer(self.server, self.user, aid)
                return DEFERRED
            self.store.undefer(self.server, self.user, aid)
            return NO_FACES
        if from_deferred or aid in self.deferred:
            self.store.undefer(self.server, self.user, aid)
        width, height = asset.get("width"), asset.get("height")
        kept = scale_faces(faces, width, height, self.min_face_px) if width and height else None
        if kept == ():
            return SMALL_FACES
        partial = self.staging.new_partial()
        try:
            dl = self.client.download_original(aid, partial)
            if kept is None:  # Immich had no size for it: measure the original itself
                size = _image_size(partial)
                kept = scale_faces(faces, *size, self.min_face_px) if size else ()
                if not kept:
                    return SMALL_FACES if size else SKIPPED
            with _deliver_lock:
                if self.store.known_sha256(dl.sha256):
                    return DUPLICATE
                path = self.staging.place(partial, dl.sha256, self.user, str(asset.get("originalFileName", "")))
                self.store.deliver(
                    StagedAsset(
                        path=path,
                        sha256=dl.sha256,
                        server=self.server,
                        user=self.user,
                        asset_id=aid,
                        original_file_name=str(asset.get("originalFileName", "")),
                        taken_at=taken_at(asset),
                        faces=kept,
                        checksum=checksum,
                    )
                )
            return DELIVERED
        finally:
            partial.unlink(missing_ok=True)


def list_window(client: ImmichClient, after: str | None, before: str, page_size: int) -> list[dict[str, Any]]:
    """Every IMAGE asset with updatedAt in [after, before], de-duplicated by id, in (updatedAt, id) order.

    Immich sorts by fileCreatedAt and pages by offset, so an asset that leaves the window during the
    walk (deleted, or updated again) would shift the next page and hide one asset. The walk is
    therefore keyset-style: each page asks for `takenAfter = the last fileCreatedAt seen` (inclusive)
    from page 1, so the boundary asset comes back (a harmless repeat, de-duplicated here) and no
    removal can shift anything. Only when a whole page shares one fileCreatedAt does it step by page.
    """
    seen: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    page = 1
    while True:
        body: dict[str, Any] = {"type": "IMAGE", "order": "asc", "size": page_size, "page": page, "updatedBefore": before}
        if after:
            body["updatedAfter"] = format_ts(parse_ts(after))
        if cursor:
            body["takenAfter"] = cursor
        result = client.search_metadata(body)
        items = result.get("items", [])
        for item in items:
            seen[item["id"]] = item  # a repeat across a page boundary replaces itself
        if not result.get("nextPage") or not items:
            break
        last = format_ts(parse_ts(items[-1]["fileCreatedAt"]))
        if last != cursor:
            cursor, page = last, 1
        else:  # a full page of one timestamp: step past it by offset
            page += 1
    return sorted(seen.values(), key=lambda a: (parse_ts(a["updatedAt"]), a["id"]))


def poll_user(
    client: ImmichClient,
    store: ImportStore,
    staging_dir: Path,
    user: str,
    *,
    page_size: int = 250,
    workers: int = 8,
    min_face_px: float,
    now: datetime | None = None,
) -> PollResult:
    """One pass for one user; faces whose short side is under `min_face_px` ([identity] min_face_px) in original
    pixels are left out. Raises ImmichAuthError/ImmichPermissionError at once, and
    ImmichUnavailable after moving the watermark no further than the handled prefix."""
    now = now or datetime.now(timezone.utc)
    server = client.url
    result = PollResult(server, user, watermark_before=store.watermark(server, user))
    p = _Pass(client, store, Staging(staging_dir), user, min_face_px, now)
    assets = list_window(client, result.watermark_before, format_ts(now), page_size)  # raises: nothing moves
    result.listed = len(assets)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="immich") as pool:
        outcomes = list(pool.map(p.handle, assets))
        # Deferred assets not in this window: fetch each afresh (it may be gone) and look again.
        listed_ids = {a["id"] for a in assets}
        retry = [aid for aid in sorted(p.deferred - listed_ids) if UUID_RE.match(aid)]
        for outcome in pool.map(lambda aid: _recheck(p, aid), retry):
            result.add(outcome)
    for o in outcomes:
        result.add(o)

    new_mark = None
    for asset, outcome in zip(assets, outcomes):
        if outcome not in HANDLED:
            break
        new_mark = asset["updatedAt"]
    if new_mark and (result.watermark_before is None or parse_ts(new_mark) > parse_ts(result.watermark_before)):
        store.advance_watermark(server, user, new_mark)
    result.watermark_after = store.watermark(server, user)
    log.info(
        "immich_poll",
        server=server,
        user=user,
        listed=result.listed,
        **result.counts,
        watermark=result.watermark_after,
    )
    if p.failure:
        result.failure = p.failure
        err = ImmichUnavailable(p.failure)
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def _recheck(p: _Pass, asset_id: str) -> str:
    if p.stop.is_set():
        return NOT_TRIED
    try:
        asset = p.client.asset(asset_id)
    except ImmichNotFound:
        p.store.undefer(p.server, p.user, asset_id)
        return DELETED
    except ImmichUnavailable as e:
        p.failure = str(e)
        p.stop.set()
        return FAILED
    return p.handle(asset, from_deferred=True)
