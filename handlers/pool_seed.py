"""Seeding with a photo already processed: dropped again into inbox/faceset_NNN/, its face waiting in the pool
joins that faceset (picked as for a new photo: most like the faceset, or the largest when seeding).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np

from state import events as ev
from state.layout import face_path

from .centroids import centroids, unit
from .context import HandlerContext
from .crops import move_crop
from .face_assign import RoutedFace, distant, pick_forced


class _PooledBox(NamedTuple):
    """What pick_forced needs of a face waiting in the pool: the short side of its box on the photo."""

    short_side: float


def seed_from_pool(ctx: HandlerContext, e: ev.PhotoReceived) -> tuple[list[ev.Event], list[dict[str, Any]]]:
    """A processed photo forced into inbox/faceset_NNN/: its face waiting in the pool joins that faceset.

    The face is picked as for a new photo (most like the faceset, or the largest when seeding); one face per
    photo and identity, so nothing moves when the faceset holds a face of this photo already. Returns the events
    (FacesetCreated?, PoolFacesSeeded, FaceAdded, FaceRouted, ForcedFaceDistant?) and the photo's face summary.
    """
    forced, label = e.forced_faceset, f"{e.root}/{e.path}"
    rows = ctx.state.pool_faces_of_photo(e.sha256)
    its_facesets = sorted(set(ctx.state.facesets_with_photo(e.sha256)))
    if forced in its_facesets:  # one face per photo and identity
        ctx.log.info("photo already processed: a face of it is in " + forced, path=label, faceset=forced)
        return [], []
    if not rows:
        ctx.log.warning("photo already processed: nothing of it waits in the pool to seed " + forced,
                        path=label, faceset=forced, its_faces_in=its_facesets)
        return [], []
    faces = []
    for i, (_id, _path, _sha, quality, source, blob) in enumerate(rows):
        x1, y1, x2, y2 = json.loads(source).get("bbox") or (0.0, 0.0, 0.0, 0.0)
        faces.append(RoutedFace(i, _PooledBox(min(x2 - x1, y2 - y1)), unit(np.frombuffer(blob, dtype="<f4")), quality))
    pick = pick_forced(faces, centroids(ctx).get(forced), ctx.config.identity.match_distance)
    pick.to = forced
    face_id, pool_path, sha, quality, source, _blob = rows[pick.index]
    out: list[ev.Event] = []
    area = ctx.state.faceset_area(forced)
    if area is None:
        out.append(ev.FacesetCreated(faceset=forced, reason=f"seeded through inbox/{forced}/"))
    dest = face_path(area or "", forced, pool_path.rsplit("/", 1)[-1])
    if not move_crop(ctx.config.corpus, pool_path, dest, sha):
        ctx.log.warning("pool crop cannot move into the faceset; left in the pool", path=label, crop=pool_path,
                        dest=dest)
        return [], []
    st = (ctx.config.corpus / dest).stat()
    dist = None if pick.distance is None else round(pick.distance, 4)
    out.append(ev.PoolFacesSeeded(
        faceset=forced, face_ids=(face_id,), photo_sha256=e.sha256, moves=((pool_path, dest),), check="seed",
        reason=f"{label} was processed before; dropped into inbox/{forced}/, its face waiting in the pool joins "
               f"{forced}", inputs={"distance": dist, "match_distance": ctx.config.identity.match_distance},
    ))
    out.append(ev.FaceAdded(path=dest, sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns,
                            source=json.loads(source)))
    out.append(ev.FaceRouted(path=dest, sha256=sha, faceset=forced, distance=dist, quality=quality,
                             embedding=pick.vec))
    if pick.far:
        out.append(distant(ctx, e, pick, dest, sha))
    ctx.log.info("photo seeded from the pool", path=label, faceset=forced, crop=dest, distance=dist)
    return out, [{"to": forced, "crop": dest, "distance": dist, "quality": round(quality, 4),
                  "face": json.loads(source).get("face")}]
