"""`facesetd run`: the resident daemon in the foreground (systemd: Type=notify)."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "run"
HELP = "run the daemon in the foreground: watch corpus and inbox, poll Immich, keep projections current"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, app: Any) -> int:
    import faulthandler

    from daemon.service import Daemon

    # Before anything touches the log: a second daemon on the same data folder stops here, naming the first.
    app.lock_data_folder(NAME)
    faulthandler.enable()  # a watchdog SIGABRT then leaves every thread's traceback in the journal
    daemon = Daemon(app)
    daemon.install_signal_handlers()
    return daemon.run()
