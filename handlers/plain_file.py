"""Reading an inbox file without surprises: one descriptor, never blocking, never past a byte limit.

An inbox may hold anything a user or a program can put in a folder. A FIFO opened for reading blocks until a
writer comes; a socket or a device is not a photo and opening a device may act on it; a name may be given to
other bytes between two opens; a file may be any size. So a file is judged by lstat before it is opened (only a
regular file is), opened once without blocking and without following a link (unless asked), judged again by
fstat on that descriptor, and everything known of it (type, size, inode, bytes, sha256) comes from that one
descriptor; reading stops past the limit ([limits] max_file_bytes).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20  # bytes read at a time

# What a thing that is not a regular file is, in words (for events, logs and the checks that compare types).
_TYPES = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a unix socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symbolic link"}

# A file as it was when it was read: (st_dev, st_ino, st_size, st_mtime_ns). The same name with another
# identity is another file, or the same file written since.
Identity = tuple[int, int, int, int]


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def file_type(mode: int) -> str:
    """What a file of this st_mode is, in words ("a regular file", "a FIFO (named pipe)", ...)."""
    return "a regular file" if stat.S_ISREG(mode) else _TYPES.get(stat.S_IFMT(mode), "a special file")


class NotAFile(Exception):
    """The path names something other than a regular file; it was not opened (or not read)."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(f"{path}: {file_type(mode)}, not a regular file")
        self.mode = mode
        self.what = file_type(mode)


class TooLarge(Exception):
    """The file holds more than the limit; reading stopped there."""

    def __init__(self, path: Path, size: int, limit: int) -> None:
        super().__init__(f"{path}: {size} bytes or more, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


@contextmanager
def open_plain(path: Path, *, follow: bool = False) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """`path` opened for reading, with the fstat of that descriptor.

    NotAFile for anything but a regular file: judged by lstat (stat when `follow`) before opening, so a FIFO,
    socket or device is never opened, and again by fstat, for a name given to something else meanwhile.
    A symbolic link is followed only when `follow`. OSError as os.open raises it (gone, permission denied).
    """
    st = os.stat(path) if follow else os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAFile(path, st.st_mode)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile(path, st.st_mode)
        yield f, st


def chunks(f: BinaryIO, path: Path, limit: int) -> Iterator[bytes]:
    """The bytes of an open file from its start, in chunks; TooLarge once more than `limit` came (0: no limit),
    also when the file grows while it is read."""
    f.seek(0)
    seen = 0
    while chunk := f.read(CHUNK):
        seen += len(chunk)
        if limit and seen > limit:
            raise TooLarge(path, seen, limit)
        yield chunk


def sha256_of(f: BinaryIO, path: Path, limit: int) -> tuple[str, int]:
    """(sha256, size) of an open file's bytes, read once (TooLarge past `limit`)."""
    h = hashlib.sha256()
    size = 0
    for chunk in chunks(f, path, limit):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def read_plain(path: Path, limit: int, *, follow: bool = False) -> tuple[bytes, Identity]:
    """The bytes of the regular file at `path` and its identity, from one descriptor (see open_plain);
    TooLarge, without reading on, when its size (fstat) or what it gives is over `limit`."""
    with open_plain(path, follow=follow) as (f, st):
        if limit and st.st_size > limit:
            raise TooLarge(path, st.st_size, limit)
        return b"".join(chunks(f, path, limit)), identity(st)


def sha256_plain(path: Path, limit: int = 0) -> str:
    """The sha256 of the regular file at `path` (a link is not followed); NotAFile, TooLarge or OSError else."""
    with open_plain(path) as (f, _st):
        return sha256_of(f, path, limit)[0]


__all__ = ["Identity", "NotAFile", "TooLarge", "chunks", "file_type", "identity", "open_plain", "read_plain",
           "sha256_of", "sha256_plain"]
