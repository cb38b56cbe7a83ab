"""`facesetd calibrate DIR`: the configured face pack measured on labelled photos (one subfolder per person).

What it measures, on one face per photo (the largest of at least [identity] min_face_px, as the router takes it):
- the cosine distances of every pair of faces of one person, and of every pair of two people;
- TAR at a FAR (true accepts at the distance below which that fraction of different-person pairs fall);
- what the settings in force make of these photos: the pool's rule (handlers/pool_clusters.py: average linkage at
  cluster_distance; a faceset at min_new_faceset distinct photos, a person forming at 3), scored per person
  (`score`: people found, impure clusters, BCubed precision / recall / F);
- the distances it recommends for this pack on these photos (`recommend`), which `--write` puts into the data
  folder's facesetd.toml.

The scoring is the one bench/clustering.py uses beside the peers' rules.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from state.errors import FacesetdError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}  # what is a photo
FARS = (1e-3, 1e-4)  # the false accept rates TAR is reported at
# recommend(): cluster_distance = the distance at FAR 1e-3 less this margin (average linkage joins groups that are
# close on average; the margin keeps two close people apart), floored to GRID.
CLUSTER_MARGIN = 0.10
GRID = 0.05  # recommended distances are floored to a multiple of this (they are read by people)
MATCH_BELOW_CLUSTER = 0.10  # match_distance = cluster_distance less this, as in the seeds' numbers (0.45 / 0.55)
CANDIDATE_BAND = 0.15  # the seeds' band past match_distance, kept
FOUND_MIN_PHOTOS = 5  # a person with this many photos or more is "found" as one faceset (`score`)
SMALL_PHOTOS = (3, 4)  # a person with this many photos is found as one pure cluster of at least 3
UNCLUSTERED = -1  # a rule's label for a face in no cluster


class CalibrationError(FacesetdError):
    """The folder cannot be calibrated on (fewer than 2 people, no usable photo): one line."""


@dataclass(frozen=True)
class Labelled:
    """One photo's face: its person (the subfolder) and its unit embedding."""

    photo: str  # "<person>/<file>"
    person: str
    vec: np.ndarray


def photos_by_person(folder: Path) -> dict[str, list[Path]]:
    """person -> their photos (sorted), one subfolder per person; CalibrationError for fewer than 2 people."""
    if not folder.is_dir():
        raise CalibrationError(f"{folder} is not a folder (give one subfolder per person, each with their photos)")
    people = {d.name: sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
              for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    people = {name: photos for name, photos in people.items() if photos}
    if len(people) < 2:
        raise CalibrationError(f"{folder} holds photos of {len(people)} person(s); calibrate needs at least 2 (one"
                               " subfolder per person, each with their photos)")
    return people


def embed(analyze: Callable[[bytes], list[Any]], people: dict[str, list[Path]],
          min_face_px: int) -> tuple[list[Labelled], list[str]]:
    """The largest face of at least `min_face_px` of every photo (`analyze`: bytes -> detected faces), and the
    photos skipped, each with why. CalibrationError when fewer than 2 people keep a face."""
    from handlers.centroids import unit

    faces: list[Labelled] = []
    skipped: list[str] = []
    for person, photos in people.items():
        for photo in photos:
            rel = f"{person}/{photo.name}"
            try:
                detected = analyze(photo.read_bytes())
            except (OSError, FacesetdError, ValueError) as e:
                skipped.append(f"{rel} (unreadable: {e})")
                continue
            usable = [f for f in detected if f.short_side >= min_face_px]
            if not usable:
                skipped.append(f"{rel} (no face of {min_face_px} px or more)")
                continue
            largest = max(usable, key=lambda f: f.short_side)
            faces.append(Labelled(rel, person, unit(np.asarray(largest.embedding, dtype=np.float32))))
    kept = {f.person for f in faces}
    if len(kept) < 2:
        raise CalibrationError(f"only {len(kept)} person(s) have a photo with a usable face ({len(skipped)} photos"
                               f" skipped: {', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''})")
    return faces, skipped


def pair_distances(faces: Sequence[Labelled]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances of every pair of faces: of one person, of two people."""
    vecs = np.stack([f.vec for f in faces]).astype(np.float64)
    d = np.clip(1.0 - vecs @ vecs.T, 0.0, 2.0)
    persons = np.array([f.person for f in faces])
    upper = np.triu(np.ones(d.shape, dtype=bool), k=1)
    same = persons[:, None] == persons[None, :]
    return d[upper & same], d[upper & ~same]


def tar_at_far(same: np.ndarray, diff: np.ndarray, far: float) -> tuple[float, float, bool]:
    """(distance, TAR, exact): the distance below which a fraction `far` of different-person pairs fall, the
    fraction of same-person pairs below it, and whether there were enough pairs (1/far) to read it; with fewer
    it is the nearest different-person pair."""
    exact = len(diff) >= math.ceil(1.0 / far)
    at = float(np.quantile(diff, far, method="lower")) if len(diff) else 2.0
    return at, float(np.mean(same < at)) if len(same) else 0.0, exact


def recommend(diff: np.ndarray) -> dict[str, float]:
    """The [identity] distances for this pack on these photos (see the module's constants)."""
    at, _tar, _exact = tar_at_far(np.zeros(0), diff, FARS[0])
    cluster = math.floor(round((at - CLUSTER_MARGIN) / GRID, 6)) * GRID
    cluster = round(max(GRID * 2, cluster), 2)
    return {"match_distance": round(max(GRID, cluster - MATCH_BELOW_CLUSTER), 2), "cluster_distance": cluster,
            "merge_distance": cluster, "candidate_band": CANDIDATE_BAND}


def spread(values: np.ndarray) -> dict[str, float]:
    """min, p05, p50, p95, max and the number of pairs."""
    if not len(values):
        return {"pairs": 0}
    qs = {"min": values.min(), "p05": np.quantile(values, 0.05), "p50": np.median(values),
          "p95": np.quantile(values, 0.95), "max": values.max()}
    return {k: round(float(v), 3) for k, v in qs.items()} | {"pairs": len(values)}


# --- What the settings make of the photos --------------------------------------------------------------


def pool_rule(vecs: np.ndarray, photos: Sequence[str], cluster_distance: float, gate: int,
              forming: int = 3) -> tuple[list[int], list[int]]:
    """The pool's clusters (average linkage at `cluster_distance`, as handlers/pool_clusters.py), twice as labels:
    those that become facesets (at least `gate` distinct photos) and those that are facesets or people forming (at
    least `forming`). One face per photo in each; UNCLUSTERED elsewhere."""
    from handlers.pool_clusters import average_linkage

    clusters = average_linkage(vecs.astype(np.float32), cluster_distance)

    def labels(at_least: int) -> list[int]:
        out = [UNCLUSTERED] * len(vecs)
        for k, members in enumerate(clusters):
            first: dict[str, int] = {}
            for i in sorted(members):
                first.setdefault(photos[i], i)
            if len(first) >= at_least:
                for i in first.values():
                    out[i] = k
        return out

    return labels(gate), labels(min(forming, gate))


@dataclass(frozen=True)
class Score:
    found: int  # people with >= FOUND_MIN_PHOTOS photos found
    of: int  # people with >= FOUND_MIN_PHOTOS photos
    small_found: int  # people with SMALL_PHOTOS photos found as one pure cluster of >= 3
    small_of: int
    clusters: int  # clusters holding at least one labelled face
    impure: int  # clusters holding labelled faces of more than one person
    precision: float  # BCubed
    recall: float
    f1: float


def score(persons: Sequence[str], labels: Sequence[int], unlabelled: str = "") -> Score:
    """Score a clustering (a label per face, UNCLUSTERED for none) against the faces' persons; faces whose person
    is `unlabelled` (a bystander) are left out.

    A person with FOUND_MIN_PHOTOS photos or more is found when exactly one cluster is theirs (they hold more than
    half of its labelled faces) and it holds more than half of their faces; a person with SMALL_PHOTOS photos when
    one cluster holds only their faces, at least 3. Impure: clusters holding labelled faces of more than one
    person. BCubed precision / recall / F1 (Amigó et al. 2009) over every labelled face, an unclustered face
    counting as its own singleton."""
    items = [(p, lab) for p, lab in zip(persons, labels) if p != unlabelled]
    cid = [lab if lab != UNCLUSTERED else -2 - i for i, (_p, lab) in enumerate(items)]
    members: dict[int, list[str]] = {}
    for (p, _lab), c in zip(items, cid):
        members.setdefault(c, []).append(p)
    sizes = Counter(p for p, _lab in items)
    precision = recall = 0.0
    for (p, _lab), c in zip(items, cid):
        same = sum(1 for q in members[c] if q == p)
        precision += same / len(members[c])
        recall += same / sizes[p]
    n = max(1, len(items))
    precision, recall = precision / n, recall / n
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    real = {c: ps for c, ps in members.items()
            if c >= 0 and (len(ps) >= 2 or sum(1 for lab in labels if lab == c) >= 2)}
    impure = sum(1 for ps in real.values() if len(set(ps)) > 1)
    big = [p for p, k in sizes.items() if k >= FOUND_MIN_PHOTOS]
    small = [p for p, k in sizes.items() if k in SMALL_PHOTOS]
    found = sum(1 for p in big if _found(p, sizes[p], real))
    small_found = sum(1 for p in small if any(set(ps) == {p} and len(ps) >= 3 for ps in real.values()))
    return Score(found, len(big), small_found, len(small), len(real), impure, precision, recall, f1)


def _found(person: str, total: int, clusters: dict[int, list[str]]) -> bool:
    theirs = [ps for ps in clusters.values() if 2 * ps.count(person) > len(ps)]
    return len(theirs) == 1 and 2 * theirs[0].count(person) > total
