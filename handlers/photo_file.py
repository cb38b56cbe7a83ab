"""A received photo's file: read back, taken, moved aside; and the files recorded unread.

The router's first stage (handlers/route_photo.py) and the moves of its verdicts. The bytes decided on are the bytes
moved: the photo is read once, bounded by [limits] max_file_bytes, from one descriptor (handlers/plain_file.py),
and checked against the sha256 it was received with; before its crops are written or it moves anywhere, it is taken
out of the inbox under a private name and checked again there (handlers/inbox_hold.py). A photo whose name was given
to other bytes meanwhile is recorded as vanished, and the other bytes stay in the inbox, to be received on their own.
A file recorded unread (PhotoReceived.unread) gets its verdict unread: too large or not a regular file, moved aside;
not readable, left where it is (PhotoDeferred, reason permission) for daemon.deferred to take again.
A photo whose own folder does not let it go (not writable by facesetd, read-only) is handled and left where it is
(`left` in its event: handlers/inbox_files.py LeftInPlace); the inbox does not receive it again while that lasts.

Crash safety: a photo held is found again under its holding name, and a photo already moved is found again in
_processed/ or _rejected/ by its hash (handlers/inbox_files.py).
"""

from __future__ import annotations

import hashlib
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from state import events as ev
from state import names
from state.atomic import fsync_dirs

from . import inbox_hold, plain_file
from .context import HandlerContext
from .inbox_files import (
    REJECT_REASONS,
    REJECTED,
    LeftInPlace,
    find_moved,
    move_aside,
    processed_rel,
    rejected_rel,
)


@dataclass(frozen=True)
class Photo:
    """A received photo read back: where it was received, its bytes, and where they were read."""

    src: Path  # where it was received
    data: bytes  # its bytes (sha256 as received)
    moved: str | None  # inbox-relative place an interrupted run already moved it to, if it did
    read: plain_file.Identity | None = None  # the file as it was read (None: found moved)
    held: bool = False  # read under its holding name, where a run interrupted after taking it left it


# --- Where the file is -------------------------------------------------------------------------------


def _source(root_dir: Path, e: ev.PhotoReceived) -> Path:
    """The photo's file: found by its exact name bytes when its recorded path is escaped."""
    return root_dir / names.os_name(e.path, e.path_hex)


def aside(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, dest_rel: str, label: str, *, link: str = "",
          folders: set[Path] | None = None, matches: inbox_hold.IsIt | None = None) -> tuple[str, str]:
    """Move the file aside (inbox_files.move_aside): (where it went, "") or, when its own folder keeps it,
    ("", why it stays where it was received); the inbox does not receive it again while that lasts."""
    try:
        dest = move_aside(src, ctx.config.inbox, dest_rel, e.sha256, link=link, folders=folders, matches=matches)
        return dest or "", ""
    except LeftInPlace as err:
        left = f"{label} stays where it is: {err}"
        ctx.log.warning("photo left in place", path=label, error=left,
                        note="not received again while its folder keeps it; move it out by hand, or let facesetd"
                             " write to its folder")
        return "", left


_LINK_ERRORS = {
    names.LINK_DANGLING: "a symbolic link to nothing",
    names.LINK_OUTSIDE: "a symbolic link to something outside the data folder (never followed)",
    names.LINK_NOT_A_FILE: "a symbolic link to something that is not a file",
}


def _reject_link(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, reason: str) -> list[ev.Event]:
    """A symbolic link that may not be followed: the link itself goes to _rejected/<reason>/.

    Only a link moves: a file that took its name meanwhile stays (a scan receives it as a new photo).
    """
    label = f"{e.root}/{e.path}"
    target = e.provenance.get("link", "")
    if names.lexists(src) and not src.is_symlink():
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason=reason,
                                 error=f"{label}: the symbolic link was replaced by a file before it was handled")]
    dest, left = aside(ctx, e, src, rejected_rel(e, reason), label, link=target)
    error = f"{label}: {_LINK_ERRORS.get(reason, 'a symbolic link that is not followed')} ({target})"
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error,
                             left=left)]


def _root_dir(ctx: HandlerContext, root: str) -> Path | None:
    if root == "inbox":
        return ctx.config.inbox
    if root == "staging":
        return ctx.config.staging
    return None


def reject(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo, reason: str, error: str) -> list[ev.Event]:
    """The photo read, taken (see take) and moved to _rejected/<reason>/."""
    label = f"{e.root}/{e.path}"
    src = take(ctx, e, photo, label)
    if isinstance(src, list):
        return src
    dest, note, left = move_taken(ctx, e, photo, src, rejected_rel(e, reason), None)
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest, **({"note": note} if note else {}))
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason,
                             error=error + (f"; {note}" if note else ""), left=left)]


def written_ago(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo) -> float | None:
    """Seconds since the inbox photo was last written (when it was read), while under [limits] incomplete_grace_s.

    None when it has been unchanged longer (its writer is done: undecodable is then a verdict), or for
    staged Immich originals, which are complete and verified before they are handed over.
    """
    return since_written(ctx, e, None if photo.read is None else photo.read[3])


def since_written(ctx: HandlerContext, e: ev.PhotoReceived, mtime_ns: int | None) -> float | None:
    """Seconds since an inbox file with this mtime was written, while under [limits] incomplete_grace_s; None
    past it, without an mtime, or for a staged Immich original (complete and verified when it was handed over)."""
    if e.root != "inbox" or mtime_ns is None:
        return None
    age = max(0.0, time.time() - mtime_ns / 1e9)
    return age if age < ctx.config.limits.incomplete_grace_s else None


# --- Taking the photo: the bytes decided on are the bytes moved (handlers/inbox_hold.py) ------------------


def os_rel(e: ev.PhotoReceived) -> str:
    """The photo's path in its root as the OS has it (exact bytes for a name that is not UTF-8)."""
    return names.os_name(e.path, e.path_hex)


def _replaced(ctx: HandlerContext, e: ev.PhotoReceived, label: str, put_back: str) -> list[ev.Event]:
    """The verdict on a photo whose name was given to other bytes (or a folder ...) before it could be taken, or
    that is gone (`put_back` "")."""
    error = (f"{label} was replaced before it was handled (what replaced it stays in the inbox as"
             f" inbox/{names.escape(put_back)})" if put_back else f"{label} disappeared before it was handled")
    ctx.log.info("photo replaced before it was handled", path=label, put_back=names.escape(put_back))
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="vanished", error=error)]


def take(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo, label: str) -> Path | list[ev.Event]:
    """Where to move the photo from: its holding name, once taken there and found to be the bytes read; or the
    verdict when its name no longer holds them (_replaced). A link, a staged original, a photo in a folder the
    daemon may not rename out of are moved by their name, as they were read."""
    inbox = ctx.config.inbox
    hold = inbox_hold.hold_path(inbox, e)
    if photo.held:
        return hold
    if e.root != "inbox" or photo.read is None or photo.src.is_symlink():
        return photo.src
    try:
        taken = inbox_hold.take(inbox, os_rel(e), hold,
                                inbox_hold.same_bytes(photo.read, e.sha256, ctx.config.limits.max_file_bytes))
    except OSError as err:  # cannot rename it out of its folder: by its name then, if it still is the file read
        ctx.log.warning("photo moved by its name: it cannot be held", path=label, error=str(err))
        return photo.src if inbox_hold.unchanged(photo.src, photo.read) else _replaced(ctx, e, label, "")
    return hold if taken.held else _replaced(ctx, e, label, taken.put_back)


def move_taken(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo, src: Path, dest_rel: str,
                folders: set[Path] | None) -> tuple[str, str, str]:
    """Move the taken photo to inbox/`dest_rel`; (where it went, a note, why it stays where it was received: see
    `aside`). A writer that opened the file before it was taken may have written on since: such bytes are not the
    ones decided on, so they go back to the inbox (received on their own) and the photo has no `dest`. `folders`:
    fsynced by the caller (None: here)."""
    inbox = ctx.config.inbox
    if src != photo.src and photo.read is not None and not inbox_hold.unchanged(src, photo.read):
        back = inbox_hold.put_back(inbox, src, os_rel(e))
        return ("", f"its file was written to while it was handled; those bytes are back in the inbox as"
                f" {names.escape(back)}", "")
    touched: set[Path] = set() if folders is None else folders
    dest, left = aside(ctx, e, src, dest_rel, f"{e.root}/{e.path}", folders=touched)
    if left and src != photo.src:  # held, but kept out of its destination: back to its name, where it stays
        inbox_hold.put_back(inbox, src, os_rel(e))
    touched.add(photo.src.parent)  # where its name was taken from
    if src != photo.src:
        inbox_hold.tidy(inbox)
    if folders is None:
        fsync_dirs(touched)
    return dest, "", left


def read_photo(ctx: HandlerContext, e: ev.PhotoReceived, label: str) -> Photo | list[ev.Event]:
    """The photo's bytes, from where it was received, from its holding name (a run interrupted after taking it),
    or from where an interrupted run moved it; what was recorded unread gets its verdict unread."""
    root_dir = _root_dir(ctx, e.root)
    if root_dir is None:
        error = f"no folder configured for photo root {e.root!r}"
        ctx.log.warning("photo rejected", path=label, reason="unknown_root", error=error)
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="unknown_root", error=error)]
    src = _source(root_dir, e)
    if e.link_problem:
        return _reject_link(ctx, e, src, e.link_problem)
    if e.unread:
        return _unread(ctx, e, src, label)
    if src.is_symlink() and not src.exists():  # followed when received; its target went away since
        return _reject_link(ctx, e, src, names.LINK_DANGLING)
    found = _read_back(ctx, e, src, label)
    return _moved_earlier(ctx, e, src, label) if found is None else found


def _read_back(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, label: str) -> Photo | list[ev.Event] | None:
    """The bytes received, read again from their name or their holding name (bounded, one descriptor); None when
    neither holds them (gone, or replaced: an interrupted run may have moved them)."""
    limit = ctx.config.limits.max_file_bytes
    hold = inbox_hold.hold_path(ctx.config.inbox, e)
    held = e.root == "inbox" and names.lexists(hold)
    try:
        data, read = plain_file.read_plain(hold if held else src, limit, follow=not held and src.is_symlink())
    except PermissionError as err:
        if not held:
            return _defer_unreadable(ctx, e, label, err)
        data = None
    except plain_file.TooLarge as err:
        if not held and err.size == e.size:  # the bytes received, over a limit lowered since
            return _unread_reject(ctx, e, label, "too_large", _too_large_error(ctx, label, e.size), stat.S_IFREG, e.size)
        data = None  # other bytes than received: they are received on their own
    except (OSError, plain_file.NotAFile):  # gone, or given to something else: looked for below
        data = None
    if data is not None and hashlib.sha256(data).hexdigest() == e.sha256:
        return Photo(src, data, None, read, held)
    if held:  # not the bytes received (a writer with the file open before it was taken): back to the inbox
        return _replaced(ctx, e, label, inbox_hold.put_back(ctx.config.inbox, hold, os_rel(e)))
    return None


def moved_earlier(ctx: HandlerContext, e: ev.PhotoReceived, label: str, what: str = "photo") -> str | list[ev.Event]:
    """Where an earlier run moved the photo (or video: `what`) to _processed/ before it crashed (inbox-relative),
    or the verdict: moved aside to _rejected/ by that run, or vanished."""
    bases = [processed_rel(e), *(rejected_rel(e, r) for r in REJECT_REASONS)]
    moved = find_moved(ctx.config.inbox, bases, e.sha256)
    if moved is None:
        # Gone or replaced before it was handled: a new scan receives the new bytes, if any.
        ctx.log.info(f"{what} gone before it was processed", path=label)
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="vanished",
                                 error=f"{label} changed or disappeared before it was processed")]
    if moved.startswith(REJECTED + "/"):
        reason = moved.split("/")[1]
        ctx.log.warning(f"{what} rejected", path=label, reason=reason, dest=moved, note="by an interrupted run")
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=moved, reason=reason,
                                 error=f"{label}: {reason} (moved aside by an interrupted run)")]
    return moved


def _moved_earlier(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, label: str) -> Photo | list[ev.Event]:
    """Where an earlier run moved the photo before it crashed (and its bytes), or the verdict that it vanished."""
    limit = ctx.config.limits.max_file_bytes
    moved = moved_earlier(ctx, e, label)
    if isinstance(moved, list):
        return moved
    try:
        data, _read = plain_file.read_plain(ctx.config.inbox / moved, limit)
    except (OSError, plain_file.NotAFile, plain_file.TooLarge) as err:  # found by its sha256 a moment ago
        ctx.log.warning("photo moved by an interrupted run cannot be read back", path=label, dest=moved,
                        error=str(err))
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="vanished",
                                 error=f"{label}: moved to {moved} by an interrupted run, and unreadable there: {err}")]
    return Photo(src, data, moved)


# --- Files recorded unread (PhotoReceived.unread), and files that cannot be read ------------------------


def _too_large_error(ctx: HandlerContext, label: str, size: int) -> str:
    limit = ctx.config.limits.max_file_bytes
    return (f"{label}: {size} bytes, over the limit of {limit} bytes ([limits] max_file_bytes); not read")


def _unread(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, label: str) -> list[ev.Event]:
    """The verdict on a file recorded without being read: refused from its size or its type (moved aside, never
    read), deferred until it can be read, or gone while it was deferred."""
    if e.unread == ev.UNREAD_PERMISSION:
        return _defer_unreadable(ctx, e, label, PermissionError("permission denied"))
    if e.unread == ev.UNREAD_TOO_LARGE:
        return _unread_reject(ctx, e, label, "too_large", _too_large_error(ctx, label, e.size), stat.S_IFREG, e.size)
    if e.unread == ev.UNREAD_NOT_A_FILE:
        what = str(e.provenance.get("file_type") or "not a regular file")
        return _unread_reject(ctx, e, label, "not_a_file", f"{label}: {what}, not a photo; never opened", 0, None)
    ctx.log.info("photo gone before it was processed", path=label, unread=e.unread)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="vanished",
                             error=f"{label} disappeared while it waited to be taken again")]


def _same_kind(mode: int, size: int | None) -> inbox_hold.IsIt:
    """What an unread file is known by: a regular file of its size (`mode` S_IFREG), or anything that is neither a
    regular file, a folder nor a link (`mode` 0: a FIFO, a socket, a device)."""
    def kind(m: int) -> bool:
        if mode:
            return stat.S_IFMT(m) == mode
        return not (stat.S_ISREG(m) or stat.S_ISDIR(m) or stat.S_ISLNK(m))
    return inbox_hold.kind_is(kind, size)


def _unread_reject(ctx: HandlerContext, e: ev.PhotoReceived, label: str, reason: str, error: str, mode: int,
                   size: int | None) -> list[ev.Event]:
    """Move a file that is not read to _rejected/<reason>/ (held first: only what the name held when received,
    by its type and size; a folder or another file that took its name stays where it is)."""
    inbox = ctx.config.inbox
    is_it = _same_kind(mode, size)
    left = ""
    if e.root != "inbox":
        dest, left = aside(ctx, e, _source(_root_dir(ctx, e.root) or inbox, e), rejected_rel(e, reason), label)
    else:
        hold = inbox_hold.hold_path(inbox, e)
        if names.lexists(hold):  # taken by a run interrupted before it recorded the verdict
            taken = inbox_hold.Taken(True)
        else:
            try:
                taken = inbox_hold.take(inbox, os_rel(e), hold, is_it)
            except OSError as err:
                ctx.log.warning("file cannot be moved aside", path=label, reason=reason, error=str(err))
                return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason=reason,
                                         error=f"{error}; it cannot be moved aside ({err}) and stays where it is",
                                         left=f"{label} stays where it is: it cannot be moved aside ({err})")]
        if taken.held:
            dest, left = aside(ctx, e, hold, rejected_rel(e, reason), label, matches=is_it)
            if left:  # kept out of _rejected/: back to its name, where it stays
                inbox_hold.put_back(inbox, hold, os_rel(e))
            inbox_hold.tidy(inbox)
        elif taken.put_back:
            return _replaced(ctx, e, label, taken.put_back)
        else:  # gone: moved by an interrupted run, or by someone else
            dest = find_moved(inbox, [rejected_rel(e, reason)], e.sha256, matches=is_it) or ""
            if not dest:
                return _replaced(ctx, e, label, "")
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error,
                             left=left)]


def _defer_unreadable(ctx: HandlerContext, e: ev.PhotoReceived, label: str, err: OSError) -> list[ev.Event]:
    """A file that cannot be opened stays where it is (it cannot be moved without being read either), recorded as
    waiting; daemon.deferred receives it again as soon as it can be read (after a chmod, say)."""
    error = (f"{label} cannot be read ({err.strerror or err}); it stays where it is and is taken as soon as it can"
             " be read")
    ctx.log.warning("photo waits: it cannot be read", path=label, error=error)
    return [ev.PhotoDeferred(path=e.path, root=e.root, sha256=e.sha256, reason="permission", error=error)]


def leave_for_writer(ctx: HandlerContext, e: ev.PhotoReceived, photo: Photo) -> None:
    """A photo deferred for its writer: if it was read under its holding name (a run interrupted after taking it),
    it goes back to its name, where its writer finds it."""
    if photo.held:
        inbox_hold.put_back(ctx.config.inbox, inbox_hold.hold_path(ctx.config.inbox, e), os_rel(e))


__all__ = ["Photo", "aside", "leave_for_writer", "move_taken", "os_rel", "read_photo", "reject", "since_written", "take", "written_ago"]
