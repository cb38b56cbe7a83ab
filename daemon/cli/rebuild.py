"""`facesetd rebuild`: regenerate every manifest and .fsz from the event log alone."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.lock import add_wait_argument

NAME = "rebuild"
HELP = "regenerate every projection (manifests, .fsz) from the event log alone"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    app.lock_data_folder(NAME, args.wait)
    app.pipeline.rebuild()
    print(f"rebuilt projections from {app.events.head()} events")
    return 0
