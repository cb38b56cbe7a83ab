"""The shape of the flow map (handlers/flow.py declares it): one Stage per event kind.

    Stage(ev.FaceAdded, producers=("state.scan", ...), consumers=(Consumer(embed.embed, batch=8),),
          applier="_faces_added")

A Consumer is a plain function `(ctx, events) -> list[Event]`: it gets a batch of stored events of its stage's
kind, typed as that kind (`Sequence[StoredEvent[ev.FaceAnalyzed]]`), and returns new events. Consumer and Stage are
generic in the kind, so mypy checks that a stage's consumers take the kind the stage is declared for. The dispatcher (handlers/dispatch.py) runs a stage's consumers in the order they
are listed, appends what they return and advances its position in one transaction: a replayed event never runs
twice. The projection applier is named here and registered in state/corpus_state.py (state imports nothing from
handlers); `check` makes sure both say the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from state.corpus_state import APPLIERS, BATCH_APPLIERS
from state.eventlog import StoredEvent
from state.events import REGISTRY, Event

if TYPE_CHECKING:
    from .context import HandlerContext

E = TypeVar("E", bound=Event)
# Contravariant: a handler of several kinds (`StoredEvent[FaceAdded | FaceChanged]`) serves a stage of each.
E_contra = TypeVar("E_contra", bound=Event, contravariant=True)
# A handler of kind E: gets the handler context and a batch of E, returns the events to append.
Handler = Callable[["HandlerContext", Sequence[StoredEvent[E_contra]]], list[Event]]


class FlowError(Exception):
    """The flow map names something that does not exist or says two things about one kind."""


@dataclass(frozen=True)
class Consumer(Generic[E_contra]):
    """One handler of a stage's kind."""

    fn: Handler[E_contra]
    batch: int = 1  # most events per call; handlers that call a model take batches

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def module(self) -> str:
        return self.fn.__module__


@dataclass(frozen=True)
class Stage(Generic[E]):
    """Everything about one event kind: who appends it, who handles it (in order), what projects it."""

    kind: type[E]
    producers: tuple[str, ...] = ()  # the modules that construct and append it
    consumers: tuple[Consumer[E], ...] = ()  # run by the dispatcher in this order on each batch
    applier: str = ""  # its function in state/corpus_state.py (APPLIERS or BATCH_APPLIERS); "" for none
    readers: tuple[str, ...] = ()  # other modules that act on it when they read the log back ("module: why")
    record_only: str = ""  # why nothing handles or projects it (it is kept for a person or a later read)

    @property
    def handled(self) -> bool:
        return bool(self.consumers)


# kind string -> its stage; a plain dict, so a test can run the dispatcher on a changed copy.
Flow = Mapping[str, Stage[Any]]


def declare(stages: Iterable[Stage[Any]]) -> dict[str, Stage[Any]]:
    """The flow map of `stages`, checked: an unknown kind, consumer or applier name is a FlowError here, at
    import, instead of a handler that silently never runs."""
    flow: dict[str, Stage[Any]] = {}
    for stage in stages:
        kind = stage.kind.KIND
        if kind in flow:
            raise FlowError(f"{kind}: declared twice in the flow map")
        flow[kind] = stage
    check(flow)
    return flow


def check(flow: Flow) -> None:
    """Raise FlowError for the first entry of `flow` that names nothing real."""
    for kind, stage in flow.items():
        if REGISTRY.get(kind) is not stage.kind:
            raise FlowError(f"{kind}: not an event kind of state/events.py (or keyed under another kind)")
        for c in stage.consumers:
            if not callable(c.fn) or not isinstance(c.batch, int) or c.batch < 1:
                raise FlowError(f"{kind}: consumer {c!r} must be a function with batch >= 1")
        if len({c.fn for c in stage.consumers}) != len(stage.consumers):
            raise FlowError(f"{kind}: a consumer is listed twice")
        if stage.applier and stage.applier != applier_name(kind):
            found = applier_name(kind) or "none"
            raise FlowError(f"{kind}: applier {stage.applier!r} is not the one state/corpus_state.py registers"
                            f" for it ({found})")
        if stage.record_only and (stage.consumers or stage.applier):
            raise FlowError(f"{kind}: record_only, yet it has consumers or an applier")


def applier_name(kind: str) -> str:
    """The name of the projection applier state/corpus_state.py registers for `kind` ("" for none)."""
    fn = BATCH_APPLIERS.get(kind) or APPLIERS.get(kind)
    return fn.__name__ if fn is not None else ""


def consumers(flow: Flow, kind: str) -> tuple[Consumer[Any], ...]:
    """The consumers of `kind` in order (none for a kind the map does not list)."""
    stage = flow.get(kind)
    return stage.consumers if stage is not None else ()


def without_consumers(flow: Flow, kind: type[Event]) -> dict[str, Stage[Any]]:
    """A copy of `flow` in which nothing consumes `kind` (e.g. a dry run leaves the inbox router out)."""
    out = dict(flow)
    if kind.KIND in out:
        out[kind.KIND] = replace(out[kind.KIND], consumers=())
    return out


def with_consumer(flow: Flow, kind: type[E], consumer: Consumer[E]) -> dict[str, Stage[Any]]:
    """A checked copy of `flow` with `consumer` run last on `kind` (a test's toy check, say)."""
    out = dict(flow)
    stage = out.get(kind.KIND) or Stage(kind)
    out[kind.KIND] = replace(stage, consumers=stage.consumers + (consumer,), record_only="")
    check(out)
    return out


@dataclass(frozen=True)
class Registration:
    """A consumer as seen from its kind (the view `HANDLERS` gives)."""

    kind: str
    fn: Handler[Any]
    name: str
    batch: int


def registrations(flow: Flow) -> dict[str, list[Registration]]:
    """kind -> its consumers in order, for code that looks handlers up by kind."""
    return {kind: [Registration(kind, c.fn, c.name, c.batch) for c in stage.consumers]
            for kind, stage in flow.items() if stage.consumers}


def __getattr__(name: str) -> Any:
    # HANDLERS: the declared map seen by kind. Built on first use, as handlers.flow imports every handler module.
    if name == "HANDLERS":
        from .flow import FLOW

        return registrations(FLOW)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
