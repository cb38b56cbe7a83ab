"""Rebuild every projection from a log of synthetic events, beside merely reading and decoding the rows.

    python bench/replay.py [--events 100000]

Prints events/s for both in the same run, and their ratio. Target: rebuild >= 50k events/s.
The log holds a realistic mix: faces added (with real small PNGs on disk), analyzed (with 512-d
embeddings), occlusion-scored, touched, pruned and moved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from corpus_factory import png_bytes

from daemon.config import load_config
from daemon.logs import configure_logging
from daemon.pipeline import Pipeline
from state import events as ev
from state.eventlog import EventLog


def synthetic_log(data: Path, total: int, per_faceset: int = 100) -> EventLog:
    config = load_config(None, data_dir=str(data), environ={})
    config.state_dir.mkdir(parents=True)
    log = EventLog(config.log_path)
    rng = np.random.default_rng(0)
    faces = total // 5  # each face: added, analyzed, scored, touched; every 10th pruned + moved
    png = png_bytes(1, 16)
    batch: list[ev.Event] = []
    pending_prunes: list[int] = []

    def flush() -> None:
        nonlocal batch
        log.append(batch)
        batch = []

    # In the order the daemon writes them: a scan records a faceset's new faces together, then the
    # handlers record analyses and occlusion scores in batches of 8, and a later scan the touches.
    for start in range(0, faces, per_faceset):
        fs = f"faceset_{start // per_faceset + 1:03d}"
        rels = [f"{fs}/faces/{i:06d}.png" for i in range(start, min(start + per_faceset, faces))]
        batch.append(ev.FacesetCreated(faceset=fs, reason="bench"))
        for i, rel in enumerate(rels, start):
            p = config.corpus_dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(png)
            batch.append(ev.FaceAdded(path=rel, sha256=f"{i:064x}", size=len(png), mtime_ns=i,
                                      source={"photo": f"/p/{i}.jpg"}))
        for b in range(0, len(rels), 8):
            chunk = list(enumerate(rels[b:b + 8], start + b))
            for i, rel in chunk:
                emb = rng.standard_normal(512).astype(np.float32)
                batch.append(ev.FaceAnalyzed(path=rel, sha256=f"{i:064x}", face_count=1, det_score=0.8,
                                             quality=float(i % 97) / 97, embedding=emb / np.linalg.norm(emb),
                                             model={"pack": "bench"}))
            for i, rel in chunk:
                batch.append(ev.OcclusionScored(path=rel, sha256=f"{i:064x}", mask=0.1, sunglasses=0.2))
        for i, rel in enumerate(rels, start):
            batch.append(ev.FaceTouched(path=rel, size=len(png), mtime_ns=i + 1))
        if len(batch) >= 1000:
            flush()
    flush()
    head = log.head()
    # decisions and their completions fill the rest
    i = 0
    step = max(1, faces // ((total - head) // 2 + 1))
    while log.head() < total and i < faces:
        rel = f"faceset_{i // per_faceset + 1:03d}/faces/{i:06d}.png"
        dest = rel.replace("/faces/", "/faces/_dropped/")
        batch.clear()
        (pos,) = log.append([ev.FacePruned(path=rel, sha256=f"{i:064x}", moves=((rel, dest),), check="bench", reason="bench")])
        (config.corpus_dir / dest).parent.mkdir(exist_ok=True)
        (config.corpus_dir / rel).rename(config.corpus_dir / dest)
        pending_prunes.append(pos)
        if log.head() < total:
            log.append([ev.MoveCompleted(decision=pos)])
        i += step
    assert head > 0
    return log


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    args = ap.parse_args()
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        log = synthetic_log(data, args.events)
        n = log.head()
        config = load_config(None, data_dir=str(data), environ={})
        pipeline = Pipeline(config, log)

        t = time.perf_counter()
        count = sum(1 for _ in log.iter_all())
        read_s = time.perf_counter() - t
        assert count == n

        t = time.perf_counter()
        pipeline.rebuild()
        rebuild_s = time.perf_counter() - t

        t = time.perf_counter()
        pipeline.state.reset()
        pipeline.state.catch_up()
        state_s = time.perf_counter() - t

    read_rate, rebuild_rate, state_rate = n / read_s, n / rebuild_s, n / state_s
    print(f"events in log:                       {n}")
    print(f"read + decode only:                  {read_rate:>10,.0f} events/s  ({read_s:.2f} s)")
    print(f"rebuild all projections (state+files): {rebuild_rate:>8,.0f} events/s  ({rebuild_s:.2f} s)")
    print(f"  of which corpus-state tables only: {state_rate:>10,.0f} events/s  ({state_s:.2f} s)")
    print(f"rebuild / read ratio:                {rebuild_rate / read_rate:.2f}")
    print(f"target >= 50,000 events/s: {'met' if rebuild_rate >= 50_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
