"""Route the faces of a received photo: to the faceset whose centroid is near, or to the pool.

Every face whose short side is at least `identity.min_face_px` (original pixels) is cropped to 512x512 and
sent to the nearest active faceset when its cosine distance to that faceset's centroid is at most
`identity.match_distance`; otherwise it waits in the pool (`<corpus>/_pool/`) for `handlers.pool`. A photo
under inbox/faceset_NNN/ forces its best face into that identity. One face per photo per identity.

Crash safety: the handler's files are written before its events are appended (by the dispatcher, in the same
transaction as its position). Every step is idempotent, so a rerun after a crash gives the same events: crop
names derive from the photo's hash (same bytes: no rewrite), and a photo already moved is found again in
_processed/ or _rejected/ by its hash.

The photo's way, stage by stage (route_one): read it back, decode it, find its faces; where each face goes is
handlers/face_assign.py, the crops on disk handlers/crops.py, a processed photo dropped again into a seeding
folder handlers/pool_seed.py, the photo's own move aside handlers/inbox_files.py.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from state import events as ev
from state import names
from state.atomic import fsync_dirs
from state.eventlog import StoredEvent
from state.faults import crash_point, fail_point
from state.layout import faceset_name_problem

from . import candidates
from .centroids import centroids, unit
from .context import HandlerContext
from .crops import Written, write_crops
from .face_assign import POOL_FACESET, RoutedFace, assign, distant, why_routed
from .inbox_files import (
    REJECT_REASONS,
    REJECTED,
    LeftInPlace,
    blocked_folder,
    find_moved,
    move_aside,
    processed_rel,
    rejected_rel,
)
from .pool_seed import seed_from_pool

# --- Files ----------------------------------------------------------------------------------------


def _source(root_dir: Path, e: ev.PhotoReceived) -> Path:
    """The photo's file: found by its exact name bytes when its recorded path is escaped."""
    return root_dir / names.os_name(e.path, e.path_hex)


_LINK_ERRORS = {
    names.LINK_DANGLING: "a symbolic link to nothing",
    names.LINK_OUTSIDE: "a symbolic link to something outside the data folder (never followed)",
    names.LINK_NOT_A_FILE: "a symbolic link to something that is not a file",
}


def _reject_link(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, reason: str) -> list[ev.Event]:
    """A symbolic link that may not be followed: the link itself goes to _rejected/<reason>/.

    Only a link moves: a file that took its name meanwhile stays (a scan receives it as a new photo).
    """
    label = f"{e.root}/{e.path}"
    target = e.provenance.get("link", "")
    if names.lexists(src) and not src.is_symlink():
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason=reason,
                                 error=f"{label}: the symbolic link was replaced by a file before it was handled")]
    dest, left = _aside(ctx, e, src, rejected_rel(e, reason), label, link=target)
    error = f"{label}: {_LINK_ERRORS.get(reason, 'a symbolic link that is not followed')} ({target})"
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error,
                             left=left)]


def _aside(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, dest_rel: str, label: str, *, link: str = "",
           folders: set[Path] | None = None) -> tuple[str, str]:
    """Move the photo aside (inbox_files.move_aside): (where it went, "") or, when its own folder keeps it,
    ("", why it stays where it was received); the inbox does not receive it again while that lasts."""
    try:
        return move_aside(src, ctx.config.inbox, dest_rel, e.sha256, link=link, folders=folders) or "", ""
    except LeftInPlace as err:
        left = f"{label} stays where it is: {err}"
        ctx.log.warning("photo left in place", path=label, error=left,
                        note="not received again while its folder keeps it; move it out by hand, or let facesetd"
                             " write to its folder")
        return "", left


def _root_dir(ctx: HandlerContext, root: str) -> Path | None:
    if root == "inbox":
        return ctx.config.inbox
    if root == "staging":
        return ctx.config.staging
    return None


def _reject(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, reason: str, error: str) -> list[ev.Event]:
    label = f"{e.root}/{e.path}"
    dest, left = _aside(ctx, e, src, rejected_rel(e, reason), label)
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error,
                             left=left)]


def _written_ago(ctx: HandlerContext, e: ev.PhotoReceived, src: Path) -> float | None:
    """Seconds since the inbox photo at `src` was last written, while under [limits] incomplete_grace_s.

    None when it has been unchanged longer (its writer is done: undecodable is then a verdict), or for
    staged Immich originals, which are complete and verified before they are handed over.
    """
    if e.root != "inbox":
        return None
    try:
        age = max(0.0, time.time() - src.stat().st_mtime)
    except OSError:
        return None
    return age if age < ctx.config.limits.incomplete_grace_s else None


def route_photo(ctx: HandlerContext, stored: Sequence[StoredEvent[ev.PhotoReceived]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    for se in stored:
        out.extend(route_one(ctx, se.event))
    return out


def route_one(ctx: HandlerContext, e: ev.PhotoReceived) -> list[ev.Event]:
    """A received photo's verdict, stage by stage: read it back (or find where an interrupted run moved it),
    take a duplicate's shortcut, decode it, find its faces, then write their crops and say where each went.
    Each stage either hands the next what it needs or ends the photo with its events (a list)."""
    label = f"{e.root}/{e.path}"
    fail_point("route", label)
    held = _held_back(ctx, e, label)
    if held is not None:
        return held
    found = _read_photo(ctx, e, label)
    if isinstance(found, list):
        return found
    dup = ctx.state.processed_photo_with(e.sha256)
    if dup:
        return _route_duplicate(ctx, e, found.src, dup, label)
    image = _decode(ctx, e, found, label)
    if isinstance(image, list):
        return image
    analysed = _find_faces(ctx, e, found, image, label)
    if isinstance(analysed, list):
        return analysed
    return _file_faces(ctx, e, found, image, analysed, label)


def _held_back(ctx: HandlerContext, e: ev.PhotoReceived, label: str) -> list[ev.Event] | None:
    """Before the photo is read: it waits while a folder it may be moved into is blocked (a plain file named
    _processed, say), and a photo in a folder named like a seeding folder that cannot be one (faceset_ and 240
    digits) is rejected with that reason. None when neither applies."""
    blocked = blocked_folder(ctx.config.inbox, ctx.config.corpus)
    if blocked:
        ctx.log.error("photo waits: a folder facesetd needs is blocked", path=label, error=blocked)
        return [ev.PhotoDeferred(path=e.path, root=e.root, sha256=e.sha256, reason="blocked", error=blocked)]
    folder = e.path.split("/", 1)[0] if e.root == "inbox" and "/" in e.path else ""
    problem = faceset_name_problem(folder)
    if problem:
        root_dir = ctx.config.inbox
        return _reject(ctx, e, _source(root_dir, e), "bad_seed_folder",
                       f"{label}: inbox/{_short(folder)} is not a seeding folder: {problem} (rename the folder"
                       " faceset_NNN to seed a person)")
    return None


def _short(name: str, keep: int = 24) -> str:
    """A long name shown by its start (the log line stays readable; the event's path has it whole)."""
    return name if len(name) <= keep + 16 else f"{name[:keep]}...({len(name)} characters)"


@dataclass(frozen=True)
class _Photo:
    src: Path  # where it was received
    data: bytes  # its bytes (sha256 as received)
    moved: str | None  # inbox-relative place an interrupted run already moved it to, if it did


@dataclass
class _Analysed:
    detected: int  # faces the detector found
    faces: list[RoutedFace]  # those large enough to use
    skipped: dict[str, int]  # why the others were left ("small", later "same_identity")


def _read_photo(ctx: HandlerContext, e: ev.PhotoReceived, label: str) -> _Photo | list[ev.Event]:
    """The photo's bytes, from where it was received or from where an interrupted run moved it."""
    root_dir = _root_dir(ctx, e.root)
    if root_dir is None:
        error = f"no folder configured for photo root {e.root!r}"
        ctx.log.warning("photo rejected", path=label, reason="unknown_root", error=error)
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="unknown_root", error=error)]
    src = _source(root_dir, e)
    if e.link_problem:
        return _reject_link(ctx, e, src, e.link_problem)
    if src.is_symlink() and not src.exists():  # followed when received; its target went away since
        return _reject_link(ctx, e, src, names.LINK_DANGLING)
    if src.is_file():
        raw = src.read_bytes()
        if hashlib.sha256(raw).hexdigest() == e.sha256:
            return _Photo(src, raw, None)
    # An earlier run moved it and crashed before recording that?
    bases = [processed_rel(e), *(rejected_rel(e, r) for r in REJECT_REASONS)]
    moved = find_moved(ctx.config.inbox, bases, e.sha256)
    if moved is None:
        # Gone or replaced before it was handled: a new scan receives the new bytes, if any.
        ctx.log.info("photo gone before it was processed", path=label)
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="vanished",
                                 error=f"{label} changed or disappeared before it was processed")]
    if moved.startswith(REJECTED + "/"):
        reason = moved.split("/")[1]
        ctx.log.warning("photo rejected", path=label, reason=reason, dest=moved, note="by an interrupted run")
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=moved, reason=reason,
                                 error=f"{label}: {reason} (moved aside by an interrupted run)")]
    return _Photo(src, (ctx.config.inbox / moved).read_bytes(), moved)


def _route_duplicate(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, dup: tuple[str, str],
                     label: str) -> list[ev.Event]:
    """The same bytes already routed (dropped twice): nothing new to take from them, except that a photo
    dropped again into inbox/faceset_NNN/ seeds it with its face still waiting in the pool."""
    seeded, seed_faces = seed_from_pool(ctx, e) if e.forced_faceset else ([], [])
    dest, left = _aside(ctx, e, src, processed_rel(e), label)
    note = f"same bytes as {dup[0]}/{dup[1]}, already processed"
    if seed_faces:
        note += f"; its face waiting in the pool joined {e.forced_faceset}"
    ctx.log.info("photo routed", path=label, faces=len(seed_faces), to=[f["to"] for f in seed_faces],
                 dest=dest, note=note)
    return [*seeded, ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest,
                                       faces=tuple(seed_faces), note=note, left=left)]


def _decode(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, label: str) -> np.ndarray | list[ev.Event]:
    """The decoded pixels; a bomb is refused from its header, a photo cut short waits its grace time."""
    from gpu_agent.crop import decode_image
    from gpu_agent.errors import ImageTooLarge
    from gpu_agent.image_header import starts_like_an_image

    try:
        image = decode_image(photo.data, ctx.config.limits.max_pixels)  # header first: a bomb is never decoded
        if image is None or image.size == 0:
            raise ValueError("decoder returned no pixels")
        return image
    except ImageTooLarge as err:
        return _reject(ctx, e, photo.src, "too_large", f"{label}: {err}")
    except Exception as err:  # noqa: BLE001 - every decoder failure is the file's fault, not the daemon's
        age = None if photo.moved or not starts_like_an_image(photo.data) else _written_ago(ctx, e, photo.src)
        if age is not None:  # an image cut short, maybe by a writer that paused: not a verdict yet
            ctx.log.info("photo deferred: does not decode yet", path=label, age_s=round(age, 1),
                         grace_s=ctx.config.limits.incomplete_grace_s, error=str(err))
            return [ev.PhotoDeferred(path=e.path, root=e.root, sha256=e.sha256, reason="incomplete",
                                     error=f"{label}: {err}", age_s=round(age, 3))]
        return _reject(ctx, e, photo.src, "unreadable", f"{label}: {err}")


def _find_faces(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, image: np.ndarray,
                label: str) -> _Analysed | list[ev.Event]:
    """Detect and embed the faces; those below [identity] min_face_px are counted as skipped."""
    import cv2

    from gpu_agent.errors import ImageDecodeError
    from gpu_agent.quality import crop_quality
    from gpu_agent.source_quality import measure_source

    engine = ctx.models.face_engine  # outside the try: a model that cannot open is not the photo's fault
    try:
        # The decoded pixels when the engine takes them (in-process): the photo is not decoded twice.
        arrays = getattr(engine, "analyze_arrays", None)
        if arrays is None:  # the agent (HTTP) takes bytes
            detected = engine.analyze([photo.data], pad=True)[0]
        else:  # maybe found ahead, or found now with the photos waiting next (handlers/analysis_ahead.py)
            detected = ctx.ahead.faces(engine, arrays, (e.sha256, image), pad=True,  # photo.data's sha256 (_read_photo)
                                       max_pixels=ctx.config.limits.max_pixels, batch=ctx.config.analysis_batch,
                                       known=lambda sha: bool(ctx.state.processed_photo_with(sha)))
        min_px = ctx.config.identity.min_face_px
        usable = [(i, f) for i, f in enumerate(detected) if f.short_side >= min_px]
        faces = [RoutedFace(i, f, unit(f.embedding), crop_quality(image, f).total, measured=measure_source(image, f))
                 for i, f in usable]
    except (ImageDecodeError, cv2.error, ValueError) as err:  # pixels the models cannot work on
        return _reject(ctx, e, photo.src, "unprocessable", f"{label}: {type(err).__name__}: {err}")
    skipped = {"small": len(detected) - len(usable)} if len(usable) < len(detected) else {}
    return _Analysed(len(detected), faces, skipped)


def _file_faces(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, image: np.ndarray,
                found: _Analysed, label: str) -> list[ev.Event]:
    """Assign each face (a faceset, the pool, or nowhere), write the crops, move the photo to _processed/
    and record it all."""
    prefix = f"{e.sha256[:12]}_"
    out: list[ev.Event] = []
    forced, area = e.forced_faceset, ""
    if forced:
        known = ctx.state.faceset_area(forced)
        if known is None:
            out.append(ev.FacesetCreated(faceset=forced, reason=f"seeded through inbox/{forced}/"))
        else:
            area = known
    if found.faces:
        assign(ctx, found.faces, forced, centroids(ctx, exclude_prefix=prefix))
    lost = sum(1 for f in found.faces if not f.to)
    if lost:
        found.skipped["same_identity"] = lost
    # The crops' and the photo's folders, each fsynced once (not once per file) before the events name them.
    folders: set[Path] = set()
    written = write_crops(ctx, image, [f for f in found.faces if f.to], prefix, forced, area, label, folders)

    crash_point("inbox:crops_written")
    dest, left = (photo.moved, "") if photo.moved else _aside(ctx, e, photo.src, processed_rel(e), label,
                                                              folders=folders)
    fsync_dirs(folders)
    crash_point("inbox:photo_moved")
    summaries = _record_faces(ctx, e, written, dest, prefix, out)
    note = "" if summaries else ("no face found" if not found.detected else "no usable face")
    out.append(ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest, faces=tuple(summaries),
                                 skipped=found.skipped, note=note, left=left))
    # The photo's line of the story: how many faces were found, where each one went and why (its cosine distance
    # against [identity] match_distance), why any was left.
    match = ctx.config.identity.match_distance
    ctx.log.info("photo routed", path=label, found=found.detected, faces=len(summaries),
                 to=[s["to"] for s in summaries], distance=[s["distance"] for s in summaries], match_distance=match,
                 why=[why_routed(f, forced, match) for f, *_rest in written], skipped=found.skipped, dest=dest,
                 **({"note": note} if note else {}))
    return out


def _record_faces(ctx: HandlerContext, e: ev.PhotoReceived, written: list[Written], dest: str, prefix: str,
                  out: list[ev.Event]) -> list[dict[str, Any]]:
    """Append each written crop's events to `out` (PoolFaceAdded, or FaceAdded + FaceRouted); their summaries."""
    # Where the photo is now (inbox-relative, e.g. _processed/x.jpg), and the name it arrived under.
    base_source = {**_source_dict(e, dest), "photo_sha256": e.sha256}
    summaries: list[dict[str, Any]] = []
    taken = {f.to for f, *_rest in written}
    for f, rel, sha, size, mtime in written:
        source = {**base_source, "face": f.index, "bbox": [round(v, 1) for v in f.face.bbox],
                  "det_score": round(float(f.face.det_score), 4), **f.measured}
        dist = None if f.distance is None else round(f.distance, 4)
        if f.to == POOL_FACESET:
            out.append(ev.PoolFaceAdded(path=rel, face_id=f"{prefix}{f.index}", sha256=sha, photo_sha256=e.sha256,
                                        quality=f.quality, source=source, embedding=f.vec))
            out.extend(candidates.propose(ctx, rel, f"{prefix}{f.index}", f.near, f.distance, taken))
        else:
            out.append(ev.FaceAdded(path=rel, sha256=sha, size=size, mtime_ns=mtime, source=source))
            out.append(ev.FaceRouted(path=rel, sha256=sha, faceset=f.to, distance=dist, quality=f.quality,
                                     embedding=f.vec))
            if f.far:
                out.append(distant(ctx, e, f, rel, sha))
        summaries.append({"to": f.to, "crop": rel, "distance": dist, "quality": round(f.quality, 4),
                          "face": f.index})
    return summaries


def _source_dict(e: ev.PhotoReceived, dest: str) -> dict[str, Any]:
    """A crop's source: the provenance, with `photo` where the photo is after routing (inbox-relative,
    under _processed/) and `received_as` the name it arrived under (`inbox/x.jpg`)."""
    received_as = e.provenance.get("photo", f"{e.root}/{e.path}")
    return {**e.provenance, "photo": dest or received_as, "received_as": received_as}


__all__ = ["route_one", "route_photo"]
