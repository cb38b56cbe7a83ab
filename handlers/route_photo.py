"""Route the faces of a received photo: to the faceset whose centroid is near, or to the pool.

Every face whose short side is at least `identity.min_face_px` (original pixels) is cropped to 512x512 and
sent to the nearest active faceset when its cosine distance to that faceset's centroid is at most
`identity.match_distance`; otherwise it waits in the pool (`<corpus>/_pool/`) for `handlers.pool`. A photo
under inbox/faceset_NNN/ forces its best face into that identity. One face per photo per identity.

Crash safety: the handler's files are written before its events are appended (by the dispatcher, in the same
transaction as its position). Every step is idempotent, so a rerun after a crash gives the same events: crop
names derive from the photo's hash (same bytes: no rewrite), a photo held (below) is found again under its
holding name, and a photo already moved is found again in _processed/ or _rejected/ by its hash.

The bytes decided on are the bytes moved: the photo is read once, bounded by [limits] max_file_bytes, from one
descriptor, and checked against the sha256 it was received with; before its crops are written or it moves
anywhere, it is taken out of the inbox under a private name and checked again there (handlers/inbox_hold.py).
A photo whose name was given to other bytes meanwhile is recorded as vanished and the other bytes stay in the
inbox, to be received on their own.

The photo's way, stage by stage (route_one): read it back, decode it, find its faces; where each face goes is
handlers/face_assign.py, the crops on disk handlers/crops.py, a processed photo dropped again into a seeding
folder handlers/pool_seed.py, the photo's own move aside handlers/inbox_files.py.
"""

from __future__ import annotations

import hashlib
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from state import events as ev
from state import names
from state.atomic import fsync_dirs
from state.eventlog import StoredEvent
from state.faults import crash_point

from . import candidates, inbox_hold, plain_file
from .centroids import centroids, unit
from .context import HandlerContext
from .crops import Written, write_crops
from .face_assign import POOL_FACESET, RoutedFace, assign, distant, why_routed
from .inbox_files import REJECT_REASONS, REJECTED, find_moved, move_aside, processed_rel, rejected_rel
from .pool_seed import seed_from_pool

# --- Files ----------------------------------------------------------------------------------------


def _source(root_dir: Path, e: ev.PhotoReceived) -> Path:
    """The photo's file: found by its exact name bytes when its recorded path is escaped."""
    return root_dir / names.os_name(e.path, e.path_hex)


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
    dest = move_aside(src, ctx.config.inbox, rejected_rel(e, reason), e.sha256, link=target) or ""
    error = f"{label}: {_LINK_ERRORS.get(reason, 'a symbolic link that is not followed')} ({target})"
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error)]


def _root_dir(ctx: HandlerContext, root: str) -> Path | None:
    if root == "inbox":
        return ctx.config.inbox
    if root == "staging":
        return ctx.config.staging
    return None


def _reject(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, reason: str, error: str) -> list[ev.Event]:
    """The photo read, taken (see _take) and moved to _rejected/<reason>/."""
    label = f"{e.root}/{e.path}"
    src = _take(ctx, e, photo, label)
    if isinstance(src, list):
        return src
    dest, note = _move_taken(ctx, e, photo, src, rejected_rel(e, reason), None)
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest, **({"note": note} if note else {}))
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason,
                             error=error + (f"; {note}" if note else ""))]


def _written_ago(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo) -> float | None:
    """Seconds since the inbox photo was last written (when it was read), while under [limits] incomplete_grace_s.

    None when it has been unchanged longer (its writer is done: undecodable is then a verdict), or for
    staged Immich originals, which are complete and verified before they are handed over.
    """
    if e.root != "inbox" or photo.read is None:
        return None
    age = max(0.0, time.time() - photo.read[3] / 1e9)
    return age if age < ctx.config.limits.incomplete_grace_s else None


# --- Taking the photo: the bytes decided on are the bytes moved (handlers/inbox_hold.py) ------------------


def _rel(e: ev.PhotoReceived) -> str:
    """The photo's path in its root as the OS has it (exact bytes for a name that is not UTF-8)."""
    return names.os_name(e.path, e.path_hex)


def _replaced(ctx: HandlerContext, e: ev.PhotoReceived, label: str, put_back: str) -> list[ev.Event]:
    """The verdict on a photo whose name was given to other bytes (or a folder ...) before it could be taken, or
    that is gone (`put_back` "")."""
    error = (f"{label} was replaced before it was handled (what replaced it stays in the inbox as"
             f" inbox/{names.escape(put_back)})" if put_back else f"{label} disappeared before it was handled")
    ctx.log.info("photo replaced before it was handled", path=label, put_back=names.escape(put_back))
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="vanished", error=error)]


def _take(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, label: str) -> Path | list[ev.Event]:
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
        taken = inbox_hold.take(inbox, _rel(e), hold,
                                inbox_hold.same_bytes(photo.read, e.sha256, ctx.config.limits.max_file_bytes))
    except OSError as err:  # cannot rename it out of its folder: by its name then, if it still is the file read
        ctx.log.warning("photo moved by its name: it cannot be held", path=label, error=str(err))
        return photo.src if inbox_hold.unchanged(photo.src, photo.read) else _replaced(ctx, e, label, "")
    return hold if taken.held else _replaced(ctx, e, label, taken.put_back)


def _move_taken(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, src: Path, dest_rel: str,
                folders: set[Path] | None) -> tuple[str, str]:
    """Move the taken photo to inbox/`dest_rel`; (where it went, a note). A writer that opened the file before it
    was taken may have written on since: such bytes are not the ones decided on, so they go back to the inbox
    (received on their own) and the photo has no `dest`. `folders`: fsynced by the caller (None: here)."""
    inbox = ctx.config.inbox
    if src != photo.src and photo.read is not None and not inbox_hold.unchanged(src, photo.read):
        back = inbox_hold.put_back(inbox, src, _rel(e))
        return "", f"its file was written to while it was handled; those bytes are back in the inbox as {names.escape(back)}"
    touched: set[Path] = set() if folders is None else folders
    dest = move_aside(src, inbox, dest_rel, e.sha256, folders=touched) or ""
    touched.add(photo.src.parent)  # where its name was taken from
    if src != photo.src:
        inbox_hold.tidy(inbox)
    if folders is None:
        fsync_dirs(touched)
    return dest, ""


def route_photo(ctx: HandlerContext, stored: Sequence[StoredEvent[ev.PhotoReceived]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    for se in stored:
        out.extend(route_one(ctx, se.event))
    return out


def route_one(ctx: HandlerContext, e: ev.PhotoReceived) -> list[ev.Event]:
    """A received photo's verdict, stage by stage: read it back (or find where an interrupted run moved it),
    take a duplicate's shortcut, decode it, find its faces, then write their crops and say where each went.
    Each stage either hands the next what it needs or ends the photo with its events (a list)."""
    label = f"{e.root}/{e.path}"
    found = _read_photo(ctx, e, label)
    if isinstance(found, list):
        return found
    dup = ctx.state.processed_photo_with(e.sha256)
    if dup:
        return _route_duplicate(ctx, e, found, dup, label)
    image = _decode(ctx, e, found, label)
    if isinstance(image, list):
        return image
    analysed = _find_faces(ctx, e, found, image, label)
    if isinstance(analysed, list):
        return analysed
    return _file_faces(ctx, e, found, image, analysed, label)


@dataclass(frozen=True)
class _Photo:
    src: Path  # where it was received
    data: bytes  # its bytes (sha256 as received)
    moved: str | None  # inbox-relative place an interrupted run already moved it to, if it did
    read: plain_file.Identity | None = None  # the file as it was read (None: found moved)
    held: bool = False  # read under its holding name, where a run interrupted after taking it left it


@dataclass
class _Analysed:
    detected: int  # faces the detector found
    faces: list[RoutedFace]  # those large enough to use
    skipped: dict[str, int]  # why the others were left ("small", later "same_identity")


def _read_photo(ctx: HandlerContext, e: ev.PhotoReceived, label: str) -> _Photo | list[ev.Event]:
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


def _read_back(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, label: str) -> _Photo | list[ev.Event] | None:
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
        return _Photo(src, data, None, read, held)
    if held:  # not the bytes received (a writer with the file open before it was taken): back to the inbox
        return _replaced(ctx, e, label, inbox_hold.put_back(ctx.config.inbox, hold, _rel(e)))
    return None


def _moved_earlier(ctx: HandlerContext, e: ev.PhotoReceived, src: Path, label: str) -> _Photo | list[ev.Event]:
    """Where an earlier run moved the photo before it crashed (and its bytes), or the verdict that it vanished."""
    limit = ctx.config.limits.max_file_bytes
    bases = [processed_rel(e), *(rejected_rel(e, r) for r in REJECT_REASONS)]
    moved = find_moved(ctx.config.inbox, bases, e.sha256)
    if moved is None:
        # Gone or replaced before it was handled: a new scan receives the new bytes, if any.
        ctx.log.info("photo gone before it was processed", path=label)
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="vanished",
                                 error=f"{label} changed or disappeared before it was processed")]
    if moved.startswith(REJECTED + "/"):
        reason = moved.split("/")[1]
        ctx.log.warning("photo rejected", path=label, reason=reason, dest=moved, note="by an interrupted run")
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=moved, reason=reason,
                                 error=f"{label}: {reason} (moved aside by an interrupted run)")]
    try:
        data, _read = plain_file.read_plain(ctx.config.inbox / moved, limit)
    except (OSError, plain_file.NotAFile, plain_file.TooLarge) as err:  # found by its sha256 a moment ago
        ctx.log.warning("photo moved by an interrupted run cannot be read back", path=label, dest=moved,
                        error=str(err))
        return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason="vanished",
                                 error=f"{label}: moved to {moved} by an interrupted run, and unreadable there: {err}")]
    return _Photo(src, data, moved)


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
    if e.root != "inbox":
        dest = move_aside(_source(_root_dir(ctx, e.root) or inbox, e), inbox, rejected_rel(e, reason), e.sha256) or ""
    else:
        hold = inbox_hold.hold_path(inbox, e)
        if names.lexists(hold):  # taken by a run interrupted before it recorded the verdict
            taken = inbox_hold.Taken(True)
        else:
            try:
                taken = inbox_hold.take(inbox, _rel(e), hold, is_it)
            except OSError as err:
                ctx.log.warning("file cannot be moved aside", path=label, reason=reason, error=str(err))
                return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, reason=reason,
                                         error=f"{error}; it cannot be moved aside ({err}) and stays where it is")]
        if taken.held:
            dest = move_aside(hold, inbox, rejected_rel(e, reason), e.sha256, matches=is_it) or ""
            inbox_hold.tidy(inbox)
        elif taken.put_back:
            return _replaced(ctx, e, label, taken.put_back)
        else:  # gone: moved by an interrupted run, or by someone else
            dest = find_moved(inbox, [rejected_rel(e, reason)], e.sha256, matches=is_it) or ""
            if not dest:
                return _replaced(ctx, e, label, "")
    ctx.log.warning("photo rejected", path=label, reason=reason, error=error, dest=dest)
    return [ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason=reason, error=error)]


def _defer_unreadable(ctx: HandlerContext, e: ev.PhotoReceived, label: str, err: OSError) -> list[ev.Event]:
    """A file that cannot be opened stays where it is (it cannot be moved without being read either), recorded as
    waiting; daemon.deferred receives it again as soon as it can be read (after a chmod, say)."""
    error = (f"{label} cannot be read ({err.strerror or err}); it stays where it is and is taken as soon as it can"
             " be read")
    ctx.log.warning("photo waits: it cannot be read", path=label, error=error)
    return [ev.PhotoDeferred(path=e.path, root=e.root, sha256=e.sha256, reason="permission", error=error)]


def _route_duplicate(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, dup: tuple[str, str],
                     label: str) -> list[ev.Event]:
    """The same bytes already routed (dropped twice): nothing new to take from them, except that a photo
    dropped again into inbox/faceset_NNN/ seeds it with its face still waiting in the pool."""
    src = photo.src if photo.moved else _take(ctx, e, photo, label)
    if isinstance(src, list):
        return src
    seeded, seed_faces = seed_from_pool(ctx, e) if e.forced_faceset else ([], [])
    dest, moved_note = (photo.moved, "") if photo.moved else _move_taken(ctx, e, photo, src, processed_rel(e), None)
    note = f"same bytes as {dup[0]}/{dup[1]}, already processed" + (f"; {moved_note}" if moved_note else "")
    if seed_faces:
        note += f"; its face waiting in the pool joined {e.forced_faceset}"
    ctx.log.info("photo routed", path=label, faces=len(seed_faces), to=[f["to"] for f in seed_faces],
                 dest=dest, note=note)
    return [*seeded, ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest,
                                       faces=tuple(seed_faces), note=note)]


def _decode(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, label: str) -> np.ndarray | list[ev.Event]:
    """The decoded pixels; a bomb is refused from its header, a photo cut short waits its grace time."""
    from gpu_agent.crop import decode_image
    from gpu_agent.errors import ImageTooLarge
    from gpu_agent.image_header import starts_like_an_image

    try:
        image = decode_image(photo.data, ctx.config.limits.max_pixels)  # header first: a bomb is never decoded
        if image is None or image.size == 0:
            raise ValueError("decoder returned no pixels")
        return image
    except ImageTooLarge as err:
        return _reject(ctx, e, photo, "too_large", f"{label}: {err}")
    except Exception as err:  # noqa: BLE001 - every decoder failure is the file's fault, not the daemon's
        age = None if photo.moved or not starts_like_an_image(photo.data) else _written_ago(ctx, e, photo)
        if age is not None:  # an image cut short, maybe by a writer that paused: not a verdict yet
            if photo.held:  # its writer finds it where it left it
                inbox_hold.put_back(ctx.config.inbox, inbox_hold.hold_path(ctx.config.inbox, e), _rel(e))
            ctx.log.info("photo deferred: does not decode yet", path=label, age_s=round(age, 1),
                         grace_s=ctx.config.limits.incomplete_grace_s, error=str(err))
            return [ev.PhotoDeferred(path=e.path, root=e.root, sha256=e.sha256, reason="incomplete",
                                     error=f"{label}: {err}", age_s=round(age, 3))]
        return _reject(ctx, e, photo, "unreadable", f"{label}: {err}")


def _find_faces(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, image: np.ndarray,
                label: str) -> _Analysed | list[ev.Event]:
    """Detect and embed the faces; those below [identity] min_face_px are counted as skipped."""
    import cv2

    from gpu_agent.errors import ImageDecodeError
    from gpu_agent.quality import crop_quality
    from gpu_agent.source_quality import measure_source

    engine = ctx.models.face_engine  # outside the try: a model that cannot open is not the photo's fault
    try:
        # The decoded pixels when the engine takes them (in-process): the photo is not decoded twice.
        arrays = getattr(engine, "analyze_arrays", None)
        if arrays is None:  # the agent (HTTP) takes bytes
            detected = engine.analyze([photo.data], pad=True)[0]
        else:  # maybe found ahead, or found now with the photos waiting next (handlers/analysis_ahead.py)
            detected = ctx.ahead.faces(engine, arrays, (e.sha256, image), pad=True,  # photo.data's sha256 (_read_photo)
                                       max_pixels=ctx.config.limits.max_pixels, batch=ctx.config.analysis_batch,
                                       known=lambda sha: bool(ctx.state.processed_photo_with(sha)))
        min_px = ctx.config.identity.min_face_px
        usable = [(i, f) for i, f in enumerate(detected) if f.short_side >= min_px]
        faces = [RoutedFace(i, f, unit(f.embedding), crop_quality(image, f).total, measured=measure_source(image, f))
                 for i, f in usable]
    except (ImageDecodeError, cv2.error, ValueError) as err:  # pixels the models cannot work on
        return _reject(ctx, e, photo, "unprocessable", f"{label}: {type(err).__name__}: {err}")
    skipped = {"small": len(detected) - len(usable)} if len(usable) < len(detected) else {}
    return _Analysed(len(detected), faces, skipped)


def _file_faces(ctx: HandlerContext, e: ev.PhotoReceived, photo: _Photo, image: np.ndarray,
                found: _Analysed, label: str) -> list[ev.Event]:
    """Assign each face (a faceset, the pool, or nowhere), write the crops, move the photo to _processed/
    and record it all."""
    prefix = f"{e.sha256[:12]}_"
    # Taken before anything is written: a photo whose name holds other bytes by now leaves no crop behind.
    src = photo.src if photo.moved else _take(ctx, e, photo, label)
    if isinstance(src, list):
        return src
    out: list[ev.Event] = []
    forced, area = e.forced_faceset, ""
    if forced:
        known = ctx.state.faceset_area(forced)
        if known is None:
            out.append(ev.FacesetCreated(faceset=forced, reason=f"seeded through inbox/{forced}/"))
        else:
            area = known
    if found.faces:
        assign(ctx, found.faces, forced, centroids(ctx, exclude_prefix=prefix))
    lost = sum(1 for f in found.faces if not f.to)
    if lost:
        found.skipped["same_identity"] = lost
    # The crops' and the photo's folders, each fsynced once (not once per file) before the events name them.
    folders: set[Path] = set()
    written = write_crops(ctx, image, [f for f in found.faces if f.to], prefix, forced, area, label, folders)

    crash_point("inbox:crops_written")
    dest, moved_note = (photo.moved, "") if photo.moved else _move_taken(ctx, e, photo, src, processed_rel(e), folders)
    fsync_dirs(folders)
    crash_point("inbox:photo_moved")
    summaries = _record_faces(ctx, e, written, dest, prefix, out)
    note = "" if summaries else ("no face found" if not found.detected else "no usable face")
    note = "; ".join(n for n in (note, moved_note) if n)
    out.append(ev.PhotoProcessed(path=e.path, root=e.root, sha256=e.sha256, dest=dest, faces=tuple(summaries),
                                 skipped=found.skipped, note=note))
    # The photo's line of the story: how many faces were found, where each one went and why (its cosine distance
    # against [identity] match_distance), why any was left.
    match = ctx.config.identity.match_distance
    ctx.log.info("photo routed", path=label, found=found.detected, faces=len(summaries),
                 to=[s["to"] for s in summaries], distance=[s["distance"] for s in summaries], match_distance=match,
                 why=[why_routed(f, forced, match) for f, *_rest in written], skipped=found.skipped, dest=dest,
                 **({"note": note} if note else {}))
    return out


def _record_faces(ctx: HandlerContext, e: ev.PhotoReceived, written: list[Written], dest: str, prefix: str,
                  out: list[ev.Event]) -> list[dict[str, Any]]:
    """Append each written crop's events to `out` (PoolFaceAdded, or FaceAdded + FaceRouted); their summaries."""
    # Where the photo is now (inbox-relative, e.g. _processed/x.jpg), and the name it arrived under.
    base_source = {**_source_dict(e, dest), "photo_sha256": e.sha256}
    summaries: list[dict[str, Any]] = []
    taken = {f.to for f, *_rest in written}
    for f, rel, sha, size, mtime in written:
        source = {**base_source, "face": f.index, "bbox": [round(v, 1) for v in f.face.bbox],
                  "det_score": round(float(f.face.det_score), 4), **f.measured}
        dist = None if f.distance is None else round(f.distance, 4)
        if f.to == POOL_FACESET:
            out.append(ev.PoolFaceAdded(path=rel, face_id=f"{prefix}{f.index}", sha256=sha, photo_sha256=e.sha256,
                                        quality=f.quality, source=source, embedding=f.vec))
            out.extend(candidates.propose(ctx, rel, f"{prefix}{f.index}", f.near, f.distance, taken))
        else:
            out.append(ev.FaceAdded(path=rel, sha256=sha, size=size, mtime_ns=mtime, source=source))
            out.append(ev.FaceRouted(path=rel, sha256=sha, faceset=f.to, distance=dist, quality=f.quality,
                                     embedding=f.vec))
            if f.far:
                out.append(distant(ctx, e, f, rel, sha))
        summaries.append({"to": f.to, "crop": rel, "distance": dist, "quality": round(f.quality, 4),
                          "face": f.index})
    return summaries


def _source_dict(e: ev.PhotoReceived, dest: str) -> dict[str, Any]:
    """A crop's source: the provenance, with `photo` where the photo is after routing (inbox-relative,
    under _processed/) and `received_as` the name it arrived under (`inbox/x.jpg`)."""
    received_as = e.provenance.get("photo", f"{e.root}/{e.path}")
    return {**e.provenance, "photo": dest or received_as, "received_as": received_as}


__all__ = ["route_one", "route_photo"]
