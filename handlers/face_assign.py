"""Where each face of a photo goes: the faceset whose centroid is within [identity] match_distance, the one its
inbox folder forces, the pool, or nowhere (one face per photo and identity, the best crop kept).

Decisions only: nothing here reads or writes a file. handlers/route_photo.py calls it for new photos,
handlers/pool_seed.py for a processed photo dropped again into a seeding folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from state import events as ev

from .centroids import nearest, unit
from .context import HandlerContext

POOL_FACESET = "pool"


@dataclass
class RoutedFace:
    index: int
    face: Any  # DetectedFace
    vec: np.ndarray
    quality: float
    to: str = ""
    distance: float | None = None
    far: bool = False  # forced into a faceset whose centroid lies farther than [identity] match_distance
    near: str = ""  # the nearest faceset of a face sent to the pool (a candidate for it when just past the match)
    measured: dict[str, Any] = field(default_factory=dict)  # the face on its photo (gpu_agent.source_quality)


def usable_faces(detected: list[Any], min_face_px: float) -> list[tuple[int, Any]]:
    """(index, face) of the detected faces the router crops: a short side of at least [identity] min_face_px in
    the photo's (or frame's) pixels. The backfill's actors crop the same ones (daemon/backfill/analyse.py)."""
    return [(i, f) for i, f in enumerate(detected) if f.short_side >= min_face_px]


def routed_faces(image: np.ndarray, detected: list[Any], min_face_px: float) -> list[RoutedFace]:
    """The usable faces of a photo or video frame, each with its unit embedding, crop quality and its measure on
    the image, ready to be assigned. Raises what the image's pixels raise (cv2.error, ValueError)."""
    from gpu_agent.quality import crop_quality
    from gpu_agent.source_quality import measure_source

    return [RoutedFace(i, f, unit(f.embedding), crop_quality(image, f).total, measured=measure_source(image, f))
            for i, f in usable_faces(detected, min_face_px)]


def pick_forced(faces: list[RoutedFace], centroid: np.ndarray | None, match_distance: float) -> RoutedFace:
    """The face a photo forced into a faceset gives it: the one most like the person already there, else (seeding)
    the largest. Marked `far` when even that one lies past the match distance: perhaps someone else."""
    if centroid is None:
        return max(faces, key=lambda f: (f.face.short_side, -f.index))
    pick = min(faces, key=lambda f: (1.0 - float(np.dot(centroid, f.vec)), f.index))
    pick.distance = 1.0 - float(np.dot(centroid, pick.vec))
    pick.far = pick.distance > match_distance
    return pick


def distant(ctx: HandlerContext, e: ev.PhotoReceived, f: RoutedFace, crop: str, sha256: str) -> ev.ForcedFaceDistant:
    """The warning for a forced face far from its faceset: it joins (the user asked), but is said, and undoable."""
    photo = f"{e.root}/{e.path}"
    distance = round(float(f.distance or 0.0), 4)
    ctx.log.warning("forced face far from its faceset", faceset=f.to, photo=photo, crop=crop, distance=distance,
                    match_distance=ctx.config.identity.match_distance,
                    undo="facesetd restore ID (ID: its forced_face_distant event, see facesetd events)")
    return ev.ForcedFaceDistant(path=crop, sha256=sha256, faceset=f.to, distance=distance,
                                match_distance=ctx.config.identity.match_distance, photo=photo)


def assign(ctx: HandlerContext, faces: list[RoutedFace], forced: str, cents: dict[str, np.ndarray]) -> None:
    """Decide where each face goes; one face per identity (the best), the forced identity first."""
    rest = list(faces)
    if forced:
        pick = pick_forced(rest, cents.get(forced), ctx.config.identity.match_distance)
        pick.to = forced
        rest.remove(pick)
    for f in rest:
        name, dist = nearest(cents, f.vec, exclude=forced)
        if name and dist <= ctx.config.identity.match_distance:
            f.to, f.distance = name, dist
        else:
            f.to, f.distance, f.near = POOL_FACESET, (dist if name else None), name
    # One face per identity: keep the best crop, the others are not taken from this photo.
    for name in sorted({f.to for f in rest} - {POOL_FACESET}):
        group = [f for f in rest if f.to == name]
        best = max(group, key=lambda f: (f.quality, -f.index))
        for f in group:
            if f is not best:
                f.to = ""


def why_routed(f: RoutedFace, forced: str, match_distance: float) -> str:
    """Why a face went where it went, for the routing log line: its distance to the faceset it joined (or to the
    nearest one, for the pool) against the match distance; a forced face says it was forced."""
    dist = "" if f.distance is None else f"{f.distance:.4f}"
    if f.to == forced:
        return f"forced into {forced} by its inbox folder" + (f" (distance {dist})" if dist else "")
    if f.to == POOL_FACESET:
        if not f.near:
            return "pool: no faceset to match"
        return f"pool: nearest {f.near} at {dist} > match_distance {match_distance}"
    return f"{f.to} at {dist} <= match_distance {match_distance}"
