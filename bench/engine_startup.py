"""Start-up of a process that runs the face engine in-process (issue 13): import, load the pack, analyze one photo.

    PYTHONPATH=. FACESETD_TEST_MODELS=<models root> .venv/bin/python bench/engine_startup.py   # --runs 7 --repo DIR

Each run is a fresh interpreter (modules compiled, as an install leaves them) that imports gpu_agent.face_engine,
opens an InsightFaceEngine on buffalo_sc and analyzes ../shared/faces/identities/obama/obama.jpg; the best of --runs
of each phase is printed, with the process's wall time and how many modules it imported. --repo runs another
checkout's code (e.g. a `git worktree` of an older commit) for a before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from gpu_agent.face_engine import InsightFaceEngine
from gpu_agent.settings import ModelSettings
t1 = time.perf_counter()
engine = InsightFaceEngine(ModelSettings(face_pack="buffalo_sc"), Path(sys.argv[1]))
t2 = time.perf_counter()
[faces] = engine.analyze([Path(sys.argv[2]).read_bytes()])
t3 = time.perf_counter()
assert len(faces) == 1
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "analyze": t3 - t2, "modules": len(sys.modules),
                  "insightface": "insightface" in sys.modules}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout whose gpu_agent runs (default: this one)")
    args = p.parse_args()
    models = Path(os.environ.get("FACESETD_TEST_MODELS", ROOT / ".models"))
    photo = ROOT.parent / "shared" / "faces" / "identities" / "obama" / "obama.jpg"
    env = {**os.environ, "PYTHONPATH": str(args.repo.resolve()), "FACESETD_LOGGING_FORMAT": "json"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [sys.executable, "-c", CHILD, str(models), str(photo)]
    subprocess.run(cmd, env=env, cwd=args.repo, capture_output=True, check=True)  # compile once
    best: dict[str, float] = {}
    last: dict[str, object] = {}
    for _ in range(args.runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=args.repo, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        last = json.loads(proc.stdout.strip().splitlines()[-1])
        for key in ("import", "load", "analyze"):
            best[key] = min(best.get(key, float("inf")), float(last[key]))  # type: ignore[arg-type]
        best["wall"] = min(best.get("wall", float("inf")), wall)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.repo}; best of {args.runs}")
    print("  ".join(f"{k} {v:.3f} s" for k, v in best.items()),
          f" modules {last['modules']}  insightface imported: {last['insightface']}")


if __name__ == "__main__":
    main()
