"""What a click on a review page does: one named action per button, each the same Pipeline call as its CLI verb.

An action is a function (pipeline, form) -> the position of the event it recorded; `ACTIONS` maps the name the
page posts (`POST /action/<name>`) to it. A Runner carries it out where writes are allowed: on the daemon's
worker thread (DaemonRunner: queued, never beside the worker), or under the data folder's lock when
`facesetd review` runs without the daemon (LockedRunner). `what(name, form)` says what a click asked for, in the
words the page shows beside the event id it recorded.

| action | form fields | the same as |
|---|---|---|
| restore | event | `facesetd restore EVENT` |
| move | face, to | `facesetd move FACE --to faceset_NNN|pool|dropped` |
| label | faceset, label | `facesetd label faceset_NNN LABEL` (an empty label takes it off) |
| promote | face (one per chosen pool face) | `facesetd promote FACE...` |
| accept | face, faceset | `facesetd move FACE --to faceset_NNN` (a candidate accepted) |
| reject | face | `facesetd move FACE --to pool` (a candidate rejected) |
| eras_split | faceset, years | `facesetd eras split faceset_NNN --years N` (from the shell, through the daemon) |
| rebuild | (none) | `facesetd rebuild` (from the shell, through the daemon; answers the log's head) |

The shell's verbs reach the same actions while the daemon runs through its control socket (daemon/control.py).

A field sent more than once (the pool page's checkboxes) arrives as its values joined by newlines.
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


def _field(form: Form, name: str) -> str:
    value = form.get(name, "").strip()
    if not value or "\n" in value:
        raise ActionError(f"the form names no {name} (or more than one)")
    return value


def restore(pipeline: Any, form: Form) -> int:
    """`facesetd restore EVENT_ID`: undo a decision or a correction, or take a forced face out of its faceset."""
    return int(pipeline.restore(_event_id(form)))


def retry(pipeline: Any, form: Form) -> int:
    """`facesetd retry ID`: try a dead letter again (daemon/dead_letters.py)."""
    from daemon.dead_letters import retry as retry_dead_letter

    position = retry_dead_letter(pipeline, _event_id(form))
    pipeline.settle()
    return int(position)


def move(pipeline: Any, form: Form) -> int:
    """`facesetd move FACE --to TO`: a face to another faceset, the pool or dropped."""
    from daemon.corrections import move_face

    return move_face(pipeline, _field(form, "face"), _field(form, "to"))


def label(pipeline: Any, form: Form) -> int:
    """`facesetd label FACESET LABEL`: a person's name for a faceset ("" takes it off)."""
    from daemon.corrections import label_faceset

    return label_faceset(pipeline, _field(form, "faceset"), form.get("label", ""))


def promote(pipeline: Any, form: Form) -> int:
    """`facesetd promote FACE...`: a new faceset of the chosen pool faces."""
    from daemon.corrections import promote_pool_faces

    faces = [f.strip() for f in form.get("face", "").split("\n") if f.strip()]
    if not faces:
        raise ActionError("choose at least one pool face to promote")
    return promote_pool_faces(pipeline, faces)


def accept(pipeline: Any, form: Form) -> int:
    """A candidate accepted: `facesetd move FACE --to FACESET`."""
    from daemon.corrections import move_face

    return move_face(pipeline, _field(form, "face"), _field(form, "faceset"))


def reject(pipeline: Any, form: Form) -> int:
    """A candidate rejected: `facesetd move FACE --to pool` (it stays in the pool, never proposed there again)."""
    from daemon.corrections import POOL, move_face

    return move_face(pipeline, _field(form, "face"), POOL)


def eras_split(pipeline: Any, form: Form) -> int:
    """`facesetd eras split FACESET --years N`: the family's dated faces split into era buckets."""
    from handlers.era_split import plan_split

    years = form.get("years", "")
    if not years.isdigit() or int(years) < 1:
        raise ActionError(f"years must be a whole number of at least 1 (got {years!r})")
    pipeline.state.catch_up()
    pipeline.mover.finish_pending()
    plan = plan_split(pipeline.ctx, _field(form, "faceset"), int(years))
    (position,) = pipeline.log.append([plan.event()])
    pipeline.settle()
    return int(position)


def rebuild(pipeline: Any, form: Form) -> int:
    """`facesetd rebuild`: every projection regenerated from the log alone; the log's head."""
    pipeline.state.catch_up()
    pipeline.mover.finish_pending()  # projections list files where they are
    pipeline.rebuild()
    return int(pipeline.log.head())


ACTIONS: dict[str, Action] = {
    "restore": restore,
    "move": move,
    "label": label,
    "promote": promote,
    "accept": accept,
    "reject": reject,
    "eras_split": eras_split,
    "rebuild": rebuild,
    "retry": retry,
}

_WHAT: dict[str, Callable[[Form], str]] = {
    "restore": lambda f: f"restore of event {f.get('event', '')}",
    "move": lambda f: f"move of {f.get('face', '')} to {f.get('to', '')}",
    "label": lambda f: (f"label {f.get('label', '').strip()!r} of {f.get('faceset', '')}" if f.get("label", "").strip()
                        else f"label taken off {f.get('faceset', '')}"),
    "promote": lambda f: f"promotion of {len([x for x in f.get('face', '').split(chr(10)) if x.strip()])} pool faces",
    "accept": lambda f: f"candidate {f.get('face', '')} accepted into {f.get('faceset', '')}",
    "reject": lambda f: f"candidate {f.get('face', '')} rejected",
    "eras_split": lambda f: f"era split of {f.get('faceset', '')}",
    "rebuild": lambda f: "rebuild of every projection",
    "retry": lambda f: f"retry of dead letter {f.get('event', '')}",
}


def what(name: str, form: Form) -> str:
    """What a click asked for, in a few words ("move of faceset_001/faces/x.png to pool")."""
    describe = _WHAT.get(name)
    return describe(form) if describe is not None else name


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
