"""What a click on a review page does: one named action per button, each the same Pipeline call as its CLI verb.

An action is a function (pipeline, form) -> the position of the event it recorded; `ACTIONS` maps the name the
page posts (`POST /action/<name>`) to it. A Runner carries it out where writes are allowed: on the daemon's
worker thread (DaemonRunner: queued, never beside the worker), or under the data folder's lock when
`facesetd review` runs without the daemon (LockedRunner). Adding move, label or promote is one function here
and one form in a template.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol

from state.errors import FacesetdError

Form = Mapping[str, str]
Action = Callable[[Any, Form], int]
ACTION_TIMEOUT_S = 120.0  # how long a click waits for the worker (a restore settles the checks it leads to)


class ActionError(FacesetdError):
    """A click that cannot be carried out (a bad form, an unknown action): one line for the page."""


def _event_id(form: Form) -> int:
    raw = form.get("event", "")
    if not raw.isdigit():
        raise ActionError(f"no event id in the form (got {raw!r})")
    return int(raw)


def restore(pipeline: Any, form: Form) -> int:
    """`facesetd restore EVENT_ID`: undo a prune or a quarantine, or take a forced face out of its faceset."""
    return int(pipeline.restore(_event_id(form)))


ACTIONS: dict[str, Action] = {
    "restore": restore,
}


def action(name: str) -> Action:
    try:
        return ACTIONS[name]
    except KeyError:
        raise ActionError(f"unknown action {name!r} (known: {', '.join(sorted(ACTIONS))})") from None


class Runner(Protocol):
    def __call__(self, name: str, form: Form) -> int: ...


class DaemonRunner:
    """Runs an action on the daemon's worker: `submit(fn)` puts `fn` on its work queue; the reply comes back
    through a future. The worker owns the pipeline, so a click never writes beside it."""

    def __init__(self, submit: Callable[[Callable[[], None]], None], pipeline: Callable[[], Any]) -> None:
        self.submit = submit
        self.pipeline = pipeline

    def __call__(self, name: str, form: Form) -> int:
        fn = action(name)
        reply: Future[int] = Future()

        def on_worker() -> None:
            if not reply.set_running_or_notify_cancel():
                return
            try:
                reply.set_result(fn(self.pipeline(), form))
            except Exception as e:  # noqa: BLE001 - the page shows it; the worker goes on
                reply.set_exception(e)

        self.submit(on_worker)
        return reply.result(timeout=ACTION_TIMEOUT_S)


class LockedRunner:
    """Runs an action in this process (`facesetd review` without the daemon) under the data folder's lock,
    taken for the action and let go after it, so a daemon started meanwhile is not kept out."""

    def __init__(self, lock: Callable[[], Any], pipeline: Callable[[], Any]) -> None:
        self.lock = lock  # () -> a held lock with close(); raises DataFolderBusy when another facesetd has it
        self.pipeline = pipeline
        self._one_at_a_time = threading.Lock()

    def __call__(self, name: str, form: Form) -> int:
        fn = action(name)
        with self._one_at_a_time:
            held = self.lock()
            try:
                return fn(self.pipeline(), form)
            finally:
                held.close()
