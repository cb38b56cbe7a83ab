"""`facesetd label faceset_NNN "Name"`: a person's name for a faceset, shown in manifests, status and logs."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli.printable import printable
from daemon.lock import add_wait_argument

NAME = "label"
HELP = ("give a faceset a person's name (in its manifest, the master manifest, `status` and the logs; the folder"
        " and .fsz names stay); \"\" takes it off. Recorded as an event; `facesetd restore ID` puts the old one back")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("faceset", metavar="faceset_NNN")
    p.add_argument("label", metavar="NAME", help="the name (one line); \"\" for none")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    position = app.correct(NAME, "label", {"faceset": args.faceset, "label": args.label}, args.wait)
    label = args.label.strip()
    done = f"labelled {args.faceset} {label!r}" if label else f"took the label off {args.faceset}"
    print(printable(f"{done} (recorded as event {position}; `facesetd restore {position}` undoes it)"))
    return 0
