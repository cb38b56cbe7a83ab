"""Where to put `[identity] merge_distance`: cosine distances between faceset centroids of the same person and
of different people, on the real photos of ../shared/faces.

    FACESETD_TEST_MODELS=/work/main/.models python bench/merge_distance.py [--pack buffalo_sc]

Every photo under identities/ (and the faces of group/ photos whose person is known) is analysed the way the
router does (padded, the largest face of at least [identity] min_face_px, its unit embedding). A "faceset" is a
set of photos of one person; its centroid is the renormalised mean of their unit embeddings, as
handlers/centroids.py computes it. For each person with at least two usable photos, every split of their photos
into two disjoint non-empty facesets gives a same-person distance; for each pair of people, every pair of their
subsets gives a different-person distance. Prints the extremes, the quantiles and the gap between the two.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_agent.crop import decode_image
from gpu_agent.face_engine import InsightFaceEngine
from gpu_agent.settings import ModelSettings
from handlers.centroids import unit
from handlers.thresholds import IdentityThresholds

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACESETD_SHARED", REPO.parent / "shared")) / "faces"
# Faces of the group photos whose person is known (face index by x order of the box, left to right).
GROUP = {"group/two_people_obama_biden.jpg": ("obama", "biden")}


def embeddings(engine: InsightFaceEngine, min_px: int) -> dict[str, list[np.ndarray]]:
    """person -> unit embeddings of their usable photos (largest face, as the router picks it)."""
    out: dict[str, list[np.ndarray]] = {}
    for photo in sorted((FACES / "identities").glob("*/*.jpg")):
        faces = [f for f in engine.analyze_arrays([decode_image(photo.read_bytes())], pad=True)[0]
                 if f.short_side >= min_px]
        if faces:
            best = max(faces, key=lambda f: f.short_side)
            out.setdefault(photo.parent.name, []).append(unit(best.embedding))
    for rel, people in GROUP.items():
        faces = [f for f in engine.analyze_arrays([decode_image((FACES / rel).read_bytes())], pad=True)[0]
                 if f.short_side >= min_px]
        for person, face in zip(people, sorted(faces, key=lambda f: f.bbox[0])):
            out.setdefault(person, []).append(unit(face.embedding))
    return out


def centroid(vecs: list[np.ndarray]) -> np.ndarray:
    return unit(np.mean(vecs, axis=0))


def subsets(vecs: list[np.ndarray]) -> list[tuple[int, ...]]:
    return [c for k in range(1, len(vecs) + 1) for c in itertools.combinations(range(len(vecs)), k)]


def same_person(people: dict[str, list[np.ndarray]]) -> dict[str, list[float]]:
    """person -> distances between the centroids of every two disjoint non-empty sets of their photos."""
    out: dict[str, list[float]] = {}
    for person, vecs in people.items():
        for a in subsets(vecs):
            rest = [i for i in range(len(vecs)) if i not in a]
            for b in subsets([vecs[i] for i in rest]):
                b_idx = tuple(rest[i] for i in b)
                if a < b_idx:
                    d = 1.0 - float(centroid([vecs[i] for i in a]) @ centroid([vecs[i] for i in b_idx]))
                    out.setdefault(person, []).append(d)
    return out


def different_people(people: dict[str, list[np.ndarray]]) -> list[float]:
    out = []
    for p, q in itertools.combinations(sorted(people), 2):
        for a in subsets(people[p]):
            for b in subsets(people[q]):
                out.append(1.0 - float(centroid([people[p][i] for i in a]) @ centroid([people[q][i] for i in b])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", default="buffalo_sc")
    args = parser.parse_args()
    models = Path(os.environ.get("FACESETD_TEST_MODELS", REPO / ".models"))
    engine = InsightFaceEngine(ModelSettings(face_pack=args.pack), models)
    people = embeddings(engine, IdentityThresholds().min_face_px)
    print(f"pack {args.pack}; usable photos per person: "
          + ", ".join(f"{p} {len(v)}" for p, v in sorted(people.items())))
    same = same_person(people)
    for person, ds in sorted(same.items()):
        print(f"  same person {person:<20} {len(ds):4d} splits: max {max(ds):.3f}  mean {np.mean(ds):.3f}")
    all_same = np.array([d for ds in same.values() for d in ds])
    diff = np.array(different_people(people))
    print(f"same person     : {len(all_same)} pairs, max {all_same.max():.3f}, p95 {np.quantile(all_same, 0.95):.3f},"
          f" p50 {np.median(all_same):.3f}")
    single = [1.0 - float(a @ b) for vs in people.values() for a, b in itertools.combinations(vs, 2)]
    print(f"same person, one photo each: max {max(single):.3f}, p50 {np.median(single):.3f}")
    print(f"different people: {len(diff)} pairs, min {diff.min():.3f}, p05 {np.quantile(diff, 0.05):.3f},"
          f" p50 {np.median(diff):.3f}")
    print(f"same person, one photo each: {len(single)} pairs")
    print(f"gap: same max {all_same.max():.3f} .. different min {diff.min():.3f};"
          f" [identity] merge_distance default {IdentityThresholds().merge_distance}")


if __name__ == "__main__":
    main()
