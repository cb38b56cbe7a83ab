"""Start-up of the reading verbs beside a bare interpreter, in the same run (issue 13, and issue 22 item 5: status
and rebuild within +0.2 s of `python -c pass`).

    .venv/bin/python bench/startup.py                              # --runs 7
    .venv/bin/python bench/startup.py --before ../facesetd-before  # and another checkout, in the same turns

A small corpus (tests/corpus_factory.py: 5 facesets, 19 PNGs) is reconciled into a temporary data folder; then each
command and `python -c pass` run in turns, modules compiled (as an install leaves them), and the best of --runs of
each is printed with its difference to the bare interpreter and how many modules the command imported. --before
runs the same verbs of another checkout (e.g. a worktree of the commit before a change) in the same turns, on a
data folder its own `reconcile` made, and prints its figures beside.
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
TARGETS = ("status", "rebuild")  # the verbs the bound is on
LIMIT_S = 0.2  # the issues' bound on status and rebuild, over the bare interpreter
# Runs a verb, then prints how many modules it imported (its own output goes nowhere).
COUNT = """import runpy, sys
sys.argv = ["facesetd", *sys.argv[1:]]
try:
    runpy.run_module("daemon.cli", run_name="__main__")
except SystemExit as done:
    if done.code:
        raise
print(len(sys.modules), file=sys.stderr)
"""


def commands(tree: Path, data: Path) -> dict[str, list[str]]:
    """The verbs of the checkout `tree` on `data`, by name, after its own `reconcile` made the data folder."""
    batch_corpus(data / "corpus")
    facesetd = [sys.executable, "-m", "daemon.cli", "--data-dir", str(data)]
    subprocess.run([*facesetd, "reconcile"], env=env_of(tree), cwd=tree, check=True, capture_output=True)
    return {"facesetd " + " ".join(v): [*facesetd, *v] for v in VERBS}


def env_of(tree: Path) -> dict[str, str]:
    env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def modules(cmd: list[str], tree: Path) -> int:
    """How many modules `cmd` (a facesetd verb) has imported when it is done."""
    proc = subprocess.run([sys.executable, "-c", COUNT, *cmd[3:]], env=env_of(tree), cwd=tree,
                          capture_output=True, text=True, check=True)
    return int(proc.stderr.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--before", type=Path, help="another checkout whose verbs run in the same turns")
    args = p.parse_args()
    trees = {"": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[tuple[str, str], tuple[list[str], Path]] = {("", "python -c pass"): ([sys.executable, "-c", "pass"],
                                                                                      ROOT)}
        for label, tree in trees.items():
            for name, cmd in commands(tree, Path(tmp) / (label or "this")).items():
                runs[label, name] = (cmd, tree)
        for cmd, tree in runs.values():  # compile once
            subprocess.run(cmd, env=env_of(tree), cwd=tree, capture_output=True, check=True)
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.runs):
            for key, (cmd, tree) in runs.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env_of(tree), cwd=tree, capture_output=True, check=True)
                best[key] = min(best[key], time.perf_counter() - t0)
        counts = {key: modules(cmd, tree) for key, (cmd, tree) in runs.items() if key[1] != "python -c pass"}
    bare = best.pop(("", "python -c pass"))
    print(f"load average {os.getloadavg()[0]:.1f}; python -c pass {bare:.3f} s (best of {args.runs})"
          + (f"; before: {args.before}" if args.before else ""))
    for (label, name), took in best.items():
        if label:
            continue
        verb = name.split()[1]
        mark = "" if verb not in TARGETS else (
            "  (target +0.2 s: met)" if took - bare < LIMIT_S else "  (target +0.2 s: NOT met)")
        line = f"{name:20s} {took:.3f} s  +{took - bare:.3f} s  {took / bare:5.1f} x bare  {counts['', name]:4d} modules"
        if ("before", name) in best:
            was = best["before", name]
            line += f"  | before {was:.3f} s  +{was - bare:.3f} s  {counts['before', name]:4d} modules"
        print(line + mark)


if __name__ == "__main__":
    main()
