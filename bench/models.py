"""Face-engine throughput: raw insightface vs the engine in-process vs the engine over the HTTP agent.

    PYTHONPATH=. python bench/models.py [--pack buffalo_sc] [--models-root .models] [--rounds 5]

Same images, same decode (cv2.imdecode of the encoded bytes), same providers and threads in all three.
"raw" is what roop does: FaceAnalysis.get per image (detection + recognition modules only, as the engine
loads them). Two workloads: 512x512 corpus crops (one face each) and the original photos.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemon.logs import configure_logging  # noqa: E402
from gpu_agent.client import HttpAgent  # noqa: E402
from gpu_agent.crop import crop_face, decode_image  # noqa: E402
from gpu_agent.face_engine import InsightFaceEngine  # noqa: E402
from gpu_agent.fetch import fetch_pack  # noqa: E402
from gpu_agent.occlusion import OnnxOcclusionScorer  # noqa: E402
from gpu_agent.server import make_server  # noqa: E402
from gpu_agent.settings import ModelSettings  # noqa: E402

TOKEN = "bench-token"


def rates(fns: dict[str, Callable[[Sequence[bytes]], object]], images: Sequence[bytes], rounds: int,
          batch: int) -> dict[str, float]:
    """Images per second per method: the median of `rounds` full passes, methods interleaved pass by pass.

    Interleaving and the median keep a noisy, shared 2-core machine (frequency changes, neighbours) from
    favouring whichever method happens to run in a quiet moment.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for name, fn in fns.items():  # warm-up pass each: session allocation, connection setup
        for i in range(0, len(images), batch):
            fn(images[i : i + batch])
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for i in range(0, len(images), batch):
                fn(images[i : i + batch])
            times[name].append(time.perf_counter() - t0)
    return {k: len(images) / statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", default="buffalo_sc")
    ap.add_argument("--models-root", type=Path, default=REPO / ".models")
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    configure_logging("warning", "console", sys.stderr)  # keep per-request debug lines out of the table
    fetch_pack(args.pack, args.models_root)
    settings = ModelSettings(face_pack=args.pack, batch_size=args.batch)
    engine = InsightFaceEngine(settings, args.models_root)
    raw_app = engine.app  # the very FaceAnalysis the engine wraps: same sessions, same providers

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

    print(f"pack {args.pack}, providers {engine.providers_in_use}, batch {args.batch}, rounds {args.rounds}")
    print(f"{'workload':<16}{'images':>7}{'raw img/s':>11}{'in-process':>12}{'x raw':>7}{'http':>9}{'x raw':>7}")
    for name, images in (("512x512 crops", crops), ("photos", photos)):
        got = rates({"raw": raw, "engine": lambda b: engine.analyze(b), "http": lambda b: client.analyze(b)},
                    images, args.rounds, args.batch)
        r, e, h = got["raw"], got["engine"], got["http"]
        print(f"{name:<16}{len(images):>7}{r:>11.1f}{e:>12.1f}{e / r:>7.2f}{h:>9.1f}{h / r:>7.2f}")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
