"""Atomic file writes: a temp file beside the target, fsync, rename, fsync the folder.

A reader (roop, a user, a crash) sees the old file or the new one, never half of one. The temp
name starts with '.' and contains '.tmp-' so the watcher ignores it.

mkstemp creates its file 0600 whatever the umask; the file is given the mode a plain open() would give
(0666 less the umask) before the rename, so roop running as another user can read the crops, manifests and
`.fsz` files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

from .faults import crash_point

_umask_lock = threading.Lock()


def _read_umask() -> int:
    """The process's umask, without changing it where the kernel tells it (Linux 4.7+: /proc/self/status).

    Elsewhere it is read the only way POSIX offers, by setting it and putting it back; under a lock, and
    only once per process (at import), so no other thread creates a file while it is briefly 0."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


# Read once at start: the umask of the process that writes the corpus (systemd's UMask=, a shell's umask).
UMASK = _read_umask()


def file_mode(umask: int | None = None) -> int:
    """The permission bits a new file gets from open(): 0666 less the umask (default: the process's)."""
    return 0o666 & ~(UMASK if umask is None else umask)


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
            if hasattr(os, "fchmod"):  # not on Windows, whose files have no such bits
                os.fchmod(f.fileno(), file_mode())  # mkstemp's 0600 would hide the file from other users
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
