"""A video is streamed, never loaded whole (issue 25): the peak memory of `facesetd reconcile` taking in a small clip
and a large one (default 2 GiB), in the same run.

    PYTHONPATH=. .venv/bin/python bench/video_memory.py --models .models            # --gib 2 --small-mib 20

Each clip is made here with PyAV: 1280x720 frames of one random-noise picture shifted a pixel per frame (noise does
not compress, so the file is large; shifted, its 32x32 thumbnails barely change, so the sampling takes one frame a
second and no scene changes), every frame a key frame (mpeg4, qscale 1) at 25 fps. Each goes into the inbox of a
fresh data folder and `facesetd reconcile` runs as a child process (the real CLI, buffalo_sc on the CPU): the hash
of the file, the whole-file check (every packet demuxed), the sampling (every frame decoded, one at a time) and the
face engine on each sampled frame. Printed: each clip's size, frames sampled, wall time, the child's peak RSS
(ru_maxrss), and the large clip's peak over the small clip's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 1280, 720, 25
# Runs the command in argv, then prints its peak RSS in KiB (its output goes nowhere).
MEASURED = """import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if done.returncode:
    sys.exit(done.stderr.decode(errors="replace"))
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"""


def make_clip(path: Path, target_bytes: int) -> int:
    """A clip of noise frames until the file reaches `target_bytes`; its frame count."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (HEIGHT, WIDTH + 64, 3), dtype=np.uint8)
    n = 0
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.gop_size = 1
        stream.options = {"qscale": "1"}
        stream.codec_context.qmin = stream.codec_context.qmax = 1
        written = 0
        while written < target_bytes:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, n % 64 : n % 64 + WIDTH]),
                                               format="bgr24")
            for packet in stream.encode(frame):
                written += packet.size
                out.mux(packet)
            n += 1
        for packet in stream.encode():
            out.mux(packet)
    return n


def reconcile(data: Path, models: Path) -> dict[str, float]:
    """`facesetd reconcile` on the data folder in a child process: its wall time and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACESETD_MODELS_FACE_PACK": "buffalo_sc",
           "FACESETD_MODELS_ROOT": str(models), "FACESETD_LOGGING_LEVEL": "warning"}
    t = time.perf_counter()
    # through a wrapper process of its own: ru_maxrss of RUSAGE_CHILDREN is the largest of any child waited for
    proc = subprocess.run([sys.executable, "-c", MEASURED, sys.executable, "-m", "daemon.cli", "--data-dir", str(data),
                           "reconcile"], env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    return {"wall_s": wall, "peak_mib": int(proc.stdout.strip().splitlines()[-1]) / 1024}


def frames_sampled(data: Path) -> int:
    from state.eventlog import EventLog

    log = EventLog(data / "state" / "events.sqlite3")
    done = [s.event for s in log.read_matching("photo_processed")]
    note = getattr(done[-1], "note", "") if done else ""
    return int(note.split(" frames")[0].split()[-1]) if note.startswith("video:") else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("FACESETD_TEST_MODELS", ".models"))
    ap.add_argument("--gib", type=float, default=2.0, help="the large clip's size")
    ap.add_argument("--small-mib", type=float, default=20.0, help="the small clip's size")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = Path(args.models).resolve()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, size in (("small", int(args.small_mib * 1024**2)), ("large", int(args.gib * 1024**3))):
            data = Path(tmp) / label
            (data / "inbox").mkdir(parents=True)
            clip = data / "inbox" / f"{label}.mp4"
            t = time.perf_counter()
            count = make_clip(clip, size)
            made_s = time.perf_counter() - t
            run = reconcile(data, models)
            results[label] = {"bytes": clip.stat().st_size if clip.exists() else
                              next((data / "inbox" / "_processed").glob("*.mp4")).stat().st_size,
                              "frames": count, "made_s": round(made_s, 1), "sampled": frames_sampled(data),
                              "wall_s": round(run["wall_s"], 1), "peak_mib": round(run["peak_mib"], 1)}
    ratio = results["large"]["peak_mib"] / results["small"]["peak_mib"]
    if args.json:
        print(json.dumps({**results, "peak_ratio": round(ratio, 3)}, indent=2))
        return
    for label, r in results.items():
        print(f"{label}: {r['bytes'] / 1024**2:.0f} MiB, {r['frames']} frames ({r['frames'] / FPS:.0f} s at {FPS} fps),"
              f" {r['sampled']} sampled; reconcile {r['wall_s']} s, peak RSS {r['peak_mib']} MiB")
    print(f"peak RSS, large / small clip: {ratio:.2f} (size ratio {results['large']['bytes'] / results['small']['bytes']:.0f}x)")


if __name__ == "__main__":
    main()
