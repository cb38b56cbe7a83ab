"""Turn the pool of unassigned faces into new facesets once a person has enough of them.

Average-linkage clustering at `identity.cluster_distance` (cosine): two groups of faces join when their faces are
within the distance on average, so a person's photos that vary (one pair far apart) still make one cluster, and two
people, apart on the whole, stay two (handlers/pool_clusters.py says why, bench/clustering.py measures it). A
cluster holding at least `identity.min_new_faceset` faces from distinct photos (by default the thin rule's floor of
5, so no new faceset is thin at birth) becomes faceset_{max+1}; smaller ones wait, and those of 3 photos or more
are shown as people forming (`facesetd status`, the review page's pool).
Numbers are never reused: the maximum runs over every faceset ever recorded (any area) and on disk.

Not a handler: `facesetd reconcile` calls it after settling, the daemon's scheduler periodically. It only
returns events; the caller appends them, then the Mover carries out the promotion's moves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from gpu_agent.errors import ModelError
from state import events as ev
from state.errors import FacesetdError
from state.layout import face_path, faceset_name, faceset_number
from state.queries import PoolRow
from state.scan import iter_facesets

from .centroids import Centroids, centroids, nearest, unit
from .context import HandlerContext
from .pool_clusters import EDGE_SLACK, PoolClusters, SearchPlan


def next_faceset_number(ctx: HandlerContext) -> int:
    """The number a new faceset takes: one above every faceset the state or the corpus folders know."""
    numbers = [faceset_number(n) for n in ctx.state.faceset_names()]
    numbers += [faceset_number(n) for _a, n in iter_facesets(ctx.config.corpus)]
    return max([0, *numbers]) + 1


Row = PoolRow  # (face_id, path, sha256, photo_sha256, quality, source JSON, embedding bytes)


def claim_from_pool(ctx: HandlerContext, rows: list[Row], chosen: list[int], name: str,
                    distances: dict[int, float] | None = None) -> tuple[list[tuple[str, str]], list[ev.Event]]:
    """The moves out of the pool into `name` and the FaceAdded/FaceRouted events for the chosen faces."""
    moves: list[tuple[str, str]] = []
    added: list[ev.Event] = []
    for i in chosen:
        _face_id, path, sha, _photo, quality, source, blob = rows[i]
        dest = face_path("", name, path.rsplit("/", 1)[-1])
        try:
            st = (ctx.config.corpus / path).stat()
        except FileNotFoundError:
            ctx.log.warning("pool crop missing; left in the pool", path=path)
            continue
        moves.append((path, dest))
        added.append(ev.FaceAdded(path=dest, sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                  source=json.loads(source)))
        dist = None if distances is None else round(distances[i], 4)
        added.append(ev.FaceRouted(path=dest, sha256=sha, faceset=name, distance=dist, quality=quality,
                                   embedding=np.frombuffer(blob, dtype="<f4")))
    return moves, added


def pool_face_ids(moves: list[tuple[str, str]]) -> tuple[str, ...]:
    """The face ids of the pool crops `moves` takes out of the pool (their file names less `.png`)."""
    return tuple(src.rsplit("/", 1)[-1][:-4] for src, _d in moves)


def best_per_photo(rows: list[Row], members: list[int]) -> list[int]:
    """One face per source photo: the best crop (ties: the lower face id)."""
    best: dict[str, int] = {}
    for i in members:
        photo = rows[i][3]
        j = best.get(photo)
        if j is None or (rows[i][4], rows[j][0]) > (rows[j][4], rows[i][0]):
            best[photo] = i
    return sorted(best.values(), key=lambda i: rows[i][0])


def match_pool(ctx: HandlerContext, rows: list[Row], vecs: np.ndarray,
               cents: dict[str, np.ndarray] | None = None) -> tuple[list[ev.Event], set[int]]:
    """Pool faces within the match distance of an active faceset (one seeded after they arrived) join it.
    `cents`: the centroids when the caller has them already."""
    if cents is None:
        cents = _centroids(ctx)
    by_faceset: dict[str, list[int]] = {}
    distances: dict[int, float] = {}
    vetoed = ctx.state.vetoed([r[0] for r in rows])  # a person said: not that faceset's person
    for i in range(len(rows)):
        name, dist = nearest(cents, vecs[i])
        if name and dist <= ctx.config.identity.match_distance and (rows[i][0], name) not in vetoed:
            by_faceset.setdefault(name, []).append(i)
            distances[i] = dist
    out: list[ev.Event] = []
    taken: set[int] = set()
    for name, members in sorted(by_faceset.items()):
        has = ctx.state.photo_shas_in(name)
        chosen = [i for i in best_per_photo(rows, members) if rows[i][3] not in has]
        moves, added = claim_from_pool(ctx, rows, chosen, name, distances)
        if not moves:
            continue
        out.append(ev.PoolFacesMatched(
            faceset=name, face_ids=pool_face_ids(moves), moves=tuple(moves), check="identity",
            reason=f"{len(moves)} pool faces within cosine distance {ctx.config.identity.match_distance} of {name}'s centroid",
            inputs={"match_distance": ctx.config.identity.match_distance},
        ))
        out.extend(added)
        taken.update(members)  # the others of the same photos stay out of new facesets too
        # The decision's own INFO line (state/eventlog.py) tells it, with its reason and event id.
        ctx.log.debug("pool faces matched", faceset=name, faces=len(moves))
    return out, taken


def _centroids(ctx: HandlerContext) -> Centroids:
    """The active facesets' centroids; none (no matching) while there are no models to embed adopted ones."""
    try:
        return centroids(ctx)
    except RuntimeError as e:  # no models to embed adopted facesets with: matching waits for them
        ctx.say_once("pool-match", "pool faces not matched against facesets", error=str(e))
        return Centroids({})


def search_plan(ctx: HandlerContext) -> SearchPlan:
    """How the pool's neighbour pairs are searched, from [identity]."""
    identity = ctx.config.identity
    return SearchPlan(cluster_distance=identity.cluster_distance)


def _match(ctx: HandlerContext, pool: PoolClusters) -> tuple[list[ev.Event], set[str]]:
    """match_pool over the pool faces that can match: those near some centroid (a float32 pre-filter with
    slack; match_pool then decides with today's exact arithmetic). Returns the events and the face ids taken.

    Only faces that could have changed their answer since the last pass are looked at: the faces new in the pool
    and those near a centroid last time (left there: their photo already had a face in that faceset), against
    every centroid, and every pool face against the centroids that appeared or moved. Any other face was within
    no centroid's distance then and still is."""
    cents = _centroids(ctx)
    new_faces = pool.take_new()
    before, pool.matched = pool.matched, cents
    if not cents:
        return [], set()
    reach = ctx.config.identity.match_distance + EDGE_SLACK
    # (the centroid cache hands out the same array for a faceset that did not change: `is` decides most)
    moved = [c for name, c in cents.items()
             if before is None or name not in before or not (before[name] is c or np.array_equal(before[name], c))]
    if before is None:
        ids = pool.near(np.stack(moved).astype(np.float32), reach)
    else:
        ids = pool.near(_matrix(cents), reach, among=new_faces | pool.near_last)
        if moved:
            ids = sorted(set(ids) | set(pool.near(np.stack(moved).astype(np.float32), reach)))
    pool.near_last = set(ids)
    if not ids:
        return [], set()
    rows: list[Row] = list(ctx.state.pool_rows_of(ids))
    out, taken = match_pool(ctx, rows, pool.vectors([r[0] for r in rows]), cents)
    return out, {rows[i][0] for i in taken}


def _matrix(cents: Centroids) -> np.ndarray:
    """Every centroid as one float32 matrix (the cache's own, without a copy, when it is current)."""
    return np.asarray(cents.table()[1], dtype=np.float32)


def pool_clusters(ctx: HandlerContext, pool: PoolClusters | None) -> PoolClusters:
    """`pool`, or a fresh one when None or made for other tunables: loaded on its first advance from the
    projection beside the log (state/pool_projection.py), which its every completed advance keeps current."""
    if pool is None or pool.plan != search_plan(ctx):
        if pool is not None and pool.projection is not None:
            pool.projection.reset()  # made with the old tunables: its pairs and clusters no longer hold
        return PoolClusters(ctx.state, search_plan(ctx), persist=True)
    return pool


def cluster_pool(ctx: HandlerContext, pool: PoolClusters | None = None) -> list[ev.Event]:
    """Pool faces matched to facesets, then FacesetPromoted (+ FaceAdded, FaceRouted) per cluster past the gate.

    `pool`: the incrementally kept clusters (daemon/pipeline.py keeps one); brought up to date here. The
    clusters are those of scipy's average linkage over every pool face not matched (handlers/pool_clusters.py).
    """
    ctx.state.catch_up()
    pool = pool_clusters(ctx, pool)
    pool.advance(None)
    if not pool.size:
        return []
    out, taken = _match(ctx, pool)
    gate = max(1, ctx.config.identity.min_new_faceset)
    if pool.size - len(taken) < gate:
        return out
    taken |= ctx.state.held()  # faces whose promotion a person undid wait for a person (`facesetd promote`)
    clusters = pool.clusters(min_size=gate, exclude=taken)
    rows: list[Row] = list(ctx.state.pool_rows_of([f for c in clusters for f in c]))
    at = {r[0]: i for i, r in enumerate(rows)}
    vecs = pool.vectors([r[0] for r in rows])

    number = next_faceset_number(ctx)
    # Deterministic order: by each cluster's first face id.
    for cluster in clusters:
        # (a face another process's catch-up took out of the pool meanwhile is no longer a candidate)
        chosen = best_per_photo(rows, [at[f] for f in cluster if f in at])
        if len(chosen) < gate:
            continue
        name = faceset_name(number)
        moves, added = claim_from_pool(ctx, rows, chosen, name)
        if len(moves) < gate:
            continue
        number += 1
        sims = vecs[chosen] @ vecs[chosen].T
        pair = 1.0 - float(np.min(sims))
        pairs = len(chosen) * (len(chosen) - 1)  # (a gate of 1: no pair)
        mean = 1.0 - float((sims.sum() - np.trace(sims)) / pairs) if pairs else 0.0
        out.append(ev.FacesetPromoted(
            faceset=name, face_ids=pool_face_ids(moves), moves=tuple(moves), check="identity",
            reason=f"promoted from pool: {len(moves)} faces of distinct photos within cosine distance "
                   f"{ctx.config.identity.cluster_distance} of each other on average (average linkage)",
            inputs={"cluster_distance": ctx.config.identity.cluster_distance, "min_new_faceset": gate,
                    "max_pair_distance": round(pair, 4), "mean_pair_distance": round(mean, 4),
                    "pool_size": pool.size},
        ))
        out.extend(added)
        ctx.log.debug("faceset promoted from pool", faceset=name, faces=len(moves))
    return out


# A pool cluster of at least this many distinct photos, still below the gate, is a person forming: `status` names
# it and the review page's pool shows it; it becomes a faceset by itself once it reaches the gate.
FORMING_MIN_PHOTOS = 3


@dataclass(frozen=True)
class FormingPerson:
    """A pool cluster of FORMING_MIN_PHOTOS distinct photos or more, below the gate."""

    faces: tuple[dict[str, str], ...]  # {"face_id", "path", "photo"} in face-id order
    photos: int  # distinct source photos
    nearest: str  # the nearest active faceset ("" when there is none)
    distance: float | None  # the cosine distance of the cluster's centroid to that faceset's


def forming_people(ctx: HandlerContext, clusters: list[list[str]]) -> list[FormingPerson]:
    """The people forming among these pool clusters (face ids; the projection's, state/pool_projection.py), most
    photos first. Read-only. Faces a person held back (a promotion undone) are in no cluster: they wait for
    `facesetd promote`, not for the gate."""
    gate = max(1, ctx.config.identity.min_new_faceset)
    cents: Centroids | None = None
    out = []
    found = {r.face_id: r for r in ctx.state.pool_rows_of([f for c in clusters for f in c])}  # one read for all
    for cluster in clusters:
        rows = [found[f] for f in cluster if f in found]
        if not rows:
            continue
        photos = len({r.photo_sha256 for r in rows})
        if not FORMING_MIN_PHOTOS <= photos < gate:
            continue
        if cents is None:
            cents = _known_centroids(ctx)
        vecs = np.stack([unit(np.frombuffer(r.embedding, dtype="<f4")) for r in rows])
        name, dist = nearest(cents, unit(vecs.mean(axis=0))) if cents else ("", 2.0)
        faces = tuple({"face_id": r.face_id, "path": r.path, "photo": _photo_name(r.source)} for r in rows)
        out.append(FormingPerson(faces, photos, name, round(dist, 4) if name else None))
    return sorted(out, key=lambda p: (-p.photos, p.faces[0]["face_id"]))


def _known_centroids(ctx: HandlerContext) -> Centroids:
    """The centroids a read can give without the models (an adopted faceset's PNGs not embedded yet, the models
    not installed): those; `status` never fails for want of models."""
    try:
        return _centroids(ctx)
    except (FacesetdError, ModelError):
        return Centroids({})


def _photo_name(source: str) -> str:
    """The source photo a pool crop was cut from, as the user knows it (its inbox name, or Immich's)."""
    found = json.loads(source)
    immich = found.get("immich") or {}
    return str(found.get("received_as") or found.get("photo") or immich.get("original_file_name") or "")
