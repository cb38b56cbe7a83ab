"""Moving a received photo aside inside the inbox: to _processed/ once handled, to _rejected/<reason>/ when it
cannot be. Idempotent: a photo already moved (by a run interrupted before its events were recorded) is found again
by its hash (or, for a link not followed, by where it points).

Every destination fits the kernel's limits: each name within NAME_MAX bytes, the whole path within PATH_MAX (a photo
deep in the inbox goes to _processed/<its name> when _processed/<its path> would be longer). A photo whose own
folder does not let it go (not writable by facesetd, read-only, immutable) stays where it is (`LeftInPlace`): it is
never copied, so no restart can add a copy; and a folder facesetd moves photos or crops into that is something else
(a plain file named _processed) holds the photos back until it is a folder again (`blocked_folder`).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from state import events as ev
from state import names
from state.atomic import fsync_dirs
from state.layout import INBOX_PROCESSED, INBOX_REJECTED, POOL_DIR, QUARANTINE_AREAS

from .plain_file import NotAFile, sha256_plain

PROCESSED, REJECTED = INBOX_PROCESSED, INBOX_REJECTED
# Why a file goes to inbox/_rejected/<reason>/: no decoder reads it; decoded, but the models cannot use it;
# its header claims more pixels than [limits] max_pixels, or its size is over [limits] max_file_bytes (never
# decoded, or never read); a video cut short (handlers/video_frames.py); a FIFO, socket or device (never opened); it sits in a folder named like a seeding folder
# whose faceset number is past state.layout.FACESET_DIGITS_MAX; handling it failed with an unexpected error (a dead
# letter, handlers/dead_letter.py: `facesetd retry` moves it back).
REJECT_REASONS = ("unreadable", "unprocessable", "too_large", "truncated", "not_a_file", "bad_seed_folder", "failed")
# Bytes kept free when a destination is measured against PATH_MAX: a collision's "_12" may lengthen it.
_NUMBER_ROOM = 8
# The errors of a rename that mean the photo's own folder keeps it (a rename needs write permission on both
# folders: the destination is ours, so it is the source's); EXDEV alone means "copy, then remove".
_KEPT_BY_ITS_FOLDER = (errno.EACCES, errno.EPERM, errno.EROFS)
# What goes into each folder facesetd moves files into, for the line that says one is blocked.
_HOLDS = {PROCESSED: "handled photos", REJECTED: "rejected files", POOL_DIR: "the crops of faces waiting for their"
          " person", **{area: "quarantined facesets" for area in QUARANTINE_AREAS}}


class LeftInPlace(Exception):
    """The photo cannot leave its folder (facesetd may not write there): it stays where it was received."""


def _fitted(inbox: Path, rel: str) -> str:
    """rel, or, where inbox/rel would be past PATH_MAX, our folder with the photo's name alone (_processed/<name>,
    _rejected/<reason>/<name>): a path past the kernel's limit can be neither made nor found again."""
    if names.fits_path_max(f"{inbox}/{names.fit_path(rel)}{'x' * _NUMBER_ROOM}"):
        return rel
    parts = rel.split("/")
    return "/".join([*parts[: 2 if parts[0] == REJECTED else 1], parts[-1]])


def _free_names(inbox: Path, rel: str) -> Iterator[str]:
    """rel (fitted under PATH_MAX), then with _1, _2 ... before the extension; every component within NAME_MAX
    bytes (a stem is shortened rather than a name refused: a 255-byte name has no room for "_1"). A folder of rel
    below _processed/ or _rejected/<reason>/ that is a file on disk (a photo of that name moved aside earlier, its
    name now a folder in the inbox) becomes its first numbered name that is a folder or free (x_1.jpg/)."""
    rel = _fitted(inbox, rel)
    parts = rel.split("/")
    keep = 2 if parts[0] == REJECTED else 1  # the area's own folders: never renamed here
    done = "/".join(parts[:keep])
    for part in parts[keep:-1]:
        for cand in names.numbered(part, "_"):
            path = inbox / f"{done}/{cand}"
            if not names.lexists(path) or (path.is_dir() and not path.is_symlink()):
                break
        done += f"/{cand}"
    return names.numbered(f"{done}/{parts[-1]}" if len(parts) > keep else rel, "_")


def blocked_folder(inbox: Path, corpus: Path) -> str:
    """One line saying which folder facesetd moves files into is not a folder (a plain file, a dangling link), and
    what to do; "" when none is. Photos wait while one is: their moves could not be made."""
    ours = [(inbox, "inbox", PROCESSED), (inbox, "inbox", REJECTED),
            *((inbox, "inbox", f"{REJECTED}/{reason}") for reason in REJECT_REASONS),
            *((corpus, "corpus", area) for area in (POOL_DIR, *QUARANTINE_AREAS))]
    for root, label, sub in ours:
        path = root / sub
        if names.lexists(path) and not path.is_dir():
            what = _HOLDS.get(sub.split("/")[0], "")
            return (f"{label}/{sub} is not a folder: facesetd moves {what} into it; move that file away (photos wait"
                    " in the inbox until then)")
    return ""


def _holds(target: Path, sha256: str, link: str, matches: Callable[[Path], bool] | None = None) -> bool:
    """Whether `target` is the photo moved there earlier: the same link (a link not followed is known by
    where it points), else `matches` (a file moved unread), else the same bytes."""
    if link:
        return target.is_symlink() and names.link_target(target) == link
    if matches is not None:
        return matches(target)
    try:
        return bool(sha256) and sha256_plain(target) == sha256
    except (OSError, NotAFile):  # a link, a folder, a FIFO (never opened), unreadable: not ours
        return False


def move_aside(src: Path, inbox: Path, dest_rel: str, sha256: str, *, link: str = "",
               folders: set[Path] | None = None, matches: Callable[[Path], bool] | None = None) -> str | None:
    """Move `src` to inbox/dest_rel (or a free name beside it); returns the inbox-relative destination.

    A symbolic link moves as the link itself (its target is never touched); pass `link` (where it points,
    escaped) for a link that is not followed. Idempotent: when `src` is gone and a candidate holds the
    same bytes (or the same link, or passes `matches`: a file moved unread), that is where an earlier run moved
    it. Returns None when the photo is nowhere to be found. Both folders are fsynced, or added to `folders` for
    the caller to fsync once. Raises LeftInPlace when the photo's own folder keeps it: nothing is moved, no copy is
    left behind.
    """
    for cand in _free_names(inbox, dest_rel):
        target = inbox / cand
        if names.lexists(target):
            if not names.lexists(src) and _holds(target, sha256, link, matches):
                return cand
            continue
        if not names.lexists(src):
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(src, target)
        except OSError as e:
            if e.errno in _KEPT_BY_ITS_FOLDER:
                raise LeftInPlace(f"its folder does not let facesetd move it ({e.strerror})") from e
            if e.errno != errno.EXDEV:
                raise
            _copy_then_remove(src, target)  # another file system (e.g. Immich staging)
        touched = {target.parent, src.parent}
        if folders is None:
            fsync_dirs(touched)
        else:
            folders |= touched
        return cand
    return None  # pragma: no cover - the generator never ends


def _copy_then_remove(src: Path, target: Path) -> None:
    """A move across file systems. When the original cannot be removed, the copy just made is (the photo is whole
    where it was): one photo never becomes two, however often this is tried."""
    shutil.copy2(src, target, follow_symlinks=False)
    try:
        os.unlink(src)
    except OSError as e:
        os.unlink(target)
        raise LeftInPlace(f"its folder does not let facesetd remove it ({e.strerror})") from e


def find_moved(inbox: Path, dest_rels: list[str], sha256: str,
               matches: Callable[[Path], bool] | None = None) -> str | None:
    """Where an earlier run (interrupted before its events were recorded) moved the photo (by its bytes, or by
    `matches` for a file moved unread)."""
    for base in dest_rels:
        for cand in _free_names(inbox, base):
            target = inbox / cand
            if not names.lexists(target):
                break
            if _holds(target, sha256, "", matches):
                return cand
    return None


def processed_rel(e: ev.PhotoReceived) -> str:
    """Where a photo handled goes, inbox-relative: _processed/<path> (staging photos under their root)."""
    return f"{PROCESSED}/{e.path}" if e.root == "inbox" else f"{PROCESSED}/{e.root}/{e.path}"


def rejected_rel(e: ev.PhotoReceived, reason: str) -> str:
    """Where a photo rejected for `reason` goes, inbox-relative: _rejected/<reason>/<path>."""
    return f"{REJECTED}/{reason}/{e.path}" if e.root == "inbox" else f"{REJECTED}/{reason}/{e.root}/{e.path}"
