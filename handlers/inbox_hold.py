"""A received inbox photo held under a private name while its verdict is carried out.

A name is not a file. Between the moment the router reads a photo and the moment it moves it aside, a user or
a sync tool may write new bytes over it, in place or by renaming another file over its name; a move by name
then took the new bytes to _processed/ under the old photo's record, and the new version was never received.
So before anything irreversible (its crops written, any move), the router takes the photo out of the inbox with
one rename to inbox/.facesetd-hold/<key>. A rename is atomic: whatever the name held at that instant is now the
router's, and the name is free for whatever comes next (the watcher reports that as a new arrival). Then it checks
that what it took is what it read: the same inode, size and mtime, and the same sha256, read again from the
holding name. Only then does the photo move on to _processed/ or _rejected/, and only from there.

What the name held instead (a newer version, a folder) is put back where it was, never over anything: beside
it under a free name when a newer file took the name meanwhile. The watcher (or the next listing) receives it
as the new arrival it is, and the photo that was read is recorded as replaced (`photo_rejected`, vanished).
A crash while a photo is held leaves it there; the next run of its receipt finds it by the same key.

Not held: symbolic links (the link itself is moved, and a relative one would point elsewhere from the holding
folder) and the daemon's own staging folder (Immich originals, written by the poller and by nobody else).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from state import events as ev
from state import names

from .plain_file import Identity, NotAFile, TooLarge, identity, open_plain, sha256_of

HOLD_DIR = ".facesetd-hold"  # under the inbox: hidden, so neither the watcher nor a listing takes it for a photo

IsIt = Callable[[Path], bool]  # whether the file now at a path is the one decided on


def hold_path(inbox: Path, e: ev.PhotoReceived) -> Path:
    """Where this receipt's file is held: the same for every run of the same receipt (a rerun after a crash)."""
    key = "\0".join((e.root, e.path, e.path_hex, e.sha256, str(e.size), e.unread))
    return inbox / HOLD_DIR / hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Taken:
    """What `take` did: the file read is at the holding name (`held`), or the name held something else, now
    put back at `put_back` (inbox-relative), or nothing (both false: gone)."""

    held: bool
    put_back: str = ""


def take(inbox: Path, rel: str, hold: Path, is_it: IsIt) -> Taken:
    """Move what inbox/`rel` names to `hold` with one rename, and keep it only when `is_it(hold)`.

    OSError (other than the name being gone) when the rename cannot be made, e.g. a folder the daemon may not
    write: the caller moves the photo by name then, as before holding existed.
    """
    hold.parent.mkdir(exist_ok=True)
    try:
        os.rename(inbox / rel, hold)
    except FileNotFoundError:
        return Taken(False)
    if is_it(hold):
        return Taken(True)
    return Taken(False, put_back(inbox, hold, rel))


def tidy(inbox: Path) -> None:
    """Remove the holding folder once nothing is held (the inbox shows only what users put there, and the daemon's
    _processed/ and _rejected/); it is made again for the next photo."""
    with contextlib.suppress(OSError):  # something is held (a crash left it), or it is gone already
        os.rmdir(inbox / HOLD_DIR)


def put_back(inbox: Path, hold: Path, rel: str) -> str:
    """Move the held file back to inbox/`rel`, or beside it under a free name (`x_1.jpg`) when something took
    that name meanwhile; never over anything. Returns where it went, inbox-relative."""
    for cand in names.numbered(rel):
        target = inbox / cand
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            rename_noreplace(hold, target)
        except FileExistsError:
            continue
        tidy(inbox)
        return cand
    return ""  # pragma: no cover - the generator never ends


def same_bytes(read: Identity, sha256: str, limit: int) -> IsIt:
    """`is_it` for a photo that was read: the same inode, size and mtime as when read, and the same sha256
    (read again: a rewrite within the file system's timestamp granularity keeps the mtime)."""
    def is_it(held: Path) -> bool:
        try:
            with open_plain(held) as (f, st):
                return identity(st) == read and sha256_of(f, held, limit)[0] == sha256
        except (OSError, NotAFile, TooLarge):
            return False
    return is_it


def kind_is(kind: Callable[[int], bool], size: int | None) -> IsIt:
    """`is_it` for a file recorded unread (too large, not a regular file): its st_mode passes `kind` (lstat),
    and its size is `size` when given."""
    def is_it(held: Path) -> bool:
        try:
            st = os.lstat(held)
        except OSError:
            return False
        return kind(st.st_mode) and (size is None or st.st_size == size)
    return is_it


def unchanged(held: Path, read: Identity) -> bool:
    """Whether the held file is still as it was read (a writer that opened it before it was taken may write on)."""
    try:
        return identity(os.lstat(held)) == read
    except OSError:
        return False


# --- rename(2) that never replaces ------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _renameat2() -> Callable[..., int] | None:
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a C library without it (glibc before 2.28)
        return None
    return fn


_RENAMEAT2 = _renameat2()


def rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) `src` to `dst`, FileExistsError when `dst` exists: renameat2(RENAME_NOREPLACE) where the kernel
    and file system have it; else a hard link and an unlink (link(2) never replaces); else, for what cannot be
    linked, a look and a rename (the only fallback with a window)."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if not os.path.isdir(src) or os.path.islink(src):
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links here: look, then rename
        else:
            os.unlink(src)
            return
    if names.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


__all__ = ["HOLD_DIR", "IsIt", "Taken", "hold_path", "kind_is", "put_back", "rename_noreplace", "same_bytes", "take",
           "tidy", "unchanged"]
