"""Inbox photos left where they are: retried once their writer has left them alone long enough, or once they
can be read.

The router defers a photo that does not decode while its file was written less than [limits]
incomplete_grace_s ago (PhotoDeferred, reason incomplete): a writer that paused, or one that reopens the file
for each chunk, is not done. When the writer goes on, the watcher reports the new bytes and their PhotoReceived
supersedes the deferral. When nothing more comes, `retry_due` receives the photo again once the grace has passed,
and the router then rejects it as unreadable (or routes it, if it decodes after all). A file that cannot be opened
(reason permission) is tried at every call and received again as soon as it can be read (a chmod changes no
mtime and no bytes, so the watcher has nothing to report). A deferred photo whose file is gone is received again
too, recorded unread (vanished), and the router closes it: every receipt has one verdict. The daemon calls it
every few seconds; `facesetd reconcile` once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from state import events as ev

from .inbox import forced_faceset, photo_event

if TYPE_CHECKING:
    from .pipeline import Pipeline

log = structlog.get_logger("facesetd.deferred")


@dataclass(frozen=True)
class Waiting:
    """A deferred photo still within its grace, or one that cannot be read."""

    path: str
    written_ago_s: float  # seconds since its file was last written
    retry_in_s: float  # seconds until it is retried, if it stays unchanged
    reason: str = "incomplete"  # incomplete (does not decode yet) | permission (cannot be read)


def retry_due(pipeline: Pipeline, now: float | None = None) -> int:
    """Append a new PhotoReceived for each deferred photo that is due: unchanged for the grace, readable again
    (deferred for its permissions), or gone (recorded unread, `vanished`); returns how many were appended.

    `now` is wall-clock time (time.time()), compared with the files' mtimes.
    """
    pipeline.state.catch_up()
    deferred = pipeline.state.deferred_photos()
    if not deferred:
        return 0
    now = time.time() if now is None else now
    grace = pipeline.ctx.config.limits.incomplete_grace_s
    inbox = pipeline.config.inbox_dir
    out: list[ev.Event] = []
    for photo in deferred:
        if photo.root != "inbox":
            continue  # only the inbox defers: staged Immich originals are complete when handed over
        src = inbox / photo.path
        try:
            mtime = os.lstat(src).st_mtime
        except FileNotFoundError:
            out.append(ev.PhotoReceived(path=photo.path, root=photo.root, sha256=photo.sha256,
                                        forced_faceset=forced_faceset(photo.path),
                                        provenance={"photo": f"{photo.root}/{photo.path}"}, unread=ev.UNREAD_VANISHED))
            continue
        except OSError as e:  # a share briefly away: look again on the next call
            log.warning("deferred photo cannot be checked, will retry", path=photo.path, error=str(e))
            continue
        if photo.reason != "permission" and now - mtime < grace:
            continue  # still within its grace; a write in the meantime is reported by the watcher
        try:
            # The bytes as they are now: the same when unchanged, the writer's last ones otherwise.
            event = photo_event(inbox, photo.path, link_roots=(pipeline.config.data_dir, inbox),
                                max_bytes=pipeline.ctx.config.limits.max_file_bytes)
        except OSError as e:
            log.warning("deferred photo cannot be read, will retry", path=photo.path, error=str(e))
            continue
        if event.unread == ev.UNREAD_PERMISSION and photo.reason == "permission":
            continue  # still unreadable: said when it was deferred, tried again on the next call
        out.append(event)
        if photo.reason == "permission":
            log.info("a photo that could not be read can be now", path=photo.path)
        else:
            log.info("retrying a deferred photo", path=photo.path, unchanged_s=round(now - mtime, 1), grace_s=grace)
    if out:
        pipeline.log.append(out)
    return len(out)


def waiting(pipeline: Pipeline, now: float | None = None) -> list[Waiting]:
    """The deferred photos (for `facesetd reconcile` and status lines)."""
    pipeline.state.catch_up()
    now = time.time() if now is None else now
    grace = pipeline.ctx.config.limits.incomplete_grace_s
    out = []
    for photo in pipeline.state.deferred_photos():
        try:
            age = max(0.0, now - (pipeline.config.inbox_dir / photo.path).stat().st_mtime)
        except OSError:
            age = grace  # gone or unreachable: the next retry_due settles it
        out.append(Waiting(photo.path, round(age, 1), round(max(0.0, grace - age), 1), photo.reason))
    return out


__all__ = ["Waiting", "retry_due", "waiting"]
