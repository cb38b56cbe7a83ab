"""CLIP image tower throughput: the exported ONNX model on onnxruntime vs eager torch, same random weights.

    PYTHONPATH=. python bench/clip.py [--model ViT-B-32] [--batch 8] [--rounds 5] [--threads 0]

open_clip builds the architecture with random weights (no CLIP weights are reachable here; speed does not
depend on the values). Both sides get the same preprocessed batch and the same thread count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemon.logs import configure_logging
from gpu_agent.clip_export import build_model, export_built
from gpu_agent.occlusion import OnnxOcclusionScorer
from gpu_agent.settings import ModelSettings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads for both (0 = each library's default)")
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    args = ap.parse_args()
    configure_logging("warning", "console", sys.stderr)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, pre, tok = build_model(args.model, None)
    settings = ModelSettings(clip_model=args.model, clip_pretrained="", intra_op_threads=args.threads,
                             batch_size=args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        export_built(model, pre, tok, args.model, None, Path(tmp))
        scorer = OnnxOcclusionScorer(settings, Path(tmp))
        photos = sorted(args.faces.glob("*/*.jpg"))[: args.batch]
        batch = np.stack([scorer.prepare(p.read_bytes()) for p in photos])
        tbatch = torch.from_numpy(batch)

        def run_onnx() -> None:
            scorer.embed_arrays(batch)

        def run_torch() -> None:
            with torch.inference_mode():
                model.encode_image(tbatch)

        fns = {"onnx": run_onnx, "torch": run_torch}
        for fn in fns.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        cpu: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.rounds):  # interleaved, median: fair on a noisy shared machine
            for name, fn in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        rate = {k: len(batch) / statistics.median(v) for k, v in times.items()}
        cpu_rate = {k: len(batch) / statistics.median(v) for k, v in cpu.items()}
        diff = float(np.abs(scorer.embed_arrays(batch) - model.encode_image(tbatch).detach().numpy()).max())

    print(f"{args.model} (random weights), batch {len(batch)}, rounds {args.rounds}, threads {args.threads or 'default'}, "
          f"providers {scorer.providers_in_use}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    print(f"{'runtime':<16}{'img/s (wall)':>14}{'img per CPU-s':>15}")
    print(f"{'eager torch':<16}{rate['torch']:>14.2f}{cpu_rate['torch']:>15.2f}")
    print(f"{'onnxruntime':<16}{rate['onnx']:>14.2f}{cpu_rate['onnx']:>15.2f}")
    print(f"onnx / torch: {rate['onnx'] / rate['torch']:.2f}x wall, {cpu_rate['onnx'] / cpu_rate['torch']:.2f}x CPU;"
          f"   max |onnx - torch| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
