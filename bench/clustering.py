"""Finding people: facesetd end to end beside the peers' clustering rules, on the same vectors, on labelled photos.

    FACESETD_TEST_MODELS=/work/main/.models python bench/clustering.py [--people DIR] [--json] [--no-e2e]

The photos are bench/people/<person>/*.jpg (bench/people/README.md: sources, licences). Every photo is analysed
the way the router does (handlers/route_photo.py: padded, every face whose short side is at least [identity]
min_face_px, its unit embedding). A photo's largest face is its folder's person; its other faces are
**bystanders**: they take part in every clustering (real libraries have them) but are left out of the scoring
(they count neither in a cluster's size nor in its purity, nor in BCubed).

Rules, each a small function over the same unit vectors (rows in photo-path order, then face order):
- Immich: incremental DBSCAN as `person.service.ts` handleRecognizeFaces does it (see `immich`), then one nightly
  pass over the faces still without a person.
- PhotoPrism: DBSCAN as `pkg/clusters/dbscan.go` runs it (see `photoprism`), ClusterDist read as cosine.
- average linkage (UPGMA) cut at AVERAGE_DISTANCE.
- complete linkage, then the clusters' centroids merged by complete linkage, then a gate on faces.
- facesetd before issue 21, in process: complete linkage at 0.55, a gate of 6 faces of distinct photos.
- facesetd's pool rule, in process: average linkage at the pack's cluster_distance (handlers/thresholds.py
  PACK_IDENTITY), the gate [identity] min_new_faceset on faces of distinct photos (handlers/pool.py cluster_pool).
- facesetd end to end: every photo copied flat into the inbox of a fresh data folder (unseeded), `facesetd
  reconcile`, then where each face ended, read from the event log (`events --json`): "facesets" counts only the
  facesets it made (a pool face is unclustered); "facesets + pool" also counts the clusters its pool holds (the
  people forming that `status` names, the pairs the review page's pool shows), read from the data folder.

Scoring (`score`), over the labelled faces only; a "cluster" is a group of at least 2 faces (a face left alone or
unclustered counts as its own singleton):
- a person with at least FOUND_MIN_PHOTOS photos is **found** when exactly one cluster is theirs (more than half
  of its labelled faces are theirs) and that cluster holds more than half of their faces; a person split over two
  clusters, or absorbed into someone else's, is not found (impurity is counted apart);
- a person with SMALL_PHOTOS (3 or 4) photos is found when one cluster holds only their faces, at least 3 of them;
- **impure**: clusters holding labelled faces of more than one person;
- BCubed precision / recall / F1 (Amigó et al. 2009) over every labelled face.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon import calibration
from daemon.calibration import Score, score
from handlers.thresholds import IdentityThresholds, pack_identity

REPO = Path(__file__).resolve().parents[1]

# --- Tunables -----------------------------------------------------------------------------------------
# Immich machineLearning.facialRecognition.maxDistance (cosine): the k-NN search's radius.
IMMICH_MAX_DISTANCE = 0.5
# Immich machineLearning.facialRecognition.minFaces: a face is core with this many matches, itself included.
IMMICH_MIN_FACES = 3
# PhotoPrism face.ClusterDist, read as a cosine distance (PhotoPrism compares Euclidean distances of its own
# vectors; on unit vectors 0.64 Euclidean would be cosine 0.2).
PHOTOPRISM_DISTANCE = 0.64
# PhotoPrism face.ClusterCore: DBSCAN's minPts (neighbours within the distance, the face itself included).
PHOTOPRISM_CORE = 4
# Average linkage (UPGMA) cut at this cosine distance.
AVERAGE_DISTANCE = 0.55
# Complete linkage + centroid merge: the complete-linkage cut, the centroid merge's cut, and the gate on faces.
COMPLETE_DISTANCE = 0.55
CENTROID_MERGE_DISTANCE = 0.55
CENTROID_GATE = 3
# facesetd today: [identity] cluster_distance and min_new_faceset (their defaults).
BEFORE_DISTANCE = 0.55  # facesetd before issue 21: complete linkage at this distance ...
BEFORE_GATE = 6  # ... and this gate
FACESETD_GATE = IdentityThresholds().min_new_faceset
# A person with at least this many photos counts in "people found".
FOUND_MIN_PHOTOS = calibration.FOUND_MIN_PHOTOS
# People with this many photos count in "small people found" (one pure cluster of at least 3 faces).
SMALL_PHOTOS = calibration.SMALL_PHOTOS
# `--sweep`: the cosine distances every distance-driven rule is run at again (gates and cores as above).
SWEEP = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)
# The label of a photo's faces other than its largest.
BYSTANDER = ""

UNCLUSTERED = calibration.UNCLUSTERED  # a rule's label for a face in no cluster


@dataclass(frozen=True)
class Face:
    photo: str  # "<person>/<file>" under the people folder
    index: int  # the face's index among the photo's detections (the router's `source.face`)
    person: str  # the folder's person for the photo's largest face, BYSTANDER for the others
    vec: np.ndarray  # unit embedding


# --- Faces ------------------------------------------------------------------------------------------


def embed(people: Path, models_root: Path, pack: str = "buffalo_sc") -> list[Face]:
    """Every usable face of every photo under people/<person>/, analysed as the router does."""
    from gpu_agent.crop import decode_image
    from gpu_agent.face_engine import InsightFaceEngine
    from gpu_agent.settings import ModelSettings
    from handlers.centroids import unit

    engine = InsightFaceEngine(ModelSettings(face_pack=pack), models_root)
    min_px = IdentityThresholds().min_face_px
    out: list[Face] = []
    for photo in sorted(people.glob("*/*.jpg")):
        detected = engine.analyze_arrays([decode_image(photo.read_bytes())], pad=True)[0]
        usable = [(i, f) for i, f in enumerate(detected) if f.short_side >= min_px]
        if not usable:
            continue
        largest = max(usable, key=lambda t: (t[1].short_side, -t[0]))[0]
        rel = f"{photo.parent.name}/{photo.name}"
        out.extend(Face(rel, i, photo.parent.name if i == largest else BYSTANDER, unit(f.embedding))
                   for i, f in usable)
    return out


def distances(vecs: np.ndarray) -> np.ndarray:
    """Pairwise cosine distances of unit rows (float64)."""
    v = vecs.astype(np.float64)
    return np.clip(1.0 - v @ v.T, 0.0, 2.0)


# --- Rules: each maps unit rows to a label per row (UNCLUSTERED: none) --------------------------------


def immich(vecs: np.ndarray, max_distance: float = IMMICH_MAX_DISTANCE, min_faces: int = IMMICH_MIN_FACES,
           nightly: bool = True) -> list[int]:
    """Immich's handleRecognizeFaces (server/src/services/person.service.ts), one job per face in queue order.

    A face's matches are its min_faces nearest faces within max_distance, itself included. Only itself: skipped
    (left without a person). Core: at least min_faces matches. A non-core face is deferred once (queued again at
    the end). Its person: that of the first match that has one, else of the nearest face with a person within
    max_distance; a core face without one makes a new person; a deferred face without one stays unassigned.
    `nightly`: then one queue-all of the faces still without a person (the nightly clusterNewFaces run).
    """
    d = distances(vecs)
    person = [UNCLUSTERED] * len(vecs)
    people = 0

    def job(i: int, deferred: bool) -> bool:
        """One FACIAL_RECOGNITION job; True when the face is deferred."""
        nonlocal people
        if person[i] != UNCLUSTERED:
            return False
        order = np.argsort(d[i], kind="stable")
        matches = [int(j) for j in order[:min_faces] if d[i, j] <= max_distance]
        if min_faces > 1 and len(matches) <= 1:
            return False
        core = len(matches) >= min_faces
        if not core and not deferred:
            return True
        pid = next((person[j] for j in matches if person[j] != UNCLUSTERED), UNCLUSTERED)
        if pid == UNCLUSTERED:
            pid = next((person[j] for j in order if d[i, j] <= max_distance and person[j] != UNCLUSTERED),
                       UNCLUSTERED)
        if core and pid == UNCLUSTERED:
            pid, people = people, people + 1
        person[i] = pid
        return False

    def run_queue(faces: Sequence[int]) -> None:
        queue = deque((i, False) for i in faces)
        while queue:
            i, deferred = queue.popleft()
            if job(i, deferred):
                queue.append((i, True))

    run_queue(range(len(vecs)))
    if nightly:
        run_queue([i for i in range(len(vecs)) if person[i] == UNCLUSTERED])
    return person


def photoprism(vecs: np.ndarray, distance: float = PHOTOPRISM_DISTANCE, core: int = PHOTOPRISM_CORE) -> list[int]:
    """PhotoPrism's DBSCAN (pkg/clusters/dbscan.go, called by internal/photoprism/faces_cluster.go).

    Neighbours: distance strictly below `distance`, the face itself included; core: at least `core` of them.
    As in that code, a face visited first as noise stays noise even when a later cluster reaches it, and a cluster
    takes the unlabelled neighbours of its core faces."""
    d = distances(vecs)
    n = len(vecs)
    label = [0] * n  # 0: none yet, -1: noise, k >= 1: cluster k
    visited = [False] * n
    cluster = 0
    for i in range(n):
        if visited[i]:
            continue
        visited[i] = True
        near = [int(j) for j in np.flatnonzero(d[i] < distance)]
        if len(near) < core:
            label[i] = -1
            continue
        cluster += 1
        label[i] = cluster
        k = 0
        while k < len(near):
            j = near[k]
            if not visited[j]:
                visited[j] = True
                more = [int(x) for x in np.flatnonzero(d[j] < distance)]
                if len(more) >= core:
                    near.extend(more)
            if label[j] == 0:
                label[j] = cluster
            k += 1
    return [c - 1 if c > 0 else UNCLUSTERED for c in label]


def _linkage(vecs: np.ndarray, method: str, t: float) -> list[int]:
    """scipy hierarchical clustering (cosine, float64) cut at distance t: a label per row."""
    if len(vecs) < 2:
        return [0] * len(vecs)
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = fcluster(linkage(vecs.astype(np.float64), method=method, metric="cosine"), t=t, criterion="distance")
    return [int(x) for x in labels]


def _gate(labels: Sequence[int], at_least: int, count: Callable[[list[int]], int] = len) -> list[int]:
    """Labels of groups with count(members) >= at_least kept (renumbered from 0); the rest UNCLUSTERED."""
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    out = [UNCLUSTERED] * len(labels)
    kept = 0
    for label in sorted(groups, key=lambda g: groups[g][0]):
        if label != UNCLUSTERED and count(groups[label]) >= at_least:
            for i in groups[label]:
                out[i] = kept
            kept += 1
    return out


def average_linkage(vecs: np.ndarray, t: float = AVERAGE_DISTANCE) -> list[int]:
    """UPGMA cut at t; every cluster of two faces or more counts."""
    return _gate(_linkage(vecs, "average", t), 2)


def complete_then_centroids(vecs: np.ndarray, t: float = COMPLETE_DISTANCE, merge: float = CENTROID_MERGE_DISTANCE,
                            gate: int = CENTROID_GATE) -> list[int]:
    """Complete linkage cut at t; then every cluster's centroid (the renormalised mean of its unit rows, singletons
    too) clustered again by complete linkage cut at `merge` (the way [identity] merge_distance merges facesets),
    and the merged groups of at least `gate` faces kept."""
    first = _linkage(vecs, "complete", t)
    ids = sorted(set(first))
    cents = np.stack([vecs[[i for i, x in enumerate(first) if x == c]].mean(axis=0) for c in ids])
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    merged = dict(zip(ids, _linkage(cents, "complete", merge)))
    return _gate([merged[x] for x in first], gate)


def facesetd_before(vecs: np.ndarray, photos: Sequence[str], t: float = BEFORE_DISTANCE,
                    gate: int = BEFORE_GATE) -> list[int]:
    """facesetd's pool rule before issue 21: complete linkage cut at t, gated (see `_faceset_rule`)."""
    return _faceset_rule(_linkage(vecs, "complete", t), photos, gate)


def facesetd_rule(vecs: np.ndarray, photos: Sequence[str], t: float, gate: int = FACESETD_GATE) -> list[int]:
    """facesetd's pool rule in process, facesetd's own code (daemon/calibration.py pool_rule, which `facesetd
    calibrate` reports with): average linkage cut at t, a faceset at `gate` distinct photos, one face per photo."""
    return calibration.pool_rule(vecs, photos, t, gate)[0]


def _faceset_rule(clusters: list[int], photos: Sequence[str], gate: int) -> list[int]:
    """A cluster becomes a faceset with faces of at least `gate` distinct photos, one face per photo (the first; the
    daemon keeps the best crop), the others of that photo staying unclustered."""
    labels = _gate(clusters, gate, lambda members: len({photos[i] for i in members}))
    seen: set[tuple[int, str]] = set()
    for i, label in enumerate(labels):
        if label != UNCLUSTERED:
            if (label, photos[i]) in seen:
                labels[i] = UNCLUSTERED
            seen.add((label, photos[i]))
    return labels


# --- facesetd end to end ------------------------------------------------------------------------------


def _inbox_name(photo: str) -> str:
    return photo.replace("/", "__", 1)


def facesetd_e2e(people: Path, faces: Sequence[Face], models_root: Path,
                 pack: str = "buffalo_sc") -> tuple[list[int], list[int], float]:
    """An unseeded `facesetd reconcile` on a fresh data folder holding every photo in its inbox. Returns a label per
    face twice: the faceset it ended in (pruned or not; UNCLUSTERED: the pool or not taken), and the same with the
    pool's clusters of 2 faces or more as clusters too; and the reconcile's seconds."""
    env = {**os.environ, "FACESETD_MODELS_FACE_PACK": pack, "FACESETD_MODELS_ROOT": str(models_root),
           "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="facesetd-clustering-") as tmp:
        data = Path(tmp) / "data"
        (data / "inbox").mkdir(parents=True)
        for photo in sorted({f.photo for f in faces}):
            shutil.copyfile(people / photo, data / "inbox" / _inbox_name(photo))
        cli = [sys.executable, "-m", "daemon.cli", "--data-dir", str(data)]
        t0 = time.perf_counter()
        subprocess.run([*cli, "reconcile"], env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        log = subprocess.run([*cli, "events", "--json"], env=env, check=True, capture_output=True, text=True).stdout
        pooled = pool_clusters_of(data, env)
    where = placement([json.loads(line) for line in log.splitlines() if line.strip()])
    names = sorted(set(where.values()) - {""})
    index = {name: k for k, name in enumerate(names)}
    facesets = [index.get(where.get((_inbox_name(f.photo), f.index), ""), UNCLUSTERED) for f in faces]
    in_pool = {key: len(names) + k for k, cluster in enumerate(pooled) for key in cluster}
    both = [label if label != UNCLUSTERED else in_pool.get((_inbox_name(f.photo), f.index), UNCLUSTERED)
            for label, f in zip(facesets, faces)]
    return facesets, both, seconds


def pool_clusters_of(data: Path, env: dict[str, str]) -> list[list[tuple[str, int]]]:
    """The clusters of 2 faces or more that the data folder's pool holds (as `status` and the review page's pool
    read them), each as (inbox file name, face index) keys."""
    from daemon.config import load_config
    from daemon.pipeline import Pipeline
    from handlers.pool import pool_clusters
    from state.eventlog import EventLog

    config = load_config(None, data_dir=str(data), environ=env)
    log = EventLog(config.log_path)
    try:
        pipeline = Pipeline(config, log)
        pool = pool_clusters(pipeline.ctx, None)
        pool.advance(None)
        out = []
        for cluster in pool.clusters(min_size=2):
            keys = []
            for row in pipeline.state.pool_rows_of(cluster):
                src = json.loads(row.source)
                keys.append((str(src.get("received_as", "")).rsplit("/", 1)[-1], int(src.get("face", -1))))
            out.append(keys)
        return out
    finally:
        log.close()


def placement(events: Sequence[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """(inbox file name, face index) -> the faceset the face ended in ("" for the pool), replaying the log: a face
    enters the pool (pool_face_added) or a faceset (face_added); a merge (facesets_merged) moves a faceset's faces
    into the survivor. A face pruned inside its faceset (near-dup, ...) still counts as that faceset's."""
    where: dict[tuple[str, int], str] = {}
    for e in events:
        kind, p = e["kind"], e["payload"]
        if kind in ("pool_face_added", "face_added"):
            src = p.get("source") or {}
            key = (str(src.get("received_as", "")).rsplit("/", 1)[-1], int(src.get("face", -1)))
            where[key] = "" if kind == "pool_face_added" else _faceset_of(p["path"])
        elif kind == "facesets_merged":
            gone = set(p.get("merged", ()))
            where = {k: (p["faceset"] if v in gone else v) for k, v in where.items()}
    return where


def _faceset_of(path: str) -> str:
    return next((part for part in path.split("/") if part.startswith("faceset_")), "")


# --- Scoring -----------------------------------------------------------------------------------------


# The scoring is facesetd's own (daemon/calibration.py, which `facesetd calibrate` reports with): Score, score.


def pair_distances(faces: Sequence[Face]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances of every pair of labelled faces: same person, different people (calibrate's own)."""
    return calibration.pair_distances([calibration.Labelled(f.photo, f.person, f.vec) for f in faces
                                       if f.person != BYSTANDER])


# --- Main ----------------------------------------------------------------------------------------------


def rules(faces: Sequence[Face], cluster_distance: float) -> dict[str, list[int]]:
    """Every in-process rule's labels on the same vectors (`cluster_distance`: the pack's, for facesetd's rule)."""
    vecs = np.stack([f.vec for f in faces])
    photos = [f.photo for f in faces]
    return {
        f"Immich (DBSCAN-like, maxDistance {IMMICH_MAX_DISTANCE}, minFaces {IMMICH_MIN_FACES}, + nightly)":
            immich(vecs),
        f"PhotoPrism (DBSCAN, {PHOTOPRISM_DISTANCE} as cosine, core {PHOTOPRISM_CORE})": photoprism(vecs),
        f"average linkage (UPGMA) {AVERAGE_DISTANCE}": average_linkage(vecs),
        f"complete {COMPLETE_DISTANCE} + centroids merged {CENTROID_MERGE_DISTANCE}, gate {CENTROID_GATE}":
            complete_then_centroids(vecs),
        f"facesetd before issue 21, in process (complete {BEFORE_DISTANCE}, gate {BEFORE_GATE})":
            facesetd_before(vecs, photos),
        f"facesetd's pool rule, in process (average {cluster_distance}, gate {FACESETD_GATE})":
            facesetd_rule(vecs, photos, cluster_distance),
    }


def sweep(faces: Sequence[Face]) -> dict[str, dict[float, Score]]:
    """Each rule's score with its distance set to each of SWEEP (every cut of a rule moved together)."""
    vecs = np.stack([f.vec for f in faces])
    photos = [f.photo for f in faces]
    persons = [f.person for f in faces]
    runs: dict[str, Callable[[float], list[int]]] = {
        "Immich": lambda t: immich(vecs, max_distance=t),
        "PhotoPrism": lambda t: photoprism(vecs, distance=t),
        "average linkage": lambda t: average_linkage(vecs, t),
        "complete + centroids": lambda t: complete_then_centroids(vecs, t, t),
        "facesetd before": lambda t: facesetd_before(vecs, photos, t),
        "facesetd's pool rule": lambda t: facesetd_rule(vecs, photos, t),
    }
    return {name: {t: score(persons, run(t)) for t in SWEEP} for name, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=Path, default=REPO / "bench" / "people")
    parser.add_argument("--pack", default="buffalo_sc")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end facesetd reconcile")
    parser.add_argument("--sweep", action="store_true", help="also run every rule at each distance of SWEEP")
    args = parser.parse_args()
    models = Path(os.environ.get("FACESETD_TEST_MODELS", REPO / ".models"))
    from daemon.logs import configure_logging

    configure_logging("warning", "console")
    faces = embed(args.people, models, args.pack)
    persons = [f.person for f in faces]
    labelled = Counter(p for p in persons if p != BYSTANDER)
    distance = pack_identity(args.pack).get("cluster_distance", IdentityThresholds().cluster_distance)
    results = {name: score(persons, labels) for name, labels in rules(faces, distance).items()}
    e2e_s = None
    if not args.no_e2e:
        facesets, both, e2e_s = facesetd_e2e(args.people, faces, models, args.pack)
        results[f"facesetd end to end: facesets (unseeded reconcile, {args.pack})"] = score(persons, facesets)
        results[f"facesetd end to end: facesets + the pool's clusters ({args.pack})"] = score(persons, both)
    same, diff = pair_distances(faces)
    report = {
        "pack": args.pack, "photos": len({f.photo for f in faces}), "faces": len(faces),
        "bystanders": len(faces) - sum(labelled.values()), "people": len(labelled),
        "people_5plus": sum(1 for k in labelled.values() if k >= FOUND_MIN_PHOTOS),
        "people_3_4": sum(1 for k in labelled.values() if k in SMALL_PHOTOS),
        "rules": {name: s.__dict__ for name, s in results.items()},
        "same_person": calibration.spread(same), "different_people": calibration.spread(diff), "reconcile_s": e2e_s,
    }
    swept = sweep(faces) if args.sweep else {}
    if swept:
        report["sweep"] = {name: {str(t): s.__dict__ for t, s in by.items()} for name, by in swept.items()}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{report['photos']} photos, {report['faces']} faces ({report['bystanders']} bystanders), "
          f"{report['people']} people: {report['people_5plus']} with >= {FOUND_MIN_PHOTOS} photos, "
          f"{report['people_3_4']} with 3-4; pack {args.pack}"
          + (f"; reconcile {e2e_s:.1f} s" if e2e_s is not None else ""))
    print("| rule | people 5+ found | people 3-4 found | clusters | impure | BCubed P | R | F |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in results.items():
        print(f"| {name} | {s.found} / {s.of} | {s.small_found} / {s.small_of} | {s.clusters} | {s.impure} | "
              f"{s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} |")
    for what in ("same_person", "different_people"):
        q = report[what]
        print(f"{what.replace('_', ' ')}: {q['pairs']} pairs, min {q['min']}, p05 {q['p05']}, p50 {q['p50']}, "
              f"p95 {q['p95']}, max {q['max']}")
    if swept:
        print("sweep: people 5+ found / 3-4 found / impure clusters / BCubed F at each cosine distance")
        print("| rule | " + " | ".join(f"{t:.2f}" for t in SWEEP) + " |")
        print("|---|" + "---|" * len(SWEEP))
        for name, by in swept.items():
            print(f"| {name} | " + " | ".join(f"{s.found}/{s.small_found}/{s.impure}/{s.f1:.2f}" for s in by.values())
                  + " |")


if __name__ == "__main__":
    main()
