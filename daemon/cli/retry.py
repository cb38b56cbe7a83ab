"""`facesetd retry [ID ...]`: try dead letters again (daemon/dead_letters.py); with no ID, list the open ones.
Beside the running daemon it is made by the daemon (daemon/control.py)."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.lock import add_wait_argument

from .printable import printable

NAME = "retry"
HELP = ("try a dead letter again: an input the daemon set aside after an unexpected error (`facesetd status` lists"
        " them); a photo goes back into the inbox and is received anew, an event's checks run again; with no ID,"
        " list the open dead letters")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_ids", type=int, nargs="*", metavar="ID", help="the dead letter's id (its dead_lettered event)")
    p.add_argument("--all", action="store_true", help="every open dead letter")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    from daemon.dead_letters import open_dead_letters

    ids = list(args.event_ids)
    if args.all or not ids:
        letters = open_dead_letters(app.events)
        if not args.all:
            for d in letters:
                print(printable(d.line()))
            if not letters:
                print("no dead letters")
            return 0
        ids = [d.position for d in letters]
    for event_id in ids:
        position = app.correct(NAME, "retry", {"event": str(event_id)}, args.wait)
        print(f"retried dead letter {event_id} (recorded as event {position})")
    return 0
