"""`facesetd backfill` on a local Ray with 1 and 2 actors against the in-process inbox path, on the same photos.

    PYTHONPATH=. python bench/backfill.py [--models .models] [--pack buffalo_sc] [--copies 4] [--n N]

Every distinct photo under ../shared/faces and --copies - 1 re-encodings of each (other bytes, the same faces), in
this process, in this order:

1. raw: the actors' own work (daemon.backfill.analyse.FaceRecords.rows: read, decode, detect, embed; cut, encode
   and analyse each crop as roop loads it) on every photo,
   with the engine loaded beforehand: the model work a backfill cannot avoid.
2. reconcile: the photos dropped into a fresh inbox and reconciled in-process (Pipeline.reconcile), engines opened
   beforehand: the inbox path.
3. backfill with 1, then 2 actors (a fresh data folder each, a local Ray started by the run, the engines of the
   ingest opened beforehand): wall, and its parts: ray.init, the analysis on Ray, the ingest (copy + reconcile
   answering from the records). The actors are FaceRecords that also return when they began and finished each
   batch (their own clock).

Ray's overhead per photo, with 1 actor: the gaps between the actor's batches (Ray handing it the next block and
taking its output) over the photos after the first batch, against the actor's own time per photo. Its fixed costs
(ray.init; the actor's start: a process, its imports and its model load) are printed apart.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.config import load_config
from daemon.logs import configure_logging

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def photos(limit: int, copies: int, folder: Path) -> list[Path]:
    """The distinct photos, and `copies` - 1 re-encodings of each (JPEG quality 94, 93, ...: other bytes, so
    other photos to every stage, with the same faces), up to `limit`."""
    import cv2

    seen: set[str] = set()
    out: list[Path] = []
    folder.mkdir(parents=True)
    for p in sorted(FACES.rglob("*.jpg")):
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        if sha not in seen:
            seen.add(sha)
            out.append(p)
    originals = list(out)
    for k in range(1, copies):
        for p in originals:
            image = cv2.imread(str(p))
            target = folder / f"q{95 - k}_{p.name}"
            cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 95 - k])
            out.append(target)
    return out[:limit]


def archive(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True)
    for i, p in enumerate(files):
        shutil.copy(p, folder / f"{i:04d}_{p.name}")
    return folder


def config_for(data: Path, args: argparse.Namespace) -> Any:
    env = {"FACESETD_MODELS_FACE_PACK": args.pack, "FACESETD_MODELS_ROOT": str(Path(args.models).resolve())}
    return load_config(None, data_dir=str(data), environ=env)


def raw(config: Any, files: list[Path]) -> float:
    from daemon.backfill.analyse import FaceRecords

    actor = FaceRecords(config.models, str(config.models_dir), config.limits.max_pixels, config.identity.min_face_px)
    actor.rows([str(files[0])])  # warm
    t = time.perf_counter()
    actor.rows([str(p) for p in files])
    return time.perf_counter() - t


def reconcile(config: Any, files: list[Path]) -> float:
    from daemon.pipeline import Pipeline
    from gpu_agent import open_engines
    from state.eventlog import EventLog

    engines = open_engines(config.models, config.gpu_agent, config.models_dir)
    for d in (config.corpus_dir, config.inbox_dir, config.state_dir):
        d.mkdir(parents=True, exist_ok=True)
    archive(config.inbox_dir / "photos", files)
    pipeline = Pipeline(config, EventLog(config.log_path), open_engines=lambda: engines)
    t = time.perf_counter()
    report = pipeline.reconcile()
    assert report.received == len(files), report
    return time.perf_counter() - t


def timed_records() -> type:
    """FaceRecords that also say, per batch, when the actor began and finished it (its own clock, same machine)."""
    import pyarrow as pa

    from daemon.backfill.analyse import FaceRecords

    class TimedRecords(FaceRecords):  # defined here, in __main__: Ray ships it by value to the actors
        def __call__(self, batch: Any) -> Any:
            began = time.time()
            table = super().__call__(batch)
            done, n = time.time(), table.num_rows
            return table.append_column("began", pa.array([began] * n)).append_column("done", pa.array([done] * n))

    return TimedRecords


def backfill(config: Any, files: list[Path], workers: int, tmp: Path) -> dict[str, float]:
    import daemon.backfill.analyse as analyse
    import daemon.backfill.ingest as ingest
    from daemon.backfill.ingest import Backfill
    from gpu_agent import open_engines
    from state.eventlog import EventLog

    engines = open_engines(config.models, config.gpu_agent, config.models_dir)  # opened before, as for reconcile
    marks: dict[str, float] = {}
    batches: dict[tuple[float, float], int] = {}  # (began, done) of each batch on its actor -> its photos
    real = analyse.connect, analyse.FaceRecords, ingest.write_records

    def connect(address: str | None) -> Any:
        t = time.perf_counter()
        ray = real[0](address)
        marks["ray_init"] = time.perf_counter() - t
        return ray

    def write_records(folder: Path, table: Any) -> Any:
        for began, done, kind in zip(table.column("began").to_pylist(), table.column("done").to_pylist(),
                                     table.column("kind").to_pylist()):
            if kind == "photo":  # a photo's crops have rows of their own
                batches[(began, done)] = batches.get((began, done), 0) + 1
        return real[2](folder, table)

    analyse.connect, analyse.FaceRecords, ingest.write_records = connect, timed_records(), write_records
    try:
        for d in (config.corpus_dir, config.inbox_dir, config.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        run = Backfill(config, EventLog(config.log_path), archive(tmp / f"archive{workers}", files),
                       config.state_dir / "records", open_engines=lambda: engines, emit=lambda _line: None,
                       workers=workers)
        t = time.perf_counter()
        report = run.run()
        wall = time.perf_counter() - t
    finally:
        analyse.connect, analyse.FaceRecords, ingest.write_records = real
    assert report.received == len(files) and report.fell_back == 0, report  # (same bytes twice: analysed once)
    order = sorted(batches.items())
    work = sum(done - began for (began, done), _n in order)
    # With one actor its batches run one after another: the gap before each (but the first) is Ray's per-batch
    # cost (handing it the next block, taking its output); the first batch waits for the actor to start.
    gaps = sum(order[i][0][0] - order[i - 1][0][1] for i in range(1, len(order)))
    return {"wall": wall, "ray_init": marks["ray_init"], "analyse": report.analyse_s, "ingest": report.ingest_s,
            "analysed": report.analysed, "batches": len(order), "work": work, "gaps": gaps, "after_first": sum(n for _k, n in order[1:])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("FACESETD_TEST_MODELS", ".models"))
    ap.add_argument("--pack", default="buffalo_sc")
    ap.add_argument("--n", type=int, default=10_000, help="at most this many photos")
    ap.add_argument("--copies", type=int, default=4, help="each photo and this many - 1 re-encodings of it")
    args = ap.parse_args()
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = photos(args.n, args.copies, tmp / "photos")
        n = len(files)
        raw_s = raw(config_for(tmp / "raw", args), files)
        rec_s = reconcile(config_for(tmp / "reconcile", args), files)
        runs = {w: backfill(config_for(tmp / f"backfill{w}", args), files, w, tmp) for w in (1, 2)}
    print(f"{n} photos, pack {args.pack}, {os.cpu_count()} CPUs")
    print(f"raw model work (read, decode, detect, embed; the crops cut and analysed), 1 process: {raw_s:.2f} s, {n / raw_s:.1f} photos/s,"
          f" {1000 * raw_s / n:.1f} ms/photo")
    print(f"in-process reconcile (the inbox path):                 {rec_s:.2f} s, {n / rec_s:.1f} photos/s")
    for w, r in runs.items():
        analysis = r["analyse"] - r["ray_init"]
        print(f"backfill, {w} actor(s): {r['wall']:.2f} s wall, {n / r['wall']:.1f} photos/s: ray.init {r['ray_init']:.2f} s;"
              f" analysis of {r['analysed']:.0f} {analysis:.2f} s ({r['analysed'] / analysis:.1f} photos/s; {r['batches']:.0f} batches, actors busy"
              f" {r['work']:.2f} s); ingest {r['ingest']:.2f} s ({n / r['ingest']:.1f} photos/s)")
    one = runs[1]
    per_photo_work = one["work"] / one["analysed"]
    per_photo_gap = one["gaps"] / max(1, one["after_first"])
    print(f"Ray's overhead per photo, 1 actor (the gaps between its batches over the photos after the first batch):"
          f" {1000 * per_photo_gap:.2f} ms = {100 * per_photo_gap / per_photo_work:.1f}% of the model work"
          f" ({1000 * per_photo_work:.1f} ms/photo on the actor); fixed: ray.init {one['ray_init']:.2f} s, the actor's"
          f" start (process, imports, model load) {one['analyse'] - one['ray_init'] - one['work'] - one['gaps']:.2f} s")
    print(f"ratios: backfill/reconcile wall, 1 actor {runs[1]['wall'] / rec_s:.2f}, 2 actors {runs[2]['wall'] / rec_s:.2f};"
          f" analysis, 2 actors / 1 actor {(runs[2]['analyse'] - runs[2]['ray_init']) / (one['analyse'] - one['ray_init']):.2f};"
          f" ingest from records / reconcile {one['ingest'] / rec_s:.2f}")


if __name__ == "__main__":
    main()
