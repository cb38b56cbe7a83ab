"""`facesetd restore EVENT_ID`: undo a decision or a correction (Pipeline.restore, by daemon/restore_rules.py's
rules); the undo is itself an event. Beside the running daemon it is made by the daemon (daemon/control.py)."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.lock import add_wait_argument

NAME = "restore"
# Every kind restore takes, as daemon/restore_rules.py's RULES and UNDONE_ONCE name them (tests/test_restore_rules.py
# checks this list against them), with what its restore does.
UNDOES = (
    ("face_pruned", "a prune: the PNG comes back from faces/_dropped/"),
    ("faceset_quarantined", "a quarantine: the faceset comes back from _masked/, _merged/ or _thin/"),
    ("face_routed, forced_face_distant", "a routing: the face leaves its faceset for faces/_dropped/ (face_unrouted)"),
    ("face_unrouted", "that taking out: the face goes back into its faceset"),
    ("eras_split", "an era split: the buckets are unmade (their folders go to _merged/)"),
    ("facesets_merged", "a merge: every PNG and folder goes back where it was"),
    ("faceset_returned", "a thin faceset's return: back to _thin/, to stay"),
    ("face_moved", "a move: the face moves back"),
    ("faceset_labelled", "a label: the old one comes back"),
    ("candidate_rejected", "a candidate's rejection: it is proposed again"),
    ("faceset_promoted", "a promotion, while its faceset is as it made it: faces to the pool, the faceset to _thin/"),
    ("decision_reverted", "a restore: the decision it undid holds again"),
)
HELP = ("undo a decision or a correction by its event id (see `facesetd events`): a prune, a quarantine, a routing,"
        " an era split, a merge, a thin faceset's return, a move, a label, a candidate's rejection, a promotion or a"
        " restore; the undo is itself an event; what it refuses, it says why in one line")


def undoes_epilog() -> str:
    width = max(len(kinds) for kinds, _ in UNDOES)
    return "what restore undoes, by the kind of EVENT_ID:\n" + "\n".join(
        f"  {kinds:<{width}}  {what}" for kinds, what in UNDOES)


# The verb's --help epilog, made when that help is printed (daemon/cli/__init__.py).
EPILOG = undoes_epilog


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("event_id", type=int, metavar="EVENT_ID",
                   help="the id of an event of a kind listed above (`facesetd events` shows ids and kinds)")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    position = app.correct(NAME, "restore", {"event": str(args.event_id)}, args.wait)
    print(f"restored event {args.event_id} (recorded as event {position})")
    return 0
