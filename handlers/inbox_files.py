"""Moving a received photo aside inside the inbox: to _processed/ once handled, to _rejected/<reason>/ when it
cannot be. Idempotent: a photo already moved (by a run interrupted before its events were recorded) is found again
by its hash (or, for a link not followed, by where it points)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from state import events as ev
from state import names
from state.atomic import fsync_dirs

from .plain_file import NotAFile, sha256_plain

PROCESSED = "_processed"
REJECTED = "_rejected"
# Why a file goes to inbox/_rejected/<reason>/: no decoder reads it; decoded, but the models cannot use it;
# its header claims more pixels than [limits] max_pixels, or its size is over [limits] max_file_bytes (never
# decoded, or never read); a FIFO, socket or device (never opened).
REJECT_REASONS = ("unreadable", "unprocessable", "too_large", "not_a_file")


def _free_names(rel: str, inbox: Path) -> Iterator[str]:
    """rel, then rel with _1, _2 ... before the extension; every component within NAME_MAX bytes
    (a stem is shortened rather than a name refused: a 255-byte name has no room for "_1"). A folder of rel below
    _processed/ or _rejected/<reason>/ that is a file on disk (a photo of that name moved aside earlier, its name
    now a folder in the inbox) becomes its first numbered name that is a folder or free (x_1.jpg/)."""
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
    the caller to fsync once.
    """
    for cand in _free_names(dest_rel, inbox):
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
        except OSError:  # another file system (e.g. Immich staging): copy, then remove the original
            shutil.copy2(src, target, follow_symlinks=False)
            os.unlink(src)
        touched = {target.parent, src.parent}
        if folders is None:
            fsync_dirs(touched)
        else:
            folders |= touched
        return cand
    return None  # pragma: no cover - the generator never ends


def find_moved(inbox: Path, dest_rels: list[str], sha256: str,
               matches: Callable[[Path], bool] | None = None) -> str | None:
    """Where an earlier run (interrupted before its events were recorded) moved the photo (by its bytes, or by
    `matches` for a file moved unread)."""
    for base in dest_rels:
        for cand in _free_names(base, inbox):
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
