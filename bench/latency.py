"""Latency from a crop landing in a faceset to that faceset's .fsz being rewritten, model time excluded.

    python bench/latency.py [--sizes 1000 50000] [--repeats 5]

The real daemon loop (watcher -> queue -> log -> handlers -> projections) runs in this process over a
synthetic corpus of N images (100 per faceset, every one already analysed). The face engine is a stand-in
that answers at once (one face, a fixed embedding), so what is measured is facesetd's own overhead.
A crop "lands" the way the inbox and most tools write files: written under a temp name, then renamed.
Targets: <= 1 s at both sizes, and the 50k figure <= 1.5 x the 1k figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from corpus_factory import png_bytes

from daemon.app import App
from daemon.config import load_config
from daemon.logs import configure_logging
from daemon.service import Daemon
from gpu_agent.interface import DetectedFace
from state import events as ev
from state.eventlog import EventLog

PER_FACESET = 100


class InstantEngine:
    """Answers every image with one face and a random unit embedding, at once (no model time)."""

    available = False  # as an occlusion scorer: off, like a machine without a CLIP export

    def __init__(self) -> None:
        self.rng = np.random.default_rng(1)

    def analyze(self, images: Sequence[bytes], *, pad: bool = True) -> list[list[DetectedFace]]:
        out = []
        for _ in images:
            v = self.rng.standard_normal(512).astype(np.float32)
            out.append([DetectedFace((128.0, 128.0, 384.0, 384.0), ((200.0, 220.0), (312.0, 220.0), (256.0, 280.0),
                                     (210.0, 330.0), (302.0, 330.0)), 0.9, v / np.linalg.norm(v))])
        return out

    def score(self, images: Sequence[bytes]) -> list[dict[str, float]]:
        return [{"mask": 0.0, "sunglasses": 0.0} for _ in images]

    def describe(self) -> dict[str, Any]:
        return {"pack": "instant-bench-engine"}


def build_corpus(data: Path, n: int) -> None:
    configure_logging("warning", "console")
    config = load_config(None, data_dir=str(data), environ={})
    config.state_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(config.log_path)
    rng = np.random.default_rng(0)
    png = png_bytes(7, 32)
    batch: list[ev.Event] = []
    for i in range(n):
        fs = f"faceset_{i // PER_FACESET + 1:03d}"
        rel = f"{fs}/faces/{i:06d}.png"
        p = config.corpus_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png)
        st = p.stat()
        if i % PER_FACESET == 0:
            batch.append(ev.FacesetCreated(faceset=fs, reason="bench"))
        v = rng.standard_normal(512).astype(np.float32)
        batch.append(ev.FaceAdded(path=rel, sha256=f"{i:064x}", size=st.st_size, mtime_ns=st.st_mtime_ns))
        batch.append(ev.FaceAnalyzed(path=rel, sha256=f"{i:064x}", face_count=1, det_score=0.9, quality=0.5,
                                     embedding=v / np.linalg.norm(v)))
        if len(batch) >= 3000:
            log.append(batch)
            batch = []
    log.append(batch)
    # the handlers have seen all of it already: only what lands during the bench is new work
    with log.transaction() as conn:
        log.track("handlers", log.head(), conn)
    log.close()


def measure(n: int, repeats: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        build_corpus(data, n)
        app = App(load_config(None, data_dir=str(data), environ={"FACESETD_LOGGING_LEVEL": "warning"}))
        engine = InstantEngine()
        app.open_engines = lambda: (engine, engine)  # type: ignore[method-assign]
        daemon = Daemon(app, environ={})
        daemon.start()
        daemon.pipeline.renderer.render_all()
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                daemon.step()

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        fsz = app.config.corpus_dir / "faceset_001" / "faceset_001.fsz"
        faces = fsz.parent / "faces"
        times = []
        try:
            for r in range(repeats + 1):
                before = fsz.stat().st_mtime_ns
                tmpname = faces / f".landing-{r}.png.tmp-bench"
                tmpname.write_bytes(png_bytes(1000 + r, 32))
                start = time.perf_counter()
                tmpname.rename(faces / f"landed_{r}.png")
                while fsz.stat().st_mtime_ns == before:
                    if time.perf_counter() - start > 30:
                        raise RuntimeError("the .fsz was never rewritten")
                    time.sleep(0.002)
                if r:  # the first landing warms caches and opens the (stand-in) engine
                    times.append(time.perf_counter() - start)
                time.sleep(2 * app.config.projection.coalesce_s)  # a quiet spell: no coalescing delay
        finally:
            stop.set()
            t.join()
            daemon.shutdown()
            app.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 50000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    results = {}
    for n in args.sizes:
        results[n] = measure(n, args.repeats)
        print(f"{n:>7} images: median {statistics.median(results[n]) * 1000:7.1f} ms "
              f"(min {min(results[n]) * 1000:.1f}, max {max(results[n]) * 1000:.1f}, {len(results[n])} landings)")
    if len(args.sizes) >= 2:
        small, large = (statistics.median(results[n]) for n in (min(args.sizes), max(args.sizes)))
        print(f"ratio {max(args.sizes)} / {min(args.sizes)}: {large / small:.2f}  (target <= 1.5; each <= 1 s)")


if __name__ == "__main__":
    main()
