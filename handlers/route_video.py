"""Route a received video: its sampled frames are routed like photos, a group at a time, then it moves to _processed/.

A video (handlers/video_frames.py VIDEO_SUFFIXES) arrives as a PhotoReceived like any photo; handlers/route_photo.py
hands it here. First the video is checked whole (every packet demuxed, nothing decoded: a clip cut short is moved to
_rejected/truncated/, one FFmpeg cannot open to _rejected/unreadable/, with the reason). Then its frames are sampled
(handlers/video_frames.py: every [video] sample_s and on scene changes) and each sampled frame goes the photo's way:
faces found, assigned (handlers/face_assign.py), cropped (handlers/crops.py), sent to a faceset or the pool. Frames of
one clip showing one person all join that person's faceset, where the near-dup check (handlers/near_dup.py) keeps the
best by crop quality (the frame's sharpness and face size) and prunes the others into _dropped/: one clip gives a
faceset one face per look, not one per frame. In the pool, a video counts as one photo (its faces' photo_sha256 is the
video's), so one clip alone never makes a new person.

A face's source names the frame: `{"video": {"sha256", "name", "t"}}` beside the photo's keys (`photo` is the name
the video arrived under); its crop is `<video sha256[:12]>_t<milliseconds>_<face>.png`.

Resumable: the frames are routed [video] chunk_frames at a time; each group's events end with a VideoFramesRouted
(the time of its last frame), appended with the dispatcher's position in one transaction, and that event brings
the next group (continue_video). A kill -9 mid-group leaves crops whose events were not recorded: the group is routed
again from its first frame, writing the same bytes to the same names, so every face is recorded once. The video's
own crops never steer its routing (their centroid keys are left out), so a group routes the same after a restart.
A video is streamed, never read whole; one progress line is logged per group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from state import events as ev
from state.atomic import fsync_dirs
from state.eventlog import StoredEvent
from state.faults import crash_point
from state.layout import faceset_name_problem

from .centroids import centroids
from .context import HandlerContext
from .crops import write_crops
from .face_assign import assign, routed_faces
from .inbox_files import processed_rel, rejected_rel
from .photo_file import aside, moved_earlier, os_rel, read_photo, since_written
from .plain_file import NotAFile, TooLarge, sha256_plain
from .video_frames import Frame, VideoUnusable, check_whole, frames


def route_video(ctx: HandlerContext, e: ev.PhotoReceived, label: str) -> list[ev.Event]:
    """A received video's first group of frames (after its checks), or its verdict."""
    located = _locate(ctx, e, label, hashed=True)
    if isinstance(located, list):
        return located
    read_from, src = located
    folder = e.path.split("/", 1)[0] if e.root == "inbox" and "/" in e.path else ""
    problem = faceset_name_problem(folder)
    if problem:
        return _reject(ctx, e, src, "bad_seed_folder", f"{label}: inbox/{folder} is not a seeding folder: {problem}")
    dup = ctx.state.processed_photo_with(e.sha256)
    if dup:
        dest, left = aside(ctx, e, src, processed_rel(e), label)
        note = f"same bytes as {dup[0]}/{dup[1]}, already processed"
        ctx.log.info("video routed", path=label, frames=0, faces=0, dest=dest, note=note)
        return [ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest, note=note, left=left)]
    try:
        info = check_whole(read_from)
    except VideoUnusable as err:
        age = _written_ago(ctx, e, read_from)
        if age is not None and read_from == src:  # maybe still being copied in: not a verdict yet
            ctx.log.info("video deferred: not whole yet", path=label, age_s=round(age, 1), error=str(err))
            return [ev.PhotoDeferred(path=e.path, root=e.root, sha256=e.sha256, reason="incomplete",
                                     error=f"{label}: {err}", age_s=round(age, 3))]
        return _reject(ctx, e, src, err.reason, f"{label}: {err}")
    ctx.log.info("video started", path=label, duration_s=round(info.duration_s, 3), width=info.width,
                 height=info.height, codec=info.codec, sample_s=ctx.config.video.sample_s)
    out: list[ev.Event] = []
    if e.forced_faceset and ctx.state.faceset_area(e.forced_faceset) is None:
        out.append(ev.FacesetCreated(faceset=e.forced_faceset, reason=f"seeded through inbox/{e.forced_faceset}/"))
    return out + _group(ctx, e, read_from, src, None, info.duration_s, label)


def continue_video(ctx: HandlerContext, stored: Sequence[StoredEvent[ev.VideoFramesRouted]]) -> list[ev.Event]:
    """The next group of frames of each video whose last group was recorded (or its end: photo_processed)."""
    out: list[ev.Event] = []
    for se in stored:
        p = se.event
        e = p.received()
        label = f"{e.root}/{e.path}"
        located = _locate(ctx, e, label, hashed=False)
        if isinstance(located, list):
            out.extend(located)
            continue
        out.extend(_group(ctx, e, *located, p, p.duration_s, label))
    return out


# --- Where the video is ------------------------------------------------------------------------------


def _locate(ctx: HandlerContext, e: ev.PhotoReceived, label: str, *, hashed: bool) -> tuple[Path, Path] | list[ev.Event]:
    """(where to read the video from, the name it is moved by), or its verdict. Links not followed, files recorded
    unread and unknown roots get the photo's verdicts (photo_file.read_photo, which reads nothing for them). The
    first group checks the bytes by their sha256 (streamed); later groups by the file's being there, as it was
    (the same size). A video an interrupted run already moved aside is found there by its sha256."""
    root_dir = ctx.config.inbox if e.root == "inbox" else ctx.config.staging if e.root == "staging" else None
    if e.link_problem or e.unread or root_dir is None:
        verdict = read_photo(ctx, e, label)
        assert isinstance(verdict, list)  # these verdicts never read a file
        return verdict
    src = root_dir / os_rel(e)
    try:
        if hashed:
            if sha256_plain(src if not src.is_symlink() else src.resolve()) == e.sha256:
                return src, src
        elif src.exists() and (not e.size or src.stat().st_size == e.size):
            return src, src
    except (OSError, NotAFile, TooLarge):
        pass  # gone or replaced: looked for where an interrupted run moved it
    moved = moved_earlier(ctx, e, label, "video")
    if isinstance(moved, list):
        return moved
    return ctx.config.inbox / moved, src  # moved to _processed/ by a run killed before it recorded so


def _written_ago(ctx: HandlerContext, e: ev.PhotoReceived, path: Path) -> float | None:
    """Seconds since the inbox video was last written, while under [limits] incomplete_grace_s (as for photos)."""
    try:
        mtime_ns: int | None = os.stat(path).st_mtime_ns
    except OSError:
        mtime_ns = None
    return since_written(ctx, e, mtime_ns)


def _reject(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, reason: str, error: str) -> list[ev.Event]:
    """The video moved to _rejected/<reason>/ (by its name: it is never read whole), with its reason."""
    label = f"{e.root}/{e.path}"
    dest, left = aside(ctx, e, src, rejected_rel(e, reason), label)
    ctx.log.warning("video rejected", path=label, reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error,
                             left=left)]


# --- One group of frames ----------------------------------------------------------------------------


def _group(ctx: HandlerContext, e: ev.PhotoReceived, read_from: Path, src: Path,
           before: ev.VideoFramesRouted | None, duration_s: float, label: str) -> list[ev.Event]:
    """Route the next [video] chunk_frames sampled frames (after `before`'s); then the VideoFramesRouted that brings
    the next group, or, at the end of the video (or [video] max_frames), the video moved to _processed/."""
    settings = ctx.config.video
    done = before.frames if before else 0
    faces_done = before.faces if before else 0
    room = min(settings.chunk_frames, settings.max_frames - done)
    out: list[ev.Event] = []
    summaries: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    cents = centroids(ctx, exclude_prefix=f"{e.sha256[:12]}_")  # its own crops never steer it (see the docstring)
    area = ctx.state.faceset_area(e.forced_faceset) or "" if e.forced_faceset else ""
    folders: set[Path] = set()
    pending: list[Frame] = []
    routed, last_t, more = 0, before.t if before else -1.0, False
    stream = frames(read_from, settings, after=before.t if before else None)
    for frame in stream:
        if routed + len(pending) >= room:
            more = done + routed < settings.max_frames  # a frame past the group: another group follows
            break
        pending.append(frame)
        if len(pending) >= max(1, ctx.config.analysis_batch):
            routed += _route_frames(ctx, e, pending, cents, area, folders, out, summaries, skipped, label)
            last_t, pending = pending[-1].t, []
    if pending:
        routed += _route_frames(ctx, e, pending, cents, area, folders, out, summaries, skipped, label)
        last_t = pending[-1].t
    stream.close()
    fsync_dirs(folders)
    frames_done, faces_now = done + routed, faces_done + len(summaries)
    ctx.log.info("video progress", path=label, t=last_t, duration_s=round(duration_s, 3), frames=frames_done,
                 faces=faces_now)
    if more:
        return [*out, ev.VideoFramesRouted(path=e.path, root=e.root, sha256=e.sha256, size=e.size, t=last_t, frames=frames_done,
                                           faces=faces_now, duration_s=round(duration_s, 3), path_hex=e.path_hex,
                                           forced_faceset=e.forced_faceset, provenance=dict(e.provenance))]
    crash_point("video:before_move")
    dest, left = aside(ctx, e, src, processed_rel(e), label)
    capped = frames_done >= settings.max_frames
    note = (f"video: {frames_done} frames sampled of {duration_s:.1f} s, {faces_now} faces"
            + (f" (stopped at [video] max_frames = {settings.max_frames})" if capped else ""))
    ctx.log.info("video routed", path=label, frames=frames_done, faces=faces_now, dest=dest, note=note)
    return [*out, ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest, faces=tuple(summaries),
                                    skipped=skipped, note=note, left=left)]


def _detect(ctx: HandlerContext, images: list[np.ndarray]) -> list[list[Any]]:
    """The faces of each frame, in one engine call (the in-process engine takes pixels, the agent PNG bytes)."""
    engine = ctx.models.face_engine
    arrays = getattr(engine, "analyze_arrays", None)
    if arrays is not None:
        return list(arrays(images, pad=True))
    from gpu_agent.crop import encode_png

    return list(engine.analyze([encode_png(im) for im in images], pad=True))


def _route_frames(ctx: HandlerContext, e: ev.PhotoReceived, batch: list[Frame], cents: dict[str, np.ndarray],
                  area: str, folders: set[Path], out: list[ev.Event], summaries: list[dict[str, Any]],
                  skipped: dict[str, int], label: str) -> int:
    """Route a few frames as photos: find their faces, assign them, write the crops, record them."""
    import cv2

    from gpu_agent.errors import ImageDecodeError

    from .route_photo import record_faces

    try:
        found = _detect(ctx, [f.image for f in batch])
    except (ImageDecodeError, cv2.error, ValueError) as err:  # pixels the models cannot work on: passed over
        ctx.log.warning("video frames passed over", path=label, t=[f.t for f in batch], error=str(err))
        skipped["unprocessable_frames"] = skipped.get("unprocessable_frames", 0) + len(batch)
        return len(batch)
    name = e.provenance.get("photo", f"{e.root}/{e.path}")
    for frame, detected in zip(batch, found):
        faces = routed_faces(frame.image, detected, ctx.config.identity.min_face_px)
        if len(faces) < len(detected):
            skipped["small"] = skipped.get("small", 0) + len(detected) - len(faces)
        if faces:
            assign(ctx, faces, e.forced_faceset, cents)
        ms = int(round(frame.t * 1000))
        prefix = f"{e.sha256[:12]}_t{ms:08d}_"
        written = write_crops(ctx, frame.image, [f for f in faces if f.to], prefix, e.forced_faceset, area, label,
                              folders)
        crash_point(f"video:frame:{ms}")
        video = {"sha256": e.sha256, "name": name, "t": frame.t, **({"scene_change": True} if frame.scene else {})}
        summaries.extend(record_faces(ctx, e, written, "", prefix, out, extra={"video": video}))
    return len(batch)


__all__ = ["continue_video", "route_video"]
