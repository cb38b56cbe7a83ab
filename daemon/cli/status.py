"""`facesetd status`: facesets by area, images, log position, pending work."""

from __future__ import annotations

import argparse
import json
from typing import Any

from daemon.pipeline import summarize

NAME = "status"
HELP = "show facesets (active/masked/merged/thin), images, log position and pending work"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, app: Any) -> int:
    s = summarize(app.pipeline)
    if args.json:
        print(json.dumps(s, sort_keys=True))
        return 0
    f, i, p = s["facesets"], s["images"], s["pending"]
    print(f"corpus        {s['corpus']}")
    print(f"facesets      {f['active']} active, {f['masked']} masked, {f['merged']} merged, {f['thin']} thin")
    print(f"images        {i['active']} active, {i['dropped']} dropped")
    print(f"log position  {s['log_position']}")
    print(f"pending       {p['events_unhandled']} events, {p['moves_pending']} moves, {p['projections_dirty']} projections")
    return 0
