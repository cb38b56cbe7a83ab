"""`facesetd events`: the log, one event a line, with its id (position); --follow tails it."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from typing import Any

NAME = "events"
HELP = "list events with their ids (positions); --follow keeps printing new ones"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", action="append", help="only events of this kind (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--after", type=int, default=0, help="start after this position")
    p.add_argument("--limit", type=int, default=None, help="at most this many (without --follow)")


def _payload(event: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(event):
        if f.name == event.VECTOR_FIELD:
            continue
        out[f.name] = getattr(event, f.name)
    return out


def format_event(se: Any, as_json: bool) -> str:
    when = dt.datetime.fromtimestamp(se.time, dt.timezone.utc).isoformat(timespec="seconds")
    payload = _payload(se.event)
    if as_json:
        return json.dumps({"id": se.position, "kind": se.kind, "subject": se.event.subject, "time": when,
                           "payload": payload}, sort_keys=True, default=str)
    why = payload.get("reason") or ""
    line = f"{se.position:>8}  {when}  {se.kind:<24} {se.event.subject}"
    return f"{line}  -- {why}" if why else line


def run(args: argparse.Namespace, app: Any) -> int:
    log = app.events
    after, printed = args.after, 0
    while True:
        for se in log.read(after, None if args.follow else args.limit, kinds=args.kind):
            print(format_event(se, args.json), flush=True)
            after = se.position
            printed += 1
        if args.follow:
            after = max(after, log.head()) if args.kind else after
            time.sleep(0.5)
            continue
        return 0
