"""Atomic file writes: a temp file beside the target, fsync, rename, fsync the folder.

A reader (roop, a user, a crash) sees the old file or the new one, never half of one. The temp
name starts with '.' and contains '.tmp-' so the watcher ignores it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .faults import crash_point


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> bool:
    """Write `data` to `path` atomically. Returns False (and writes nothing) when the bytes are unchanged.

    durable=False skips the fsyncs: for a batch of writes followed by one `os.sync()` (the renderer),
    which is far cheaper than two fsyncs per file and just as safe for files the log can regenerate."""
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)
    return True


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_temp_files(folder: Path, recursive: bool = True) -> int:
    """Remove our own leftover temp files (from a crash mid-write). They are never user data."""
    count = 0
    for p in (Path(folder).rglob if recursive else Path(folder).glob)(".*.tmp-*"):
        if p.is_file():
            p.unlink()
            count += 1
    return count
