"""The whole inbox path on the real photos, beside the model work it must do and the model passes it made.

    PYTHONPATH=. FACESETD_TEST_MODELS=/work/main/.models python bench/e2e.py [--reps 2] [--profile]

Every photo of ../shared/faces (43 JPEGs: identities/, group/, sunglasses/, mask/, no_face/, aligned_112/,
copied with their folders) goes into the inbox of a fresh data folder whose facesetd.toml names the
buffalo_sc pack under --models. Inference on the CPU (onnxruntime's defaults). The occlusion scorer is the
product's own (OnnxOcclusionScorer for the configured ViT-L-14): it is unavailable unless a CLIP export exists
under --models (none here), so the occlusion check runs in neither path. Timed in one run, in turns:

  (a) process: `python -m daemon.cli --data-dir D reconcile --json` as a subprocess: start-up, imports,
      model loading and all the work (scan, receive, route, crop, checks, render);
  (b) product: the same reconcile in this process (a Pipeline as tests/handler_fixtures.py builds it) after the
      engine is opened and warmed: Pipeline.reconcile() on a fresh data folder;
  (c) plain loop: InsightFaceEngine.analyze_arrays([photo], pad=False) on each decoded photo, then
      analyze_arrays([crop], pad=False) on the 512 crop of each face of at least [identity] min_face_px
      (the crops cut beforehand, untimed): the model work the product must do;
  (d) its own passes: every call (b) made to the engine is recorded (method, pad, the arrays or bytes) and
      replayed on the same inputs: exactly the model passes the product ran.

Ratios are printed as baseline / product time (1.0 = no overhead at all; the targets of issue 13 are
(d)/(b) >= 0.9 and (d)/(a) >= 0.8). --profile runs one more (b) under cProfile and prints where the time
goes; --importtime prints the slowest imports of one (a).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class CountingEngine:
    """Forwards to the engine; records every call (method, pad, inputs, seconds) for an exact replay."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[tuple[str, bool, list[Any], float]] = []
        self.cpu_s = 0.0  # process CPU seconds (every thread) spent inside the calls

    def analyze(self, images: Sequence[bytes], *, pad: bool = True) -> Any:
        return self._call("analyze", images, pad)

    def analyze_arrays(self, images: Sequence[Any], *, pad: bool = True) -> Any:
        return self._call("analyze_arrays", images, pad)

    def describe(self) -> dict[str, Any]:
        return dict(self.engine.describe())

    def _call(self, method: str, images: Sequence[Any], pad: bool) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = getattr(self.engine, method)(images, pad=pad)
        self.cpu_s += time.process_time() - c0
        # The inputs themselves, not copies (nothing in the product writes into them): a copy here would be
        # counted in the product's time.
        self.calls.append((method, pad, list(images), time.perf_counter() - t0))
        return out

    def summary(self) -> dict[str, int]:
        """'method pad=P batch=N WxH' -> calls (sizes as decoded)."""
        out: dict[str, int] = {}
        for method, pad, images, _s in self.calls:
            sizes = {f"{x.shape[1]}x{x.shape[0]}" if hasattr(x, "shape") else "bytes" for x in images}
            key = f"{method} pad={pad} batch={len(images)} {sizes.pop() if sizes == {'512x512'} else 'photos'}"
            out[key] = out.get(key, 0) + 1
        return out


class Timers:
    """Wall seconds and calls of the product's non-model steps (--breakdown): module functions wrapped."""

    TARGETS = (
        ("gpu_agent.crop", "encode_png", "PNG encode of the crops (encode_png)"),
        ("gpu_agent.crop", "decode_image", "decode (photos, then crops in embed)"),
        ("gpu_agent.crop", "crop_face", "crop_face (cut + resize to 512)"),
        ("gpu_agent.quality", "crop_quality", "crop_quality"),
        ("handlers.route_photo", "_write_crop", "crop file write (atomic, the file fsynced)"),
        ("handlers.route_photo", "move_aside", "photo moved to _processed (its folders fsynced with the crops)"),
        ("daemon.pipeline", "receive", "receive (hash, EXIF, photo_received)"),
        ("state.render", "Renderer.render_dirty", "render (.fsz, manifests)"),
        ("state.eventlog", "EventLog.append", "event log append (commit)"),
        ("state.mover", "Mover.finish_pending", "decided moves (promotions, prunes)"),
        ("os", "fsync", "os.fsync (files and folders, inside the steps above)"),
    )

    def __init__(self) -> None:
        import importlib

        self.spent: dict[str, list[float]] = {}
        self.undo: list[tuple[Any, str, Any]] = []
        for mod_name, attr, label in self.TARGETS:
            owner: Any = importlib.import_module(mod_name)
            *path, name = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            self.undo.append((owner, name, getattr(owner, name)))
            setattr(owner, name, self._wrap(getattr(owner, name), label))

    def _wrap(self, fn: Any, label: str) -> Any:
        spent = self.spent.setdefault(label, [0.0, 0])

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t0
                spent[1] += 1
        return timed

    def close(self) -> None:
        for owner, name, fn in reversed(self.undo):
            setattr(owner, name, fn)


def copy_inbox(faces: Path, inbox: Path) -> int:
    n = 0
    for src in sorted(faces.rglob("*.jpg")):
        dest = inbox / src.relative_to(faces)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        n += 1
    return n


def fresh_folder(root: Path, faces: Path, toml: str) -> tuple[Path, int]:
    data = Path(tempfile.mkdtemp(dir=root))
    (data / "facesetd.toml").write_text(toml)
    return data, copy_inbox(faces, data / "inbox")


def corpus_digest(data: Path) -> tuple[int, int, str, str]:
    """(PNG crops, their bytes, sha256 over their names and bytes, sha256 over their names and decoded pixels)
    of a data folder's corpus: the pixel digest stays when only the PNG encoder settings change."""
    import cv2
    import numpy as np

    h, px, n, size = hashlib.sha256(), hashlib.sha256(), 0, 0
    for p in sorted((data / "corpus").rglob("*.png")):
        b = p.read_bytes()
        name = p.relative_to(data).as_posix().encode() + b"\0"
        h.update(name + hashlib.sha256(b).digest())
        px.update(name + cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED).tobytes())
        n, size = n + 1, size + len(b)
    return n, size, h.hexdigest()[:16], px.hexdigest()[:16]


class Bench:
    """The data, the engine and the four timed paths of one run."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from daemon.config import load_config
        from gpu_agent.crop import crop_face, decode_image
        from gpu_agent.face_engine import InsightFaceEngine
        from gpu_agent.fetch import fetch_pack
        from gpu_agent.occlusion import OnnxOcclusionScorer

        self.args, self.work = args, work
        self.outside_cpu_s: list[float] = []  # of each (b) run
        fetch_pack("buffalo_sc", args.models)  # verifies (no download when present)
        self.toml = f'[models]\nface_pack = "buffalo_sc"\nroot = {json.dumps(str(args.models.resolve()))}\n'
        probe, self.n_photos = fresh_folder(work, args.faces, self.toml)
        self.config = load_config(probe / "facesetd.toml", data_dir=str(probe), environ={})
        shutil.rmtree(probe)
        t0 = time.perf_counter()
        self.engine = InsightFaceEngine(self.config.models, self.config.models_dir)
        self.scorer = OnnxOcclusionScorer(self.config.models, self.config.models_dir)
        self.load_s = time.perf_counter() - t0
        self.photos = [decode_image(p.read_bytes()) for p in sorted(args.faces.rglob("*.jpg"))]
        self.engine.analyze_arrays(self.photos[:2], pad=False)  # warm: first-run allocations are not throughput
        min_px = self.config.identity.min_face_px
        self.crops = [[crop_face(img, f) for f in self.engine.analyze_arrays([img], pad=False)[0]
                       if f.short_side >= min_px] for img in self.photos]

    def plain(self) -> float:
        """(c): each decoded photo, then each of its usable faces' 512 crop, one model call each."""
        t0 = time.perf_counter()
        for img, cs in zip(self.photos, self.crops):
            self.engine.analyze_arrays([img], pad=False)
            for c in cs:
                self.engine.analyze_arrays([c], pad=False)
        return time.perf_counter() - t0

    def product(self, profile: bool = False, timers: Timers | None = None
                ) -> tuple[float, CountingEngine, Any, tuple[int, int, str, str]]:
        """(b): Pipeline.reconcile() on a fresh data folder, the engine already open and warm."""
        from daemon.config import load_config
        from daemon.pipeline import Pipeline
        from state.eventlog import EventLog

        data, _n = fresh_folder(self.work, self.args.faces, self.toml)
        cfg = load_config(data / "facesetd.toml", data_dir=str(data), environ={})
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.corpus_dir.mkdir(parents=True, exist_ok=True)
        counting = CountingEngine(self.engine)
        pipeline = Pipeline(cfg, EventLog(cfg.log_path), open_engines=lambda: (counting, self.scorer))
        if self.args.no_ahead:  # each photo analysed in its own call, as before handlers/analysis_ahead.py
            from handlers.analysis_ahead import AnalysisAhead

            pipeline.ctx.ahead = AnalysisAhead(pixels=0)
        t0, c0 = time.perf_counter(), time.process_time()
        if profile:
            import cProfile

            prof = cProfile.Profile()
            report = prof.runcall(pipeline.reconcile)
            wall = time.perf_counter() - t0
            print_profile(prof, self.args.profile_out)
        else:
            report = pipeline.reconcile()
            wall = time.perf_counter() - t0
        # CPU seconds outside the engine's calls: steadier than wall time when other jobs share the cores
        # (it leaves out waits, fsync's included).
        self.outside_cpu_s.append(time.process_time() - c0 - counting.cpu_s)
        if timers is not None:
            timers.close()
            print(f"--- where (b)'s {wall:.2f} s go (one more run, timed steps; nested steps overlap) ---")
            print(f"{sum(c[3] for c in counting.calls):7.3f} s  {len(counting.calls):4d} calls  the engine's calls")
            for label, (secs, n) in timers.spent.items():
                print(f"{secs:7.3f} s  {n:4d} calls  {label}")
        digest = corpus_digest(data)
        shutil.rmtree(data)
        return wall, counting, report, digest

    def replay(self, counting: CountingEngine) -> float:
        """(d): the product's own model calls again, on the same inputs."""
        t0 = time.perf_counter()
        for method, pad, images, _s in counting.calls:
            getattr(self.engine, method)(images, pad=pad)
        return time.perf_counter() - t0

    def process(self, importtime: bool = False) -> tuple[float, str]:
        """(a): `facesetd reconcile` as a subprocess on a fresh data folder; (wall s, its stdout or stderr)."""
        data, _n = fresh_folder(self.work, self.args.faces, self.toml)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
        cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "daemon.cli",
               "--data-dir", str(data), "reconcile", "--json"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        shutil.rmtree(data)
        return wall, done.stderr if importtime else done.stdout


def png_options(crops: list[Any], reps: int = 5) -> None:
    """ms per crop (best of `reps`) and KiB per crop of PNG encoders (OpenCV's settings, ours at each ISA-L level),
    and their decode time."""
    import cv2
    import numpy as np

    options = {
        "default (level 1, Z_RLE, filter SUB)": [],
        "filter UP (level 1, Z_RLE)": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP],
        "filter UP, Huffman only": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
                                    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
        "filter PAETH (level 1, Z_RLE)": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH],
        "filter NONE (level 1, Z_RLE)": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE],
        "level 1, Z_DEFAULT_STRATEGY": [cv2.IMWRITE_PNG_COMPRESSION, 1],
        "level 0 (stored)": [cv2.IMWRITE_PNG_COMPRESSION, 0],
        "level 3": [cv2.IMWRITE_PNG_COMPRESSION, 3],
    }
    from gpu_agent import png

    encoders: dict[str, Any] = {f"cv2.imencode {name}": (lambda c, p=params: cv2.imencode(".png", c, p)[1])
                                for name, params in options.items()}
    for level in (0, 1, 2, 3):
        encoders[f"gpu_agent.png, ISA-L level {level}"] = lambda c, lv=level: png.encode_png(c, png.isal_deflater(lv))
    encoders["gpu_agent.png, zlib level 1 (the fallback)"] = lambda c: png.encode_png(c, png._deflate_zlib)
    print(f"--- PNG encoder settings on the {len(crops)} crops (cv2 {cv2.__version__}) ---")
    print("| setting | encode ms/crop | decode ms/crop | KiB/crop |")
    print("|---|---|---|---|")
    for name, encode in encoders.items():
        enc, dec, size = 1e9, 1e9, 0
        for _ in range(reps):
            t0 = time.perf_counter()
            blobs = [np.frombuffer(encode(c), np.uint8) for c in crops]
            enc = min(enc, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for blob in blobs:
                cv2.imdecode(blob, cv2.IMREAD_COLOR)
            dec = min(dec, time.perf_counter() - t0)
            size = sum(len(blob) for blob in blobs)
        n = len(crops)
        print(f"| {name} | {enc / n * 1e3:.2f} | {dec / n * 1e3:.2f} | {size / n / 1024:.1f} |")
    from concurrent.futures import ThreadPoolExecutor

    from gpu_agent.crop import encode_png

    one, two = 1e9, 1e9
    for _ in range(reps):  # a group photo's 6 crops, as _write_crops encodes them: in turn, or on two threads
        t0 = time.perf_counter()
        [encode_png(c) for c in crops[:6]]
        one = min(one, time.perf_counter() - t0)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(encode_png, crops[:6]))
        two = min(two, time.perf_counter() - t0)
    print(f"6 crops with encode_png: {one * 1e3:.1f} ms in turn, {two * 1e3:.1f} ms on two threads")


def print_profile(prof: Any, out: Path | None) -> None:
    import pstats

    if out:
        prof.dump_stats(out)
    for key in ("tottime", "cumulative"):
        print(f"--- cProfile of (b), by {key} ---")
        pstats.Stats(prof).sort_stats(key).print_stats(28)


def print_imports(stderr: str) -> None:
    rows = []
    for line in stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print("--- slowest imports of (a), cumulative us ---")
    for us, name in sorted(rows, reverse=True)[:25]:
        print(f"{us:10d} {name}")


def report(b: Bench, runs: dict[str, list[float]], counted: CountingEngine, said: Any,
           digest: tuple[int, int, str, str], out_a: str) -> None:
    best = {k: min(v) for k, v in runs.items() if v}
    m = b.config.models
    print(f"photos: {b.n_photos}  face pack: buffalo_sc (CPU, det_size {m.det_size}, batch {m.batch_size})  "
          f"occlusion: {'on' if b.scorer.available else 'off (no CLIP export)'}  cpus: {os.cpu_count()}  "
          f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"engine load in this process: {b.load_s:.2f} s; best of {b.args.reps} interleaved runs each")
    print(f"product: {json.dumps(said.as_dict(), sort_keys=True)}")
    print(f"crops written: {digest[0]} ({digest[1] / 1e6:.2f} MB, bytes digest {digest[2]}, pixels digest {digest[3]})")
    print(f"model calls the product made: {len(counted.calls)}")
    for key, n in sorted(counted.summary().items()):
        print(f"  {n:4d} x {key}")
    print("| path | wall s |")
    print("|---|---|")
    if "a" in best:
        print(f"| (a) whole `facesetd reconcile` process | {best['a']:.2f} |")
    print(f"| (b) product after models are loaded (Pipeline.reconcile) | {best['b']:.2f} |")
    print(f"|     of which inside the engine's calls | {best['inside']:.2f} |")
    print(f"|     outside them (median of the runs: b - inside) | "
          f"{statistics.median(b_ - i_ for b_, i_ in zip(runs['b'], runs['inside'])):.2f} |")
    print(f"|     outside them, CPU seconds of the process (median; waits left out) | "
          f"{statistics.median(b.outside_cpu_s[: len(runs['b'])]):.2f} |")
    print(f"| (c) plain loop: each photo + each crop re-detected | {best['c']:.2f} |")
    print(f"| (d) the product's own model passes, replayed | {best['d']:.2f} |")
    for name in ("b", "a"):
        if name in best:
            what = "whole process (a)" if name == "a" else "product (b)"
            print(f"{what}: plain loop (c)/{name} = {best['c'] / best[name]:.2f}, own passes (d)/{name} = "
                  f"{best['d'] / best[name]:.2f} (target {'0.8' if name == 'a' else '0.9'})")
    if out_a:
        print(f"(a) said: {out_a.strip()[:200]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    ap.add_argument("--models", type=Path, default=Path(os.environ.get("FACESETD_TEST_MODELS", REPO / ".models")))
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of each path (best is reported)")
    ap.add_argument("--no-process", action="store_true", help="skip (a), the reconcile subprocess")
    ap.add_argument("--no-ahead", action="store_true",
                    help="(b) analyses each photo in its own call (no analysis ahead of receipt), to compare")
    ap.add_argument("--profile", action="store_true", help="one more (b) under cProfile")
    ap.add_argument("--profile-out", type=Path, help="with --profile: also save the pstats file here")
    ap.add_argument("--breakdown", action="store_true", help="one more (b) with its non-model steps timed")
    ap.add_argument("--png", action="store_true", help="time and size of PNG encoder settings on the crops")
    ap.add_argument("--importtime", action="store_true", help="the slowest imports of one more (a)")
    args = ap.parse_args()

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    work = Path(tempfile.mkdtemp(prefix="facesetd-e2e-"))
    try:
        b = Bench(args, work)
        runs: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": [], "inside": []}
        out_a = ""
        for _ in range(args.reps):
            runs["c"].append(b.plain())
            wall, counted, said, digest = b.product()
            runs["b"].append(wall)
            runs["inside"].append(sum(c[3] for c in counted.calls))
            runs["d"].append(b.replay(counted))
            if not args.no_process:
                wall, out_a = b.process()
                runs["a"].append(wall)
        report(b, runs, counted, said, digest, out_a)
        if args.breakdown:
            b.product(timers=Timers())
        if args.png:
            png_options([c for cs in b.crops for c in cs])
        if args.profile:
            b.product(profile=True)
        if args.importtime:
            print_imports(b.process(importtime=True)[1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
