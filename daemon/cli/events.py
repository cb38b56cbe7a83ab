"""`facesetd events`: the log, one event a line, with its id (position); --follow tails it."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import textwrap
import time
from typing import Any

from state import names
from state.errors import FacesetdError

from .event_changes import change, short_sha
from .printable import printable

# state.events is imported inside the functions that use it, not here: every verb module is imported to build
# the parser, and `facesetd --help` (or any other verb) should not pay for defining every event class.

NAME = "events"
HELP = "list events with their ids (positions) and why each file moved; --follow keeps printing new ones"


def photo_kinds() -> tuple[str, ...]:
    """Kinds about one inbox (or staged Immich) photo, whose `path` and `sha256` are the photo's."""
    from state import events as ev

    return (ev.PhotoReceived.KIND, ev.PhotoProcessed.KIND, ev.PhotoRejected.KIND, ev.PhotoDeferred.KIND)


def decision_kinds() -> tuple[str, ...]:
    """Kinds that move files (their payload's `moves` are (src, dest) pairs)."""
    from state import events as ev

    return tuple(sorted(k for k, cls in ev.REGISTRY.items() if issubclass(cls, ev.Decision)))


class UnknownKind(FacesetdError):
    """`--kind` names no event kind."""


def kinds_epilog() -> str:
    """The event kinds, for the verb's --help."""
    from state import events as ev

    return "event kinds (--kind):\n" + textwrap.fill(", ".join(sorted(ev.REGISTRY)), width=100,
                                                     initial_indent="  ", subsequent_indent="  ")


# The verb's --help epilog, made when that help is printed (daemon/cli/__init__.py), not when the parser is built.
EPILOG = kinds_epilog


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--kind", action="append", help="only events of this kind (repeatable; the kinds are listed below)")
    p.add_argument("--path", metavar="NAME",
                   help="only the events of this photo (a name such as IMG_1.jpg, or its path in the inbox) and of"
                        " the face crops that came from it: why did this photo give nothing?")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--after", type=int, default=0, help="start after this position")
    p.add_argument("--limit", type=int, default=None, help="at most this many (without --follow)")


def check_kinds(kinds: list[str] | None) -> None:
    """Raise UnknownKind (one line, exit 1) for a --kind that is not an event kind."""
    from state import events as ev

    bad = [k for k in kinds or [] if k not in ev.REGISTRY]
    if bad:
        raise UnknownKind(f"unknown event kind {', '.join(map(repr, bad))}; the kinds are: {', '.join(sorted(ev.REGISTRY))}")


def _payload(event: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(event):
        if f.name == event.VECTOR_FIELD:
            continue
        out[f.name] = getattr(event, f.name)
    return out


def why(kind: str, payload: dict[str, Any]) -> str:
    """The one-line reason a readable line ends with: the decision's reason, a photo's note, what was skipped,
    an error. Empty when the event carries none."""
    from state import events as ev

    parts: list[str] = []
    if kind == ev.PhotoProcessed.KIND:
        faces = payload.get("faces") or ()
        if faces:
            dests = sorted({str(f.get("to", "")) for f in faces})
            parts.append(f"{len(faces)} face{'s' if len(faces) != 1 else ''} to {', '.join(dests)}")
    if payload.get("unread"):
        parts.append(f"not read: {payload['unread']}")
    for key in ("reason", "note", "link_problem"):
        if payload.get(key):
            parts.append(str(payload[key]))
    skipped = payload.get("skipped") or {}
    if skipped:
        parts.append("skipped " + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())))
    if payload.get("error"):
        parts.append(str(payload["error"]))
    if payload.get("left"):  # the photo is still where it was received, and why
        parts.append(str(payload["left"]))
    return "; ".join(parts)


def format_event(se: Any, as_json: bool) -> str:
    when = dt.datetime.fromtimestamp(se.time, dt.timezone.utc).isoformat(timespec="seconds")
    payload = _payload(se.event)
    if as_json:
        return json.dumps({"id": se.position, "kind": se.kind, "subject": se.event.subject, "time": when,
                           "payload": payload}, sort_keys=True, default=str)
    reason = why(se.kind, payload)
    changed = change(se.kind, se.event.subject, payload)
    line = f"{se.position:>8}  {when}  {se.kind:<24} {se.event.subject}" + (f" {changed}" if changed else "")
    # Names, labels and reasons as their owners wrote them: a control character in one must not reach the terminal.
    return printable(f"{line}  -- {reason}" if reason else line)


def _name_matches(name: str, path: str) -> bool:
    """A photo path (inbox-relative, or a _processed/ or _rejected/ destination) is the one the user named:
    the same path, or the name ends it after a '/'."""
    return bool(path) and (path == name or path.endswith("/" + name))


def _normalise(name: str, app: Any) -> str:
    """What the user typed, relative to the inbox (or the Immich staging folder) where it points into it."""
    name = name.strip()
    full = os.path.abspath(name)
    for root in (app.config.inbox_dir, app.config.staging_dir):
        if full.startswith(str(os.path.abspath(root)) + os.sep):
            return names.escape(os.path.relpath(full, root))
    # The log holds names as valid UTF-8: a name typed with its real (non-UTF-8) bytes is looked up escaped.
    return names.escape(name.removeprefix("./").removeprefix("inbox/"))


def photos_named(log: Any, name: str) -> list[Any]:
    """The photo events (stored) of the photos called `name`: by their inbox path or where they were moved."""
    return [se for se in log.read(0, None, kinds=photo_kinds())
            if _name_matches(name, se.event.path) or _name_matches(name, getattr(se.event, "dest", ""))]


def photo_positions(log: Any, name: str, photos: list[Any] | None = None) -> list[int]:
    """Positions of the events of the photos called `name` (`photos`, when photos_named found them already) and
    of the face crops that came from them."""
    photo = photo_kinds()
    if photos is None:
        photos = photos_named(log, name)
    shas = {se.event.sha256 for se in photos if se.event.sha256}
    if not shas:
        return sorted(se.position for se in photos)
    # Photo events of the same bytes (e.g. "already processed as ..."), the events of the crops cut from them
    # and the decisions that moved those crops.
    found = log.photo_trail(shas, photo, decision_kinds()) | {se.position for se in photos}
    return sorted(found)


def run(args: argparse.Namespace, app: Any) -> int:
    check_kinds(args.kind)
    if args.path and args.follow:
        raise FacesetdError("--path lists what the log holds now; it cannot be combined with --follow")
    log = app.events
    if args.path:
        return _print_photo(args, app, log)
    after = args.after
    while True:
        for se in log.read(after, None if args.follow else args.limit, kinds=args.kind):
            print(format_event(se, args.json), flush=True)
            after = se.position
        if args.follow:
            after = max(after, log.head()) if args.kind else after
            time.sleep(0.5)
            continue
        return 0


def _print_photo(args: argparse.Namespace, app: Any, log: Any) -> int:
    """`events --path NAME`: the photo's events and its crops', in log order; one line on stderr if none."""
    name = _normalise(args.path, app)
    photos = photos_named(log, name)
    _say_how_many_photos(args.path, photos)
    printed = 0
    for position in photo_positions(log, name, photos):
        se = log.get(position)
        if se is None or position <= args.after or (args.kind and se.kind not in args.kind):
            continue
        if args.limit is not None and printed >= args.limit:
            break
        print(format_event(se, args.json), flush=True)
        printed += 1
    if not printed:
        raise FacesetdError(f"no event about a photo called {names.escape(args.path)!r} (photos are named by their path in the"
                            " inbox, e.g. IMG_1.jpg or faceset_001/IMG_1.jpg)")
    return 0


def _say_how_many_photos(typed: str, photos: list[Any]) -> None:
    """One line on stderr when the name is that of several different photos (other bytes, maybe other folders):
    their lines are told apart by the short sha256 beside each photo's name."""
    shas = sorted({se.event.sha256 for se in photos if se.event.sha256},
                  key=lambda sha: min(se.position for se in photos if se.event.sha256 == sha))
    if len(shas) > 1:
        print(printable(f"{typed!r} names {len(shas)} different photos: {', '.join(short_sha(s) for s in shas)}"
                        " (the sha256 beside each photo's name tells their events apart)"), file=sys.stderr)
