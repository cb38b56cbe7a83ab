"""Handlers are plain functions registered for the event kind they consume.

    @handles(FaceAdded)
    def embed(ctx, events): ...   # gets a batch of stored events of that kind, returns new events

The dispatcher feeds every event past its tracked position to the handlers of its kind, appends
what they return and advances its position in one transaction: a replayed event never runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from state.eventlog import StoredEvent
from state.events import Event

Handler = Callable[[Any, Sequence[StoredEvent]], list[Event]]


@dataclass(frozen=True)
class Registration:
    kind: str
    fn: Handler
    name: str
    batch: int  # most events per call; handlers that call a model take batches


HANDLERS: dict[str, list[Registration]] = {}


def handles(*kinds: type[Event], batch: int = 1) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for k in kinds:
            HANDLERS.setdefault(k.KIND, []).append(Registration(k.KIND, fn, fn.__name__, batch))
        return fn

    return register
