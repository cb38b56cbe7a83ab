"""Uncertain matches wait for a person: a face routed to the pool whose nearest faceset lies just past
[identity] match_distance (at most candidate_band more) is proposed for that faceset (FaceCandidate).

It stays in the pool (`_pool/<face_id>.png`): it may still be matched or promoted there like any pool face, and
`facesetd move FACE_ID --to faceset_NNN` accepts it, `--to pool` rejects it (never proposed for or matched to
that faceset again), `--to dropped` puts it aside. `facesetd status` and `facesetd events --kind face_candidate`
list them. Called by handlers/route_photo.py for each face of a photo it sends to the pool.
"""

from __future__ import annotations

from state import events as ev

from .context import HandlerContext


def propose(ctx: HandlerContext, path: str, face_id: str, near: str, distance: float | None,
            taken: set[str]) -> list[ev.FaceCandidate]:
    """The candidate event for a pool face whose nearest faceset `near` lies at `distance`, when that is inside
    the band; none when `taken` (facesets a face of the same photo went to: one face per photo and person)."""
    identity = ctx.config.identity
    if not near or distance is None or near in taken:
        return []
    if not identity.match_distance < distance <= identity.match_distance + identity.candidate_band:
        return []
    d = round(distance, 4)
    ctx.log.info("uncertain match: a candidate waits for a person", faceset=near, face_id=face_id, distance=d,
                 accept=f"facesetd move {face_id} --to {near}", reject=f"facesetd move {face_id} --to pool")
    return [ev.FaceCandidate(
        path=path, face_id=face_id, faceset=near, distance=d, match_distance=identity.match_distance,
        candidate_band=identity.candidate_band,
        reason=f"cosine distance {d} to {near}'s centroid: past match_distance {identity.match_distance}, within"
               f" the candidate band of {identity.candidate_band}; waits in the pool for a person",
    )]
