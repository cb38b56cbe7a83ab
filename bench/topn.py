"""The top-N `.fsz` for roop's average: the quality-only rule beside issue 25's rule, on facesets the real pipeline made.

    FACESETD_TEST_MODELS=/work/main/.models python bench/topn.py [--people DIR] [--top-n 3 5 8] [--json]

Every photo of bench/people/<person>/ (bench/people/README.md: sources, licences) is copied into
inbox/faceset_NNN/ of a fresh data folder (one seeded faceset per person) and `facesetd reconcile` runs (buffalo_sc):
crops, analysis, near-dup and every other check as a user gets them. Then, for every faceset holding more kept faces
than N (at N or fewer both rules take every face), from the faces its top N is chosen from (state/queries.py
`top_inputs`, the renderer's own read):

- **cos**: cos(mean of the top N's unit embeddings, the centroid of every kept face): how close roop's average of
  the top-N `.fsz` lies to the person (state/topn.py `mean_cosine`); **old** = the best N by crop quality (the rule
  before issue 25, `quality_top`), **new** = `choose_top`. `new - old` >= 0 on every faceset is the issue's bar.
- **best**: the closest any N of the faceset's faces come (every N-subset tried; blank past EXHAUSTIVE_MAX).
- **pose spread**: the distinct pose bins (yaw proxy from the analysis's landmarks, `pose_bin`) among the top N,
  and the yaw proxy's range (max - min), old vs new.

Both rules run in the same process on the same rows; nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from itertools import combinations
from math import comb
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from state.readonly import ReadOnlyState
from state.topn import TopInput, choose_top, mean_cosine, pose_bin, quality_top, yaw_of

REPO = Path(__file__).resolve().parents[1]
# The closest any N of a faceset's faces can come (every N-subset tried) is printed where there are at most this many.
EXHAUSTIVE_MAX = 20000


def build(people: Path, data: Path, models_root: Path, pack: str) -> dict[str, str]:
    """A data folder with one seeded faceset per person, reconciled; faceset -> person."""
    inbox = data / "inbox"
    persons = sorted(p.name for p in people.iterdir() if p.is_dir())
    names = {}
    for k, person in enumerate(persons, start=1):
        name = f"faceset_{k:03d}"
        names[name] = person
        (inbox / name).mkdir(parents=True)
        for photo in sorted((people / person).glob("*.jpg")):
            shutil.copyfile(photo, inbox / name / photo.name)
    env = {**os.environ, "FACESETD_MODELS_FACE_PACK": pack, "FACESETD_MODELS_ROOT": str(models_root),
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "reconcile"], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"facesetd reconcile failed ({done.returncode}): {done.stderr.strip()}")
    return names


def spread(faces: list[TopInput], files: list[str]) -> tuple[int, float]:
    """(distinct pose bins, range of the yaw proxy) among `files`."""
    by_file = {f.file: f for f in faces}
    yaws = [y for y in (yaw_of(by_file[f].kps) for f in files) if y is not None]
    bins = {pose_bin(yaw_of(by_file[f].kps)) for f in files}
    return len(bins), (max(yaws) - min(yaws)) if yaws else 0.0


def compare(inputs: dict[str, list[TopInput]], names: dict[str, str], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        for faceset, faces in sorted(inputs.items()):
            if len(faces) <= n:
                continue
            old = quality_top(faces, n)
            new = list(choose_top(faces, n).files)
            cos_old, cos_new = mean_cosine(faces, old), mean_cosine(faces, new)
            best = max((mean_cosine(faces, c) or 0.0 for c in combinations(sorted(f.file for f in faces), n))
                       if comb(len(faces), n) <= EXHAUSTIVE_MAX else [float("nan")])
            (bins_old, yaw_old), (bins_new, yaw_new) = spread(faces, old), spread(faces, new)
            rows.append({"n": n, "faceset": faceset, "person": names.get(faceset, ""), "faces": len(faces),
                         "cos_old": cos_old, "cos_new": cos_new, "cos_best": best, "bins_old": bins_old, "bins_new": bins_new,
                         "yaw_range_old": yaw_old, "yaw_range_new": yaw_new, "same": sorted(old) == sorted(new)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=Path, default=REPO / "bench/people")
    ap.add_argument("--top-n", type=int, nargs="+", default=[3, 5, 8])
    ap.add_argument("--pack", default="buffalo_sc")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = os.environ.get("FACESETD_TEST_MODELS") or os.environ.get("FACESETD_MODELS_ROOT")
    if not models:
        sys.exit("set FACESETD_TEST_MODELS to a models folder holding the face pack")
    with tempfile.TemporaryDirectory(prefix="facesetd-topn-") as tmp:
        data = Path(tmp) / "data"
        names = build(args.people, data, Path(models), args.pack)
        state = ReadOnlyState(data / "state/events.sqlite3")
        try:
            rows = compare(state.top_inputs(), names, args.top_n)
        finally:
            state.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'N':>2}  {'faceset':<12} {'person':<20} {'faces':>5}  {'cos old':>8} {'cos new':>8} {'new-old':>8} {'best':>7}"
          f"  {'bins old/new':>12}  {'yaw range old/new':>17}")
    for r in rows:
        print(f"{r['n']:>2}  {r['faceset']:<12} {r['person']:<20} {r['faces']:>5}  {r['cos_old']:8.4f} "
              f"{r['cos_new']:8.4f} {r['cos_new'] - r['cos_old']:+8.4f} {r['cos_best']:7.4f}  {r['bins_old']:>5} / {r['bins_new']:<4}"
              f"  {r['yaw_range_old']:>7.3f} / {r['yaw_range_new']:<7.3f}{'  (same faces)' if r['same'] else ''}".rstrip())
    for n in args.top_n:
        at = [r for r in rows if r["n"] == n]
        if not at:
            continue
        worse = sum(1 for r in at if r["cos_new"] < r["cos_old"])
        mean_old = sum(r["cos_old"] for r in at) / len(at)
        mean_new = sum(r["cos_new"] for r in at) / len(at)
        print(f"N={n}: {len(at)} facesets; mean cos old {mean_old:.4f}, new {mean_new:.4f} (new - old"
              f" {mean_new - mean_old:+.4f}); new closer or equal on {len(at) - worse}/{len(at)}, farther on {worse};"
              f" pose bins old {sum(r['bins_old'] for r in at)}, new {sum(r['bins_new'] for r in at)}")


if __name__ == "__main__":
    main()
