"""`facesetd promote POOL_FACE...`: a new faceset from pool faces a person chose (below the refine gate too)."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli.printable import counted, printable
from daemon.lock import add_wait_argument

NAME = "promote"
HELP = ("make a new faceset (the next number) of these pool faces, however few (one face per photo); POOL_FACE is a"
        " face id or _pool/ID.png. Recorded as a faceset_promoted event; `facesetd restore ID` sends the faces back"
        " to the pool")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("faces", nargs="+", metavar="POOL_FACE", help="a face waiting in the pool")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    position = app.correct(NAME, "promote", {"face": "\n".join(args.faces)}, args.wait)
    stored = app.events.get(position)
    print(printable(f"promoted {counted(len(args.faces), 'pool face')} to {stored.event.faceset}"
                    f" (recorded as event {position}; `facesetd restore {position}` undoes it)"))
    return 0
