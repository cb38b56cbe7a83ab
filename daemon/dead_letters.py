"""Dead letters outside the checks: an inbox file that cannot be received, an evaluation of the pool promotion or
of the identity merge that failed; the open dead letters, for `status` and the review page; and `facesetd retry`.

The checks' own dead letters (one event a consumer failed on) are handlers/dead_letter.py's. See daemon/runner.py
for the error boundary they are part of.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from handlers.inbox_files import REJECTED
from state import events as ev
from state import names
from state.errors import UnknownEvent
from state.failures import describe
from state.processor import commit

if TYPE_CHECKING:
    from state.eventlog import EventLog

    from .pipeline import Pipeline

log = structlog.get_logger("facesetd.dead_letters")

SHOWN = 1000  # the newest dead letters and retries looked at for `status` (older ones stay in the log)


def dead_letter_inbox_file(pipeline: Pipeline, rel: str, error: BaseException) -> int:
    """An inbox file whose receipt failed with an unexpected error: moved to _rejected/failed/ (left where it is
    when even that fails) and recorded; returns the event's position."""
    inbox = pipeline.config.inbox_dir
    dest = ""
    for cand in names.numbered(f"{REJECTED}/failed/{rel}", "_"):
        target = inbox / cand
        try:
            if names.lexists(target):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(inbox / rel, target)
            dest = cand
        except OSError as err:
            log.warning("dead letter: the file cannot be moved aside", path=names.escape(rel), error=describe(err))
        break
    what = describe(error)
    log.error("dead letter: an inbox file could not be received; it is set aside and the rest goes on",
              path=names.escape(rel), dest=names.escape(dest), error=what, exc_info=error)
    event = ev.DeadLettered(follower="watcher", step="receive", path=names.escape(rel), dest=names.escape(dest),
                            error=what)
    return pipeline.log.append([event])[0]


def dead_letter_evaluation(pipeline: Pipeline, follower: str, error: BaseException) -> None:
    """The promotion or merge check failed with an unexpected error: recorded with its position, which moves on
    (the next photo evaluates it again; `facesetd retry` from where it failed)."""
    tracking = pipeline.tracking_name(follower)
    after = pipeline.log.tracked(tracking)
    what = describe(error)
    log.error("dead letter: an evaluation failed; it is recorded and the rest goes on", follower=follower,
              position=after, error=what, exc_info=error)
    event = ev.DeadLettered(follower=follower, step="evaluate", event_position=after, error=what)
    commit(pipeline.log, tracking, after, [event], lambda positions: max([pipeline.log.head(), *positions]))


@dataclass(frozen=True)
class DeadLetter:
    position: int  # the dead_lettered event's: what `facesetd retry` takes
    time: float
    event: ev.DeadLettered

    def line(self) -> str:
        e = self.event
        where = f" (moved to inbox/{e.dest})" if e.dest else ""
        subject = e.path or (f"event {e.event_position}" if e.event_position else "")
        return f"{self.position}: {e.follower} {e.step} {subject}{where}: {e.error}"


def open_dead_letters(log_: EventLog) -> list[DeadLetter]:
    """Dead letters not retried yet, oldest first (the newest SHOWN looked at)."""
    stored = log_.read_newest((ev.DeadLettered.KIND, ev.DeadLetterRetried.KIND), SHOWN)
    retried = {se.event.target for se in stored if isinstance(se.event, ev.DeadLetterRetried)}
    return sorted((DeadLetter(se.position, se.time, se.event) for se in stored
                   if isinstance(se.event, ev.DeadLettered) and se.position not in retried),
                  key=lambda d: d.position)


def retry(pipeline: Pipeline, position: int) -> int:
    """`facesetd retry ID`: try dead letter ID again; returns the DeadLetterRetried event's position.

    A photo moved aside goes back to where it arrived (another name beside it when that one is taken) and is
    received anew; an event's consumers run on it again (handlers/dispatch.py); a failed evaluation runs again
    from where it failed."""
    pipeline.state.catch_up()
    stored = pipeline.log.get(position)
    if stored is None or not isinstance(stored.event, ev.DeadLettered):
        raise UnknownEvent(f"event {position} is not a dead letter (see `facesetd status` for the open ones)")
    if position not in {d.position for d in open_dead_letters(pipeline.log)}:
        raise UnknownEvent(f"dead letter {position} was retried already")
    dead = stored.event
    if dead.dest:
        return _move_back(pipeline, position, dead)
    retried = ev.DeadLetterRetried(target=position, path=dead.path)
    if dead.step == "evaluate":  # the promotion or merge check again, from where it failed
        tracking = pipeline.tracking_name(dead.follower)
        after = pipeline.log.tracked(tracking)
        positions = commit(pipeline.log, tracking, after, [retried], min(after, dead.event_position))
        if positions is None:
            raise UnknownEvent(f"dead letter {position}: the {dead.follower} moved meanwhile; try again")
        return positions[0]
    return pipeline.log.append([retried])[0]


def _move_back(pipeline: Pipeline, position: int, dead: ev.DeadLettered) -> int:
    inbox = pipeline.config.inbox_dir
    src = inbox / names.os_name(dead.dest)
    if not names.lexists(src):
        raise UnknownEvent(f"dead letter {position}: inbox/{dead.dest} is not there any more")
    for cand in names.numbered(dead.path, "_"):
        target = inbox / names.os_name(cand)
        if not names.lexists(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, target)
            break
    log.info("dead letter retried: the photo is back in the inbox", position=position, path=cand)
    return pipeline.log.append([ev.DeadLetterRetried(target=position, path=cand, moves=((dead.dest, cand),))])[0]
