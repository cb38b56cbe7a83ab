"""`facesetd run`: the resident daemon in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

NAME = "run"
HELP = "run the daemon in the foreground (systemd: Type=notify)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="reconcile once and exit (like `reconcile`)")


def run(args: argparse.Namespace, app: Any) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    app.pipeline.reconcile()
    app.log.info("facesetd started", corpus=str(app.config.corpus_dir), inbox=str(app.config.inbox_dir))
    while not args.once and not stop.wait(1.0):
        app.pipeline.settle()
    app.log.info("facesetd stopped")
    return 0
