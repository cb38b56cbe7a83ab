"""Routing a face against many facesets, and near-dup against a big faceset: before and after issue 12.

    python bench/routing.py [--facesets 10000] [--faces 20] [--crops 5000]

A real CorpusState over a real EventLog: `--facesets` facesets of `--faces` routed faces each (random unit
512-d embeddings), then one face routed (centroids + nearest) today's way (every face read, every centroid
recomputed: tests/routing_reference.py) and with the centroid cache (warm, then after one faceset changed);
and the near-dup check of one new face against a faceset of `--crops` analysed crops, the loop per pair beside
the vectorised check. Prints milliseconds and the ratios of the same run. Target: routing <= 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from routing_reference import old_centroids, old_check_near_dup, old_nearest

from handlers.centroids import centroids, nearest, unit
from handlers.context import HandlerConfig, HandlerContext
from handlers.near_dup import check_near_dup
from state import events as ev
from state.corpus_state import CorpusState
from state.eventlog import EventLog

BATCH = 8  # FaceAnalyzed events per handler batch (handlers/flow.py)
CHUNK = 20_000  # events per append (as bench/replay.py: one transaction per chunk)


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 512)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _append(log: EventLog, events: list[ev.Event]) -> None:
    for i in range(0, len(events), CHUNK):
        log.append(events[i : i + CHUNK])


def routed_faces(faceset: str, start: int, vecs: np.ndarray) -> list[ev.Event]:
    """FaceAdded + FaceRouted of one face per row of `vecs` into `faceset` (as the router records them)."""
    out: list[ev.Event] = []
    for i, vec in enumerate(vecs, start):
        path, sha = f"{faceset}/faces/{i:07d}_0.png", f"{i:064x}"
        out.append(ev.FaceAdded(path=path, sha256=sha, size=1, mtime_ns=i, source={}))
        out.append(ev.FaceRouted(path=path, sha256=sha, faceset=faceset, distance=0.3, quality=0.5, embedding=vec))
    return out


def context(root: Path) -> HandlerContext:
    log = EventLog(root / "events.sqlite3")
    return HandlerContext(config=HandlerConfig(corpus=root / "corpus", inbox=root / "inbox"), state=CorpusState(log))


def build_routing(root: Path, facesets: int, faces: int, rng: np.random.Generator) -> HandlerContext:
    ctx = context(root)
    events: list[ev.Event] = []
    for f in range(facesets):
        name = f"faceset_{f + 1:05d}"
        centre = _vectors(rng, 1)[0]
        vecs = _vectors(rng, faces) * 0.5 + centre  # a person: faces around a centre
        events.append(ev.FacesetCreated(faceset=name, reason="bench"))
        events.extend(routed_faces(name, f * faces, vecs / np.linalg.norm(vecs, axis=1, keepdims=True)))
    _append(ctx.state.log, events)
    ctx.state.catch_up()
    return ctx


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median milliseconds of `repeat` calls, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), out


def bench_routing(root: Path, facesets: int, faces: int) -> None:
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    ctx = build_routing(root, facesets, faces, rng)
    print(f"log: {facesets} facesets x {faces} faces ({ctx.state.log.head()} events) in {time.perf_counter() - t:.1f} s")
    face = unit(_vectors(rng, 1)[0])

    old_ms, old = timed(lambda: old_nearest(old_centroids(ctx), face), 3)
    first_ms, _ = timed(lambda: nearest(centroids(ctx), face), 1)  # builds the cache
    warm_ms, new = timed(lambda: nearest(centroids(ctx), face), 50)
    assert new == old, (new, old)
    changed: list[float] = []
    for k in range(10):  # one face routed into one faceset, then the next face routed
        name = f"faceset_{1 + (k * 997) % facesets:05d}"
        ctx.state.log.append(routed_faces(name, facesets * faces + k, _vectors(rng, 1)))
        ctx.state.catch_up()
        ms, new = timed(lambda: nearest(centroids(ctx), face), 1)
        changed.append(ms)
    after_ms = statistics.median(changed)
    assert new == old_nearest(old_centroids(ctx), face)
    print(f"route one face: today {old_ms:.1f} ms | cache: first build {first_ms:.1f} ms, warm {warm_ms:.2f} ms, "
          f"after one faceset changed {after_ms:.2f} ms")
    print(f"  ratios: today/warm {old_ms / warm_ms:.0f}x, today/after-change {old_ms / after_ms:.0f}x")


def bench_near_dup(root: Path, crops: int) -> None:
    rng = np.random.default_rng(1)
    ctx = context(root)
    vecs = _vectors(rng, crops + BATCH)
    vecs[-1] = unit(vecs[crops // 2] + np.float32(0.2) * vecs[-1])  # the last new face: a near-duplicate of one
    events: list[ev.Event] = [ev.FacesetCreated(faceset="faceset_001", reason="bench")]
    for i, vec in enumerate(vecs):
        path, sha = f"faceset_001/faces/{i:07d}.png", f"{i:064x}"
        events.append(ev.FaceAdded(path=path, sha256=sha, size=1, mtime_ns=i, source={}))
        events.append(ev.FaceAnalyzed(path=path, sha256=sha, face_count=1, det_score=0.9, quality=0.5,
                                      model={"pack": "bench"}, embedding=vec))
    _append(ctx.state.log, events)
    ctx.state.catch_up()
    added = ctx.state.log.read(ctx.state.log.head() - 2 * BATCH, None, kinds=[ev.FaceAnalyzed.KIND])
    for new in (added[-1:], added):

        def run(check: Callable[..., list[ev.Event]]) -> list[ev.Event]:
            ctx.begin_batch()
            return check(ctx, new)  # noqa: B023 - called within this iteration

        old_ms, old = timed(lambda: run(old_check_near_dup), 5)
        new_ms, got = timed(lambda: run(check_near_dup), 5)
        assert got == old and len(got) == 1
        print(f"near-dup of {len(new)} new face(s) (one handler batch) against {crops} crops: loop per pair "
              f"{old_ms:.1f} ms, vectorised {new_ms:.1f} ms ({old_ms / new_ms:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facesets", type=int, default=10_000)
    ap.add_argument("--faces", type=int, default=20)
    ap.add_argument("--crops", type=int, default=5_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "r").mkdir()
        (Path(tmp) / "n").mkdir()
        bench_routing(Path(tmp) / "r", args.facesets, args.faces)
        bench_near_dup(Path(tmp) / "n", args.crops)


if __name__ == "__main__":
    main()
