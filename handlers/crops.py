"""A photo's face crops on disk: each 512x512 PNG written atomically and fsynced before the events that name it,
and a pool crop moved into a faceset ahead of its recorded move (handlers/pool_seed.py).

Crop names derive from the photo's hash, so a rerun after a crash writes the same bytes to the same names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from state.atomic import atomic_write, fsync_dir
from state.layout import POOL_DIR, face_path
from state.scan import sha256_file

from .context import HandlerContext
from .face_assign import POOL_FACESET, RoutedFace


def write_crop(corpus: Path, rel: str, png: bytes, folders: set[Path]) -> tuple[str, int, int]:
    """Write the crop atomically (no-op with the same bytes there) and fsync it, its folder added to `folders`
    (fsynced once for all of a photo's crops); returns (sha256, size, mtime_ns)."""
    atomic_write(corpus / rel, png, folders=folders)
    st = (corpus / rel).stat()
    return hashlib.sha256(png).hexdigest(), len(png), st.st_mtime_ns


Written = tuple[RoutedFace, str, str, int, int]  # (face, crop path, sha256, size, mtime_ns)


def write_crops(ctx: HandlerContext, image: np.ndarray, faces: list[RoutedFace], prefix: str, forced: str, area: str,
                 label: str, folders: set[Path]) -> list[Written]:
    """Each assigned face's 512x512 crop, written where it was assigned (a faceset's faces/ or the pool), each
    file fsynced; their folders are added to `folders` for the caller to fsync."""
    from concurrent.futures import ThreadPoolExecutor

    from gpu_agent.crop import crop_face, encode_png

    def png(f: RoutedFace) -> tuple[np.ndarray, bytes]:
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
        done = write_crop(ctx.config.corpus, rel, data, folders)
        ctx.recent_crops.put(done[0], crop)  # its pixels, for embed: the PNG need not be decoded again
        written.append((f, rel, *done))
    return written


def move_crop(corpus: Path, src: str, dest: str, sha256: str) -> bool:
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
