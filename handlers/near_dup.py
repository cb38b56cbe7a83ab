"""near-dup: a burst of near-identical shots biases roop's averaged identity. Within a faceset, a new face with
cosine similarity >= 0.95 to one already there: the better one by crop quality stays, the other is pruned.
Across identities, byte-identical PNGs (same SHA-256): the first stays. An identity's era buckets may share
PNGs on purpose, so byte-identical files within one family are left alone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from state import events as ev
from state.eventlog import StoredEvent

from .common import Face, active_face, overridden, prune
from .context import HandlerContext
from .era import family_of

CHECK = "near_dup"
BYTE_CHECK = "byte_dup"


def _byte_duplicate(ctx: HandlerContext, face: Face) -> ev.Event | None:
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


def _existing(ctx: HandlerContext, face: Face) -> list[tuple[str, str, float | None, np.ndarray]]:
    """Faces already in the faceset (analyzed, one face, not decided on in this batch)."""
    rows = ctx.state.near_dup_candidates(face.faceset, face.path, face.changed)
    return [(p, s, q, np.frombuffer(emb, dtype="<f4")) for p, s, q, emb, _sc in rows if p not in ctx.batch.claimed]


def check_near_dup(ctx: HandlerContext, events: Sequence[StoredEvent[ev.FaceAnalyzed]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    limit = ctx.config.thresholds.near_dup_similarity
    for se in events:
        e = se.event
        if e.face_count != 1 or e.embedding is None:
            continue
        face = active_face(ctx, e.path, e.sha256)
        if face is None:
            continue
        byte_dup = _byte_duplicate(ctx, face)
        if byte_dup is not None:
            out.append(byte_dup)
            continue
        existing = _existing(ctx, face)
        if not existing:
            continue
        sims = np.stack([v for *_r, v in existing]) @ np.asarray(e.embedding, dtype=np.float32)
        matches = [(float(s), row) for s, row in zip(sims, existing) if s >= limit]
        if not matches:
            continue
        quality = e.quality if e.quality is not None else -1.0
        model = dict(e.model)
        better = [(s, r) for s, r in matches if (r[2] if r[2] is not None else -1.0) >= quality]
        if better:  # an existing one is at least as good: the new face goes
            sim, (path, _sha, q, _v) = max(better, key=lambda m: m[0])
            if overridden(ctx, face.faceset, CHECK, face.sha256):
                continue
            out.append(prune(ctx, face, CHECK, f"near-duplicate of {path} (cosine {sim:.3f} >= {limit}), lower quality",
                             {"duplicate_of": path, "similarity": round(sim, 6), "threshold": limit,
                              "quality": quality, "quality_of_kept": q, "model": model}))
            continue
        for sim, (path, sha, q, _v) in matches:  # the new face is better: the existing ones go
            old = active_face(ctx, path, sha)
            if old is None or overridden(ctx, old.faceset, CHECK, sha):
                continue
            out.append(prune(ctx, old, CHECK, f"near-duplicate of {face.path} (cosine {sim:.3f} >= {limit}), lower quality",
                             {"duplicate_of": face.path, "similarity": round(sim, 6), "threshold": limit,
                              "quality": q, "quality_of_kept": quality, "model": model}))
    return out
