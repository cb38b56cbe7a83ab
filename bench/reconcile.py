"""Reconcile of an unchanged corpus of 20k small files, beside a bare os.scandir walk of the same tree.

    python bench/reconcile.py [--files 20000]

Both run in this process on the same tree (warm cache), best of 5 each. Target: reconcile <= 3 x walk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from corpus_factory import png_bytes

from daemon.config import load_config
from daemon.logs import configure_logging
from daemon.pipeline import Pipeline
from state.eventlog import EventLog


def walk(root: str, stat: bool = False) -> int:
    """Every file under root by os.scandir recursion: the least any reconcile must do (stat=False),
    and the same with one stat per file, the floor for a reconcile that checks size and mtime."""
    count, stack = 0, [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    if stat:
                        e.stat(follow_symlinks=False)
                    count += 1
    return count


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--per-faceset", type=int, default=50)
    args = ap.parse_args()
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, data_dir=tmp, environ={})
        for i in range(args.files):
            p = config.corpus_dir / f"faceset_{i // args.per_faceset + 1:03d}" / "faces" / f"{i:06d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(png_bytes(i, 8))
        config.state_dir.mkdir(parents=True)
        pipeline = Pipeline(config, EventLog(config.log_path))
        t = time.perf_counter()
        first = pipeline.reconcile()
        first_s = time.perf_counter() - t
        assert first.scanned == args.files
        walk_s = best_of(5, lambda: walk(str(config.corpus_dir)))
        stat_s = best_of(5, lambda: walk(str(config.corpus_dir), stat=True))
        head = pipeline.log.head()
        recon_s = best_of(5, lambda: pipeline.reconcile())
        assert pipeline.log.head() == head, "an unchanged corpus must record nothing"
    print(f"files:                         {args.files}")
    print(f"first reconcile (adopt+hash):  {first_s:.2f} s")
    print(f"bare os.scandir walk:          {walk_s * 1000:8.1f} ms")
    print(f"walk + one stat per file:      {stat_s * 1000:8.1f} ms")
    print(f"unchanged reconcile:           {recon_s * 1000:8.1f} ms")
    print(f"ratio reconcile / walk:        {recon_s / walk_s:.2f}  (target <= 3)")


if __name__ == "__main__":
    main()
