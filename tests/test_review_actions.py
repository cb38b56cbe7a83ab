"""The review pages' actions in a real headless Chromium, on one daemon and one small corpus from ../shared/faces:
accept a candidate, label a faceset, move a face to the pool, promote pool faces, restore a label from the
timeline; each click records the same event as its CLI verb (daemon/corrections.py), the files move, the pages
show it, and the log alone rebuilds the projections. Takes the candidates page's screenshot (docs/review.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import DaemonProcess, free_port
from helpers import cli, drop, projections, rebuilt_from_log_alone
from review_browser import VIEWPORT, review_env, shot, thumbs_render

# Where chromium is missing the `browser` fixture (conftest.py) skips, or fails in CI.
pytestmark = pytest.mark.slow


def manifest(corpus: Path, faceset: str) -> dict[str, Any]:
    return json.loads((corpus / faceset / "manifest.json").read_text())


def of_kind(d: DaemonProcess, kind: str) -> list[dict[str, Any]]:
    return [e for e in d.events() if e["kind"] == kind]


def _submitted(page: Any, where: str) -> str:
    """Wait for the redirect after a click; the flash line it shows (fails with the page's error)."""
    page.wait_for_url(lambda url: f"{where}?" in url)  # a glob's * stops at the / of a path in the message
    assert "msg=" in page.url, page.inner_text("main")[:600]
    return str(page.locator(".flash.ok").inner_text())


def _corpus(faces_dir: Path, d: DaemonProcess, inbox: Path) -> None:
    """img1.jpg seeds faceset_001; then alex-lacamoire.jpg (the same person at cosine distance 0.469, past
    match_distance 0.45: a candidate) and biden's two photos (the pool: below min_new_faceset)."""
    d.idle(timeout=180)
    ids = faces_dir / "identities"
    drop(ids, inbox, "alex_lacamoire/alex-lacamoire.jpg", "biden/biden.jpg", "biden/biden2.jpg")
    d.wait_for(lambda: len(of_kind(d, "pool_face_added")) >= 3 and bool(of_kind(d, "face_candidate")),
               "a candidate and biden's faces in the pool", timeout=180)
    d.idle(timeout=180)


def test_actions_on_the_review_pages(tmp_path: Path, faces_dir: Path, models_root: Path, browser: Any,
                                     screenshots: Path) -> None:
    data = tmp_path / "data"
    inbox, corpus = data / "inbox", data / "corpus"
    drop(faces_dir / "identities" / "alex_lacamoire", inbox, "img1.jpg", into="faceset_001")
    port = free_port()
    d = DaemonProcess(data, review_env(models_root, FACESETD_REVIEW_LISTEN=f"127.0.0.1:{port}")).start()
    base = f"http://127.0.0.1:{port}"
    try:
        _corpus(faces_dir, d, inbox)
        (cand,) = of_kind(d, "face_candidate")
        face_id = cand["face_id"]
        page = browser.new_page(viewport=VIEWPORT)

        # a candidate: its face beside faceset_001's, the distance; Accept moves it in as `move ID --to` does
        page.goto(f"{base}/candidates")
        thumbs_render(page)
        row = page.locator(f".candidate[data-face='{face_id}']")
        assert row.locator("img").count() == 2 and f"{cand['distance']:.3f}" in row.inner_text()
        shot(page, screenshots, "candidates")
        row.locator("button.accept").click()
        assert f"candidate {face_id} accepted into faceset_001 recorded as event" in _submitted(page, "/candidates")
        assert (corpus / "faceset_001" / "faces" / f"{face_id}.png").is_file()
        assert not (corpus / "_pool" / f"{face_id}.png").exists()
        (accepted,) = of_kind(d, "face_moved")
        assert (accepted["to"], accepted["face_id"], accepted["check"]) == ("faceset_001", face_id, "moved")
        assert page.locator(".candidate").count() == 0

        # a label from the faceset page: in the manifest, on the page and on the facesets page
        page.goto(f"{base}/faceset/faceset_001")
        page.fill("form.label-form input[name=label]", "Alex Lacamoire")
        page.click("form.label-form button")
        assert "label 'Alex Lacamoire' of faceset_001 recorded" in _submitted(page, "/faceset/faceset_001")
        assert manifest(corpus, "faceset_001")["label"] == "Alex Lacamoire"
        assert "Alex Lacamoire" in page.inner_text("h1")
        (labelled,) = of_kind(d, "faceset_labelled")
        page.goto(f"{base}/facesets")
        assert "Alex Lacamoire" in page.locator(".card[data-faceset=faceset_001]").inner_text()

        # a face moved to the pool from the faceset page: the file moves, a face_moved as `move --to pool` records
        page.goto(f"{base}/faceset/faceset_001")
        seed = next(f["file"] for f in manifest(corpus, "faceset_001")["faces"] if f["file"] != f"{face_id}.png")
        figure = page.locator(f"figure.face:has-text('{seed}')")
        figure.locator("details.move summary").click()
        figure.locator("input[name=to]").fill("pool")
        figure.locator("details.move button").click()
        flash = _submitted(page, "/faceset/faceset_001")
        assert f"move of faceset_001/faces/{seed} to pool recorded as event" in flash
        assert (corpus / "_pool" / seed).is_file() and not (corpus / "faceset_001" / "faces" / seed).exists()
        to_pool = of_kind(d, "face_moved")[-1]
        assert (to_pool["path"], to_pool["dest"], to_pool["to"], to_pool["veto"]) == (
            f"faceset_001/faces/{seed}", f"_pool/{seed}", "pool", "faceset_001")
        assert page.locator(f"figure.face:has-text('{seed}')").count() == 0

        # biden's two pool faces picked and promoted: a new faceset of them, as `facesetd promote` makes
        biden = sorted(e["face_id"] for e in of_kind(d, "pool_face_added") if "biden" in json.dumps(e["source"]))
        assert len(biden) == 2
        page.goto(f"{base}/pool")
        thumbs_render(page)
        for fid in biden:
            page.locator(f"figure.pooled[data-face='{fid}'] input[type=checkbox]").check()
        page.click("form.promote-form button")
        assert "promotion of 2 pool faces recorded as event" in _submitted(page, "/pool")
        (promoted,) = [e for e in of_kind(d, "faceset_promoted") if e["check"] == "user"]
        assert sorted(p.stem for p in (corpus / promoted["faceset"] / "faces").glob("*.png")) == biden
        assert page.locator("figure.pooled").count() == 1  # the face moved to the pool waits alone

        # the timeline: every correction, Restore where `facesetd restore` undoes it now; a label restored
        page.goto(f"{base}/decisions")
        rows = {e["position"]: page.locator(f"li.decision[data-event='{e['position']}']")
                for e in (accepted, labelled, to_pool, promoted)}
        assert all(r.count() == 1 and r.locator("button").count() == 1 for r in rows.values())
        rows[labelled["position"]].locator("button").click()
        assert f"restore of event {labelled['position']} recorded as event" in _submitted(page, "/decisions")
        assert "label" not in manifest(corpus, "faceset_001")
        # restored: no button that restore would refuse; the undo itself can be restored
        assert page.locator(f"li.decision[data-event='{labelled['position']}'] button").count() == 0
        (undo,) = [e for e in of_kind(d, "faceset_labelled") if e["undoes"] == labelled["position"]]
        assert page.locator(f"li.decision[data-event='{undo['position']}'] button").count() == 1

        # a face of the promoted faceset moved out from a shell beside the daemon (its control socket): the
        # promotion's Restore is refused now, a disabled button with restore's own line beside it
        cli(data, "move", biden[0], "--to", "pool")
        refused = cli(data, "restore", str(promoted["position"]), check=False)
        assert refused.returncode == 1
        page.goto(f"{base}/decisions")
        row = page.locator(f"li.decision[data-event='{promoted['position']}']")
        assert row.locator("button.refused").is_disabled()
        assert row.locator(".why-not").inner_text() == refused.stderr.strip().removeprefix("facesetd: error: ")
        assert "1 face left it" in row.locator(".why-not").inner_text()
        page.close()
        d.idle(timeout=60)
    finally:
        assert d.terminate() == 0
    assert rebuilt_from_log_alone(data, tmp_path / "copy") == projections(corpus)
