"""CLIP image tower throughput: eager torch vs the exported ONNX model (fp32 and int8) on onnxruntime.

    PYTHONPATH=. python bench/clip.py [--model ViT-B-32] [--batch 8] [--rounds 5] [--threads 0]

open_clip builds the architecture with random weights (no CLIP weights are reachable here; speed does not
depend on the values). All three get the same preprocessed batch and the same thread count, interleaved
round by round; medians. int8 is image.int8.onnx from export_built(..., quantize="int8").
"""

from __future__ import annotations

import argparse
import dataclasses
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
    int8_settings = dataclasses.replace(settings, clip_precision="int8")
    with tempfile.TemporaryDirectory() as tmp:
        export_built(model, pre, tok, args.model, None, Path(tmp), quantize="int8")
        scorer = OnnxOcclusionScorer(settings, Path(tmp))
        int8 = OnnxOcclusionScorer(int8_settings, Path(tmp))
        assert scorer.available and int8.available, (scorer.describe(), int8.describe())
        photos = sorted(args.faces.glob("*/*.jpg"))[: args.batch]
        batch = np.stack([scorer.prepare(p.read_bytes()) for p in photos])
        tbatch = torch.from_numpy(batch)

        def run_onnx() -> None:
            scorer.embed_arrays(batch)

        def run_int8() -> None:
            int8.embed_arrays(batch)

        def run_torch() -> None:
            with torch.inference_mode():
                model.encode_image(tbatch)

        fns = {"torch": run_torch, "onnx": run_onnx, "int8": run_int8}
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
        with torch.inference_mode():
            ref = model.encode_image(tbatch).numpy()
        e32, e8 = scorer.embed_arrays(batch), int8.embed_arrays(batch)
        diff = float(np.abs(e32 - ref).max())
        cos8 = float(((e8 * e32).sum(1) / (np.linalg.norm(e8, axis=1) * np.linalg.norm(e32, axis=1))).min())

    print(f"{args.model} (random weights), batch {len(batch)}, rounds {args.rounds}, threads {args.threads or 'default'}, "
          f"providers {scorer.providers_in_use}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    labels = {"torch": "eager torch", "onnx": "onnx fp32", "int8": "onnx int8"}
    print(f"{'runtime':<14}{'img/s (wall)':>14}{'x torch':>9}{'img per CPU-s':>15}{'x torch':>9}")
    for k, label in labels.items():
        print(f"{label:<14}{rate[k]:>14.2f}{rate[k] / rate['torch']:>9.2f}"
              f"{cpu_rate[k]:>15.2f}{cpu_rate[k] / cpu_rate['torch']:>9.2f}")
    print(f"max |onnx fp32 - torch| = {diff:.2e};   min cosine(int8, fp32) over the batch = {cos8:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
