"""Inbox photos left where they are: retried once their writer has left them alone long enough, once they can be
read, or once a folder they would be moved into is a folder again.

The router defers a photo that does not decode while its file was written less than [limits]
incomplete_grace_s ago (PhotoDeferred, reason incomplete): a writer that paused, or one that reopens the file
for each chunk, is not done. When the writer goes on, the watcher reports the new bytes and their PhotoReceived
supersedes the deferral. When nothing more comes, `retry_due` receives the photo again once the grace has passed,
and the router then rejects it as unreadable (or routes it, if it decodes after all). A file that cannot be opened
(reason permission) is tried at every call and received again as soon as it can be read (a chmod changes no
mtime and no bytes, so the watcher has nothing to report). A photo deferred because a folder it would be moved into
was blocked (reason blocked: a plain file named inbox/_processed) is received again, as it was, once that folder is
a folder again. A deferred photo whose file is gone is received again too, recorded unread (vanished), and the
router closes it: every receipt has one verdict. The daemon calls it every few seconds; `facesetd reconcile` once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from handlers.inbox_files import blocked_folder
from state import events as ev

from .inbox import forced_faceset, max_bytes_for, photo_event

if TYPE_CHECKING:
    from state.queries import DeferredPhoto

    from .pipeline import Pipeline

log = structlog.get_logger("facesetd.deferred")


@dataclass(frozen=True)
class Waiting:
    """A deferred photo still within its grace, one that cannot be read, or one held back by a blocked folder."""

    path: str
    written_ago_s: float  # seconds since its file was last written
    retry_in_s: float  # seconds until it is retried, if it stays unchanged
    reason: str = "incomplete"  # PhotoDeferred.reason: incomplete | permission | blocked
    blocked: str = ""  # for a photo held back by a blocked folder: which one (then retried once it is a folder)


def retry_due(pipeline: Pipeline, now: float | None = None) -> int:
    """Append a new PhotoReceived for each deferred photo that is due: unchanged for the grace, readable again
    (deferred for its permissions), its blocked folder a folder again (its PhotoReceived as it was), or gone
    (recorded unread, `vanished`); returns how many were appended.

    `now` is wall-clock time (time.time()), compared with the files' mtimes.
    """
    pipeline.state.catch_up()
    deferred = pipeline.state.deferred_photos()
    if not deferred:
        return 0
    now = time.time() if now is None else now
    out: list[ev.Event] = []
    blocked: str | None = None  # looked at once per call, when a photo waits for it
    for photo in deferred:
        if photo.reason == "blocked":
            # Waiting for a folder it would be moved into to be a folder again: then received again, as it was.
            if blocked is None:
                blocked = blocked_folder(pipeline.config.inbox_dir, pipeline.config.corpus_dir)
            received = None if blocked else pipeline.log.get(photo.position)
            if received is not None:
                out.append(received.event)
                log.info("a blocked folder is a folder again: retrying a photo", path=photo.path)
            continue
        event = _due_again(pipeline, photo, now)
        if event is not None:
            out.append(event)
    if out:
        pipeline.log.append(out)
    return len(out)


def _due_again(pipeline: Pipeline, photo: DeferredPhoto, now: float) -> ev.PhotoReceived | None:
    """The new PhotoReceived of a photo deferred for its writer or its permissions, when it is due; else None."""
    if photo.root != "inbox":
        return None  # only the inbox defers: staged Immich originals are complete when handed over
    grace = pipeline.ctx.config.limits.incomplete_grace_s
    inbox = pipeline.config.inbox_dir
    try:
        mtime = os.lstat(inbox / photo.path).st_mtime
    except FileNotFoundError:
        return ev.PhotoReceived(path=photo.path, root=photo.root, sha256=photo.sha256,
                                forced_faceset=forced_faceset(photo.path),
                                provenance={"photo": f"{photo.root}/{photo.path}"}, unread=ev.UNREAD_VANISHED)
    except OSError as e:  # a share briefly away: look again on the next call
        log.warning("deferred photo cannot be checked, will retry", path=photo.path, error=str(e))
        return None
    if photo.reason != "permission" and now - mtime < grace:
        return None  # still within its grace; a write in the meantime is reported by the watcher
    try:
        # The bytes as they are now: the same when unchanged, the writer's last ones otherwise.
        event = photo_event(inbox, photo.path, link_roots=(pipeline.config.data_dir, inbox),
                            max_bytes=max_bytes_for(pipeline, photo.path))
    except OSError as e:
        log.warning("deferred photo cannot be read, will retry", path=photo.path, error=str(e))
        return None
    if event.unread == ev.UNREAD_PERMISSION and photo.reason == "permission":
        return None  # still unreadable: said when it was deferred, tried again on the next call
    if photo.reason == "permission":
        log.info("a photo that could not be read can be now", path=photo.path)
    else:
        log.info("retrying a deferred photo", path=photo.path, unchanged_s=round(now - mtime, 1), grace_s=grace)
    return event


def waiting(pipeline: Pipeline, now: float | None = None) -> list[Waiting]:
    """The deferred photos: within their grace, unreadable, or held back by a blocked folder (for `facesetd
    reconcile` and status lines)."""
    pipeline.state.catch_up()
    now = time.time() if now is None else now
    grace = pipeline.ctx.config.limits.incomplete_grace_s
    out = []
    blocked = blocked_folder(pipeline.config.inbox_dir, pipeline.config.corpus_dir)
    for photo in pipeline.state.deferred_photos():
        if photo.reason == "blocked":
            out.append(Waiting(photo.path, 0.0, 0.0, photo.reason,
                               blocked or "(no longer: retried at the next look)"))
            continue
        try:
            age = max(0.0, now - (pipeline.config.inbox_dir / photo.path).stat().st_mtime)
        except OSError:
            age = grace  # gone or unreachable: the next retry_due settles it
        out.append(Waiting(photo.path, round(age, 1), round(max(0.0, grace - age), 1), photo.reason))
    return out


__all__ = ["Waiting", "retry_due", "waiting"]
