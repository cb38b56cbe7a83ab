"""The facesets page marks thin, masked and merged facesets and shows labels, on an adopted batch-script corpus
(no models, no browser: the static report renders the same templates as the server)."""

from __future__ import annotations

import re
from pathlib import Path

from corpus_factory import batch_corpus, write_png
from helpers import cli


def _card(html: str, name: str) -> str:
    found = re.search(rf'<a class="card area-(\w+)" href="[^"]*" data-faceset="{name}">(.*?)</a>', html, re.S)
    assert found, f"no card for {name}"
    return f"area-{found.group(1)} {found.group(2)}"


def test_facesets_page_marks_areas_and_shows_labels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    write_png(data / "corpus" / "_merged" / "faceset_006" / "faces" / "0000.png", 4242)
    cli(data, "reconcile")
    cli(data, "label", "faceset_001", "Barack Obama")
    cli(data, "label", "faceset_005", "Joe <Biden>")  # escaped on the page
    out = tmp_path / "report"
    cli(data, "report", "--out", str(out))
    index = (out / "index.html").read_text()
    for name, area in (("faceset_004", "masked"), ("faceset_005", "thin"), ("faceset_006", "merged")):
        card = _card(index, name)
        assert card.startswith(f"area-{area} ") and f'<span class="badge {area}">{area}</span>' in card
    for name in ("faceset_001", "faceset_002", "faceset_003"):
        assert _card(index, name).startswith("area-active ") and "badge" not in _card(index, name)
    assert '<span class="label">Barack Obama</span>' in _card(index, "faceset_001")
    assert '<span class="label">Joe &lt;Biden&gt;</span>' in _card(index, "faceset_005")
    page = (out / "faceset_001.html").read_text()  # the read-only state reads labels (it could not before)
    assert '<h1>faceset_001 <span class="label">Barack Obama</span>' in page
    assert (out / "candidates.html").is_file() and "No candidates" in (out / "candidates.html").read_text()
