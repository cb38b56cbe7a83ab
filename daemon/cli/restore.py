"""`facesetd restore EVENT_ID`: undo a prune, quarantine or merge; the undo is itself an event."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.lock import add_wait_argument

NAME = "restore"
HELP = ("undo a prune, quarantine or merge, or take a routed face out of its faceset, by its event id"
        " (see `facesetd events`)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", type=int, metavar="EVENT_ID")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    app.lock_data_folder(NAME, args.wait)
    position = app.pipeline.restore(args.event_id)
    print(f"restored event {args.event_id} (recorded as event {position})")
    return 0
