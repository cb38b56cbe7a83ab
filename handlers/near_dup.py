"""near-dup: a burst of near-identical shots biases roop's averaged identity. Within a faceset, a new face with
cosine similarity >= 0.95 to one already there: the better one by crop quality stays, the other is pruned.
Across identities, byte-identical PNGs (same SHA-256): the first stays. An identity's era buckets may share
PNGs on purpose, so byte-identical files within one family are left alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from state import events as ev
from state.eventlog import StoredEvent

from .common import Face, active_face, overridden, prune
from .context import HandlerContext
from .era import family_of

CHECK = "near_dup"
BYTE_CHECK = "byte_dup"


def byte_duplicate(ctx: HandlerContext, face: Face) -> ev.Event | None:
    family = family_of(ctx, face.faceset)
    for path, faceset in ctx.state.byte_twins(face.sha256, face.changed):
        if path in ctx.batch.claimed or faceset == face.faceset or family_of(ctx, faceset) == family:
            continue
        if overridden(ctx, face.faceset, BYTE_CHECK, face.sha256):
            return None
        return prune(ctx, face, BYTE_CHECK, f"byte-identical to {path} (another identity)", {
            "duplicate_of": path, "sha256": face.sha256,
        })
    return None


@dataclass
class _Candidates:
    """The analysed kept faces of one faceset, read once per batch (the state does not change during one):
    each new face of it compares with those changed before it, not itself, not decided on in this batch."""

    paths: list[str]
    shas: list[str]
    qualities: list[float | None]
    ranks: np.ndarray  # quality as compared (-1.0 for none), float64
    changed: np.ndarray  # position of each face's last change
    matrix: np.ndarray  # their embeddings (float32 rows, by path)
    rows: dict[str, int]  # path -> row
    buffer: np.ndarray  # room for the rows one face compares with

    @classmethod
    def of(cls, ctx: HandlerContext, faceset: str) -> _Candidates:
        found = ctx.state.near_dup_faces(faceset)
        paths = [r.path for r in found]
        qualities = [r.quality for r in found]
        blob = b"".join(r.embedding for r in found)
        matrix = np.frombuffer(blob, dtype="<f4").reshape(len(found), -1) if found else np.zeros((0, 0), "<f4")
        return cls(paths, [r.sha256 for r in found], qualities,
                   np.array([-1.0 if q is None else q for q in qualities], dtype=np.float64),
                   np.array([r.changed for r in found], dtype=np.int64), matrix,
                   {p: i for i, p in enumerate(paths)}, np.empty_like(matrix))

    def of_face(self, face: Face, claimed: set[str]) -> np.ndarray:
        """Rows `face` is compared with (what near_dup_candidates returns for it, less the claimed), by path."""
        keep = self.changed < face.changed
        for path in (face.path, *claimed):
            i = self.rows.get(path)
            if i is not None:
                keep[i] = False
        return np.flatnonzero(keep)

    def similarities(self, rows: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """Cosine similarities of those rows with `embedding`: the product of exactly their rows, stacked in
        path order (BLAS sums a row differently depending on the rows around it; this keeps the figures)."""
        stacked = np.take(self.matrix, rows, axis=0, out=self.buffer[: len(rows)])
        return stacked @ np.asarray(embedding, dtype=np.float32)


def _keep_new(ctx: HandlerContext, face: Face, e: ev.FaceAnalyzed, found: _Candidates, rows: np.ndarray,
              sims: np.ndarray, hits: np.ndarray) -> list[ev.Event]:
    """The matches (`hits`, indices into rows/sims) are all worse than the new face: they go."""
    limit = ctx.config.thresholds.near_dup_similarity
    quality = e.quality if e.quality is not None else -1.0
    out: list[ev.Event] = []
    for k in hits.tolist():
        sim, row = float(sims[k]), int(rows[k])
        path, sha, q = found.paths[row], found.shas[row], found.qualities[row]
        old = active_face(ctx, path, sha)
        if old is None or overridden(ctx, old.faceset, CHECK, sha):
            continue
        out.append(prune(ctx, old, CHECK, f"near-duplicate of {face.path} (cosine {sim:.3f} >= {limit}), lower quality",
                         {"duplicate_of": face.path, "similarity": round(sim, 6), "threshold": limit,
                          "quality": q, "quality_of_kept": quality, "model": dict(e.model)}))
    return out


def _near_dup(ctx: HandlerContext, face: Face, e: ev.FaceAnalyzed, found: _Candidates) -> list[ev.Event]:
    """The new face against the older ones of its faceset: one similarity vector, the matches by np.flatnonzero."""
    rows = found.of_face(face, ctx.batch.claimed)
    if not rows.size:
        return []
    sims = found.similarities(rows, np.asarray(e.embedding))
    limit = ctx.config.thresholds.near_dup_similarity
    hits = np.flatnonzero(sims >= limit)  # path order
    if not hits.size:
        return []
    quality = e.quality if e.quality is not None else -1.0
    better = hits[found.ranks[rows[hits]] >= quality]
    if not better.size:  # the new face is better: the existing ones go
        return _keep_new(ctx, face, e, found, rows, sims, hits)
    best = int(better[np.argmax(sims[better])])  # the most similar, the first by path of equal ones
    sim, row = float(sims[best]), int(rows[best])
    if overridden(ctx, face.faceset, CHECK, face.sha256):
        return []
    return [prune(ctx, face, CHECK, f"near-duplicate of {found.paths[row]} (cosine {sim:.3f} >= {limit}), lower quality",
                  {"duplicate_of": found.paths[row], "similarity": round(sim, 6), "threshold": limit,
                   "quality": quality, "quality_of_kept": found.qualities[row], "model": dict(e.model)})]


def check_near_dup(ctx: HandlerContext, events: Sequence[StoredEvent[ev.FaceAnalyzed]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    facesets: dict[str, _Candidates] = {}  # read once per batch
    for se in events:
        e = se.event
        if e.face_count != 1 or e.embedding is None:
            continue
        face = active_face(ctx, e.path, e.sha256)
        if face is None:
            continue
        byte_dup = byte_duplicate(ctx, face)
        if byte_dup is not None:
            out.append(byte_dup)
            continue
        if face.faceset not in facesets:
            facesets[face.faceset] = _Candidates.of(ctx, face.faceset)
        out.extend(_near_dup(ctx, face, e, facesets[face.faceset]))
    return out
