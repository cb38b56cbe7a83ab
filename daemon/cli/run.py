"""`facesetd run`: the resident daemon in the foreground (systemd: Type=notify)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

NAME = "run"
# A one-shot verb (a reconcile, a rebuild) holding the data folder ends by itself: the daemon waits this long for it
# (before READY=1, so inside systemd's start timeout) instead of failing a boot; another daemon it does not wait for.
WAIT_FOR_ONE_SHOT_S = 60.0
HELP = "run the daemon in the foreground: watch corpus and inbox, poll Immich, keep projections current"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, app: Any) -> int:
    import faulthandler

    from daemon.service import Daemon

    # Before anything touches the log: a second daemon on the same data folder stops here, naming the first.
    app.lock_data_folder(NAME, WAIT_FOR_ONE_SHOT_S, not_for_daemon=True)
    faulthandler.enable()  # a watchdog SIGABRT then leaves every thread's traceback in the journal
    daemon = Daemon(app)
    daemon.install_signal_handlers()
    rc = daemon.run()
    # Stopped cleanly: the log is closed and the projections are written. Skip the interpreter's teardown (model
    # sessions, library threads), which took over a second and counts against systemd's stop timeout.
    app.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
