"""The pool's clusters beside the log (state/pool_projection.py), as the daemon and `facesetd status` use them.

- `follow_pool`: the runner's "pool clusters" step (daemon/runner.py, once the promotion is not due): when a pool event
  is past the projection (a photo's pool faces, a person's move out of the pool, a promotion), bring it up to the
  log a slice at a time; after a restart the pool is read from the projection and only the new faces are searched.
- `rebuild_pool`: `facesetd rebuild` writes the projection again from the log alone.
- `pool_summary`: `facesetd status`'s pool, read from the projection: status never clusters in its own process.
  A projection behind the log is shown as it is, with how far behind it is (the daemon, or the next reconcile,
  brings it up to date).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from handlers.pool import FORMING_MIN_PHOTOS, forming_people, pool_clusters
from state.pool_projection import PoolProjection

if TYPE_CHECKING:
    from .pipeline import Pipeline


def follow_pool(pipeline: Pipeline, budget_s: float | None = None) -> int:
    """Bring the projection up to the log when a pool event is past it, for about `budget_s` seconds (None: to
    the end); returns 1 when it worked (the loop comes back), 0 when it is current."""
    pipeline.pool = pool = pool_clusters(pipeline.ctx, pipeline.pool)
    assert pool.projection is not None
    if not pool.searching and not pool.projection.is_behind():
        return 0
    pool.advance(budget_s)
    return 1


def pool_behind(pipeline: Pipeline) -> bool:
    """Whether the projection has pool events to catch up with (the loop is not idle until it has)."""
    pipeline.pool = pool = pool_clusters(pipeline.ctx, pipeline.pool)
    assert pool.projection is not None
    return pool.searching or pool.projection.is_behind()


def rebuild_pool(pipeline: Pipeline) -> None:
    """The projection written again from the log alone: forgotten, then the pool clustered from the state."""
    PoolProjection(pipeline.log, pipeline.ctx.config.identity.cluster_distance).reset()
    pipeline.pool = pool = pool_clusters(pipeline.ctx, None)
    pool.advance(None)


def pool_summary(pipeline: Pipeline) -> dict[str, Any]:
    """The pool: faces waiting, the people close to the refine gate, and the people forming. Clusters as the
    promotion forms them (average linkage at [identity] cluster_distance, held faces in none), read from the
    projection; "close" are those with at least 2 faces of distinct photos but fewer than min_new_faceset;
    "forming" those of at least 3 (each with its faces and its nearest faceset: handlers/pool.py forming_people).
    `projection`: the log position the clusters reflect and how many pool events are past it. Read-only."""
    identity = pipeline.config.identity
    gate = max(1, identity.min_new_faceset)
    projection = PoolProjection(pipeline.log, identity.cluster_distance)
    stored, behind = projection.exists(), projection.behind()
    sizes = projection.cluster_sizes(current=not behind) if stored else []
    close = sorted((c.photos for c in sizes if 2 <= c.photos < gate), reverse=True)
    shown = [c.cluster for c in sizes if c.faces >= FORMING_MIN_PHOTOS and FORMING_MIN_PHOTOS <= c.photos < gate]
    members = projection.members(shown)
    forming = [{"faces": list(p.faces), "photos": p.photos, "nearest": p.nearest, "distance": p.distance}
               for p in forming_people(pipeline.ctx, [members[c] for c in shown])]
    faces, photos = pipeline.state.pool_counts()
    return {"faces": faces, "photos": photos, "close_to_gate": len(close), "close_sizes": close,
            "min_new_faceset": gate, "cluster_distance": identity.cluster_distance, "forming": forming,
            "projection": {"stored": stored, "position": projection.position(), "behind": behind}}
