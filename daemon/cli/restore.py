"""`facesetd restore EVENT_ID`: undo a prune, a quarantine, a routing or a merge (Pipeline.restore); the undo is
itself an event."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.lock import add_wait_argument

NAME = "restore"
HELP = ("undo a prune (a face_pruned event: the PNG comes back from faces/_dropped/), a quarantine (a"
        " faceset_quarantined event: the faceset comes back from _masked/, _merged/ or _thin/), or a routing (a"
        " face_routed or forced_face_distant event: the face leaves its faceset for faces/_dropped/; restoring"
        " that face_unrouted event puts it back), or a merge (a facesets_merged event: every PNG and folder goes"
        " back where it was), by its event id (see `facesetd events`); the check then leaves those bytes (or"
        " that pair of facesets) alone")
HELP += "; a faceset_returned event (a thin faceset that grew back) sends it back to _thin/ to stay"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("event_id", type=int, metavar="EVENT_ID",
                   help="the id of a face_pruned, faceset_quarantined, face_routed, forced_face_distant, face_unrouted"
                        " or facesets_merged event")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    position = app.correct(NAME, "restore", {"event": str(args.event_id)}, args.wait)
    print(f"restored event {args.event_id} (recorded as event {position})")
    return 0
