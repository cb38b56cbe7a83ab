"""The inbox: photos users drop in, turned into PhotoReceived events for the router.

    inbox/*.jpg ...               any photo: its faces are routed to their identity or pooled
    inbox/faceset_NNN/*.jpg       forces identity faceset_NNN (and creates it): how a user seeds a person
    inbox/_processed/             photos whose faces were routed (moved here, never deleted)
    inbox/_rejected/<reason>/     files that are not readable photos

The scan hashes what it finds (the inbox empties itself, so this stays small) and skips files already
received and not yet handled, so a scan during processing, or after a crash, never records a photo twice.

Any name is a photo's name: one that is not UTF-8 is recorded escaped, with its exact bytes beside it
(state.names), and moves to _processed/ under the escaped name. A symbolic link is followed only to a
regular file inside the data folder (or the inbox); any other link is recorded with the reason, and the
router moves the LINK to _rejected/<reason>/ (its target is never touched, nor read).

Receiving reads a file once, from one descriptor (handlers/plain_file.py): its sha256, size and capture date
all come from the same bytes. What cannot or must not be read is recorded unread, with why (PhotoReceived.unread):
a file over [limits] max_file_bytes (a video: [video] max_file_bytes) by its size (never read), a FIFO, socket or device (never opened: opening a
FIFO blocks), a file that cannot be opened (permission denied: the router leaves it where it is, deferred, and
daemon.deferred receives it again once it can be read). The router reads the bytes again and checks them against
the recorded sha256 before it takes the photo (handlers/inbox_hold.py): a file replaced meanwhile is never
recorded under the old bytes.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import structlog

from handlers import plain_file
from handlers.video_frames import is_video
from state import events as ev
from state import names
from state.layout import FACESET_RE, INBOX_PROCESSED, INBOX_REJECTED

if TYPE_CHECKING:
    from .pipeline import Pipeline

log = structlog.get_logger("facesetd.inbox")

PROCESSED, REJECTED = INBOX_PROCESSED, INBOX_REJECTED


def is_candidate(rel: str) -> bool:
    """Whether an inbox-relative path is a photo to receive (not processed, rejected, hidden or temporary)."""
    parts = rel.split("/")
    if parts[0] in (PROCESSED, REJECTED):
        return False
    if any(p.startswith(".") for p in parts):
        return False
    return not names.is_temp_name(parts[-1])


def forced_faceset(rel: str) -> str:
    """inbox/faceset_NNN/... forces that identity; anything else is routed by similarity."""
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 and FACESET_RE.match(parts[0]) else ""


def taken_at(photo: Path | BinaryIO) -> str | None:
    """The EXIF capture date as an ISO date (YYYY-MM-DD), when the photo (a path or an open file) has one."""
    try:
        from gpu_agent.image_header import header_exif, open_header

        if not isinstance(photo, Path):
            photo.seek(0)
        with open_header(photo) as im:  # the header only: a date is not worth decoding a (maybe huge) image
            exif = header_exif(im)
            raw = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)  # DateTimeOriginal, else DateTime
    except Exception:  # noqa: BLE001 - no EXIF, or not an image at all: the router will say so
        return None
    if not isinstance(raw, str) or len(raw) < 10:
        return None
    date = raw[:10].replace(":", "-")
    return date if date[:4].isdigit() and date[4] == "-" else None



def photo_event(root_dir: Path, rel: str, root: str = "inbox", provenance: dict[str, Any] | None = None,
                *, link_roots: tuple[Path, ...] = (), max_bytes: int = 0) -> ev.PhotoReceived:
    """The PhotoReceived for one file (hashes it, from one descriptor).

    `rel` is the path as the OS has it (it may carry surrogate escapes); the event gets its escaped form
    and, when that differs, the exact bytes. A symbolic link is followed only to a regular file under
    `link_roots` (default: `root_dir`); any other link is recorded unread, with the reason, for the router
    to move it aside. What is not read is recorded with why (`unread`, sha256 ""): over `max_bytes` (0: no
    limit), not a regular file, permission denied. OSError when the file is gone (or cannot be looked at).
    """
    path = root_dir / rel
    shown = names.escape(rel)
    prov: dict[str, Any] = {"photo": f"{root}/{shown}"} if provenance is None else dict(provenance)
    st = os.lstat(path)
    problem = unread = ""
    sha256, size = "", st.st_size
    if stat.S_ISLNK(st.st_mode):
        prov["link"] = names.link_target(path)
        problem = names.link_problem(path, link_roots or (root_dir,))
    elif not stat.S_ISREG(st.st_mode):
        unread = ev.UNREAD_NOT_A_FILE
        prov["file_type"] = plain_file.file_type(st.st_mode)
    if not (problem or unread):  # a link that is not followed, a FIFO ... are never opened
        try:
            with plain_file.open_plain(path, follow=stat.S_ISLNK(st.st_mode)) as (f, fst):
                size = fst.st_size
                if max_bytes and size > max_bytes:
                    raise plain_file.TooLarge(path, size, max_bytes)
                sha256, size = plain_file.sha256_of(f, path, max_bytes)
                if "taken_at" not in prov:
                    date = taken_at(f)
                    if date:
                        prov["taken_at"] = date
        except PermissionError:
            unread = ev.UNREAD_PERMISSION
        except plain_file.TooLarge as e:
            unread, sha256, size = ev.UNREAD_TOO_LARGE, "", e.size
        except plain_file.NotAFile as e:  # its name was given to a FIFO, a folder ... since the lstat
            if stat.S_ISDIR(e.mode):
                raise IsADirectoryError(str(path)) from e
            unread, prov["file_type"] = ev.UNREAD_NOT_A_FILE, e.what
    return ev.PhotoReceived(
        path=shown, path_hex=names.exact_hex(rel), root=root, sha256=sha256, size=size,
        forced_faceset=forced_faceset(shown) if root == "inbox" else "", provenance=prov, link_problem=problem,
        unread=unread,
    )


def _is_waiting(folder: str, name: str, rel: str) -> bool:
    """A candidate to receive: anything but a folder (a regular file, a symbolic link to anything, a FIFO, a
    socket, a device: receiving those records why they are refused) with a candidate name."""
    if not is_candidate(rel):
        return False
    try:
        return not stat.S_ISDIR(os.lstat(os.path.join(folder, name)).st_mode)
    except OSError:
        return False


def list_waiting(inbox: Path) -> list[str]:
    """Inbox-relative paths of every candidate photo now in the inbox, without hashing anything.

    Seeds (inbox/faceset_NNN/...) first, the rest sorted by name (by bytes). The paths are as the OS has
    them: a name that is not UTF-8 carries surrogate escapes, so `inbox / rel` finds the file again (for
    `receive`); show or store one only through `state.names.escape`. Symbolic links are included (also
    links to folders, which are never entered) so that receiving them records why they are rejected, and so
    are FIFOs, sockets and devices (never opened).
    """
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(inbox):
        rel_dir = os.path.relpath(dirpath, inbox)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        linked = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if d not in linked and is_candidate(rel_dir + d))
        for name in [*filenames, *linked]:
            rel = rel_dir + name
            if _is_waiting(dirpath, name, rel):
                found.append(rel)
    return sorted(found, key=receive_order)


def still_written(inbox: Path, rel: str, settle_s: float, now: float | None = None) -> bool:
    """True if the photo changed less than `settle_s` ago (or its clock is ahead of ours): its writer may still
    be at work, so a listing must not take it yet (the watcher reports it once it stops changing)."""
    try:
        mtime = os.lstat(inbox / rel).st_mtime
    except OSError:
        return False  # gone, or unreadable: receiving it records why
    return abs((time.time() if now is None else now) - mtime) < settle_s


def receive_order(rel: str) -> tuple[bool, bytes]:
    """The order waiting photos are received in: seeds first (the rest of the same drop can then route to
    them), then by name as bytes. The daemon and `reconcile` both use it, so the same waiting photos are taken
    in the same order whoever takes them."""
    return (not forced_faceset(rel), os.fsencode(rel))


def max_bytes_for(pipeline: Pipeline, rel: str) -> int:
    """The size over which an inbox file is refused unread: [video] max_file_bytes for a video (streamed, never
    read whole), [limits] max_file_bytes for a photo (read whole)."""
    config = pipeline.ctx.config
    return config.video.max_file_bytes if is_video(rel) else config.limits.max_file_bytes


def _link_roots(pipeline: Pipeline) -> tuple[Path, ...]:
    """Where a symbolic link in the inbox may point: the data folder, and the inbox wherever it is."""
    return (pipeline.config.data_dir, pipeline.config.inbox_dir)


def _inbox_rel(inbox: Path, path: Path) -> str | None:
    """`path` relative to the inbox, without following a link at its end (the link is what arrived)."""
    path = Path(os.path.abspath(path))
    try:
        return (path.parent.resolve() / path.name).relative_to(inbox.resolve()).as_posix()
    except (ValueError, OSError):
        return None


def receive(pipeline: Pipeline, path: Path) -> int | None:
    """Record one photo the watcher saw; returns its event position, or None when skipped or known.

    Works for any name (see `list_waiting`) and for symbolic links (a link that may not be followed is
    recorded with its reason; the router then moves the link itself to inbox/_rejected/<reason>/); a file that
    is not read (too large, not a regular file, not readable) is recorded with why (see `photo_event`).
    """
    inbox = pipeline.config.inbox_dir
    rel = _inbox_rel(inbox, path)
    if not rel or rel == "." or not is_candidate(rel):
        return None
    full = inbox / rel
    try:
        if stat.S_ISDIR(os.lstat(full).st_mode):
            return None  # a folder: its files are received one by one
    except OSError:
        return None  # gone already
    pipeline.state.catch_up()
    try:
        event = photo_event(inbox, rel, link_roots=_link_roots(pipeline),
                            max_bytes=max_bytes_for(pipeline, rel))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None  # gone meanwhile, or its name given to a folder: nothing arrived
    except OSError as e:  # cannot even be looked at (a share away): the next listing looks again
        log.warning("inbox file skipped", path=names.escape(rel), error=names.escape(str(e)))
        return None
    if pipeline.state.photo_waiting("inbox", event.path, event.sha256):
        return None  # received and not yet handled, or deferred (daemon.deferred retries it)
    if pipeline.state.photo_left_in_place("inbox", event.path, event.sha256) and not os.access(full.parent, os.W_OK):
        return None  # handled, and its folder still keeps it there (status lists it): never a second copy
    (position,) = pipeline.log.append([event])
    return position
