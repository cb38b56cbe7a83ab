"""The routing's centroids, nearest and near-dup as they were before the centroid cache (issue 12): the
reference the cache and the vectorised near-dup are compared with (tests/test_centroids.py, bench/routing.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from handlers.centroids import cached_embeddings, unit
from handlers.common import active_face, overridden, prune
from handlers.context import HandlerContext
from handlers.near_dup import CHECK, byte_duplicate
from state import events as ev
from state.eventlog import StoredEvent


def old_centroids(ctx: HandlerContext, exclude_prefix: str = "") -> dict[str, np.ndarray]:
    """Every active faceset's centroid from every kept face, computed from scratch."""
    rows = ctx.state.centroid_inputs()
    vectors: dict[str, list[np.ndarray]] = {}
    missing: list[tuple[str, str]] = []
    pending: list[tuple[str, str]] = []
    for faceset, path, sha, routed, analyzed in rows:
        if exclude_prefix and path.rsplit("/", 1)[-1].startswith(exclude_prefix):
            continue
        blob = routed if routed is not None else analyzed
        if blob is not None:
            vectors.setdefault(faceset, []).append(unit(np.frombuffer(blob, dtype="<f4")))
        else:
            missing.append((path, sha))
            pending.append((faceset, sha))
    computed = cached_embeddings(ctx, missing)
    for faceset, sha in pending:
        vec = computed.get(sha)
        if vec is not None:
            vectors.setdefault(faceset, []).append(unit(vec))
    return {name: unit(np.mean(vs, axis=0)) for name, vs in sorted(vectors.items()) if vs}


def old_nearest(cents: dict[str, np.ndarray], vec: np.ndarray) -> tuple[str, float]:
    best, dist = "", 2.0
    for name, c in cents.items():
        d = 1.0 - float(np.dot(c, vec))
        if d < dist:
            best, dist = name, d
    return best, dist


def _existing(ctx: HandlerContext, face) -> list[tuple[str, str, float | None, np.ndarray]]:
    # The old per-face query (other kept analysed faces of the faceset, changed before this one), by path.
    rows = [r for r in ctx.state.near_dup_faces(face.faceset) if r.path != face.path and r.changed < face.changed]
    return [(p, s, q, np.frombuffer(emb, dtype="<f4")) for p, s, q, emb, _ch in rows if p not in ctx.batch.claimed]


def old_check_near_dup(ctx: HandlerContext, events: Sequence[StoredEvent[ev.FaceAnalyzed]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    limit = ctx.config.thresholds.near_dup_similarity
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
        if better:
            sim, (path, _sha, q, _v) = max(better, key=lambda m: m[0])
            if overridden(ctx, face.faceset, CHECK, face.sha256):
                continue
            out.append(prune(ctx, face, CHECK, f"near-duplicate of {path} (cosine {sim:.3f} >= {limit}), lower quality",
                             {"duplicate_of": path, "similarity": round(sim, 6), "threshold": limit,
                              "quality": quality, "quality_of_kept": q, "model": model}))
            continue
        for sim, (path, sha, q, _v) in matches:
            old = active_face(ctx, path, sha)
            if old is None or overridden(ctx, old.faceset, CHECK, sha):
                continue
            out.append(prune(ctx, old, CHECK, f"near-duplicate of {face.path} (cosine {sim:.3f} >= {limit}), lower quality",
                             {"duplicate_of": face.path, "similarity": round(sim, 6), "threshold": limit,
                              "quality": q, "quality_of_kept": quality, "model": model}))
    return out
