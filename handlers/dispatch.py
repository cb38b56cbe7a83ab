"""Runs the flow map (handlers/flow.py) over the log: each event's consumers in order, exactly once per event.

The checks' side of the one error boundary: a consumer that fails with an unexpected error on a group is tried
again one event at a time, and the event it fails on alone is dead-lettered (handlers/dead_letter.py), its position
passed, the rest handled. A transient fault (state/failures.py), a model that cannot open and the log's own faults
are raised to the runner (daemon/runner.py), which pauses the work or stops: nothing is skipped for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from state import events as ev
from state.corpus_state import CorpusState
from state.errors import LogError
from state.eventlog import EventLog, StoredEvent
from state.events import Event
from state.failures import is_log_fault, is_transient
from state.faults import crash_point
from state.processor import commit

from .context import HandlerContext
from .dead_letter import dead_letter
from .flow import FLOW
from .registry import Consumer, Flow, consumers
from .tracked import PROCESSOR, unhandled

log = structlog.get_logger("facesetd.handlers")


class Dispatcher:
    def __init__(self, log_: EventLog, state: CorpusState, ctx: HandlerContext, chunk: int = 64, flow: Flow = FLOW) -> None:
        self.log = log_
        self.state = state
        self.ctx = ctx
        self.chunk = chunk
        self.flow = flow  # what it runs: the declared map, or a copy (a dry run's, a test's)
        self._alone_upto = 0  # a group failed: its events up to here are taken one at a time to find the one

    def _consumers(self, kind: str) -> tuple[Consumer[Any], ...]:
        return consumers(self.flow, kind)

    def pending(self) -> int:
        return unhandled(self.log)

    def run_pending(self, max_events: int | None = None, stop: Callable[[], bool] | None = None) -> int:
        """Handle events past the tracked position, a group at a time, until none are left, `max_events` were
        consumed or `stop()` says so (checked between groups: a stop request waits for one group at most).
        Returns how many events were consumed."""
        consumed = 0
        while max_events is None or consumed < max_events:
            if stop is not None and consumed and stop():
                break
            after = self.log.tracked(PROCESSOR)
            # Read no more than one group can take (the rest would be decoded again on the next turn): the
            # handlers' batch size for the next event's kind, a whole chunk for kinds nobody handles.
            head = self.log.read(after, 1)
            if not head:
                break
            regs = self._consumers(head[0].kind)
            batch = self.log.read(after, max(1, min(r.batch for r in regs)) if regs else self.chunk)
            if not batch:
                break
            group = self._group(batch)
            out = self._consume(group)
            if out is None:
                continue  # the group failed: its events are taken one at a time now
            crash_point("dispatch:before_commit")  # handlers ran (files may be written), nothing recorded
            if commit(self.log, PROCESSOR, after, out, group[-1].position) is None:
                continue  # another process got here first
            consumed += len(group)
            self.state.catch_up()
        return consumed

    def _consume(self, group: list[StoredEvent[Event]]) -> list[Event] | None:
        """The group's events from its consumers, in order; None when one failed on a group of several (it is then
        taken apart), the dead letter's events when one failed on a single event."""
        from gpu_agent.errors import ModelsUnavailable

        target = group
        if group[0].kind == ev.DeadLetterRetried.KIND:  # `facesetd retry`: the original event's consumers again
            target = self._retried(group[0])
        out: list[Event] = []
        self.ctx.begin_batch()
        step = ""
        try:
            for reg in self._consumers(target[0].kind) if target else ():
                step = f"{reg.module}.{reg.name}"
                out.extend(reg.fn(self.ctx, target))
        except (LogError, ModelsUnavailable):  # busy or damaged log, no model: not this input's fault
            raise
        except Exception as error:  # the error boundary: one input's fault must not stop the rest
            if is_transient(error) or is_log_fault(error):
                raise
            if len(target) > 1:
                self._alone_upto = target[-1].position
                log.warning("a check failed on a group; taking its events one at a time", step=step,
                            first=target[0].position, last=target[-1].position, error=str(error))
                return None
            return dead_letter(self.ctx, target[0], step, error)
        return out

    def _retried(self, stored: StoredEvent[Event]) -> list[StoredEvent[Event]]:
        """The event a DeadLetterRetried names (through its dead_lettered event), as the group to run again."""
        retry = stored.event
        assert isinstance(retry, ev.DeadLetterRetried)
        dead = self.log.get(retry.target)
        if dead is None or not isinstance(dead.event, ev.DeadLettered) or not dead.event.event_position or retry.moves:
            return []  # a photo moved back into the inbox is received anew, not run here
        original = self.log.get(dead.event.event_position)
        return [] if original is None else [original]

    def _group(self, batch: list[StoredEvent[Event]]) -> list[StoredEvent[Event]]:
        """The longest run of same-kind events at the head of `batch`, up to the handlers' batch size."""
        kind = batch[0].kind
        if batch[0].position <= self._alone_upto or kind == ev.DeadLetterRetried.KIND:
            return batch[:1]
        limit = min((r.batch for r in self._consumers(kind)), default=len(batch))
        group = [batch[0]]
        for se in batch[1:]:
            if se.kind != kind or len(group) >= max(1, limit):
                break
            group.append(se)
        return group
