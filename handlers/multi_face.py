"""multi-face: the roop invariant. roop re-detects every PNG on load and averages every face it finds, so a
corpus PNG must hold exactly one face at det_thresh 0.5 / det_size 640; 0 or 2+ faces prunes it."""

from __future__ import annotations

from collections.abc import Sequence

from state import events as ev
from state.eventlog import StoredEvent

from .common import active_face, overridden, prune
from .context import HandlerContext

CHECK = "multi_face"


def check_multi_face(ctx: HandlerContext, events: Sequence[StoredEvent[ev.FaceAnalyzed]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    t = ctx.config.thresholds
    for se in events:
        e = se.event
        if e.face_count == 1:
            continue
        face = active_face(ctx, e.path, e.sha256)
        if face is None or overridden(ctx, face.faceset, CHECK, face.sha256):
            continue
        if e.face_count == 0:
            reason = f"no face at det_thresh {t.multi_face_det_thresh} (roop would skip it)"
        else:
            reason = f"{e.face_count} faces at det_thresh {t.multi_face_det_thresh} (roop would average all of them)"
        out.append(prune(ctx, face, CHECK, reason, {
            "face_count": e.face_count, "det_thresh": t.multi_face_det_thresh,
            "det_size": e.model.get("det_size", t.multi_face_det_size),
            "analysis": se.position, "model": dict(e.model),
        }))
    return out
