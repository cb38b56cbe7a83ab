"""What the poller reads from Immich's answers, checked against the shapes Immich v3.1's spec gives them.

A server is untrusted input: a face whose `boundingBoxX1` is "x", a list where an asset object belongs, a
date that does not parse. Each answer is read here into frozen values, or ImmichMalformed names the field and
what was wrong with it, so that one odd asset is skipped with that reason (recorded in the log) instead of a
TypeError ending every pass. Fields the poller does not read are not checked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ImmichMalformed

# Immich ids are v4 UUIDs (the spec's pattern); anything else from the server is refused before it
# reaches a URL path or a file name.
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$")
SHOWN = 40  # characters of an odd value quoted in a reason


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Asset:
    """The fields of an AssetResponseDto the poller reads."""

    id: str
    type: str
    updated_at: str  # as the server wrote it: the watermark keeps it so
    updated: datetime
    file_created_at: str
    created_at: datetime | None
    width: int | None  # None: Immich does not know the size (the original is measured)
    height: int | None
    checksum: str
    original_file_name: str
    local_date_time: str | None
    is_trashed: bool
    is_edited: bool
    file_size: int | None  # exifInfo.fileSizeInByte, when the server sent it (GET /assets/{id} does)

    @property
    def taken_at(self) -> str:
        """localDateTime (the wall-clock capture time, right for calendar eras), else fileCreatedAt."""
        return self.local_date_time or self.file_created_at


@dataclass(frozen=True)
class Face:
    """A face box in the pixels of the preview Immich ran detection on (imageWidth x imageHeight)."""

    x1: float
    y1: float
    x2: float
    y2: float
    image_width: float
    image_height: float


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def _number(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ImmichMalformed(f"{where}: {key} is {_shown(value)}, not a number")
    return float(value)


def _text(obj: dict[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ImmichMalformed(f"{where}: {key} is {_shown(value)}, not a string")
    return value


def _date(obj: dict[str, Any], key: str, where: str, *, optional: bool = False) -> tuple[str, datetime] | None:
    text = _text(obj, key, where, optional=optional)
    if text is None:
        return None
    try:
        parsed = parse_ts(text)
    except ValueError:
        raise ImmichMalformed(f"{where}: {key} is {_shown(text)}, not a date-time") from None
    if parsed.tzinfo is None:
        raise ImmichMalformed(f"{where}: {key} is {_shown(text)}, a date-time without its time zone")
    return text, parsed


def _size(obj: Any, key: str, where: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImmichMalformed(f"{where}: {key} is {_shown(value)}, not a size")
    return value


def _flag(obj: dict[str, Any], key: str, where: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise ImmichMalformed(f"{where}: {key} is {_shown(value)}, not true or false")
    return value


def asset_id_of(raw: Any) -> str:
    """The asset's id when the item carries a well-formed one, else "" (to name a malformed item when recording it)."""
    aid = raw.get("id") if isinstance(raw, dict) else None
    return aid if isinstance(aid, str) and UUID_RE.match(aid) else ""


def read_asset(raw: Any) -> Asset:
    """An AssetResponseDto, or ImmichMalformed naming the first field that is not what the spec says."""
    if not isinstance(raw, dict):
        raise ImmichMalformed(f"an asset is {type(raw).__name__}, not an object")
    aid = raw.get("id")
    if not isinstance(aid, str) or not UUID_RE.match(aid):
        raise ImmichMalformed(f"an asset's id is {_shown(aid)}, not a UUID")
    where = f"asset {aid}"
    updated = _date(raw, "updatedAt", where)
    created_file = _date(raw, "fileCreatedAt", where)
    created = _date(raw, "createdAt", where, optional=True)
    local = _date(raw, "localDateTime", where, optional=True)
    assert updated is not None and created_file is not None  # not optional: _date raised otherwise
    exif = raw.get("exifInfo")
    if exif is not None and not isinstance(exif, dict):
        raise ImmichMalformed(f"{where}: exifInfo is {_shown(exif)}, not an object")
    width, height = _size(raw, "width", where), _size(raw, "height", where)
    return Asset(
        id=aid,
        type=_text(raw, "type", where) or "",
        updated_at=updated[0],
        updated=updated[1],
        file_created_at=created_file[0],
        created_at=created[1] if created else None,
        width=width or None,
        height=height or None,
        checksum=_text(raw, "checksum", where, optional=True) or "",
        original_file_name=_text(raw, "originalFileName", where, optional=True) or "",
        local_date_time=local[0] if local else None,
        is_trashed=_flag(raw, "isTrashed", where),
        is_edited=_flag(raw, "isEdited", where),
        file_size=_size(exif, "fileSizeInByte", f"{where}: exifInfo"),
    )


def read_faces(raw: Any, asset_id: str) -> list[Face]:
    """GET /faces's answer: a list of AssetFaceResponseDto, or ImmichMalformed naming what is wrong."""
    where = f"faces of asset {asset_id}"
    if not isinstance(raw, list):
        raise ImmichMalformed(f"{where}: the answer is {type(raw).__name__}, not a list")
    faces = []
    for i, f in enumerate(raw):
        at = f"{where}, face {i + 1}"
        if not isinstance(f, dict):
            raise ImmichMalformed(f"{at} is {type(f).__name__}, not an object")
        faces.append(Face(*(_number(f, k, at) for k in (
            "boundingBoxX1", "boundingBoxY1", "boundingBoxX2", "boundingBoxY2", "imageWidth", "imageHeight"))))
    return faces


@dataclass(frozen=True)
class SearchPage:
    items: list[Any]  # the raw items: each is read (read_asset) on its own, so one odd item is one skip
    next_page: str | None


def read_search_page(raw: Any) -> SearchPage:
    """POST /search/metadata's answer (SearchResponseDto); a page that is not one fails the whole listing."""
    assets = raw.get("assets") if isinstance(raw, dict) else None
    if not isinstance(assets, dict):
        raise ImmichMalformed(f"a search answer is {_shown(raw)}, not an object with an `assets` object")
    items, next_page = assets.get("items"), assets.get("nextPage")
    if not isinstance(items, list):
        raise ImmichMalformed(f"a search answer's assets.items is {_shown(items)}, not a list")
    if next_page is not None and not isinstance(next_page, str):
        raise ImmichMalformed(f"a search answer's assets.nextPage is {_shown(next_page)}, not a string")
    return SearchPage(items, next_page)
