"""Take a routed face out of its faceset again: `facesetd restore` of a FaceRouted or ForcedFaceDistant.

A photo of someone else dropped into inbox/faceset_NNN/ joins that faceset (the user said so); this is the
way back. The crop moves to the faceset's faces/_dropped/ (check "restored"), never to the pool: the pool
would match it to the same faceset again, and a face in _dropped/ stays beside the person it was filed under,
listed in that faceset's manifest with the decision that put it there. Not a prune: the faceset rules do not
count it (a faceset the user corrected is not thin for it). Restoring the FaceUnrouted puts the face back.

Not a handler: Pipeline.restore calls it; it returns the decision, the caller appends it.
"""

from __future__ import annotations

from state import events as ev

from .common import dropped_dest
from .context import HandlerContext

RESTORED = "restored"  # the check recorded on a face taken out by the user


def unroute(ctx: HandlerContext, position: int, target: ev.FaceRouted | ev.ForcedFaceDistant) -> ev.FaceUnrouted:
    """The decision that takes the face routed at event `position` out of its faceset (daemon/restore_rules.py
    refused already when the face is no longer there: taken out, pruned, or gone)."""
    faceset, sha = target.faceset, target.sha256
    current = ctx.state.active_paths_of(faceset, sha)[0]
    dest = dropped_dest(ctx, current)
    distance = getattr(target, "distance", None)
    return ev.FaceUnrouted(
        path=current, sha256=sha, target=position, moves=((current, dest),), check=RESTORED,
        reason=f"taken out of {faceset} by the user (undoes the routing of event {position})",
        inputs={"faceset": faceset, "distance": distance, "match_distance": ctx.config.identity.match_distance},
    )
