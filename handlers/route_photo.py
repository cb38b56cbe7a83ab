"""Route the faces of a received photo: to the faceset whose centroid is near, or to the pool.

Every face whose short side is at least `identity.min_face_px` (original pixels) is cropped to 512x512 and
sent to the nearest active faceset when its cosine distance to that faceset's centroid is at most
`identity.match_distance`; otherwise it waits in the pool (`<corpus>/_pool/`) for `handlers.pool`. A photo
under inbox/faceset_NNN/ forces its best face into that identity. One face per photo per identity.

Crash safety: the handler's files are written before its events are appended (by the dispatcher, in the same
transaction as its position). Every step is idempotent, so a rerun after a crash gives the same events: crop
names derive from the photo's hash (same bytes: no rewrite), and the photo's file is found again where an
interrupted run left it (handlers/photo_file.py).

The photo's way, stage by stage (route_one): held back while a folder it may be moved into is blocked, read it
back, refused in a folder named like a seeding folder that cannot be one, decode it, find its faces; the photo's
file (read back, taken, moved aside or left in place; the files recorded unread) is handlers/photo_file.py, where each face goes
handlers/face_assign.py, the crops on disk handlers/crops.py, a processed photo dropped again into a seeding
folder handlers/pool_seed.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from state import events as ev
from state.atomic import fsync_dirs
from state.eventlog import StoredEvent
from state.faults import crash_point, fail_point
from state.layout import faceset_name_problem

from . import candidates
from .centroids import centroids
from .context import HandlerContext
from .crops import Written, write_crops
from .face_assign import POOL_FACESET, RoutedFace, assign, distant, routed_faces, why_routed
from .inbox_files import blocked_folder, processed_rel
from .photo_file import Photo, leave_for_writer, move_taken, read_photo, reject, take, written_ago
from .pool_seed import seed_from_pool
from .video_frames import is_video


def route_photo(ctx: HandlerContext, stored: Sequence[StoredEvent[ev.PhotoReceived]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    for se in stored:
        out.extend(route_one(ctx, se.event))
    return out


def route_one(ctx: HandlerContext, e: ev.PhotoReceived) -> list[ev.Event]:
    """A received photo's verdict, stage by stage: wait while a folder it may go into is blocked, read it back (or
    find where an interrupted run moved it), refuse it in a folder that cannot be a seeding folder, take a
    duplicate's shortcut, decode it, find its faces, then write their crops and say where each went.
    Each stage either hands the next what it needs or ends the photo with its events (a list)."""
    label = f"{e.root}/{e.path}"
    fail_point("route", label)
    held = _held_back(ctx, e, label)
    if held is not None:
        return held
    if is_video(e.path):  # streamed, its sampled frames routed as photos (handlers/route_video.py)
        from .route_video import route_video

        return route_video(ctx, e, label)
    found = read_photo(ctx, e, label)
    if isinstance(found, list):
        return found
    refused = _seed_folder(ctx, e, found, label)
    if refused is not None:
        return refused
    dup = ctx.state.processed_photo_with(e.sha256)
    if dup:
        return _route_duplicate(ctx, e, found, dup, label)
    image = _decode(ctx, e, found, label)
    if isinstance(image, list):
        return image
    analysed = _find_faces(ctx, e, found, image, label)
    if isinstance(analysed, list):
        return analysed
    return _file_faces(ctx, e, found, image, analysed, label)


def _held_back(ctx: HandlerContext, e: ev.PhotoReceived, label: str) -> list[ev.Event] | None:
    """Before the photo is read: it waits while a folder it may be moved into is blocked (a plain file named
    _processed, say); daemon/deferred.py receives it again once that folder is a folder. None when none is."""
    blocked = blocked_folder(ctx.config.inbox, ctx.config.corpus)
    if blocked:
        ctx.log.error("photo waits: a folder facesetd needs is blocked", path=label, error=blocked)
        return [ev.PhotoDeferred(path=e.path, root=e.root, sha256=e.sha256, reason="blocked", error=blocked)]
    return None


def _seed_folder(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo, label: str) -> list[ev.Event] | None:
    """A photo in a folder named like a seeding folder that cannot be one (faceset_ and 240 digits) is rejected
    with that reason (bad_seed_folder); None for any other folder."""
    folder = e.path.split("/", 1)[0] if e.root == "inbox" and "/" in e.path else ""
    problem = faceset_name_problem(folder)
    if not problem:
        return None
    return reject(ctx, e, photo, "bad_seed_folder",
                  f"{label}: inbox/{_short(folder)} is not a seeding folder: {problem} (rename the folder"
                  " faceset_NNN to seed a person)")


def _short(name: str, keep: int = 24) -> str:
    """A long name shown by its start (the log line stays readable; the event's path has it whole)."""
    return name if len(name) <= keep + 16 else f"{name[:keep]}...({len(name)} characters)"


@dataclass
class _Analysed:
    detected: int  # faces the detector found
    faces: list[RoutedFace]  # those large enough to use
    skipped: dict[str, int]  # why the others were left ("small", later "same_identity")


def _route_duplicate(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo, dup: tuple[str, str],
                     label: str) -> list[ev.Event]:
    """The same bytes already routed (dropped twice): nothing new to take from them, except that a photo
    dropped again into inbox/faceset_NNN/ seeds it with its face still waiting in the pool."""
    src = photo.src if photo.moved else take(ctx, e, photo, label)
    if isinstance(src, list):
        return src
    seeded, seed_faces = seed_from_pool(ctx, e) if e.forced_faceset else ([], [])
    dest, moved_note, left = ((photo.moved, "", "") if photo.moved
                              else move_taken(ctx, e, photo, src, processed_rel(e), None))
    note = f"same bytes as {dup[0]}/{dup[1]}, already processed" + (f"; {moved_note}" if moved_note else "")
    if seed_faces:
        note += f"; its face waiting in the pool joined {e.forced_faceset}"
    ctx.log.info("photo routed", path=label, faces=len(seed_faces), to=[f["to"] for f in seed_faces],
                 dest=dest, note=note)
    return [*seeded, ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest,
                                       faces=tuple(seed_faces), note=note, left=left)]


def _decode(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo, label: str) -> np.ndarray | list[ev.Event]:
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
        return reject(ctx, e, photo, "too_large", f"{label}: {err}")
    except Exception as err:  # noqa: BLE001 - every decoder failure is the file's fault, not the daemon's
        age = None if photo.moved or not starts_like_an_image(photo.data) else written_ago(ctx, e, photo)
        if age is not None:  # an image cut short, maybe by a writer that paused: not a verdict yet
            leave_for_writer(ctx, e, photo)  # its writer finds it where it left it
            ctx.log.info("photo deferred: does not decode yet", path=label, age_s=round(age, 1),
                         grace_s=ctx.config.limits.incomplete_grace_s, error=str(err))
            return [ev.PhotoDeferred(path=e.path, root=e.root, sha256=e.sha256, reason="incomplete",
                                     error=f"{label}: {err}", age_s=round(age, 3))]
        return reject(ctx, e, photo, "unreadable", f"{label}: {err}")


def _find_faces(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo, image: np.ndarray,
                label: str) -> _Analysed | list[ev.Event]:
    """Detect and embed the faces; those below [identity] min_face_px are counted as skipped."""
    import cv2

    from gpu_agent.errors import ImageDecodeError

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
        faces = routed_faces(image, detected, ctx.config.identity.min_face_px)
    except (ImageDecodeError, cv2.error, ValueError) as err:  # pixels the models cannot work on
        return reject(ctx, e, photo, "unprocessable", f"{label}: {type(err).__name__}: {err}")
    skipped = {"small": len(detected) - len(faces)} if len(faces) < len(detected) else {}
    return _Analysed(len(detected), faces, skipped)


def _file_faces(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo, image: np.ndarray,
                found: _Analysed, label: str) -> list[ev.Event]:
    """Assign each face (a faceset, the pool, or nowhere), write the crops, move the photo to _processed/
    and record it all."""
    prefix = f"{e.sha256[:12]}_"
    # Taken before anything is written: a photo whose name holds other bytes by now leaves no crop behind.
    src = photo.src if photo.moved else take(ctx, e, photo, label)
    if isinstance(src, list):
        return src
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
    dest, moved_note, left = ((photo.moved, "", "") if photo.moved
                              else move_taken(ctx, e, photo, src, processed_rel(e), folders))
    fsync_dirs(folders)
    crash_point("inbox:photo_moved")
    summaries = record_faces(ctx, e, written, dest, prefix, out)
    note = "" if summaries else ("no face found" if not found.detected else "no usable face")
    note = "; ".join(n for n in (note, moved_note) if n)
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


def record_faces(ctx: HandlerContext, e: ev.PhotoReceived, written: list[Written], dest: str, prefix: str,
                 out: list[ev.Event], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Append each written crop's events to `out` (PoolFaceAdded, or FaceAdded + FaceRouted); their summaries.
    `extra`: more source keys (a video frame's `video`, handlers/route_video.py)."""
    # Where the photo is now (inbox-relative, e.g. _processed/x.jpg), and the name it arrived under.
    base_source = {**_source_dict(e, dest), "photo_sha256": e.sha256, **(extra or {})}
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


__all__ = ["record_faces", "route_one", "route_photo"]
