"""`facesetd report --out DIR`: the review pages as plain HTML files in one folder, thumbnails and the style
sheet beside them, relative links only (readable from file://, a contact sheet to look at before running the
daemon on an adopted corpus). No buttons: each undoable decision names its `facesetd restore` command."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from . import pages
from .links import FileLinks
from .render import STATIC, render
from .thumbs import Thumbs


def write_report(state: Any, config: Any, out: Path) -> dict[str, int]:
    """Write every page into `out` (made if missing); returns what was written (pages, thumbnails)."""
    out.mkdir(parents=True, exist_ok=True)
    links = FileLinks()
    head = state.log.head()
    written = 0

    def page(name: str, template: str, context: dict[str, Any], here: str) -> None:
        nonlocal written
        (out / name).write_text(render(template, context, links, here=here, head=head), encoding="utf-8")
        written += 1

    overview = pages.facesets(state, config.projection.top_n)
    page("index.html", "facesets.html", overview, "facesets")
    for card in overview["cards"]:
        found = pages.faceset(state, config.corpus_dir, config.projection.top_n, card["name"])
        if found is not None:
            page(links.faceset(card["name"]), "faceset.html", found, "facesets")
    page("pool.html", "pool.html", pages.pool(state, config.identity), "pool")
    page("candidates.html", "candidates.html", pages.candidates(state, config.projection.top_n), "candidates")
    before: int | None = None
    while True:
        timeline = pages.decisions(state, config.corpus_dir, before)
        page(links.decisions(before), "decisions.html", timeline, "decisions")
        if timeline["older"] is None:
            break
        before = timeline["older"]
    (out / "static").mkdir(exist_ok=True)
    shutil.copy2(STATIC / "review.css", out / "static" / "review.css")
    return {"pages": written, "thumbnails": _copy_thumbs(state, config, out, links.thumbs)}


def _copy_thumbs(state: Any, config: Any, out: Path, shas: set[str]) -> int:
    """The thumbnails the pages show, made (cached under the state folder) and copied beside them."""
    thumbs = Thumbs(config.state_dir / "thumbs", config.review.thumb_px)
    folder = out / "thumbs"
    folder.mkdir(exist_ok=True)
    copied = 0
    for sha in sorted(shas):
        rel = state.file_with_sha256(sha)
        if rel is None or not (config.corpus_dir / rel).is_file():
            continue
        shutil.copyfile(thumbs.path(sha, config.corpus_dir / rel), folder / f"{sha}.webp")
        copied += 1
    return copied
