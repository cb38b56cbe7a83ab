"""slot into era: an identity split into age eras ("family": a faceset and its era buckets, each bucket a faceset
of anchor PNGs with a year). A new PNG of the family joins the bucket whose nearest anchor is within cosine
distance 0.40 AND whose year is within 5 years of the photo's; anchors are the bucket's own PNGs (and, for a
bucket `facesetd eras split` made, the family's faces it was made from: handlers/era_split.py) and are never
re-centred. The buckets come from config [eras], from eras_split events, and from an adopted master manifest.
Without a year (EXIF DateTimeOriginal of the source photo, the source's date, or the PNG's own EXIF) the PNG
stays unslotted, with the reason recorded. Buckets with fewer PNGs than the thin minimum are listed as
thin_eras in the master manifest.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from state import events as ev
from state.eventlog import StoredEvent

from .common import Face, active_face
from .context import HandlerContext
from .thresholds import EraBucket

CHECK = "era"
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
DATETIME = 0x0132


def adopted_buckets(ctx: HandlerContext) -> tuple[EraBucket, ...]:
    """Era buckets named by an adopted master manifest: a list `era_buckets` (or `eras`) of tables with
    faceset (or name), family (or parent) and year (or anchor_year). Entries missing any of them are ignored."""
    master = ctx.state.adopted_master()
    found = []
    for entry in master.get("era_buckets") or master.get("eras") or ():
        if not isinstance(entry, dict):
            continue
        faceset = entry.get("faceset") or entry.get("name")
        family = entry.get("family") or entry.get("parent")
        year = entry.get("year") or entry.get("anchor_year")
        if isinstance(faceset, str) and isinstance(family, str) and isinstance(year, int):
            found.append(EraBucket(faceset=faceset, family=family, year=year))
    return tuple(found)


def made_buckets(ctx: HandlerContext) -> tuple[EraBucket, ...]:
    """Era buckets `facesetd eras split` made (ErasSplit events not restored)."""
    return tuple(EraBucket(faceset=b.faceset, family=b.family, year=b.year) for b in ctx.state.made_era_buckets())


def buckets(ctx: HandlerContext) -> tuple[EraBucket, ...]:
    """The era buckets: from config [eras], then those `eras split` made, then any the adopted corpus names
    (the first to name a faceset wins)."""
    if ctx.batch.era_buckets is None:
        found = list(ctx.config.eras.buckets)
        names = {b.faceset for b in found}
        for b in made_buckets(ctx) + adopted_buckets(ctx):
            if b.faceset not in names:
                names.add(b.faceset)
                found.append(b)
        ctx.batch.era_buckets = tuple(found)
    return ctx.batch.era_buckets


def family_of(ctx: HandlerContext, faceset: str) -> str:
    """The identity a faceset belongs to: the family of an era bucket, else the faceset itself."""
    for b in buckets(ctx):
        if b.faceset == faceset:
            return b.family
    return faceset


# Years ----------------------------------------------------------------------------------------------

_YEAR = re.compile(r"^(\d{4})[-:]")


def _year_of(text: Any) -> int | None:
    m = _YEAR.match(str(text or "").strip())
    return int(m.group(1)) if m and 1800 < int(m.group(1)) < 2200 else None


def exif_year(data: bytes) -> int | None:
    """The year of EXIF DateTimeOriginal (else DateTime) of an image, or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "PNG":
                im.load()  # a PNG's eXIf chunk may follow the pixels
            exif = im.getexif()
            return _year_of(exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)) or _year_of(exif.get(DATETIME))
    except Exception:  # noqa: BLE001  (an unreadable image simply has no year)
        return None


def photo_year(ctx: HandlerContext, face: Face) -> tuple[int | None, str]:
    """(year, where it came from): the source photo's EXIF, the source's date (Immich), the PNG's EXIF."""
    src = face.source
    photo = src.get("photo")
    if photo:
        p = Path(photo) if Path(photo).is_absolute() else ctx.config.inbox / photo
        try:
            year = exif_year(p.read_bytes())
            if year:
                return year, f"EXIF DateTimeOriginal of {photo}"
        except OSError:
            pass
    immich = src.get("immich") or {}
    for key in ("takenAt", "taken_at", "dateTimeOriginal", "localDateTime", "fileCreatedAt"):
        year = _year_of(immich.get(key) if isinstance(immich, dict) else None) or _year_of(src.get(key))
        if year:
            return year, f"source {key}"
    try:
        year = exif_year((ctx.config.corpus / face.path).read_bytes())
    except OSError:
        year = None
    return (year, "EXIF DateTimeOriginal of the PNG") if year else (None, "")


# Slotting -------------------------------------------------------------------------------------------


def _anchors(ctx: HandlerContext, bucket: str) -> np.ndarray:
    """The bucket's own PNGs, and the family's faces an era split made its anchors."""
    blobs = ctx.state.anchor_embeddings(bucket) + ctx.state.era_anchor_embeddings(bucket)
    return np.stack([np.frombuffer(b, dtype="<f4") for b in blobs]) if blobs else np.zeros((0, 512), np.float32)


def _thin_eras(ctx: HandlerContext, slotted_now: dict[str, int]) -> list[str]:
    minimum = ctx.config.thresholds.thin_min_survivors
    thin = []
    for b in buckets(ctx):
        anchors = ctx.state.kept_count(b.faceset)
        slotted = ctx.state.slotted_count(b.faceset)
        if anchors + slotted + slotted_now.get(b.faceset, 0) < minimum:
            thin.append(b.faceset)
    return sorted(thin)


def slot_into_era(ctx: HandlerContext, events: Sequence[StoredEvent[ev.FaceAnalyzed]]) -> list[ev.Event]:
    all_buckets = buckets(ctx)
    if not all_buckets:
        return []
    t = ctx.config.thresholds
    bucket_names = {b.faceset for b in all_buckets}
    out: list[ev.Event] = []
    slotted_now: dict[str, int] = {}
    for se in events:
        e = se.event
        if e.face_count != 1 or e.embedding is None:
            continue
        face = active_face(ctx, e.path, e.sha256)
        if face is None or face.faceset in bucket_names:
            continue
        family = [b for b in all_buckets if b.family == face.faceset]
        if family:
            verdict = _slot_one(ctx, e, face, family)
            if isinstance(verdict, ev.FaceSlotted):
                slotted_now[verdict.era] = slotted_now.get(verdict.era, 0) + 1
            out.append(verdict)
    thin = _thin_eras(ctx, slotted_now)
    listed = ctx.state.thin_eras_listed()
    if listed is None or listed != thin:
        out.append(ev.ThinErasListed(eras=tuple(thin), threshold=t.thin_min_survivors))
    return out


def relist_thin_eras(ctx: HandlerContext, events: Sequence[StoredEvent[ev.Event]]) -> list[ev.Event]:
    """After an era split or a restore (which may unmake buckets or bring faces back): the thin eras again,
    recorded when the list changed."""
    thin = _thin_eras(ctx, {})
    listed = ctx.state.thin_eras_listed()
    if (listed or []) == thin:
        return []
    return [ev.ThinErasListed(eras=tuple(thin), threshold=ctx.config.thresholds.thin_min_survivors)]


Candidate = tuple[float, int, EraBucket]  # (anchor distance, years off, bucket)


def _slot_one(ctx: HandlerContext, e: ev.FaceAnalyzed, face: Face,
              family: list[EraBucket]) -> ev.FaceSlotted | ev.FaceUnslotted:
    """The era bucket of `family` a face joins (nearest anchor within the distance AND the years), or why none."""
    t = ctx.config.thresholds
    year, year_from = photo_year(ctx, face)
    inputs: dict[str, Any] = {"max_distance": t.era_max_distance, "max_years": t.era_max_years,
                              "year": year, "year_from": year_from, "model": dict(e.model)}
    if year is None or e.embedding is None:
        return ev.FaceUnslotted(path=face.path, sha256=face.sha256, inputs=inputs, reason=(
            "no year: no EXIF DateTimeOriginal on the source photo or the PNG, and no source date"))
    vec = np.asarray(e.embedding, dtype=np.float32)
    candidates: list[Candidate] = []
    for b in family:
        anchors = _anchors(ctx, b.faceset)
        if len(anchors) == 0:
            continue
        distance = float(1.0 - np.max(anchors @ vec))
        candidates.append((distance, abs(year - b.year), b))
    inputs["buckets"] = {b.faceset: {"distance": round(d, 6), "year": b.year, "years_off": dy}
                         for d, dy, b in candidates}
    fits = [c for c in candidates if c[0] <= t.era_max_distance and c[1] <= t.era_max_years]
    if fits:
        distance, years_off, b = min(fits, key=lambda c: (c[0], c[1], c[2].faceset))
        return ev.FaceSlotted(path=face.path, sha256=face.sha256, era=b.faceset, inputs=inputs, reason=(
            f"joins era {b.faceset} ({b.year}): anchor distance {distance:.3f} <= {t.era_max_distance},"
            f" {years_off} years off <= {t.era_max_years}"))
    return ev.FaceUnslotted(path=face.path, sha256=face.sha256, inputs=inputs,
                            reason=_why_unslotted(ctx, face, year, candidates))


def _why_unslotted(ctx: HandlerContext, face: Face, year: int, candidates: list[Candidate]) -> str:
    if not candidates:
        return f"no era of {face.faceset} has an analyzed anchor yet"
    t = ctx.config.thresholds
    d, dy, b = min(candidates, key=lambda c: (c[0], c[1]))
    why = []
    if d > t.era_max_distance:
        why.append(f"anchor distance {d:.3f} > {t.era_max_distance}")
    if dy > t.era_max_years:
        why.append(f"{dy} years off > {t.era_max_years}")
    if not why:  # the nearest by distance is too far in years and vice versa
        why.append("no era is both near enough and close enough in years")
    return f"no era fits; nearest {b.faceset} ({b.year}, photo {year}): " + ", ".join(why)
