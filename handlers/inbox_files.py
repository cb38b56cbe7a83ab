"""Moving a received photo aside inside the inbox: to _processed/ once handled, to _rejected/<reason>/ when it
cannot be. Idempotent: a photo already moved (by a run interrupted before its events were recorded) is found again
by its hash (or, for a link not followed, by where it points)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from state import events as ev
from state import names
from state.atomic import fsync_dirs
from state.scan import sha256_file

PROCESSED = "_processed"
REJECTED = "_rejected"
# Why a file goes to inbox/_rejected/<reason>/: no decoder reads it; decoded, but the models cannot use it;
# its header claims more pixels than [limits] max_pixels (never decoded); handling it failed with an unexpected
# error (a dead letter, handlers/dead_letter.py: `facesetd retry` moves it back).
REJECT_REASONS = ("unreadable", "unprocessable", "too_large", "failed")


def _free_names(rel: str) -> Iterator[str]:
    """rel, then rel with _1, _2 ... before the extension; every component within NAME_MAX bytes
    (a stem is shortened rather than a name refused: a 255-byte name has no room for "_1")."""
    return names.numbered(rel, "_")


def _holds(target: Path, sha256: str, link: str) -> bool:
    """Whether `target` is the photo moved there earlier: the same link (a link not followed is known by
    where it points), else the same bytes."""
    if link:
        return target.is_symlink() and names.link_target(target) == link
    try:
        return sha256_file(target) == sha256
    except OSError:  # a dangling link, a folder, unreadable: not ours
        return False


def move_aside(src: Path, inbox: Path, dest_rel: str, sha256: str, *, link: str = "",
               folders: set[Path] | None = None) -> str | None:
    """Move `src` to inbox/dest_rel (or a free name beside it); returns the inbox-relative destination.

    A symbolic link moves as the link itself (its target is never touched); pass `link` (where it points,
    escaped) for a link that is not followed. Idempotent: when `src` is gone and a candidate holds the
    same bytes (or the same link), that is where an earlier run moved it. Returns None when the photo is
    nowhere to be found. Both folders are fsynced, or added to `folders` for the caller to fsync once.
    """
    for cand in _free_names(dest_rel):
        target = inbox / cand
        if names.lexists(target):
            if not names.lexists(src) and _holds(target, sha256, link):
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


def find_moved(inbox: Path, dest_rels: list[str], sha256: str) -> str | None:
    """Where an earlier run (interrupted before its events were recorded) moved the photo."""
    for base in dest_rels:
        for cand in _free_names(base):
            target = inbox / cand
            if not names.lexists(target):
                break
            if _holds(target, sha256, ""):
                return cand
    return None


def processed_rel(e: ev.PhotoReceived) -> str:
    """Where a photo handled goes, inbox-relative: _processed/<path> (staging photos under their root)."""
    return f"{PROCESSED}/{e.path}" if e.root == "inbox" else f"{PROCESSED}/{e.root}/{e.path}"


def rejected_rel(e: ev.PhotoReceived, reason: str) -> str:
    """Where a photo rejected for `reason` goes, inbox-relative: _rejected/<reason>/<path>."""
    return f"{REJECTED}/{reason}/{e.path}" if e.root == "inbox" else f"{REJECTED}/{reason}/{e.root}/{e.path}"
