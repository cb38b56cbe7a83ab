"""The faces of a faceset's top-N `.fsz`: the N whose mean embedding lies closest to the person (issue 25).

roop-unleashed averages the embeddings of every face in the `.fsz` it loads and swaps with that average
(DOMAIN.md section 2). Ranked by crop quality alone, the top N can be N near-identical frontal shots whose mean
drifts from the person; this rule picks the faces for their mean instead. It is a pure function of the faces
(same log -> same choice -> byte-identical manifests and `.fsz` files), used by the renderer (state/render.py:
the manifest's `top_files` and the top `.fsz`) and by the review pages (state/queries.py `top_faces_by_faceset`):
one function decides the top N for both.

The rule, over a faceset's kept faces (and, for an era bucket, the PNGs slotted into it):
1. A face's vector is its FaceAnalyzed embedding (the PNG as roop loads it and embeds it), else its routing
   embedding, made unit length. The **centroid** is the mean of every such vector, renormalised (the arithmetic of
   handlers/centroids.py).
2. **Candidates**: faces with a vector and a crop quality of at least QUALITY_FLOOR. When fewer than N pass, the
   best below the floor (by quality, then file name) join until there are N.
3. **Greedy**, N times: add the candidate with the highest score = cos(mean of the chosen faces and it, centroid)
   - SOURCE_PENALTY x (chosen faces from its source photo or video) - POSE_PENALTY x (chosen faces in its pose bin).
   Scores are compared rounded to SCORE_DECIMALS; equal ones go to the better quality, then the file name.
   Then single swaps (one chosen face for one left out) while one raises the set's objective, cos(mean, centroid)
   less the penalties for each face beyond the first of its source and of its pose bin; where the best N by quality
   still score higher, the same swaps from them, the higher set kept. So with equal penalties the mean is never
   farther from the centroid than quality alone puts it. Rank, why and gain: the greedy order within the set.
4. Faces without a vector fill any place left, by quality, then file name.

The pose is a yaw proxy from the 5 landmarks FaceAnalyzed records on the PNG: the nose tip's offset from the eye
midpoint along the eye line, over half the eye distance (signed crop quality's frontality, gpu_agent/quality.py:
0 frontal, -1 / +1 the nose above the image's left / right eye), binned by YAW_EDGES. A face without landmarks is
in the bin "unknown".

Each chosen face gets a reason (`reason_of`): its rank, why it was chosen (WHY_*), the cosine the running mean
gained by it, its pose bin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # numpy is imported where a vector is decoded: a log without vectors renders without it
    import numpy as np

# --- Tunables: one place, one comment each -----------------------------------------------------------------
# Crop quality (gpu_agent/quality.py, 0..1) a face needs to be a candidate while N faces reach it; the test photos'
# crops score 0.80-0.95, a blurred, small or turned face under 0.6.
QUALITY_FLOOR = 0.6
# Taken off a candidate's score for each chosen face from the same source photo or video: frames of one video (or
# two crops of one photo) are near-identical, so a second one adds little but weight to one moment.
SOURCE_PENALTY = 0.05
# Taken off a candidate's score for each chosen face in the same pose bin: among faces about as close to the
# person, the top N spreads over poses. Small beside the cosines (a step's gains differ by 0.001-0.05).
POSE_PENALTY = 0.002
# Yaw proxy bin edges and the bins' names (the nose toward the image's left is negative).
YAW_EDGES = (-0.5, -0.15, 0.15, 0.5)
YAW_BINS = ("left", "half-left", "frontal", "half-right", "right")
UNKNOWN_POSE = "unknown"
# Most swaps the search after the greedy choice makes (each raises the objective; it stops before when none does).
MAX_SWAPS = 64
# Scores are compared rounded to this many decimals, so float noise never decides between equal faces.
SCORE_DECIMALS = 9

# Why a face is in the top N (the manifest's `top.why`).
WHY_CLOSEST = "closest mean"  # the candidate that brings the mean closest to the centroid
WHY_SPREAD = "spread"  # a closer one was passed over: it repeated a source photo/video or a pose already chosen
WHY_BELOW_FLOOR = "below floor"  # from under QUALITY_FLOOR: too few faces reach it
WHY_NO_EMBEDDING = "no embedding"  # no vector to compare: filled in by quality


class TopInput(NamedTuple):
    """One face a top N may hold: its file (a faceset's own by name, a slotted one by its corpus path), sha256,
    crop quality, source (JSON text), routing embedding and analysis embedding (float32 bytes or None), and the
    analysis's 5 landmarks (JSON text or None)."""

    file: str
    sha256: str
    quality: float | None
    source: str
    routed: bytes | None
    analyzed: bytes | None
    kps: str | None


@dataclass(frozen=True)
class TopChoice:
    """The top N: files in the order chosen, each one's reason, and cos(mean of the chosen vectors, centroid)."""

    files: tuple[str, ...]
    reasons: Mapping[str, Mapping[str, Any]]
    cosine: float | None  # None: no chosen face has a vector


def unit(v: np.ndarray) -> np.ndarray:
    """`v` as float64 scaled to length 1 (a zero vector stays zero)."""
    import numpy as np

    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def vector_of(face: TopInput) -> np.ndarray | None:
    """The face's unit vector: the PNG's embedding (what roop averages), else the routing one; None without."""
    blob = face.analyzed if face.analyzed is not None else face.routed
    if blob is None:
        return None
    import numpy as np

    return unit(np.frombuffer(blob, dtype="<f4"))


def yaw_of(kps_json: str | None) -> float | None:
    """The signed yaw proxy of 5 landmarks (left eye, right eye, nose, mouth corners), or None without them."""
    try:
        kps = json.loads(kps_json) if kps_json else None
        points = [(float(x), float(y)) for x, y in kps] if isinstance(kps, list) else []
    except (ValueError, TypeError):
        return None
    if len(points) != 5:
        return None
    (lx, ly), (rx, ry), (nx, ny) = points[0], points[1], points[2]
    ex, ey = rx - lx, ry - ly
    dist = math.hypot(ex, ey)
    if dist < 1e-6:
        return None
    along = ((nx - (lx + rx) / 2.0) * ex + (ny - (ly + ry) / 2.0) * ey) / dist
    return max(-1.0, min(1.0, along / (dist / 2.0)))


def pose_bin(yaw: float | None) -> str:
    if yaw is None:
        return UNKNOWN_POSE
    return YAW_BINS[sum(1 for edge in YAW_EDGES if yaw > edge)]


def source_key(source: str | Mapping[str, Any], file: str) -> str:
    """What makes two faces come from one moment: the source video, else the photo's bytes, else the Immich asset,
    else the photo's path; a face with none of these is its own source. Other keys of `source` are ignored."""
    try:
        src = json.loads(source) if isinstance(source, str) else dict(source)
    except ValueError:
        src = {}
    if not isinstance(src, dict):
        src = {}
    video = src.get("video")
    if video:
        if isinstance(video, dict):
            video = video.get("sha256") or video.get("path") or json.dumps(video, sort_keys=True)
        return f"video:{video}"
    if src.get("photo_sha256"):
        return f"photo:{src['photo_sha256']}"
    immich = src.get("immich")
    if immich:
        if isinstance(immich, dict):
            immich = immich.get("asset_id") or json.dumps(immich, sort_keys=True)
        return f"immich:{immich}"
    if src.get("photo"):
        return f"path:{src['photo']}"
    return f"file:{file}"


def _quality(face: TopInput) -> float:
    return -1.0 if face.quality is None else float(face.quality)


def _by_quality(faces: Sequence[TopInput]) -> list[TopInput]:
    return sorted(faces, key=lambda f: (-_quality(f), f.file))


class _Pool:
    """The candidates as arrays: unit vectors (rows in quality order, then file name), each one's cosine to the
    centroid, source and pose keys; `value` and `swap` score sets of row indices by the rule's objective."""

    def __init__(self, candidates: Sequence[TopInput], vectors: Mapping[str, np.ndarray | None],
                 centroid: np.ndarray) -> None:
        import numpy as np

        self.faces = list(candidates)
        self.matrix = np.stack([vectors[f.file] for f in candidates])  # type: ignore[misc]
        self.to_centroid = self.matrix @ centroid
        self.sources = [source_key(f.source, f.file) for f in candidates]
        self.poses = [pose_bin(yaw_of(f.kps)) for f in candidates]
        # the same as small integers, for counting with numpy
        self.source_codes = np.unique(self.sources, return_inverse=True)[1].reshape(-1)
        self.pose_codes = np.unique(self.poses, return_inverse=True)[1].reshape(-1)

    def closeness(self, rows: Sequence[int]) -> float:
        """cos(mean of these rows, centroid)."""
        import numpy as np

        total = self.matrix[list(rows)].sum(axis=0)
        return float(self.to_centroid[list(rows)].sum()) / max(float(np.linalg.norm(total)), 1e-12)

    def penalty(self, rows: Sequence[int]) -> float:
        """SOURCE_PENALTY and POSE_PENALTY for each face beyond the first of its source, and of its pose bin."""
        sources = [self.sources[i] for i in rows]
        poses = [self.poses[i] for i in rows]
        return (SOURCE_PENALTY * (len(sources) - len(set(sources)))
                + POSE_PENALTY * (len(poses) - len(set(poses))))

    def value(self, rows: Sequence[int]) -> float:
        """The objective: closeness less the penalties, rounded to SCORE_DECIMALS."""
        return round(self.closeness(rows) - self.penalty(rows), SCORE_DECIMALS)

    def add_scores(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(closeness, objective) of `rows` plus each candidate, rounded; -inf for the rows already in."""
        import numpy as np

        total = self.matrix[list(rows)].sum(axis=0) if rows else np.zeros(self.matrix.shape[1])
        dot = float(self.to_centroid[list(rows)].sum()) if rows else 0.0
        norm = np.sqrt(np.maximum(float(total @ total) + 2.0 * (self.matrix @ total) + 1.0, 1e-24))
        close = np.round((dot + self.to_centroid) / norm, SCORE_DECIMALS)
        chosen = list(rows)
        sources = np.bincount(self.source_codes[chosen], minlength=len(self.faces))
        poses = np.bincount(self.pose_codes[chosen], minlength=len(self.faces))
        penalty = (self.penalty(rows) + SOURCE_PENALTY * (sources[self.source_codes] > 0)
                   + POSE_PENALTY * (poses[self.pose_codes] > 0))
        taken = np.zeros(len(self.faces), dtype=bool)
        taken[list(rows)] = True
        return (np.where(taken, -np.inf, close),
                np.where(taken, -np.inf, np.round(close - penalty, SCORE_DECIMALS)))

    def greedy(self, n: int, within: Sequence[int] | None = None) -> list[tuple[int, float, bool]]:
        """n times, the candidate (of `within`, else of all) whose addition scores best: (row, closeness after,
        whether it was also the closest addition, penalties aside). Equal scores: the first row."""
        import numpy as np

        allowed = np.ones(len(self.faces), dtype=bool) if within is None else np.isin(
            np.arange(len(self.faces)), list(within))
        rows: list[int] = []
        steps = []
        for _k in range(min(n, int(allowed.sum()))):
            close, score = self.add_scores(rows)
            close, score = np.where(allowed, close, -np.inf), np.where(allowed, score, -np.inf)
            best, raw = int(np.argmax(score)), int(np.argmax(close))
            rows.append(best)
            steps.append((best, float(close[best]), close[best] >= close[raw]))
        return steps

    def improve(self, rows: list[int]) -> list[int]:
        """Swap one chosen face for one left out while that raises the objective (the best such swap each time;
        equal ones: the earliest chosen row out, the first candidate in): a set no single swap betters."""
        import numpy as np

        rows = list(rows)
        value = self.value(rows)
        for _round in range(MAX_SWAPS):
            best, best_value = None, value
            for k in range(len(rows)):
                rest = rows[:k] + rows[k + 1:]
                _close, score = self.add_scores(rest)
                j = int(np.argmax(score))
                if score[j] > best_value:
                    best, best_value = (k, j), float(score[j])
            if best is None:
                break
            rows[best[0]] = best[1]
            value = best_value
        return rows


def choose_top(faces: Sequence[TopInput], n: int) -> TopChoice:
    """The top `n` of `faces` by the module's rule (see the module docstring)."""
    vectors = {f.file: vector_of(f) for f in faces}
    with_vec = [f for f in faces if vectors[f.file] is not None]
    without = _by_quality([f for f in faces if vectors[f.file] is None])
    files: list[str] = []
    reasons: dict[str, dict[str, Any]] = {}
    cosine = None
    if with_vec:
        import numpy as np

        # every kept face's vector, in file order: the centroid does not depend on the order faces came in
        ordered = sorted(with_vec, key=lambda f: f.file)
        centroid = unit(np.mean(np.stack([vectors[f.file] for f in ordered]), axis=0))  # type: ignore[misc]
        above = [f for f in ordered if _quality(f) >= QUALITY_FLOOR]
        below = _by_quality([f for f in ordered if _quality(f) < QUALITY_FLOOR])
        pool = _Pool(_by_quality(above + below[: max(0, n - len(above))]), vectors, centroid)
        # the greedy choice bettered by swaps; where the best by quality (rows 0..n-1) still scores higher, that one
        # bettered by swaps if it ends higher: the rule never ends below what quality alone would give it
        by_quality = list(range(min(n, len(pool.faces))))
        chosen = by_quality
        if len(pool.faces) > n:  # else every candidate is in
            chosen = pool.improve([row for row, _c, _r in pool.greedy(n)])
            if pool.value(by_quality) > pool.value(chosen):  # seldom: swaps from there do better
                by_quality = pool.improve(by_quality)
                chosen = by_quality if pool.value(by_quality) > pool.value(chosen) else chosen
        before = 0.0
        for rank, (row, after, closest) in enumerate(pool.greedy(n, within=chosen)):
            face = pool.faces[row]
            why = WHY_BELOW_FLOOR if _quality(face) < QUALITY_FLOOR else WHY_CLOSEST if closest else WHY_SPREAD
            reasons[face.file] = reason_of(rank, why, after - before, pool.poses[row])
            files.append(face.file)
            before = after
        cosine = round(pool.closeness([pool.faces.index(f) for f in pool.faces if f.file in reasons]), 6)
    for face in without[: max(0, n - len(files))]:
        reasons[face.file] = reason_of(len(files), WHY_NO_EMBEDDING, None, pose_bin(yaw_of(face.kps)))
        files.append(face.file)
    return TopChoice(tuple(files), reasons, cosine)


def reason_of(rank: int, why: str, gain: float | None, pose: str) -> dict[str, Any]:
    """A top-N face's manifest entry `top`: rank (0 first chosen), why, the cosine the mean gained, the pose bin."""
    found: dict[str, Any] = {"rank": rank, "why": why, "pose": pose}
    if gain is not None:
        found["gain"] = round(gain, 4)
    return found


def mean_cosine(faces: Sequence[TopInput], files: Sequence[str]) -> float | None:
    """cos(mean of the vectors of `files`, centroid of every face in `faces`): how close the top N's average lies
    to the person (None when either has no vector). For the bench and the tests, beside `choose_top`."""
    import numpy as np

    vectors = {f.file: vector_of(f) for f in faces}
    every = [v for _f, v in sorted(vectors.items()) if v is not None]
    chosen = [vectors[f] for f in files if vectors.get(f) is not None]
    if not every or not chosen:
        return None
    centroid = unit(np.mean(np.stack(every), axis=0))
    return float(unit(np.sum(np.stack(chosen), axis=0)) @ centroid)  # type: ignore[arg-type]


def quality_top(faces: Sequence[TopInput], n: int) -> list[str]:
    """The rule before issue 25, for comparison: the best `n` by crop quality (unanalysed last), then file name."""
    return [f.file for f in _by_quality(faces)[:n]]
