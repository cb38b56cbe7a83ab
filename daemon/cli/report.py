"""`facesetd report --out DIR`: the review pages (facesets, each faceset, the pool, the decisions) as static
HTML files, a contact sheet to look at before running the daemon on an adopted corpus."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "report"
HELP = ("write the review pages (facesets, each faceset with its faces and dropped faces, the pool, the decisions)"
        " as static HTML files into DIR, thumbnails beside them; open DIR/index.html in a browser")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the folder to write (made if missing)")


def run(args: argparse.Namespace, app: Any) -> int:
    from daemon.review.report import write_report
    from state.corpus_state import CorpusState
    from state.readonly import ReadOnlyState

    CorpusState(app.events).catch_up()  # the state as the log says (an adopted corpus: after `facesetd reconcile`)
    state = ReadOnlyState(app.config.log_path)
    try:
        written = write_report(state, app.config, args.out)
    finally:
        state.close()
    print(f"wrote {written['pages']} pages and {written['thumbnails']} thumbnails to {args.out}"
          f" (open {args.out / 'index.html'})")
    return 0
