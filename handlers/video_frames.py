"""A video's frames, streamed: which frames of a clip are routed like photos, and the check that it is whole.

PyAV (FFmpeg's own demuxers and decoders, wheels with FFmpeg inside) reads the file packet by packet and decodes one
frame at a time, each with its time: a 2 GB clip is never in memory, only the frame being looked at and a 32x32
grayscale thumbnail of the one before it. PyAV is imported here, lazily, so nothing else pays for it.

Which frames are sampled is a function of the video alone (the same clip gives the same frames, so `rebuild` writes
the same manifests): a frame is sampled when [video] sample_s has passed since the last sampled one, or on a scene
change (the mean absolute difference of its thumbnail from the previous decoded frame's is above [video]
scene_change), at most [video] max_frames of them. `frames(path, settings, after=t)` continues after the sampled frame
at time t: it seeks to the key frame before t and decodes up to t, so the previous frame and the last sampled time
are the ones an uninterrupted run had (handlers/route_video.py resumes there after a kill -9).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and av are imported where frames are decoded: the config and the inbox import this module
    import numpy as np

# The file names taken as videos (lower-cased suffix); everything else in the inbox is a photo.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
# A video whose packets end this many seconds before the duration its header declares is cut short (truncated).
_TRUNCATED_SLACK_S = 1.0
# The thumbnail the scene measure compares, in pixels per side (small: cheap, and blind to noise and jitter).
_THUMB_PX = 32
# How the start of a file says "video container" (ISO BMFF: mp4/mov; EBML: mkv/webm), for a file that will not open.
_CONTAINER_MAGIC = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"))


@dataclass(frozen=True)
class VideoSettings:
    # seconds between two sampled frames of a video (each sampled frame is routed like a photo).
    sample_s: float = field(default=1.0, metadata={"range": (0.04, 3600)})
    # a frame is also sampled when its 32x32 grayscale thumbnail differs from the previous frame's by more than this (mean absolute difference, 0-1): a scene change.
    scene_change: float = field(default=0.15, metadata={"range": (0.0, 1.0)})
    # most frames sampled from one video (the rest of a long clip is left: its faces repeat).
    max_frames: int = field(default=600, metadata={"range": (1, None)})
    # sampled frames routed and recorded together; a video killed mid-way resumes after the last recorded group.
    chunk_frames: int = field(default=16, metadata={"range": (1, 1000)})
    # bytes; an inbox video larger than this is refused as too_large before it is read (videos are streamed, never loaded whole).
    max_file_bytes: int = field(default=8 * 1024**3, metadata={"range": (1, None)})


def is_video(path: str) -> bool:
    """Whether an inbox path names a video (by its suffix)."""
    return path.lower().endswith(VIDEO_SUFFIXES)


class VideoUnusable(Exception):
    """A video that cannot be used: `reason` is its _rejected/<reason>/ folder (truncated, unreadable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    t: float  # seconds from the start of the video (the frame's presentation time)
    image: np.ndarray  # BGR pixels, as cv2 decodes a photo
    scene: bool  # sampled for a scene change (not for the interval)


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float  # as its header declares (or as its packets cover, when it declares none)
    width: int
    height: int
    codec: str


def _looks_like_a_video(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return any(head[at:at + len(magic)] == magic for at, magic in _CONTAINER_MAGIC)


def _open(path: Path):  # type: ignore[no-untyped-def]  # av's container, av imported lazily
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        if _looks_like_a_video(path):
            raise VideoUnusable("truncated", f"starts like a video but cannot be opened, cut short or damaged"
                                f" (its index is missing): {err.strerror or err}") from err
        raise VideoUnusable("unreadable", f"not a video FFmpeg can open: {err.strerror or err}") from err
    if not container.streams.video:
        container.close()
        raise VideoUnusable("unreadable", "no video stream in the file")
    return container


def check_whole(path: Path) -> VideoInfo:
    """Read every packet of the video stream (demux only, nothing decoded: bounded memory) and check that they reach
    the duration the header declares; VideoUnusable("truncated"|"unreadable") otherwise."""
    import av

    with _open(path) as container:
        stream = container.streams.video[0]
        declared = container.duration / 1_000_000 if container.duration else 0.0
        end, packets = 0.0, 0
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.time_base is None:
                    continue
                packets += 1
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        except av.error.FFmpegError as err:
            raise VideoUnusable("truncated", f"its packets stop after {end:.2f} s: {err.strerror or err}") from err
        if not packets:
            raise VideoUnusable("truncated" if declared else "unreadable",
                                f"no frame in its video stream (its header declares {declared:.2f} s)")
        if declared and end < declared - _TRUNCATED_SLACK_S:
            raise VideoUnusable("truncated", f"its frames stop at {end:.2f} s of the {declared:.2f} s its header"
                                " declares: cut short")
        ctx = stream.codec_context
        return VideoInfo(declared or end, int(ctx.width or 0), int(ctx.height or 0), str(ctx.name or ""))


def _thumb(image: np.ndarray) -> np.ndarray:
    import cv2
    import numpy as np

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, (_THUMB_PX, _THUMB_PX), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def frames(path: Path, settings: VideoSettings, after: float | None = None) -> Generator[Frame, None, None]:
    """The sampled frames of the video, in time order, one decoded at a time; those after time `after` (a sampled
    frame's time) when given. A frame that does not decode is passed over (the clip was checked whole before)."""
    import av
    import numpy as np

    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if after is not None and stream.time_base:
            container.seek(int(after / stream.time_base), stream=stream, backward=True, any_frame=False)
        last: float | None = after
        previous: np.ndarray | None = None
        try:
            for decoded in container.decode(stream):
                if decoded.pts is None or decoded.time_base is None:
                    continue
                t = round(float(decoded.pts * decoded.time_base), 3)
                image = decoded.to_ndarray(format="bgr24")
                thumb = _thumb(image)
                scene = previous is not None and float(np.abs(thumb - previous).mean()) > settings.scene_change
                previous = thumb
                if after is not None and t <= after:
                    continue  # before the resume point: decoded only to know the frame before it
                due = last is None or t >= last + settings.sample_s - 1e-6
                if due or scene:
                    last = t
                    yield Frame(t, image, scene and not due)
        except av.error.FFmpegError:
            return  # damage past the check: the frames before it were routed


__all__ = ["Frame", "VideoInfo", "VideoSettings", "VideoUnusable", "check_whole", "frames", "is_video"]
