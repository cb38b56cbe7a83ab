"""Runs the flow map (handlers/flow.py) over the log: each event's consumers in order, exactly once per event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from state.corpus_state import CorpusState
from state.eventlog import EventLog, StoredEvent
from state.events import Event
from state.faults import crash_point
from state.processor import commit

from .context import HandlerContext
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
            out = []
            self.ctx.begin_batch()
            for reg in self._consumers(group[0].kind):
                out.extend(reg.fn(self.ctx, group))
            crash_point("dispatch:before_commit")  # handlers ran (files may be written), nothing recorded
            if commit(self.log, PROCESSOR, after, out, group[-1].position) is None:
                continue  # another process got here first
            consumed += len(group)
            self.state.catch_up()
        return consumed

    def _group(self, batch: list[StoredEvent[Event]]) -> list[StoredEvent[Event]]:
        """The longest run of same-kind events at the head of `batch`, up to the handlers' batch size."""
        kind = batch[0].kind
        limit = min((r.batch for r in self._consumers(kind)), default=len(batch))
        group = [batch[0]]
        for se in batch[1:]:
            if se.kind != kind or len(group) >= max(1, limit):
                break
            group.append(se)
        return group
