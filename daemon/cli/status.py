"""`facesetd status`: facesets by area, images, the pool, log position and pending work."""

from __future__ import annotations

import argparse
import json
from typing import Any

from state.layout import AREA_NAMES

from .printable import counted, printable

NAME = "status"
HELP = ("show facesets (active/masked/merged/thin, each with its faces and label), images, the pool and the people"
        " close to becoming a faceset, the candidates waiting for a person, log position and pending work")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (everything shown, and the per-faceset list)")


def pool_line(pool: dict[str, Any]) -> str:
    """The pool in one line: faces waiting and how many people are close to the refine gate."""
    line = (f"{counted(pool['faces'], 'face')} from {counted(pool['photos'], 'photo')} waiting for more of their"
            " person")
    if pool["close_to_gate"]:
        sizes = ", ".join(str(n) for n in pool["close_sizes"])
        line += (f"; {pool['close_to_gate']} close to a new faceset (photos each: {sizes};"
                 f" {pool['min_new_faceset']} needed)")
    return line + projection_note(pool["projection"])


def projection_note(projection: dict[str, Any]) -> str:
    """How current the pool's clusters are (state/pool_projection.py): nothing when current; status reads them and
    never clusters the pool itself."""
    if not projection["behind"]:
        return ""
    if not projection["stored"]:
        return f" (its clusters not computed yet: {counted(projection['behind'], 'pool event')} for the daemon to take in)"
    return (f" (clusters as of log position {projection['position']},"
            f" {counted(projection['behind'], 'pool event')} behind: the daemon brings them up to date)")


def daemon_pauses(app: Any) -> list[dict[str, Any]] | None:
    """The work the running daemon holds back for a fault (daemon/runner.py), asked over its control socket;
    None when no daemon answers (nothing is paused then: a one-shot verb stops on a fault instead)."""
    from daemon.control import ControlError, ask, socket_path
    from state.errors import FacesetdError

    if not socket_path(app.config.state_dir).exists():
        return None
    try:
        paused = ask(app.config.state_dir, {"action": "health"}, connect_wait_s=0.0, answer_wait_s=2.0)["paused"]
    except (ControlError, FacesetdError, KeyError):
        return None
    return list(paused)


def run(args: argparse.Namespace, app: Any) -> int:
    # Here, not at the top: every verb module is imported to build the parser, and the summary brings numpy and
    # the corpus state, which `--help` and the other verbs do not need. Not app.pipeline: that would import every
    # check and the model interface, which a status never runs (daemon/summary.py).
    from daemon.summary import summarize
    from state.logcheck import last_check

    s = summarize(app)
    s["paused"] = daemon_pauses(app)
    s["log_check"] = last_check(app.config.log_path)
    if args.json:
        print(json.dumps(s, sort_keys=True))
        return 0
    f, i, p = s["facesets"], s["images"], s["pending"]
    # The corpus path, the deferred photos' names and the labels are the user's text: printable() keeps their
    # control characters off the terminal.
    print(f"corpus        {printable(s['corpus'])}")
    print(f"facesets      {f['active']} active, {f['masked']} masked, {f['merged']} merged, {f['thin']} thin")
    print(f"images        {i['active']} active, {i['dropped']} dropped")
    print(f"pool          {pool_line(s['pool'])}")
    inbox, deferred = s["inbox"], s["inbox"]["deferred"]
    print(f"inbox         {counted(inbox['waiting'], 'photo')} waiting"
          + (f", {len(deferred)} left in place (do not decode yet, or cannot be read yet): {printable(', '.join(deferred))}"
             if deferred else ""))
    if inbox["blocked"]:
        print(f"              {counted(len(inbox['blocked']), 'photo')} held back: {printable(inbox['blocked_by'])}")
    for kept in inbox["left"]:  # handled, but their folder keeps them: facesetd does not take them again
        print(f"              left where it is: {printable(kept['why'])}")
    print(f"log position  {s['log_position']}")
    print(f"log check     {log_check_line(s['log_check'], app.config.queue.log_check_interval_s)}")
    print(f"pending       {counted(p['events_unhandled'], 'event')}, {counted(p['moves_pending'], 'move')},"
          f" {counted(p['projections_dirty'], 'projection')}")
    for pause in s["paused"] or []:  # held back by the running daemon until the fault clears (tried again by itself)
        print(f"paused        {pause['follower']}: {printable(pause['error'])} (tried again in {pause['retry_in_s']:g} s,"
              f" {counted(pause['attempts'], 'attempt')})")
    if s["dead_letters"]:
        print(f"dead letters  {len(s['dead_letters'])} set aside after an unexpected error (`facesetd retry ID`"
              " tries one again):")
        for d in s["dead_letters"]:
            print(f"  {printable(d['line'])}")
    if s["faceset_list"]:
        print()
        print(f"  {'faceset':<16} {'area':<7} {'faces':>6} {'dropped':>8}  top-N")
        for fs in s["faceset_list"]:
            print(f"  {printable(fs['name']):<16} {AREA_NAMES.get(fs['area'], fs['area']):<7} {fs['faces']:>6}"
                  f" {fs['dropped']:>8}  {fs['in_top_n']}/{fs['top_n']}"
                  + (f"  {printable(fs['label'])}" if fs.get("label") else ""))
    print_forming(s["pool"])
    print_candidates(s["candidates"])
    return 0


def log_check_line(outcome: dict[str, Any] | None, every_s: float) -> str:
    """The last integrity check of the event log (state/logcheck.py): when, and what it found. A log found damaged
    stops `status` before this (the check's one line, exit 65) until the file is repaired or replaced."""
    every = f"every {every_s / 3600:g} h" if every_s >= 3600 else f"every {every_s:g} s"
    if outcome is None:
        return f"not yet (the daemon checks at its start and {every}; `facesetd doctor` checks now)"
    when = outcome.get("checked_at", "?")
    if outcome.get("damage"):
        return f"found it damaged at {when}; the file changed since: `facesetd doctor` checks it again"
    return f"sound at {when} ({counted(int(outcome.get('head') or 0), 'event')} read back; the daemon checks {every})"


def print_forming(pool: dict[str, Any]) -> None:
    """The people forming in the pool, each with its faces: one becomes a faceset by itself at the gate, or now by
    `facesetd promote FACE...`."""
    forming = pool.get("forming") or []
    if not forming:
        return
    print()
    print(f"forming       {counted(len(forming), 'person', 'people')} with 3 photos or more, below the gate of"
          f" {pool['min_new_faceset']} (a faceset by itself at the gate; now: facesetd promote FACE_ID...)")
    for person in forming:
        near = (f"nearest {printable(person['nearest'])} at {person['distance']:.3f}" if person["nearest"]
                else "no faceset yet")
        print(f"  {counted(person['photos'], 'photo')}, {near}")
        for face in person["faces"]:
            print(f"    {printable(face['face_id']):<24} from {printable(face['photo'])}")


def print_candidates(candidates: list[dict[str, Any]]) -> None:
    """Uncertain matches waiting for a person, with the commands that settle them."""
    if not candidates:
        return
    print()
    print(f"candidates    {counted(len(candidates), 'pool face')} just past the match distance, waiting for a person"
          " (accept: facesetd move FACE_ID --to FACESET; reject: --to pool)")
    for c in candidates:
        print(f"  {printable(c['face_id']):<24} for {printable(c['faceset']):<14} distance {c['distance']:.4f}"
              f"  (event {c['event']})")
