"""`facesetd restore EVENT_ID`: undo a prune or a quarantine (Pipeline.restore); the undo is itself an event."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.lock import add_wait_argument

NAME = "restore"
HELP = ("undo a prune (a face_pruned event: the PNG comes back from faces/_dropped/) or a quarantine (a"
        " faceset_quarantined event: the faceset comes back from _masked/, _merged/ or _thin/) by its event id"
        " (see `facesetd events --kind face_pruned --kind faceset_quarantined`); the check then leaves those"
        " bytes alone")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", type=int, metavar="EVENT_ID", help="the id of a face_pruned or faceset_quarantined event")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    app.lock_data_folder(NAME, args.wait)
    position = app.pipeline.restore(args.event_id)
    print(f"restored event {args.event_id} (recorded as event {position})")
    return 0
