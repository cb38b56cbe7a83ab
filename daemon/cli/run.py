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
LOG_RETRY_S = 5.0  # how often a daemon that cannot open its event log (a full or read-only disk) tries again
HELP = "run the daemon in the foreground: watch corpus and inbox, poll Immich, keep projections current"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def wait_for_the_log(app: Any) -> bool:
    """Open the event log, waiting while its disk refuses for now (full, read-only: SQLite cannot make its -wal and
    -shm files): one log line, systemd's STATUS= and a longer start timeout meanwhile, and a try every
    LOG_RETRY_S, rather than exiting into a restart that meets the same disk. False when stopped while waiting."""
    import signal
    import threading

    import structlog

    from daemon.notify import Notifier
    from state.errors import LogError
    from state.failures import is_transient

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    notifier = Notifier(os.environ)
    said = False
    try:
        while True:
            try:
                app.events  # noqa: B018 - opened here, once (App.events is cached)
                return True
            except LogError as e:
                cause = e.__cause__
                if cause is None or not is_transient(cause):
                    raise
                if not said:
                    structlog.get_logger("facesetd.daemon").error(
                        "the event log cannot be opened for now; waiting for its disk", error=str(e),
                        retry_s=LOG_RETRY_S)
                    said = True
                notifier.status(f"waiting for the event log's disk: {e}")
                notifier.notify(f"EXTEND_TIMEOUT_USEC={int(LOG_RETRY_S * 3 * 1_000_000)}")
                if stop.wait(LOG_RETRY_S):
                    return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace, app: Any) -> int:
    import faulthandler

    from daemon.service import Daemon

    # Before anything touches the log: a second daemon on the same data folder stops here, naming the first.
    app.lock_data_folder(NAME, WAIT_FOR_ONE_SHOT_S, not_for_daemon=True)
    faulthandler.enable()  # a watchdog SIGABRT then leaves every thread's traceback in the journal
    if not wait_for_the_log(app):
        return 0  # stopped while it waited
    daemon = Daemon(app)
    daemon.install_signal_handlers()
    rc = daemon.run()
    # Stopped cleanly: the log is closed and the projections are written. Skip the interpreter's teardown (model
    # sessions, library threads), which took over a second and counts against systemd's stop timeout.
    app.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
