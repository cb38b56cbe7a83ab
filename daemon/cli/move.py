"""`facesetd move FACE --to faceset_NNN|pool|dropped`: a person's correction of where one face belongs."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli.printable import printable
from daemon.lock import add_wait_argument

NAME = "move"
HELP = ("move one face to another faceset, to the pool (not this faceset's person: never matched to it again) or to"
        " dropped (kept on disk, out of every .fsz); a candidate: --to its faceset accepts it, --to pool rejects it."
        " FACE is a path relative to the corpus (faceset_001/faces/x.png, _pool/x.png) or a face id (x). Recorded as"
        " an event; `facesetd restore ID` moves it back")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("face", metavar="FACE", help="a face: its path relative to the corpus, or its face id")
    p.add_argument("--to", required=True, metavar="faceset_NNN|pool|dropped", help="where it belongs")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    position = app.correct(NAME, "move", {"face": args.face, "to": args.to}, args.wait)
    print(printable(f"moved {args.face} to {args.to} (recorded as event {position};"
                    f" `facesetd restore {position}` undoes it)"))
    return 0
