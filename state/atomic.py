"""Atomic file writes: a temp file beside the target, fsync, rename, fsync the folder.

A reader (roop, a user, a crash) sees the old file or the new one, never half of one. The temp
name starts with '.' and contains '.tmp-' so the watcher ignores it.

mkstemp creates its file 0600 whatever the umask; the file is given the mode a plain open() would give
(0666 less the umask) before the rename, so roop running as another user can read the crops, manifests and
`.fsz` files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from .faults import crash_point
from .names import TEMP_RANDOM, temp_prefix

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


def atomic_write(path: Path, data: bytes, *, durable: bool = True, folders: set[Path] | None = None) -> bool:
    """Write `data` to `path` atomically. Returns False (and writes nothing) when the bytes are unchanged.

    durable=False skips the fsyncs: for a batch of writes made durable together by a `SyncSet` (the
    renderer), far cheaper than two fsyncs per file and just as safe for files the log can regenerate.
    `folders` (with durable=True): the file is fsynced, its folder is added to the set instead; the caller
    fsyncs each folder once (`fsync_dirs`) for all the files of a batch, before anything names them."""
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # A long target name (a faceset's .fsz) is cut in its temp name: '.<name>.tmp-XXXXXXXX' within NAME_MAX.
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # not on Windows, whose files have no such bits
                os.fchmod(f.fileno(), file_mode())  # mkstemp's 0600 would hide the file from other users
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _put_in_place(Path(tmp), path)
    if durable:
        if folders is None:
            fsync_dir(path.parent)
        else:
            folders.add(path.parent)
    return True


def link_or_write(source: Path, path: Path, data: bytes) -> bool:
    """Make `path` the same file as `source` (whose bytes are `data`): a hard link, put in place atomically.

    Returns False (and changes nothing) when `path` already is `source` (the same inode). Where a hard link
    cannot be made (a file system without them, another device, too many links), `data` is written as a
    copy instead, with `atomic_write`'s rules. Never durable: the caller syncs (see `SyncSet`)."""
    path = Path(path)
    try:
        if os.path.samefile(source, path):
            return False
    except FileNotFoundError:
        pass
    while True:
        # the temp pattern the sweeper knows, within NAME_MAX
        tmp = path.parent / f"{temp_prefix(path.name)}{uuid.uuid4().hex[:TEMP_RANDOM]}"
        try:
            os.link(source, tmp)
            break
        except FileExistsError:
            continue
        except (OSError, NotImplementedError):  # EPERM, EXDEV, EMLINK, ENOTSUP ...: store a copy
            return atomic_write(path, data, durable=False)
    _put_in_place(tmp, path)
    return True


def _put_in_place(tmp: Path, path: Path) -> None:
    """Rename the finished temp file over `path` (atomic); on any failure the temp file is removed."""
    try:
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _find_syncfs() -> Callable[[int], None] | None:
    """syncfs(2): flush one file system (the one holding the descriptor), not all of them as sync(2) does.

    os.syncfs where Python has it, else the C library's (Linux, glibc 2.14+ or musl), else None."""
    native = getattr(os, "syncfs", None)
    if native is not None:
        return native  # type: ignore[no-any-return]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return syncfs


_syncfs = _find_syncfs()


class SyncSet:
    """The files and folders a batch of `durable=False` writes touched, made durable together by `sync()`.

    With syncfs(2) (Linux): one call per file system the folders are on, which also covers files a batch
    found unchanged but an earlier process, killed before its own sync, may have left unflushed. Elsewhere:
    an fsync of every file added (written or not, for the same reason), then of every folder."""

    def __init__(self) -> None:
        self.files: set[Path] = set()
        self.folders: set[Path] = set()

    def add(self, path: Path) -> None:
        path = Path(path)
        self.files.add(path)
        self.folders.add(path.parent)

    def add_folder(self, folder: Path) -> None:
        self.folders.add(Path(folder))

    def sync(self) -> None:
        """Raises OSError when the kernel reports that written data did not reach the disk."""
        files, folders = sorted(self.files), sorted(self.folders)
        if _syncfs is not None:
            devices: dict[int, Path] = {}
            for folder in folders:
                with contextlib.suppress(FileNotFoundError):
                    devices.setdefault(os.stat(folder).st_dev, folder)
            for folder in devices.values():
                fd = os.open(folder, os.O_RDONLY)
                try:
                    _syncfs(fd)
                finally:
                    os.close(fd)
        else:
            for file in files:
                fsync_path(file)
            for folder in folders:
                fsync_dir(folder)
        self.files.clear()
        self.folders.clear()


def fsync_path(path: Path) -> None:
    """fsync a file already written and closed (a missing one is skipped: nothing of it to flush)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(folders: set[Path]) -> None:
    """fsync each folder once (in name order), then forget them: the renames and creations of a batch made
    durable together."""
    for folder in sorted(folders):
        fsync_dir(folder)
    folders.clear()


def sweep_temp_files(folder: Path, recursive: bool = True) -> int:
    """Remove our own leftover temp files (from a crash mid-write). They are never user data."""
    count = 0
    for p in (Path(folder).rglob if recursive else Path(folder).glob)(".*.tmp-*"):
        if p.is_file():
            p.unlink()
            count += 1
    return count
