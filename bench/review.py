"""The review pages at the seed's size: 300 facesets and 6,500 faces, timed in Chromium.

    python bench/review.py [--facesets 300] [--faces 6500] [--runs 5]

A synthetic corpus (small random PNGs, as tests/corpus_factory.py makes them) is adopted into a real log and
state (the scan's events, no checks), the review pages are served by uvicorn in this process, every thumbnail
is made once (cached under the state folder, as a first visit leaves them), then Debian's chromium (Playwright,
executable_path) loads each page `--runs` times with a fresh page: first contentful paint (paint entries) and
the HTML's response time (navigation timing). The pages carry their action forms (Move… on every face, with the
list of every faceset once per page), as the daemon serves them. Beside each, the baseline in the same process: a static HTML file
of the same size served by the same server. Targets (issue 15): facesets page first paint < 1 s, a faceset
page < 300 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from corpus_factory import write_png

from daemon.config import load_config
from daemon.pipeline import Pipeline
from state.eventlog import EventLog

CHROMIUM = "/usr/bin/chromium"
PAINT_JS = """() => {
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  return {fcp: fcp ? fcp.startTime : null, html: nav.responseEnd - nav.requestStart,
          images: document.images.length};
}"""


def build(data: Path, facesets: int, faces: int) -> None:
    corpus = data / "corpus"
    for i in range(faces):
        write_png(corpus / f"faceset_{i % facesets + 1:03d}" / "faces" / f"face_{i:05d}.png", seed=i, size=96)
    config = load_config(None, data_dir=str(data), environ={})
    config.state_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(config, EventLog(config.log_path))
    pipeline.scan_and_record()
    pipeline.state.catch_up()
    pipeline.renderer.render_dirty()


def serve(data: Path) -> tuple[object, str, object]:
    from starlette.responses import FileResponse
    from starlette.routing import Route

    from daemon.review.server import open_site, parse_listen, server_for

    config = load_config(None, data_dir=str(data), environ={"FACESETD_REVIEW_LISTEN": "127.0.0.1:0"})
    from daemon.review.actions import LockedRunner

    # a runner, so the pages carry their forms (Move…, Label, Promote) as the daemon serves them; never called here
    site, _listen = open_site(config, LockedRunner(lambda: None, lambda: None), {})
    server = server_for(site, parse_listen("127.0.0.1:0"))
    baseline = data / "baseline.html"
    server.server.config.app.router.routes.append(  # type: ignore[attr-defined]
        Route("/baseline", lambda request: FileResponse(baseline, media_type="text/html")))
    server.start()
    return server, server.url.rstrip("/"), site


def warm_thumbnails(site: object) -> int:
    state, thumbs, corpus = site.state, site.thumbs, site.corpus  # type: ignore[attr-defined]
    made = 0
    for path, _size, _mtime, sha in ((p, *v) for p, v in state.files().items()):
        thumbs.path(sha, corpus / path)
        made += 1
    return made


def measure(browser: object, url: str, runs: int) -> dict[str, float]:
    fcp, html = [], []
    for _ in range(runs):
        page = browser.new_page(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        page.goto(url, wait_until="load")
        page.wait_for_timeout(50)
        got = page.evaluate(PAINT_JS)
        for _wait in range(40):  # on a loaded machine the paint entry may come after `load`
            if got["fcp"] is not None:
                break
            page.wait_for_timeout(50)
            got = page.evaluate(PAINT_JS)
        fcp.append(got["fcp"])
        html.append(got["html"])
        page.close()
    return {"fcp_ms": statistics.median(fcp), "html_ms": statistics.median(html)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facesets", type=int, default=300)
    ap.add_argument("--faces", type=int, default=6500)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    import requests
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        build(data, args.facesets, args.faces)
        print(f"corpus: {args.facesets} facesets, {args.faces} faces, adopted in {time.perf_counter() - t0:.1f} s")
        server, base, site = serve(data)
        t0 = time.perf_counter()
        print(f"thumbnails: {warm_thumbnails(site)} made in {time.perf_counter() - t0:.1f} s")
        results = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            for label, path in (("facesets page", "/facesets"), ("a faceset page", "/faceset/faceset_150")):
                body = requests.get(base + path, timeout=30).content
                (data / "baseline.html").write_bytes(b"<!doctype html><title>b</title><p>baseline</p><!--"
                                                     + b"x" * max(0, len(body) - 60) + b"-->")
                page = measure(browser, base + path, args.runs)
                static = measure(browser, base + "/baseline", args.runs)
                results.append((label, len(body), page, static))
            browser.close()
        server.stop()  # type: ignore[attr-defined]
    print("| page | HTML bytes | first paint | HTML response | baseline first paint (same size, static) |"
          " page / baseline |")
    print("|---|---|---|---|---|---|")
    for label, size, page, static in results:
        print(f"| {label} | {size:,} | {page['fcp_ms']:.0f} ms | {page['html_ms']:.0f} ms |"
              f" {static['fcp_ms']:.0f} ms | {page['fcp_ms'] / static['fcp_ms']:.2f} |")


if __name__ == "__main__":
    main()
