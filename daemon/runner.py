"""The one runner: every follower of the log (handlers/flow.py FOLLOWERS), one bounded step each per turn, behind
one error boundary. The daemon and `facesetd reconcile` differ only in what drives it: the daemon calls `turn()`
between its watch events and signals (daemon/service.py) and renders every [projection] coalesce_s; reconcile,
a correction or a dry run call `run_until_idle()` and render once settled (daemon/pipeline.py).

A turn, in this order:

    projection   apply the log to the state tables            (always)
    checks       handle the events past their position        (when no decided move is pending)
    mover        carry out decided moves                      (always)
    promoter     evaluate the pool promotion                  (when the turn did nothing else and no move is pending)
    pool clusters bring the pool's clusters beside the log up  (when the promotion had nothing to do either)
    merger       look for duplicate identities                (when enabled, nothing waits and all else is idle)
    renderer     write the dirty facesets' manifests and .fsz (when no move is pending, and due)
    watcher      receive the next waiting inbox photo         (when the photos before it are settled)

The error boundary (state/failures.py says which fault is which):
- a transient fault (disk full, read-only, permission, I/O) pauses that follower with a doubling backoff, logged
  once when it pauses and once when it resumes; `status` shows it (daemon/control.py asks the daemon).
- a model that cannot open pauses the followers that need one for [queue] model_retry_s (a daemon), or is
  raised (a one-shot verb).
- an unexpected error is dead-lettered where there is one input to set aside: one event (handlers/dispatch.py),
  one inbox photo (here: recorded, moved to _rejected/failed/), one evaluation of the promotion or of the merge
  (recorded, its position passed); elsewhere (projection, mover, renderer) it pauses the follower like a
  transient fault, with its traceback logged once.
- the log's own faults (SQLite, LogDamaged) and a busy log (LogBusy) are raised: the caller stops, or backs off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from state.errors import FacesetdError, LogError
from state.failures import describe, is_log_fault, is_transient

from .inbox import receive_order
from .pool_follow import follow_pool

if TYPE_CHECKING:
    from .pipeline import Pipeline

log = structlog.get_logger("facesetd.runner")

FIRST_BACKOFF_S = 1.0  # a paused follower is tried again after this long, then twice as long each time it fails
MAX_BACKOFF_S = 60.0  # ... up to this: a disk freed or remounted read-write is noticed within a minute
# The followers that need the face models: paused together while the models cannot be opened.
NEEDS_MODELS = ("checks", "promoter", "merger", "watcher")


class WorkPaused(FacesetdError):
    """A one-shot run (reconcile, a correction's settle) met a transient fault: one line, exit 1, nothing lost."""


@dataclass
class Pause:
    """A follower held back by a fault until `until` (time.monotonic())."""

    follower: str
    error: str
    since: float  # time.time() when it first failed
    until: float
    attempts: int = 1
    transient: bool = True

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"follower": self.follower, "error": self.error, "since": round(self.since, 3),
                "retry_in_s": round(max(0.0, self.until - now), 1), "attempts": self.attempts,
                "transient": self.transient}


class Runner:
    """Drives the followers of one pipeline; see the module's docstring for the turn and the error boundary."""

    def __init__(self, pipeline: Pipeline, *, render_every_s: float | None = None, hold_on_models: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self.render_every_s = render_every_s  # None: render once settled (a one-shot); else at most this often
        self.hold_on_models = hold_on_models  # a daemon waits for the models; a one-shot verb stops
        self.clock = clock
        self.waiting: set[str] = set()  # inbox photos seen and not yet received (inbox-relative)
        self.paused: dict[str, Pause] = {}
        self.received = 0  # inbox photos received by this runner
        self.merged = 0  # facesets merged into others by this runner
        self.merge = False  # whether the merger runs (reconcile, the daemon); off for a correction's settle
        self.on_received: Callable[[], None] | None = None  # called after each photo received (reconcile's bar)
        self._last_render = float("-inf")
        self._merge_looked_at = -1  # the log head when the merger last found nothing due

    # Driving ---------------------------------------------------------------------------------------------------
    def turn(self, max_events: int | None = None, stop: Callable[[], bool] | None = None) -> int:
        """One bounded step of each follower, in the order of the module's docstring; returns how much was done
        (0: nothing to do, or everything that has work is paused)."""
        p = self.pipeline
        done = self._step("projection", p.state.catch_up, counts=False)
        if not p.state.pending_decisions():
            handled = self._step("checks", lambda: p.dispatcher.run_pending(max_events=max_events, stop=stop))
            p.handled += handled
            done += handled
        done += self._step("mover", p.mover.finish_pending)
        if not done and not p.state.pending_decisions():
            done += self._step("promoter", lambda: p.promote_if_due(p.ctx.config.identity.pool_slice_s))
            if not done:  # the pool's clusters beside the log follow it (daemon/pool_follow.py)
                done += self._step("pool clusters", lambda: follow_pool(p, p.ctx.config.identity.pool_slice_s))
        if self.merge and not self.waiting and not done and p.idle():
            done += self._step("merger", self._merge_step)
        if not p.state.pending_decisions() and self._render_due():
            self._step("renderer", self._render, counts=False)
        if self.waiting and p.takes_photo():
            done += self._step("watcher", self._receive_next)
        return done

    def run_until_idle(self, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Turns until nothing is left to do; returns how many events the checks handled. `progress` gets (events
        just handled, events still unhandled). A one-shot does not wait out a transient fault: WorkPaused names it."""
        p = self.pipeline
        start = p.handled
        while True:
            before = p.handled
            done = self.turn()
            if progress and p.handled > before:
                progress(p.handled - before, p.dispatcher.pending())
            if not done and not p.state.pending_decisions():
                break
        if self.render_every_s is None:
            self._step("renderer", self._render, counts=False)
        if self.paused:  # a one-shot does not wait for a fault to clear: it says so, and the next run goes on
            pause = min(self.paused.values(), key=lambda x: x.follower)
            raise WorkPaused(f"{pause.follower} stopped on {pause.error}; nothing is lost: run it again once that is"
                             " fixed (the log holds what was done, and what is left is taken up where it stopped)")
        return p.handled - start

    # The followers' steps that are more than one call ----------------------------------------------------------
    def _receive_next(self) -> int:
        """Record the next waiting inbox photo (seeds first, then by name); a photo that cannot be received with an
        unexpected error is dead-lettered (recorded, moved aside) and the next one is tried on the next turn."""
        order = sorted(self.waiting, key=receive_order)
        before = list(order)
        try:
            position = self.pipeline.receive_next(order)
        except Exception as error:  # the boundary for one inbox file (see _failed)
            if _not_the_inputs(error):
                self.waiting = set(before)  # nothing was recorded: every one of them waits on
                raise
            rel = before[len(before) - len(order) - 1]  # the one it failed on (those before it were not new)
            self.waiting = set(order)
            from .dead_letters import dead_letter_inbox_file

            dead_letter_inbox_file(self.pipeline, rel, error)
            return 1
        self.waiting = set(order)
        if position is None:
            return 0
        self.received += 1
        if self.on_received is not None:
            self.on_received()
        return 1

    def _merge_step(self) -> int:
        """Merge duplicate identities when a faceset changed since the last check; 1 when the check ran."""
        p = self.pipeline
        head = p.log.head()
        if head == self._merge_looked_at or not p.merge_due():
            self._merge_looked_at = head
            return 0
        before = p.log.tracked(p._merger())
        self.merged += p.merge_if_due()
        if p.log.tracked(p._merger()) == before:  # not checked (no models): look again when the log moves
            self._merge_looked_at = head
            return 0
        return 1

    def _render_due(self) -> bool:
        if self.render_every_s is None or self.render_every_s == float("inf"):
            return False  # a one-shot renders once settled (run_until_idle), a dry run never
        return self.clock() - self._last_render >= self.render_every_s and bool(self.pipeline.state.dirty())

    def _render(self) -> int:
        if self.pipeline.renderer.render_dirty():
            self._last_render = self.clock()
            return 1
        return 0

    # The error boundary ----------------------------------------------------------------------------------------
    def _step(self, follower: str, fn: Callable[[], int | None], *, counts: bool = True) -> int:
        """Run one follower's step inside the boundary; what it did (0 when paused, failed or not counted)."""
        ok, result = self._run(follower, fn)
        return result if ok and counts else 0

    def guard(self, follower: str, fn: Callable[[], object]) -> bool:
        """Run the driver's own work for `follower` (the daemon's start-up scan, its recording of what the watchers
        saw) inside the same boundary; False when it is paused or just failed (the driver tries it again later)."""
        ok, _result = self._run(follower, lambda: (fn(), 0)[1])
        return ok

    def _run(self, follower: str, fn: Callable[[], int | None]) -> tuple[bool, int]:
        now = self.clock()
        pause = self.paused.get(follower)
        if pause is not None and now < pause.until:
            return False, 0
        try:
            result = fn()
        except Exception as error:  # noqa: BLE001 - the one error boundary of every follower (_failed re-raises some)
            self._failed(follower, error, pause, now)
            return False, 0
        if pause is not None:
            del self.paused[follower]
            log.info("work resumed", follower=follower, paused_s=round(time.time() - pause.since, 1),
                     attempts=pause.attempts)
            if follower in NEEDS_MODELS and pause.error.startswith("ModelsUnavailable"):
                self._resume_models()
        return True, int(result or 0)

    def _failed(self, follower: str, error: Exception, pause: Pause | None, now: float) -> None:
        from gpu_agent.errors import ModelsUnavailable

        if isinstance(error, LogError) or is_log_fault(error):  # busy, or damaged (state/logcheck.py)
            raise error
        if isinstance(error, ModelsUnavailable):
            if not self.hold_on_models:
                raise error
            self._pause_models(error, now)
            return
        transient = is_transient(error)
        if not transient and follower in ("promoter", "merger"):  # one evaluation: set it aside, go on
            from .dead_letters import dead_letter_evaluation

            dead_letter_evaluation(self.pipeline, follower, error)
            return
        attempts = pause.attempts + 1 if pause is not None else 1
        backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempts - 1))
        self.paused[follower] = Pause(follower, describe(error), pause.since if pause else time.time(), now + backoff,
                                      attempts, transient)
        if pause is None:  # once per fault, not once per retry
            log.error("work paused: it is tried again by itself" if transient else
                      "work paused by an unexpected error; it is tried again by itself",
                      follower=follower, error=describe(error), retry_s=backoff,
                      **({} if transient else {"exc_info": error}))

    def _pause_models(self, error: Exception, now: float) -> None:
        retry = self.pipeline.config.queue.model_retry_s
        first = not any(f in self.paused for f in NEEDS_MODELS)
        for follower in NEEDS_MODELS:
            old = self.paused.get(follower)
            self.paused[follower] = Pause(follower, describe(error), old.since if old else time.time(), now + retry,
                                          (old.attempts + 1) if old else 1)
        if first:
            log.error("models unavailable: new photos and faces are recorded and wait", error=str(error),
                      retry_s=retry)

    def _resume_models(self) -> None:
        for follower in NEEDS_MODELS:
            self.paused.pop(follower, None)
        log.info("models available again; handling the waiting events")
        self.pipeline.request_missing_analyses()

    def models_down(self) -> bool:
        """Whether the followers that need the models are paused for them."""
        pause = self.paused.get("checks")
        return pause is not None and pause.error.startswith("ModelsUnavailable")

    def pauses(self) -> list[dict[str, Any]]:
        """The paused work, for `status` and the review page (read from another thread: a copy)."""
        now = self.clock()
        return [p.as_dict(now) for p in sorted(list(self.paused.values()), key=lambda p: p.follower)]


def _not_the_inputs(error: BaseException) -> bool:
    """Faults the boundary hands on rather than pinning on one input (see state/failures.py)."""
    from gpu_agent.errors import ModelsUnavailable

    return isinstance(error, (LogError, ModelsUnavailable)) or is_transient(error) or is_log_fault(error)


# The runner's followers are the declared ones: tests/test_flow.py holds these names to FOLLOWERS.
STEPS = ("projection", "checks", "mover", "promoter", "pool clusters", "merger", "renderer", "watcher")
__all__ = ["Runner", "Pause", "STEPS"]
