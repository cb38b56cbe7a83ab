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
    # What Pipeline.rebuild() does, on the corpus state and the renderer alone (keep the two alike): app.pipeline
    # would import the handlers (every check, the pool clustering), which a rebuild never runs.
    from state.corpus_state import CorpusState
    from state.render import Renderer

    app.lock_data_folder(NAME, args.wait)
    app.ensure_folders()
    state = CorpusState(app.events)
    state.reset()
    state.catch_up()
    Renderer(state, app.config.corpus_dir, app.config.projection.top_n).render_all()
    print(f"rebuilt projections from {app.events.head()} events")
    return 0
