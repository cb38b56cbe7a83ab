"""merge identities: facesets of one person (seeded twice, promoted from the pool before the other existed, adopted
from the batch scripts) become one. Complete linkage of the active facesets' centroids cut at [identity]
merge_distance: within a group every pair of centroids is within the distance, so a group cannot chain people
together (single linkage did: 60 facesets in one cluster with a minimum similarity below 0, seed 000).

The survivor is the group's oldest faceset (lowest number). One FacesetsMerged decision per group moves the kept
PNGs of the others into it (a name already taken there gets ~2, ~3 ...) and their emptied folders, with what they
dropped, to _merged/; FaceAdded events for the moved PNGs follow, so each is analysed and checked in the survivor
(multi-face, occlusion, near-dup, byte-dup, the faceset rules) as any new face is. Left out: era buckets and their
families (the era checks own them), and pairs whose merge the user restored.

Only the facesets whose centroids changed since the last check can form a new group (every pair still within the
distance after a check involves a group's survivor, which changed): their neighbours within the distance are
searched (float32 products, with slack), the connected components they span are closed, and scipy's complete
linkage (float64) runs per component, which gives the groups a run over every centroid would. A first check (or a
new merge_distance) looks at every centroid.

Not a handler: daemon/pipeline.py runs it once the inbox is settled (`facesetd reconcile`, the daemon's schedule);
it returns the events, the caller appends them and the Mover carries out the moves.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from state import events as ev
from state.layout import MERGED_AREA, face_path, faceset_number
from state.names import fit

from .centroids import Centroids, centroids
from .context import HandlerContext
from .era import buckets
from .pool_clusters import EDGE_SLACK, components_of

CHECK = "merge"  # state/corpus_state.MERGE_CHECK: a restore of it keeps the pair apart
SEARCH_ROWS = 1024  # centroids per row block of the neighbour search (x N float32 similarities)


@dataclass(frozen=True)
class MergeGroup:
    """Facesets of one person: the survivor (lowest number) and the others, with their pairwise distances."""

    survivor: str
    merged: tuple[str, ...]
    distances: dict[str, float]  # "faceset_a faceset_b" -> cosine distance of their centroids (float64)

    @property
    def max_pair(self) -> float:
        return max(self.distances.values())


def _excluded(ctx: HandlerContext) -> set[str]:
    """Era buckets and their families: one person split by age on purpose, never merged back."""
    return {name for b in buckets(ctx) for name in (b.faceset, b.family)}


def _active_centroids(ctx: HandlerContext) -> Centroids | None:
    try:
        return centroids(ctx)
    except RuntimeError as e:  # adopted facesets need the models for their embeddings: the check waits for them
        ctx.say_once("merge-check", "duplicate identities not looked for", error=str(e))
        return None


def _neighbours(matrix: npt.NDArray[np.float32], rows: list[int], reach: float) -> dict[int, list[int]]:
    """row -> the other rows within cosine distance `reach` (float32 products, a block of rows at a time)."""
    out: dict[int, list[int]] = {}
    for i in range(0, len(rows), SEARCH_ROWS):
        block = rows[i : i + SEARCH_ROWS]
        near = (1.0 - matrix[block] @ matrix.T) <= reach
        for k, row in enumerate(block):
            out[row] = [int(j) for j in np.flatnonzero(near[k]) if j != row]
    return out


def seeded_components(matrix: npt.NDArray[np.float32], seeds: list[int], reach: float) -> list[list[int]]:
    """The connected components (2 rows or more) of the graph of pairs within `reach` that hold a seed."""
    adj: dict[int, set[int]] = {}
    seen, frontier = set(seeds), list(seeds)
    while frontier:
        found = _neighbours(matrix, frontier, reach)
        frontier = []
        for row, others in found.items():
            for j in others:
                adj.setdefault(row, set()).add(j)
                adj.setdefault(j, set()).add(row)
                if j not in seen:
                    seen.add(j)
                    frontier.append(j)
    return [sorted(c) for c in components_of(sorted(seen), adj) if len(c) > 1]


def linkage_groups(names: list[str], vecs: npt.NDArray[np.float32], t: float,
                   apart: set[tuple[str, str]]) -> list[MergeGroup]:
    """scipy complete linkage (cosine, float64) of one component cut at t; the groups of 2 or more."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    x = vecs.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dist = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    for i, a in enumerate(names):  # a restored merge: that pair never again
        for j, b in enumerate(names):
            if (a, b) in apart:
                dist[i, j] = dist[j, i] = 2.0
    labels = fcluster(linkage(squareform(dist, checks=False), method="complete"), t=t, criterion="distance")
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda i: (faceset_number(names[i]), names[i]))
        pairs = {f"{names[i]} {names[j]}": round(float(dist[i, j]), 6)
                 for k, i in enumerate(members) for j in members[k + 1:]}
        out.append(MergeGroup(names[members[0]], tuple(names[i] for i in members[1:]), pairs))
    return out


def merge_groups(ctx: HandlerContext, changed: Collection[str] | None) -> list[MergeGroup]:
    """The groups to merge now: those holding a faceset of `changed` (None: every active faceset), by survivor."""
    cents = _active_centroids(ctx)
    if cents is None:
        return []
    excluded = _excluded(ctx)
    names = [n for n in cents if n not in excluded]
    if len(names) < 2:
        return []
    matrix = np.stack([np.asarray(cents[n], dtype=np.float32) for n in names])
    seeds = list(range(len(names))) if changed is None else [i for i, n in enumerate(names) if n in changed]
    t = ctx.config.identity.merge_distance
    apart = ctx.state.merge_overrides()
    groups: list[MergeGroup] = []
    for component in seeded_components(matrix, seeds, t + EDGE_SLACK):
        groups += linkage_groups([names[i] for i in component], matrix[component], t, apart)
    return sorted(groups, key=lambda g: faceset_number(g.survivor))


def _dest(ctx: HandlerContext, survivor: str, name: str, taken: set[str]) -> str:
    """Where a merged PNG goes in the survivor: its own name, else name~2.png, name~3.png ... (never over a file)."""
    n = 1
    dest = face_path("", survivor, fit(name))
    while dest in taken or ctx.state.has_face_at(dest) or (ctx.config.corpus / dest).exists():
        n += 1
        dest = face_path("", survivor, fit(name, f"~{n}"))
    taken.add(dest)
    return dest


def merge_events(ctx: HandlerContext, group: MergeGroup) -> list[ev.Event]:
    """The FacesetsMerged decision of one group, then a FaceAdded for each PNG it moves into the survivor."""
    corpus = ctx.config.corpus
    merged = [m for m in group.merged if not (corpus / MERGED_AREA / m).exists()]
    for m in sorted(set(group.merged) - set(merged)):
        ctx.log.warning("faceset not merged: its place in _merged/ is taken", faceset=m, into=group.survivor)
    if not merged:
        return []
    moves: list[tuple[str, str]] = []
    added: list[ev.Event] = []
    taken: set[str] = set()
    for name in merged:
        for face in ctx.state.kept_faces_of(name):
            dest = _dest(ctx, group.survivor, face.path.rsplit("/", 1)[-1], taken)
            moves.append((face.path, dest))
            added.append(ev.FaceAdded(path=dest, sha256=face.sha256, size=face.size, mtime_ns=face.mtime_ns,
                                      source=json.loads(face.source)))
        moves.append((name, f"{MERGED_AREA}/{name}"))  # the emptied folder, what it dropped inside
    t = ctx.config.identity.merge_distance
    others = ", ".join(merged)
    decision = ev.FacesetsMerged(
        faceset=group.survivor, merged=tuple(merged), moves=tuple(moves), check=CHECK,
        reason=f"{others} merged into {group.survivor}: every pair of centroids within cosine distance {t}"
               f" (complete linkage; farthest pair {group.max_pair:.3f})",
        inputs={"merge_distance": t, "distances": group.distances, "max_pair_distance": group.max_pair,
                "faces_moved": len(added)},
    )
    ctx.log.debug("facesets merged", faceset=group.survivor, merged=merged, faces=len(added))
    return [decision, *added]


def check_merges(ctx: HandlerContext, changed: Sequence[str] | None) -> list[ev.Event]:
    """Every merge due now (see merge_groups), as events to append in this order."""
    ctx.state.catch_up()
    out: list[ev.Event] = []
    for group in merge_groups(ctx, None if changed is None else set(changed)):
        out += merge_events(ctx, group)
    return out
