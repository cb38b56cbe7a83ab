"""`facesetd rebuild`: regenerate every manifest and .fsz from the event log alone."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli.printable import counted
from daemon.lock import add_wait_argument

NAME = "rebuild"
HELP = ("regenerate every projection (manifests, .fsz) from the event log alone; beside the running daemon, the"
        " daemon does it on its worker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    # The corpus state and the renderer alone, not app.pipeline: that would import the handlers (every check, the
    # pool clustering), which a rebuild never runs.
    from state.corpus_state import CorpusState
    from state.render import Renderer

    def here() -> int:
        from state.logcheck import verify

        verify(app.config.log_path)  # a damaged log stops here, one line, before the state tables are replayed
        app.ensure_folders()
        Renderer(CorpusState(app.events), app.config.corpus_dir, app.config.projection.top_n).rebuild()
        return int(app.events.head())

    head = app.correct(NAME, "rebuild", {}, args.wait, here=here)
    print(f"rebuilt projections from {counted(head, 'event')}")
    return 0
