"""Inbox photos that did not decode yet: retried once their writer has left them alone long enough.

The router defers a photo that does not decode while its file was written less than [limits]
incomplete_grace_s ago (PhotoDeferred): a writer that paused, or one that reopens the file for each chunk,
is not done. When the writer goes on, the watcher reports the new bytes and their PhotoReceived supersedes
the deferral. When nothing more comes, `retry_due` receives the photo again once the grace has passed, and
the router then rejects it as unreadable (or routes it, if it decodes after all). A photo deferred because a folder
it would be moved into was blocked (a plain file named inbox/_processed) is received again, as it was, once that
folder is a folder again. The daemon calls it every few seconds; `facesetd reconcile` once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from handlers.inbox_files import blocked_folder
from state import events as ev

from .inbox import photo_event

if TYPE_CHECKING:
    from .pipeline import Pipeline

log = structlog.get_logger("facesetd.deferred")


@dataclass(frozen=True)
class Waiting:
    """A deferred photo still within its grace."""

    path: str
    written_ago_s: float  # seconds since its file was last written
    retry_in_s: float  # seconds until it is retried, if it stays unchanged
    blocked: str = ""  # for a photo held back by a blocked folder: which one (then retried once it is a folder)


def retry_due(pipeline: Pipeline, now: float | None = None) -> int:
    """Append a new PhotoReceived for each deferred photo unchanged for the grace, and a PhotoRejected
    ('vanished') for each whose file is gone; returns how many events were appended.

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
    blocked: str | None = None  # looked at once per call, when a photo waits for it
    for photo in deferred:
        if photo.reason == "blocked":
            # Waiting for a folder it would be moved into to be a folder again: then received again, as it was.
            if blocked is None:
                blocked = blocked_folder(inbox, pipeline.config.corpus_dir)
            received = None if blocked else pipeline.log.get(photo.position)
            if received is not None:
                out.append(received.event)
                log.info("a blocked folder is a folder again: retrying a photo", path=photo.path)
            continue
        if photo.root != "inbox":
            continue  # only the inbox defers: staged Immich originals are complete when handed over
        src = inbox / photo.path
        try:
            mtime = src.stat().st_mtime
        except FileNotFoundError:
            out.append(ev.PhotoRejected(path=photo.path, root=photo.root, sha256=photo.sha256, reason="vanished",
                                        error=f"{photo.root}/{photo.path} disappeared while it waited to decode"))
            continue
        except OSError as e:  # a share briefly away: look again on the next call
            log.warning("deferred photo cannot be checked, will retry", path=photo.path, error=str(e))
            continue
        if now - mtime < grace:
            continue  # still within its grace; a write in the meantime is reported by the watcher
        try:
            # The bytes as they are now: the same when unchanged, the writer's last ones otherwise.
            out.append(photo_event(inbox, photo.path))
        except OSError as e:
            log.warning("deferred photo cannot be read, will retry", path=photo.path, error=str(e))
            continue
        log.info("retrying a deferred photo", path=photo.path, unchanged_s=round(now - mtime, 1), grace_s=grace)
    if out:
        pipeline.log.append(out)
    return len(out)


def waiting(pipeline: Pipeline, now: float | None = None) -> list[Waiting]:
    """The deferred photos still within their grace, and those held back by a blocked folder (for `facesetd
    reconcile` and status lines)."""
    pipeline.state.catch_up()
    now = time.time() if now is None else now
    grace = pipeline.ctx.config.limits.incomplete_grace_s
    out = []
    blocked = blocked_folder(pipeline.config.inbox_dir, pipeline.config.corpus_dir)
    for photo in pipeline.state.deferred_photos():
        if photo.reason == "blocked":
            out.append(Waiting(photo.path, 0.0, 0.0, blocked or "(no longer: retried at the next look)"))
            continue
        try:
            age = max(0.0, now - (pipeline.config.inbox_dir / photo.path).stat().st_mtime)
        except OSError:
            age = grace  # gone or unreachable: the next retry_due settles it
        out.append(Waiting(photo.path, round(age, 1), round(max(0.0, grace - age), 1)))
    return out


__all__ = ["Waiting", "retry_due", "waiting"]
