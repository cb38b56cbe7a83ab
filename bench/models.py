"""Face-engine throughput: raw insightface vs the engine in-process vs the engine over the HTTP agent.

    PYTHONPATH=. python bench/models.py [--pack buffalo_sc] [--models-root .models] [--rounds 5]

Same images, same decode (cv2.imdecode of the encoded bytes), same providers and threads in all three.
"raw" is what roop does: FaceAnalysis.get per image (detection + recognition modules only, as the engine
loads them). Two workloads: 512x512 corpus crops (one face each) and the original photos.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemon.logs import configure_logging
from gpu_agent.client import HttpAgent
from gpu_agent.crop import crop_face, decode_image
from gpu_agent.face_engine import InsightFaceEngine
from gpu_agent.fetch import fetch_pack
from gpu_agent.occlusion import OnnxOcclusionScorer
from gpu_agent.server import make_server
from gpu_agent.settings import ModelSettings

TOKEN = "bench-token"


def rates(fns: dict[str, Callable[[Sequence[bytes]], object]], images: Sequence[bytes], rounds: int,
          batch: int) -> dict[str, tuple[float, float]]:
    """Per method: (images per wall-clock second, images per CPU second of this process), medians of `rounds`
    full passes, methods interleaved pass by pass.

    Interleaving and the median keep a noisy, shared machine from favouring whichever method ran in a quiet
    moment. CPU seconds (all threads of this process: client, server and onnxruntime) measure the work itself
    and hardly change when other processes compete for the cores; with --threads 1 they are the fairest figure.
    """
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up pass each: session allocation, connection setup
        for i in range(0, len(images), batch):
            fn(images[i : i + batch])
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(images), batch):
                fn(images[i : i + batch])
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: (len(images) / statistics.median(wall[k]), len(images) / statistics.median(cpu[k])) for k in fns}


def raw_face_analysis(engine: InsightFaceEngine):  # type: ignore[no-untyped-def]
    """insightface's FaceAnalysis on the engine's pack, detection and recognition only, the same providers and
    session options: what the engine wrapped before it ran the models with its own port."""
    from insightface.app import FaceAnalysis

    from gpu_agent.providers import choose_providers, session_options

    s = engine.settings
    providers = choose_providers(s)
    app = FaceAnalysis(name=str(engine.pack_path.resolve()), allowed_modules=["detection", "recognition"],
                       providers=providers, sess_options=session_options(s, providers))
    app.prepare(ctx_id=0, det_size=(s.det_size, s.det_size), det_thresh=s.det_thresh)
    return app


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", default="buffalo_sc")
    ap.add_argument("--models-root", type=Path, default=REPO / ".models")
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = default)")
    args = ap.parse_args()

    configure_logging("warning", "console", sys.stderr)  # keep per-request debug lines out of the table
    fetch_pack(args.pack, args.models_root)
    settings = ModelSettings(face_pack=args.pack, batch_size=args.batch, intra_op_threads=args.threads)
    engine = InsightFaceEngine(settings, args.models_root)
    raw_app = raw_face_analysis(engine)

    photos = [p.read_bytes() for p in sorted((args.faces / "identities").glob("*/*.jpg"))]
    photos += [p.read_bytes() for p in sorted((args.faces / "group").glob("*.jpg"))]
    crops = []
    for data in photos:
        img = decode_image(data)
        for face in engine.analyze_arrays([img])[0]:
            crops.append(cv2.imencode(".png", crop_face(img, face))[1].tobytes())

    def raw(batch: Sequence[bytes]) -> None:
        for b in batch:
            faces = raw_app.get(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR))
            for f in faces:
                f.normed_embedding  # noqa: B018 - the engine normalises too

    server = make_server("127.0.0.1:0", engine, OnnxOcclusionScorer(settings, args.models_root), TOKEN)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = HttpAgent(server.url, TOKEN, retries=0)

    print(f"pack {args.pack}, providers {engine.providers_in_use}, batch {args.batch}, rounds {args.rounds}, "
          f"threads {args.threads or 'default'}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    print(f"{'workload':<15}{'images':>7} | {'img/s (wall clock)':^34} | {'img per CPU-second':^34}")
    print(f"{'':<15}{'':>7} | {'raw':>6}{'in-proc':>8}{'x raw':>6}{'http':>7}{'x raw':>7} |"
          f" {'raw':>6}{'in-proc':>8}{'x raw':>6}{'http':>7}{'x raw':>7}")
    for name, images in (("512x512 crops", crops), ("photos", photos)):
        got = rates({"raw": raw, "engine": lambda b: engine.analyze(b), "http": lambda b: client.analyze(b)},
                    images, args.rounds, args.batch)
        cols = []
        for k in (0, 1):
            r, e, h = got["raw"][k], got["engine"][k], got["http"][k]
            cols.append(f" {r:>6.1f}{e:>8.1f}{e / r:>6.2f}{h:>7.1f}{h / r:>7.2f}")
        print(f"{name:<15}{len(images):>7} |{cols[0]} |{cols[1]}")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
