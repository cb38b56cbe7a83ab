"""Route the faces of a received photo: to the faceset whose centroid is near, or to the pool.

Every face whose short side is at least `identity.min_face_px` (original pixels) is cropped to 512x512 and
sent to the nearest active faceset when its cosine distance to that faceset's centroid is at most
`identity.match_distance`; otherwise it waits in the pool (`<corpus>/_pool/`) for `handlers.pool`. A photo
under inbox/faceset_NNN/ forces its best face into that identity. One face per photo per identity.

Crash safety: the handler's files are written before its events are appended (by the dispatcher, in the same
transaction as its position). Every step is idempotent, so a rerun after a crash gives the same events: crop
names derive from the photo's hash (same bytes: no rewrite), and a photo already moved is found again in
_processed/ or _rejected/ by its hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from state import events as ev
from state import names
from state.atomic import atomic_write, fsync_dir, fsync_dirs
from state.eventlog import StoredEvent
from state.faults import crash_point
from state.layout import POOL_DIR, face_path
from state.scan import sha256_file

from . import candidates
from .centroids import centroids, nearest, unit
from .context import HandlerContext
from .inbox_files import REJECT_REASONS, REJECTED, find_moved, move_aside, processed_rel, rejected_rel

POOL_FACESET = "pool"


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
    dest = move_aside(src, ctx.config.inbox, rejected_rel(e, reason), e.sha256, link=target) or ""
    error = f"{label}: {_LINK_ERRORS.get(reason, 'a symbolic link that is not followed')} ({target})"
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error)]


def _write_crop(corpus: Path, rel: str, png: bytes, folders: set[Path]) -> tuple[str, int, int]:
    """Write the crop atomically (no-op with the same bytes there) and fsync it, its folder added to `folders`
    (fsynced once for all of a photo's crops); returns (sha256, size, mtime_ns)."""
    atomic_write(corpus / rel, png, folders=folders)
    st = (corpus / rel).stat()
    return hashlib.sha256(png).hexdigest(), len(png), st.st_mtime_ns


# --- Routing --------------------------------------------------------------------------------------


@dataclass
class _Face:
    index: int
    face: Any  # DetectedFace
    vec: np.ndarray
    quality: float
    to: str = ""
    distance: float | None = None
    far: bool = False  # forced into a faceset whose centroid lies farther than [identity] match_distance
    near: str = ""  # the nearest faceset of a face sent to the pool (a candidate for it when just past the match)
    measured: dict[str, Any] = field(default_factory=dict)  # the face on its photo (gpu_agent.source_quality)


def _root_dir(ctx: HandlerContext, root: str) -> Path | None:
    if root == "inbox":
        return ctx.config.inbox
    if root == "staging":
        return ctx.config.staging
    return None


def _reject(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, reason: str, error: str) -> list[ev.Event]:
    dest = move_aside(src, ctx.config.inbox, rejected_rel(e, reason), e.sha256) or ""
    ctx.log.warning("photo rejected", path=f"{e.root}/{e.path}", reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error)]


def _pick_forced(faces: list[_Face], centroid: np.ndarray | None, match_distance: float) -> _Face:
    """The face a photo forced into a faceset gives it: the one most like the person already there, else (seeding)
    the largest. Marked `far` when even that one lies past the match distance: perhaps someone else."""
    if centroid is None:
        return max(faces, key=lambda f: (f.face.short_side, -f.index))
    pick = min(faces, key=lambda f: (1.0 - float(np.dot(centroid, f.vec)), f.index))
    pick.distance = 1.0 - float(np.dot(centroid, pick.vec))
    pick.far = pick.distance > match_distance
    return pick


def _distant(ctx: HandlerContext, e: ev.PhotoReceived, f: _Face, crop: str, sha256: str) -> ev.ForcedFaceDistant:
    """The warning for a forced face far from its faceset: it joins (the user asked), but is said, and undoable."""
    photo = f"{e.root}/{e.path}"
    distance = round(float(f.distance or 0.0), 4)
    ctx.log.warning("forced face far from its faceset", faceset=f.to, photo=photo, crop=crop, distance=distance,
                    match_distance=ctx.config.identity.match_distance,
                    undo="facesetd restore ID (ID: its forced_face_distant event, see facesetd events)")
    return ev.ForcedFaceDistant(path=crop, sha256=sha256, faceset=f.to, distance=distance,
                                match_distance=ctx.config.identity.match_distance, photo=photo)


def _assign(ctx: HandlerContext, faces: list[_Face], forced: str, cents: dict[str, np.ndarray]) -> None:
    """Decide where each face goes; one face per identity (the best), the forced identity first."""
    rest = list(faces)
    if forced:
        pick = _pick_forced(rest, cents.get(forced), ctx.config.identity.match_distance)
        pick.to = forced
        rest.remove(pick)
    for f in rest:
        name, dist = nearest(cents, f.vec, exclude=forced)
        if name and dist <= ctx.config.identity.match_distance:
            f.to, f.distance = name, dist
        else:
            f.to, f.distance, f.near = POOL_FACESET, (dist if name else None), name
    # One face per identity: keep the best crop, the others are not taken from this photo.
    for name in sorted({f.to for f in rest} - {POOL_FACESET}):
        group = [f for f in rest if f.to == name]
        best = max(group, key=lambda f: (f.quality, -f.index))
        for f in group:
            if f is not best:
                f.to = ""


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


# --- Seeding with a photo already processed --------------------------------------------------------


class _PooledBox(NamedTuple):
    """What _pick_forced needs of a face waiting in the pool: the short side of its box on the photo."""

    short_side: float


def _move_crop(corpus: Path, src: str, dest: str, sha256: str) -> bool:
    """Move a pool crop into a faceset before the move is recorded (as crops are written before their events),
    so the face is there when its checks run; the Mover then finds the move done. Idempotent: a crop already
    at `dest` with these bytes was moved by an interrupted run. False when it cannot be moved."""
    s, d = corpus / src, corpus / dest
    if d.exists():
        return not s.exists() and sha256_file(d) == sha256
    if not s.is_file():
        return False
    d.parent.mkdir(parents=True, exist_ok=True)
    os.rename(s, d)
    fsync_dir(d.parent)
    fsync_dir(s.parent)
    return True


def _seed_from_pool(ctx: HandlerContext, e: ev.PhotoReceived) -> tuple[list[ev.Event], list[dict[str, Any]]]:
    """A processed photo forced into inbox/faceset_NNN/: its face waiting in the pool joins that faceset.

    The face is picked as for a new photo (most like the faceset, or the largest when seeding); one face per
    photo and identity, so nothing moves when the faceset holds a face of this photo already. Returns the events
    (FacesetCreated?, PoolFacesSeeded, FaceAdded, FaceRouted, ForcedFaceDistant?) and the photo's face summary.
    """
    forced, label = e.forced_faceset, f"{e.root}/{e.path}"
    rows = ctx.state.pool_faces_of_photo(e.sha256)
    its_facesets = sorted(set(ctx.state.facesets_with_photo(e.sha256)))
    if forced in its_facesets:  # one face per photo and identity
        ctx.log.info("photo already processed: a face of it is in " + forced, path=label, faceset=forced)
        return [], []
    if not rows:
        ctx.log.warning("photo already processed: nothing of it waits in the pool to seed " + forced,
                        path=label, faceset=forced, its_faces_in=its_facesets)
        return [], []
    faces = []
    for i, (_id, _path, _sha, quality, source, blob) in enumerate(rows):
        x1, y1, x2, y2 = json.loads(source).get("bbox") or (0.0, 0.0, 0.0, 0.0)
        faces.append(_Face(i, _PooledBox(min(x2 - x1, y2 - y1)), unit(np.frombuffer(blob, dtype="<f4")), quality))
    pick = _pick_forced(faces, centroids(ctx).get(forced), ctx.config.identity.match_distance)
    pick.to = forced
    face_id, pool_path, sha, quality, source, _blob = rows[pick.index]
    out: list[ev.Event] = []
    area = ctx.state.faceset_area(forced)
    if area is None:
        out.append(ev.FacesetCreated(faceset=forced, reason=f"seeded through inbox/{forced}/"))
    dest = face_path(area or "", forced, pool_path.rsplit("/", 1)[-1])
    if not _move_crop(ctx.config.corpus, pool_path, dest, sha):
        ctx.log.warning("pool crop cannot move into the faceset; left in the pool", path=label, crop=pool_path,
                        dest=dest)
        return [], []
    st = (ctx.config.corpus / dest).stat()
    dist = None if pick.distance is None else round(pick.distance, 4)
    out.append(ev.PoolFacesSeeded(
        faceset=forced, face_ids=(face_id,), photo_sha256=e.sha256, moves=((pool_path, dest),), check="seed",
        reason=f"{label} was processed before; dropped into inbox/{forced}/, its face waiting in the pool joins "
               f"{forced}", inputs={"distance": dist, "match_distance": ctx.config.identity.match_distance},
    ))
    out.append(ev.FaceAdded(path=dest, sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns,
                            source=json.loads(source)))
    out.append(ev.FaceRouted(path=dest, sha256=sha, faceset=forced, distance=dist, quality=quality,
                             embedding=pick.vec))
    if pick.far:
        out.append(_distant(ctx, e, pick, dest, sha))
    ctx.log.info("photo seeded from the pool", path=label, faceset=forced, crop=dest, distance=dist)
    return out, [{"to": forced, "crop": dest, "distance": dist, "quality": round(quality, 4),
                  "face": json.loads(source).get("face")}]


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


@dataclass(frozen=True)
class _Photo:
    src: Path  # where it was received
    data: bytes  # its bytes (sha256 as received)
    moved: str | None  # inbox-relative place an interrupted run already moved it to, if it did


@dataclass
class _Analysed:
    detected: int  # faces the detector found
    faces: list[_Face]  # those large enough to use
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
    seeded, seed_faces = _seed_from_pool(ctx, e) if e.forced_faceset else ([], [])
    dest = move_aside(src, ctx.config.inbox, processed_rel(e), e.sha256) or ""
    note = f"same bytes as {dup[0]}/{dup[1]}, already processed"
    if seed_faces:
        note += f"; its face waiting in the pool joined {e.forced_faceset}"
    ctx.log.info("photo routed", path=label, faces=len(seed_faces), to=[f["to"] for f in seed_faces],
                 dest=dest, note=note)
    return [*seeded, ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest,
                                       faces=tuple(seed_faces), note=note)]


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
        faces = [_Face(i, f, unit(f.embedding), crop_quality(image, f).total, measured=measure_source(image, f))
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
        _assign(ctx, found.faces, forced, centroids(ctx, exclude_prefix=prefix))
    lost = sum(1 for f in found.faces if not f.to)
    if lost:
        found.skipped["same_identity"] = lost
    # The crops' and the photo's folders, each fsynced once (not once per file) before the events name them.
    folders: set[Path] = set()
    written = _write_crops(ctx, image, [f for f in found.faces if f.to], prefix, forced, area, label, folders)

    crash_point("inbox:crops_written")
    dest = photo.moved or move_aside(photo.src, ctx.config.inbox, processed_rel(e), e.sha256, folders=folders) or ""
    fsync_dirs(folders)
    crash_point("inbox:photo_moved")
    summaries = _record_faces(ctx, e, written, dest, prefix, out)
    note = "" if summaries else ("no face found" if not found.detected else "no usable face")
    out.append(ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest, faces=tuple(summaries),
                                 skipped=found.skipped, note=note))
    # The photo's line of the story: how many faces were found, where each one went and why (its cosine distance
    # against [identity] match_distance), why any was left.
    match = ctx.config.identity.match_distance
    ctx.log.info("photo routed", path=label, found=found.detected, faces=len(summaries),
                 to=[s["to"] for s in summaries], distance=[s["distance"] for s in summaries], match_distance=match,
                 why=[_why_routed(f, forced, match) for f, *_rest in written], skipped=found.skipped, dest=dest,
                 **({"note": note} if note else {}))
    return out


def _why_routed(f: _Face, forced: str, match_distance: float) -> str:
    """Why a face went where it went, for the routing log line: its distance to the faceset it joined (or to the
    nearest one, for the pool) against the match distance; a forced face says it was forced."""
    dist = "" if f.distance is None else f"{f.distance:.4f}"
    if f.to == forced:
        return f"forced into {forced} by its inbox folder" + (f" (distance {dist})" if dist else "")
    if f.to == POOL_FACESET:
        if not f.near:
            return "pool: no faceset to match"
        return f"pool: nearest {f.near} at {dist} > match_distance {match_distance}"
    return f"{f.to} at {dist} <= match_distance {match_distance}"


Written = tuple[_Face, str, str, int, int]  # (face, crop path, sha256, size, mtime_ns)


def _write_crops(ctx: HandlerContext, image: np.ndarray, faces: list[_Face], prefix: str, forced: str, area: str,
                 label: str, folders: set[Path]) -> list[Written]:
    """Each assigned face's 512x512 crop, written where it was assigned (a faceset's faces/ or the pool), each
    file fsynced; their folders are added to `folders` for the caller to fsync."""
    from concurrent.futures import ThreadPoolExecutor

    from gpu_agent.crop import crop_face, encode_png

    def png(f: _Face) -> tuple[np.ndarray, bytes]:
        crop = crop_face(image, f.face)
        try:
            return crop, encode_png(crop)
        except ValueError as err:  # pragma: no cover - encoding a uint8 array does not fail
            raise RuntimeError(f"cannot encode crop of {label}") from err

    if len(faces) > 1:  # cut and encode on two threads (OpenCV lets go of the GIL): the same bytes, in order
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="crop-png") as pool:
            pngs = list(pool.map(png, faces))
    else:
        pngs = [png(f) for f in faces]
    written: list[Written] = []
    for f, (crop, data) in zip(faces, pngs):
        name = f"{prefix}{f.index}.png"
        if f.to == POOL_FACESET:
            rel = f"{POOL_DIR}/{name}"
        else:
            rel = face_path(area if f.to == forced else (ctx.state.faceset_area(f.to) or ""), f.to, name)
        done = _write_crop(ctx.config.corpus, rel, data, folders)
        ctx.recent_crops.put(done[0], crop)  # its pixels, for embed: the PNG need not be decoded again
        written.append((f, rel, *done))
    return written


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
                out.append(_distant(ctx, e, f, rel, sha))
        summaries.append({"to": f.to, "crop": rel, "distance": dist, "quality": round(f.quality, 4),
                          "face": f.index})
    return summaries


def _source_dict(e: ev.PhotoReceived, dest: str) -> dict[str, Any]:
    """A crop's source: the provenance, with `photo` where the photo is after routing (inbox-relative,
    under _processed/) and `received_as` the name it arrived under (`inbox/x.jpg`)."""
    received_as = e.provenance.get("photo", f"{e.root}/{e.path}")
    return {**e.provenance, "photo": dest or received_as, "received_as": received_as}


__all__ = ["route_one", "route_photo"]
