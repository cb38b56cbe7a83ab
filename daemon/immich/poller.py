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

Refusals. An answer that is not what the spec says (shapes.py: a face box of "x", a list for an asset) and an
original over [limits] max_file_bytes (by the asset's exifInfo.fileSizeInByte, its Content-Length, or what
arrived while it streamed) refuse that one asset: an ImmichAssetRefused in the log says why, it counts as
handled, so the watermark moves past it, and a too-large original is not asked for again while Immich reports
the same checksum. A listing page that is not a search answer fails the pass (the breaker counts it).

Videos. With [immich] videos on, VIDEO assets are listed too, in a second keyset walk with a watermark of its own
(kept under `<user>/videos`: turned on later, the videos are listed from the start), and their originals staged without asking Immich for faces (it detects faces on a
video's thumbnail only): the inbox samples the clip's frames and routes them itself (handlers/route_video.py). Their
size limit is [video] max_file_bytes.

Stopping. When the client's Cancel is set, the requests in flight are cut off, the assets not yet tried are
left, and poll_user raises ImmichCancelled after moving the watermark over the handled prefix only.
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

from handlers.limits import Limits

from .client import (
    UUID_RE,
    ImmichCancelled,
    ImmichClient,
    ImmichMalformed,
    ImmichNotFound,
    ImmichRequestError,
    ImmichTooLarge,
    ImmichUnavailable,
)
from .shapes import Asset, Face, asset_id_of, parse_ts, read_asset
from .staging import Staging
from .store import ImportStore, Refusal, StagedAsset

log = structlog.get_logger("facesetd.immich")

# An asset with no faces is re-checked on later passes until it has been in Immich this long
# (by its createdAt, the upload time); by then face detection has run or never will.
DEFER_GIVE_UP = timedelta(days=7)

# Outcomes of one asset. All but FAILED, CANCELLED and NOT_TRIED count as fully handled. UNCHANGED: imported
# before with the checksum Immich still reports (the asset at the watermark, listed again each pass).
# MALFORMED and TOO_LARGE are refused with an ImmichAssetRefused in the log; REFUSED_BEFORE: an original refused
# as too large before, with the checksum Immich still reports, is not asked for again.
DELIVERED, DUPLICATE, NO_FACES, DEFERRED, SMALL_FACES, DELETED, SKIPPED, UNCHANGED = (
    "delivered", "duplicate", "no_faces", "deferred", "small_faces", "deleted", "skipped", "unchanged",
)
MALFORMED, TOO_LARGE, REFUSED_BEFORE = "malformed", "too_large", "refused_before"
IMAGE, VIDEO = "IMAGE", "VIDEO"  # the asset types imported (AssetTypeEnum); VIDEO only with [immich] videos on
FAILED, CANCELLED, NOT_TRIED = "failed", "cancelled", "not_tried"
HANDLED = {DELIVERED, DUPLICATE, NO_FACES, DEFERRED, SMALL_FACES, DELETED, SKIPPED, UNCHANGED,
           MALFORMED, TOO_LARGE, REFUSED_BEFORE}

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


def format_ts(value: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a Z: the shape Immich's date-time pattern requires."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def scale_faces(
    faces: Iterable[Face], width: int, height: int, min_px: float
) -> tuple[tuple[float, float, float, float], ...]:
    """Boxes scaled from preview pixels to the original's `width` x `height`, keeping short side >= min_px."""
    kept = []
    for f in faces:
        if f.image_width <= 0 or f.image_height <= 0:
            continue
        sx, sy = width / f.image_width, height / f.image_height
        x1, x2 = sorted((f.x1 * sx, f.x2 * sx))
        y1, y2 = sorted((f.y1 * sy, f.y2 * sy))
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


@dataclass(frozen=True)
class OddItem:
    """A listed item that is not an asset as the spec describes one: refused as malformed, never handled."""

    asset_id: str  # "" when the item has no well-formed id
    checksum: str
    error: str


class _Pass:
    def __init__(
        self,
        client: ImmichClient,
        store: ImportStore,
        staging: Staging,
        user: str,
        min_face_px: float,
        max_file_bytes: int,
        now: datetime,
        video_max_bytes: int | None = None,
    ) -> None:
        self.client, self.store, self.staging, self.user = client, store, staging, user
        self.server = client.url
        self.min_face_px = min_face_px
        self.max_file_bytes = max_file_bytes
        self.video_max_bytes = video_max_bytes  # None: videos are not imported
        self.now = now
        self.stop = threading.Event()  # set on the first outage or at a stop: the rest of the pass is not tried
        self.failure: str | None = None
        self.cancelled = False
        self.deferred: set[str] = store.deferred(client.url, user)
        # asset id -> checksum at its last import: read once, as each asset is handled once per pass
        self.imported: dict[str, str] = store.imported_checksums(client.url)
        # asset id -> checksum when its original was refused as too large: not downloaded again while it holds
        self.too_large: dict[str, str] = store.refusals(client.url, TOO_LARGE)

    def handle(self, asset: Asset, from_deferred: bool = False) -> str:
        if self.stop.is_set():
            return NOT_TRIED
        try:
            return self._handle(asset, from_deferred)
        except ImmichNotFound:
            log.info("immich_asset_gone", server=self.server, user=self.user, asset_id=asset.id)
            self.store.undefer(self.server, self.user, asset.id)
            return DELETED
        except ImmichCancelled:
            self.cancelled = True
            self.stop.set()
            return CANCELLED
        except ImmichUnavailable as e:
            self.failure = str(e)
            self.stop.set()
            return FAILED
        except ImmichMalformed as e:
            self.refuse(asset.id, asset.checksum, MALFORMED, str(e))
            self.store.undefer(self.server, self.user, asset.id)
            return MALFORMED
        except ImmichTooLarge as e:
            self.refuse(asset.id, asset.checksum, TOO_LARGE, f"the original is {e}", e.size)
            self.store.undefer(self.server, self.user, asset.id)
            return TOO_LARGE
        except ImmichRequestError as e:
            # A 4xx other than auth: retrying will not help, and blocking the watermark forever on
            # one odd asset would stall the user; log it and move on.
            log.warning("immich_asset_skipped", server=self.server, user=self.user, asset_id=asset.id, error=str(e))
            return SKIPPED

    def refuse(self, asset_id: str, checksum: str, reason: str, error: str, size: int = 0) -> None:
        """Record why this asset is not imported, and log it the first time (the store records a refusal once)."""
        new = self.store.refuse(Refusal(server=self.server, user=self.user, asset_id=asset_id, reason=reason,
                                        error=error, checksum=checksum, size=size))
        (log.warning if new else log.debug)("immich_asset_refused", server=self.server, user=self.user,
                                            asset_id=asset_id, reason=reason, error=error)

    def _without_asking(self, asset: Asset) -> str | None:
        """The outcome of an asset settled without a request (None: ask Immich about it); ImmichTooLarge when its
        declared size is over the limit."""
        if asset.type not in self.types or asset.is_trashed:
            return SKIPPED
        if asset.is_edited:
            # Boxes of edited assets are in edited-image space, not preview space (API_NOTES §3).
            log.info("immich_edited_skipped", server=self.server, user=self.user, asset_id=asset.id)
            return SKIPPED
        if asset.checksum and self.imported.get(asset.id) == asset.checksum:
            return UNCHANGED  # the same bytes were imported: neither its faces nor its original are fetched
        if asset.id in self.too_large and self.too_large[asset.id] == asset.checksum:
            return REFUSED_BEFORE  # the same bytes were refused as too large: not asked for again
        limit = self.limit(asset)
        if asset.file_size is not None and asset.file_size > limit:
            raise ImmichTooLarge(f"{asset.file_size} bytes by its exifInfo.fileSizeInByte, over the limit of "
                                 f"{limit}", asset.file_size)
        return None

    @property
    def types(self) -> tuple[str, ...]:
        """The asset types imported: images, and videos where [immich] videos is on."""
        return (IMAGE, VIDEO) if self.video_max_bytes is not None else (IMAGE,)

    def limit(self, asset: Asset) -> int:
        """The largest original taken for this asset: [video] max_file_bytes for a video, else [limits]'s."""
        if asset.type == VIDEO and self.video_max_bytes is not None:
            return self.video_max_bytes
        return self.max_file_bytes

    def _handle(self, asset: Asset, from_deferred: bool) -> str:
        settled = self._without_asking(asset)
        if settled is not None:
            return settled
        aid = asset.id
        if asset.type == VIDEO:  # its frames' faces are found by the inbox (handlers/route_video.py), not asked of Immich
            return self._stage(asset, [], ())
        faces = self.client.faces(aid)
        if not faces:
            if asset.created_at is not None and self.now - asset.created_at < DEFER_GIVE_UP:
                self.store.defer(self.server, self.user, aid)
                return DEFERRED
            self.store.undefer(self.server, self.user, aid)
            return NO_FACES
        if from_deferred or aid in self.deferred:
            self.store.undefer(self.server, self.user, aid)
        width, height = asset.width, asset.height
        kept = scale_faces(faces, width, height, self.min_face_px) if width and height else None
        if kept == ():
            return SMALL_FACES
        return self._stage(asset, faces, kept)

    def _stage(self, asset: Asset, faces: list[Face], kept: tuple[Any, ...] | None) -> str:
        """Download the original into the staging folder and deliver it; `kept` its faces in original pixels (None:
        Immich had no size for it, so `faces` are scaled by the original's own size)."""
        aid, checksum = asset.id, asset.checksum
        partial = self.staging.new_partial()
        try:
            dl = self.client.download_original(aid, partial, self.limit(asset))
            if kept is None:  # Immich had no size for it: measure the original itself
                size = _image_size(partial)
                kept = scale_faces(faces, *size, self.min_face_px) if size else ()
                if not kept:
                    return SMALL_FACES if size else SKIPPED
            with _deliver_lock:
                if self.store.known_sha256(dl.sha256):
                    return DUPLICATE
                path = self.staging.place(partial, dl.sha256, self.user, asset.original_file_name)
                self.store.deliver(
                    StagedAsset(
                        path=path,
                        sha256=dl.sha256,
                        server=self.server,
                        user=self.user,
                        asset_id=aid,
                        original_file_name=asset.original_file_name,
                        taken_at=asset.taken_at,
                        faces=kept,
                        checksum=checksum,
                    )
                )
            return DELIVERED
        finally:
            partial.unlink(missing_ok=True)  # our own partial download (placed ones were moved away)


def list_window(client: ImmichClient, after: str | None, before: str, page_size: int,
                asset_type: str = "IMAGE") -> tuple[list[Asset], list[OddItem]]:
    """Every asset of `asset_type` with updatedAt in [after, before], de-duplicated by id, in (updatedAt, id) order, and
    the listed items that are not assets as the spec describes one (each to be refused as malformed).

    Immich sorts by fileCreatedAt and pages by offset, so an asset that leaves the window during the
    walk (deleted, or updated again) would shift the next page and hide one asset. The walk is
    therefore keyset-style: each page asks for `takenAfter = the last fileCreatedAt seen` (inclusive)
    from page 1, so the boundary asset comes back (a harmless repeat, de-duplicated here) and no
    removal can shift anything. Only when a whole page shares one fileCreatedAt (or has no well-formed
    item) does it step by page. A page that is not a search answer at all raises ImmichMalformed.
    """
    seen: dict[str, Asset] = {}
    odd: dict[str, OddItem] = {}
    cursor: str | None = None
    page = 1
    while True:
        body: dict[str, Any] = {"type": asset_type, "order": "asc", "size": page_size, "page": page, "updatedBefore": before}
        if after:
            body["updatedAfter"] = format_ts(parse_ts(after))
        if cursor:
            body["takenAfter"] = cursor
        result = client.search_metadata(body)
        last: Asset | None = None
        for item in result.items:
            try:
                asset = read_asset(item)
            except ImmichMalformed as e:
                item_id, checksum = asset_id_of(item), item.get("checksum") if isinstance(item, dict) else None
                odd[item_id or str(e)] = OddItem(item_id, checksum if isinstance(checksum, str) else "", str(e))
                continue
            seen[asset.id] = last = asset
        if not result.next_page or not result.items:
            break
        mark = format_ts(parse_ts(last.file_created_at)) if last is not None else cursor
        if mark != cursor:
            cursor, page = mark, 1
        else:  # a full page of one timestamp (or of odd items): step past it by offset
            page += 1
    for aid in seen:
        odd.pop(aid, None)  # well-formed when it was listed again
    return sorted(seen.values(), key=lambda a: (a.updated, a.id)), list(odd.values())


def poll_user(
    client: ImmichClient,
    store: ImportStore,
    staging_dir: Path,
    user: str,
    *,
    page_size: int = 250,
    workers: int = 8,
    min_face_px: float,
    max_file_bytes: int = Limits().max_file_bytes,
    now: datetime | None = None,
    video_max_bytes: int | None = None,
) -> PollResult:
    """One pass for one user; faces whose short side is under `min_face_px` ([identity] min_face_px) in original
    pixels are left out, originals over `max_file_bytes` ([limits] max_file_bytes) are refused. Raises
    ImmichAuthError/ImmichPermissionError at once, ImmichMalformed when a listing page is not one, and
    ImmichUnavailable or ImmichCancelled (the client's Cancel was set) after moving the watermark no further
    than the handled prefix. `video_max_bytes` ([video] max_file_bytes) set: VIDEO assets are imported too."""
    now = now or datetime.now(timezone.utc)
    server = client.url
    result = PollResult(server, user, watermark_before=store.watermark(server, user))
    p = _Pass(client, store, Staging(staging_dir), user, min_face_px, max_file_bytes, now, video_max_bytes)
    for kind in p.types:  # images, then (with [immich] videos) videos: each its own window and watermark
        mark = watermark_key(user, kind)
        before = result.watermark_before if kind == IMAGE else store.watermark(server, mark)
        assets, odd = list_window(client, before, format_ts(now), page_size, kind)  # raises: nothing moves
        result.listed += len(assets) + len(odd)
        for item in odd:  # not in the watermark's order (no updatedAt to trust): refused, they hold nothing back
            p.refuse(item.asset_id, item.checksum, MALFORMED, item.error)
            result.add(MALFORMED)
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="immich") as pool:
            outcomes = list(pool.map(p.handle, assets))
            if kind == IMAGE:  # deferred assets not in this window: fetch each afresh (it may be gone), look again
                listed_ids = {a.id for a in assets} | {item.asset_id for item in odd}
                retry = [aid for aid in sorted(p.deferred - listed_ids) if UUID_RE.match(aid)]
                for outcome in pool.map(lambda aid: _recheck(p, aid), retry):
                    result.add(outcome)
        for o in outcomes:
            result.add(o)
        new_mark = None
        for asset, outcome in zip(assets, outcomes):
            if outcome not in HANDLED:
                break
            new_mark = asset.updated_at
        if new_mark and (before is None or parse_ts(new_mark) > parse_ts(before)):
            store.advance_watermark(server, mark, new_mark)
    result.watermark_after = store.watermark(server, user)
    log.info(
        "immich_poll",
        server=server,
        user=user,
        listed=result.listed,
        **result.counts,
        watermark=result.watermark_after,
    )
    if p.cancelled:
        cancelled = ImmichCancelled(f"Immich at {server}: the poll of {user} was cut off: facesetd is stopping")
        cancelled.result = result  # type: ignore[attr-defined]
        raise cancelled
    if p.failure:
        result.failure = p.failure
        err = ImmichUnavailable(p.failure)
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def watermark_key(user: str, kind: str) -> str:
    """The name a type's watermark is kept under: the user's for images, `<user>/videos` for videos (so videos
    turned on later are listed from the start, whatever the images' watermark says)."""
    return user if kind == IMAGE else f"{user}/videos"


def _recheck(p: _Pass, asset_id: str) -> str:
    if p.stop.is_set():
        return NOT_TRIED
    try:
        asset = p.client.asset(asset_id)
    except ImmichNotFound:
        p.store.undefer(p.server, p.user, asset_id)
        return DELETED
    except ImmichCancelled:
        p.cancelled = True
        p.stop.set()
        return CANCELLED
    except ImmichUnavailable as e:
        p.failure = str(e)
        p.stop.set()
        return FAILED
    except ImmichMalformed as e:
        p.refuse(asset_id, "", MALFORMED, str(e))
        p.store.undefer(p.server, p.user, asset_id)
        return MALFORMED
    return p.handle(asset, from_deferred=True)
