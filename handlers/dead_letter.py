"""Dead letters: an event a check failed on with an unexpected error is recorded and set aside, and the checks go on.

The dispatcher (handlers/dispatch.py) calls `dead_letter` once it has narrowed a failing group down to one event.
A photo (PhotoReceived) is moved aside to inbox/_rejected/failed/ and finished with its PhotoRejected, so it is
accounted for once; any other event is only recorded, the checks' position moving past it. `facesetd retry ID`
(daemon/dead_letters.py) tries it again. Transient faults (a full or read-only disk) never get here: they pause
the work instead (state/failures.py).
"""

from __future__ import annotations

from state import events as ev
from state import names
from state.eventlog import StoredEvent
from state.failures import describe

from . import inbox_hold
from .context import HandlerContext
from .inbox_files import LeftInPlace, move_aside, rejected_rel

FOLLOWER = "checks"  # handlers/flow.py FOLLOWERS: the dispatcher's follower


def dead_letter(ctx: HandlerContext, stored: StoredEvent[ev.Event], step: str, error: BaseException) -> list[ev.Event]:
    """The events that set `stored` aside after `step` failed on it with `error` (logged once, with its traceback)."""
    e = stored.event
    what = describe(error)
    out: list[ev.Event] = []
    dest = ""
    if isinstance(e, ev.PhotoReceived):
        dest = _move_photo_aside(ctx, e)
        label = f"{e.root}/{e.path}"
        out.append(ev.PhotoRejected(path=e.path, root=e.root, sha256=e.sha256, dest=dest, reason="failed",
                                    error=f"{label}: {step} failed: {what} (see `facesetd status`; `facesetd retry` tries it again)"))
    ctx.log.error("dead letter: a check failed on one input; it is set aside and the rest goes on", follower=FOLLOWER,
                  step=step, position=stored.position, kind=stored.kind, subject=e.subject, dest=dest, error=what,
                  exc_info=error)
    dead = ev.DeadLettered(follower=FOLLOWER, step=step, event_position=stored.position, event_kind=stored.kind,
                           path=e.subject, dest=dest, error=what)
    return [dead, *out]


def _move_photo_aside(ctx: HandlerContext, e: ev.PhotoReceived) -> str:
    """The photo to _rejected/failed/ (inbox-relative destination), or "" when it is gone or cannot move."""
    if e.root != "inbox":
        return ""
    src = ctx.config.inbox / names.os_name(e.path, e.path_hex)
    held = inbox_hold.hold_path(ctx.config.inbox, e)
    if names.lexists(held):  # the router failed after taking it under its holding name (handlers/inbox_hold.py)
        src = held
    try:
        dest = move_aside(src, ctx.config.inbox, rejected_rel(e, "failed"), e.sha256) or ""
    except (OSError, LeftInPlace) as err:  # left where it is: the dead letter still says what happened
        ctx.log.warning("dead letter: the photo cannot be moved aside", path=e.path, error=describe(err))
        if src == held:  # back under its own name, not in the holding folder
            inbox_hold.put_back(ctx.config.inbox, held, names.os_name(e.path, e.path_hex))
        return ""
    if src == held:
        inbox_hold.tidy(ctx.config.inbox)
    return dest
