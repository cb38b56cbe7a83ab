"""`facesetd review`: serve the review pages on a data folder the daemon is not running on (the daemon serves
them itself: then this says where)."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "review"
HELP = ("serve the review pages ([review] listen, default http://127.0.0.1:8476/) on this data folder without the"
        " daemon; a restore clicked there runs here under the data folder's lock. With the daemon running, says"
        " where it serves them")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", metavar="HOST:PORT", help="override [review] listen for this run")


def run(args: argparse.Namespace, app: Any) -> int:
    import dataclasses

    from daemon.lock import DataFolderBusy, DataLock
    from daemon.review.actions import LockedRunner
    from daemon.review.server import open_site, server_for
    from state.corpus_state import CorpusState

    config = app.config
    if args.listen:
        config = dataclasses.replace(config, review=dataclasses.replace(config.review, listen=args.listen))

    def lock() -> DataLock:
        held = DataLock(config.state_dir, config.data_dir)
        held.acquire(NAME, wait_s=5.0, daemon_hint="the daemon serves the review pages itself", not_for_daemon=True)
        return held

    try:
        first = lock()
    except DataFolderBusy as busy:
        if busy.holder.verb != "run":
            raise
        print(_daemon_serves(config, busy.holder.pid))
        return 0
    try:
        CorpusState(app.events).catch_up()  # the pages read the state as the log says
    finally:
        first.close()
    site, listen = open_site(config, LockedRunner(lock, lambda: app.pipeline))
    server = server_for(site, listen)
    print(f"review pages at {server.url} (Ctrl-C stops)", flush=True)
    server.serve()
    return 0


def _daemon_serves(config: Any, pid: int | None) -> str:
    """Where the running daemon serves the pages, as it answers on its control socket (the address it bound,
    port 0 resolved), or as configured when it cannot be asked."""
    from daemon.control import ControlError, ask

    said = f"facesetd run (pid {pid}) is working on this data folder"
    try:
        where = ask(config.state_dir, {"action": "where"}, pid=pid, connect_wait_s=1.0, answer_wait_s=2.0)["review"]
    except ControlError as e:
        return f"{said}; it did not say where it serves the review pages ({e})"
    return f"{said} and serves the review pages at {where}" if where else \
        f"{said}; its review pages are off ([review] enabled = false, or its address could not be bound)"
