"""The review pages in a real headless Chromium (Debian's chromium, driven by Playwright), on a corpus made
from ../shared/faces through the inbox by the real daemon: every page loads with its thumbnails, a restore
clicked on a multi-face prune brings the PNG back into faces/ and the page shows it, a faceset link is
followed, the page follows the log by itself, and cross-site or token-less POSTs are refused. Takes the
screenshots docs/review.md shows (1280x800) into the `screenshots` folder: a temporary one, unless
bench/review_screenshots.py asks for docs/review/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from daemon_proc import DaemonProcess, free_port
from helpers import REPO, cli, drop
from review_browser import VIEWPORT, review_env, shot, thumbs_render

OBAMA = ["obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
         "obama_partial_face2.jpg", "obama_small.jpg"]

# Where chromium is missing the `browser` fixture (conftest.py) skips, or fails in CI.
pytestmark = pytest.mark.slow


def _fill_inbox(faces_dir: Path, inbox: Path) -> None:
    """obama seeds faceset_001, with a photo of two overlapping people forced in (its crop holds two faces:
    pruned by multi_face); biden seeds faceset_002 (too few: thin); the rest goes to the pool."""
    ids = faces_dir / "identities"
    drop(ids, inbox, *[f"obama/{p}" for p in OBAMA], into="faceset_001")
    drop(faces_dir, inbox, "group/pp_overlap_1.jpg", into="faceset_001")
    drop(ids, inbox, "biden/biden.jpg", "biden/biden2.jpg", into="faceset_002")
    drop(ids, inbox, "alex_lacamoire/alex-lacamoire.jpg", "alex_lacamoire/alex_lacamoire1.jpg",
         "alex_lacamoire/img1.jpg", "lin_manuel_miranda/lin-manuel-miranda.jpg")
    drop(faces_dir, inbox, "group/obama_and_biden.jpg", "group/pp_overlap_2.jpg")


def test_review_pages_in_chromium(tmp_path: Path, faces_dir: Path, models_root: Path, browser: object,
                                  screenshots: Path) -> None:
    data = tmp_path / "data"
    _fill_inbox(faces_dir, data / "inbox")
    port = free_port()
    d = DaemonProcess(data, review_env(models_root, FACESETD_REVIEW_LISTEN=f"127.0.0.1:{port}")).start()
    base = f"http://127.0.0.1:{port}"
    try:
        d.idle(timeout=180)
        assert f'"url": "{base}/"' in d.output()  # the daemon says where its pages are
        pruned = [e for e in d.events() if e["kind"] == "face_pruned" and e["check"] == "multi_face"
                  and e["subject"].startswith("faceset_001/")]
        assert pruned, "the forced two-person photo's crop was not pruned by multi_face"
        target = pruned[0]
        name = target["subject"].rsplit("/", 1)[1]
        corpus = data / "corpus"
        assert not (corpus / "faceset_001" / "faces" / name).exists()

        page = browser.new_page(viewport=VIEWPORT)  # type: ignore[attr-defined]
        # the facesets page: every faceset, thumbnails rendered, the thin one marked
        page.goto(f"{base}/facesets")
        thumbs_render(page)
        assert page.locator(".card").count() >= 2
        for card in page.locator(".card.area-thin, .card.area-masked, .card.area-merged").all():
            assert card.locator(".badge").inner_text() in ("thin", "masked", "merged")
        shot(page, screenshots, "facesets")
        # follow a faceset link
        page.click(".card[data-faceset=faceset_001]")
        page.wait_for_url(f"{base}/faceset/faceset_001")
        thumbs_render(page)
        drop_row = page.locator(f".drop[data-file='_dropped/{name}']")
        assert "multi_face" in drop_row.inner_text() and "2 faces" in drop_row.inner_text()
        drop_row.scroll_into_view_if_needed()
        shot(page, screenshots, "faceset")
        # restore with one click: the PNG is back in faces/, the page says so and lists it among the faces
        drop_row.locator("button", has_text="Restore").click()
        page.wait_for_url("**/faceset/faceset_001?*")
        assert "msg=" in page.url, page.inner_text("main")[:500]
        assert (corpus / "faceset_001" / "faces" / name).is_file()
        assert f"restore of event {target['position']} recorded as event" in page.locator(".flash.ok").inner_text()
        assert page.locator(f"figure.face:has-text('{name}')").count() == 1
        assert page.locator(f".drop[data-file='_dropped/{name}']").count() == 0
        restored = [e for e in d.events() if e["kind"] == "decision_reverted"]
        assert [e["target"] for e in restored] == [target["position"]]  # the same event as the CLI verb's

        # the pool and the decisions timeline
        page.goto(f"{base}/pool")
        thumbs_render(page)
        assert page.locator(".singles figure, .cluster").count() >= 1
        shot(page, screenshots, "pool")
        page.goto(f"{base}/decisions")
        thumbs_render(page)
        row = page.locator(f"li.decision[data-event='{target['position']}']")
        assert "restored" in row.inner_text() and row.locator("button").count() == 0
        shot(page, screenshots, "decisions")

        # the page follows the log by itself: a new photo arrives, the shown log position moves on
        shown = page.get_attribute("body", "data-head")
        drop(faces_dir / "identities", data / "inbox", "pp_man/pp2_clear_glasses.jpg")
        page.wait_for_function("(old) => document.body.dataset.head !== old", arg=shown, timeout=60000)

        # cross-site POSTs are refused: another origin, or no form token; nothing is recorded
        head = d.head()
        form = {"event": str(pruned[-1]["position"]), "next": "/facesets"}
        evil = requests.post(f"{base}/action/restore", data=form, headers={"Origin": "http://evil.example"},
                             allow_redirects=False, timeout=10)
        assert evil.status_code == 403 and "origin" in evil.text
        no_form_token = requests.post(f"{base}/action/restore", data=form, headers={"Origin": base},
                                      allow_redirects=False, timeout=10)
        assert no_form_token.status_code == 403
        rebound = requests.get(f"{base}/facesets", headers={"Host": "evil.example"}, timeout=10)
        assert rebound.status_code == 403  # DNS rebinding: a loopback listener answers loopback names only
        # a form past MAX_FORM_BYTES is refused before it is read whole: by its length, or while streamed
        headers = {"Origin": base, "Content-Type": "application/x-www-form-urlencoded"}
        huge = requests.post(f"{base}/action/restore", data=b"x" * (2 << 20), headers=headers, timeout=30)
        assert huge.status_code == 413
        streamed = requests.post(f"{base}/action/restore", data=iter([b"x" * (1 << 16)] * 17), headers=headers,
                                 timeout=30)
        assert streamed.status_code == 413
        # a page cursor past SQLite's integers, or in digits Python reads but SQL does not: the newest page
        for odd in ("99999999999999999999999999999", "\u00b2", "-1", "x"):
            older = requests.get(f"{base}/decisions", params={"before": odd}, timeout=10)
            assert older.status_code == 200 and "Decisions" in older.text, (odd, older.status_code)
        time.sleep(1.0)
        assert d.head() == head or all(e["kind"] != "decision_reverted" for e in d.events()[head:])

        # `facesetd review` beside the daemon points at it
        said = cli(data, "review", env=review_env(models_root, FACESETD_REVIEW_LISTEN=f"127.0.0.1:{port}")).stdout
        assert f"serves the review pages at {base}/" in said
        page.close()
    finally:
        assert d.terminate() == 0


def _serve(data: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", **env}
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "review", *args],
                            env=full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_review_without_daemon_token_and_static_report(tmp_path: Path, faces_dir: Path, models_root: Path,
                                                       browser: object) -> None:
    data = tmp_path / "data"
    _fill_inbox(faces_dir, data / "inbox")
    env = review_env(models_root)
    cli(data, "reconcile", env=env, timeout=300)

    # anything but loopback without a token: refused at start, one line naming the key
    refused = cli(data, "review", "--listen", f"0.0.0.0:{free_port()}", env=env, check=False)
    assert refused.returncode == 1 and "review.listen" in refused.stderr and "token" in refused.stderr

    token = "t0ken-for-the-review-pages-1234"
    port = free_port()
    proc = _serve(data, {**env, "FACESETD_REVIEW_TOKEN_ENV": "REVIEW_TEST_TOKEN", "REVIEW_TEST_TOKEN": token},
                  "--listen", f"0.0.0.0:{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{base}/head", proc)
        assert requests.get(f"{base}/facesets", timeout=10).status_code == 401
        # a POST without the token, from another origin: refused before anything else is looked at
        pruned = next(e for e in _events(data, env) if e["kind"] == "face_pruned")
        post = requests.post(f"{base}/action/restore", data={"event": str(pruned["id"])},
                             headers={"Origin": "http://evil.example"}, allow_redirects=False, timeout=10)
        assert post.status_code == 401
        # with the token (once in the address; then a cookie), the pages and a restore work without the daemon
        page = browser.new_page(viewport=VIEWPORT)  # type: ignore[attr-defined]
        page.goto(f"{base}/decisions?token={token}")
        assert "token" not in page.url  # the token leaves the address bar at once
        thumbs_render(page)
        page.locator(f"li.decision[data-event='{pruned['id']}'] button").click()
        page.wait_for_url("**/decisions?msg=*")
        assert page.locator(f"li.decision[data-event='{pruned['id']}']").inner_text().count("restored") == 1
        page.close()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    assert token not in out  # never in a log line
    assert (data / "state" / "thumbs").is_dir() and not list((data / "corpus").rglob("*.webp"))

    # the static report: the same pages as files, readable from file://, no buttons
    out_dir = tmp_path / "report"
    said = cli(data, "report", "--out", str(out_dir), env=env).stdout
    assert "index.html" in said
    page = browser.new_page(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page.goto((out_dir / "index.html").as_uri())
    thumbs_render(page)
    assert page.locator("button").count() == 0
    page.click(".card[data-faceset=faceset_001]")
    page.wait_for_url("**/faceset_001.html")
    thumbs_render(page)
    assert page.locator("button").count() == 0 and page.locator("figure.face").count() >= 5
    page.goto((out_dir / "decisions.html").as_uri())
    assert "facesetd restore" in page.inner_text("main")
    page.close()
    shutil.rmtree(out_dir)


def _events(data: Path, env: dict[str, str]) -> list[dict]:
    import json

    return [json.loads(line) for line in cli(data, "events", "--json", env=env).stdout.splitlines()]
