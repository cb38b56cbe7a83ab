"""Start-up of the reading verbs beside a bare interpreter, in the same run (issue 13: status and rebuild < 0.2 s
over `python -c pass`).

    .venv/bin/python bench/startup.py            # --runs 7

A small corpus (tests/corpus_factory.py: 5 facesets, 19 PNGs) is reconciled into a temporary data folder; then each
command and `python -c pass` run in turns, modules compiled (as an install leaves them), and the best of --runs of
each is printed with its difference to the bare interpreter.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from corpus_factory import batch_corpus

VERBS = (("--help",), ("status",), ("events",), ("rebuild",), ("config",))
LIMIT_S = 0.2  # the bound on status and rebuild, over the bare interpreter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        batch_corpus(data / "corpus")
        facesetd = [sys.executable, "-m", "daemon.cli", "--data-dir", str(data)]
        subprocess.run([*facesetd, "reconcile"], env=env, cwd=ROOT, check=True, capture_output=True)
        cmds = {"python -c pass": [sys.executable, "-c", "pass"]}
        cmds |= {"facesetd " + " ".join(v): [*facesetd, *v] for v in VERBS}
        for cmd in cmds.values():  # compile once
            subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, check=True)
        best = dict.fromkeys(cmds, float("inf"))
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, check=True)
                best[name] = min(best[name], time.perf_counter() - t0)
    bare = best.pop("python -c pass")
    print(f"load average {os.getloadavg()[0]:.1f}; python -c pass {bare:.3f} s (best of {args.runs})")
    for name, took in best.items():
        mark = "" if name.split()[1] not in ("status", "rebuild") else (
            "  (target +0.2 s: met)" if took - bare < LIMIT_S else "  (target +0.2 s: NOT met)")
        print(f"{name:20s} {took:.3f} s  +{took - bare:.3f} s  {took / bare:5.1f} x bare{mark}")


if __name__ == "__main__":
    main()
