"""occlusion: P(mask) and P(dark sunglasses over the eyes) per single-face PNG; either at or above the
threshold prunes it. Without an exported CLIP model the check says so once and the others run on."""

from __future__ import annotations

from collections.abc import Sequence

from state import events as ev
from state.eventlog import StoredEvent

from .common import Face, active_face, open_models, overridden, prune
from .context import HandlerContext

CHECK = "occlusion"
ATTRIBUTES = ("mask", "sunglasses")


def scorer_available(ctx: HandlerContext) -> bool:
    models = open_models(ctx, CHECK)
    if models is None:
        return False
    scorer = models[1]
    if not getattr(scorer, "available", False):
        ctx.say_once("occlusion_off", "occlusion check off: no CLIP model installed; the other checks run",
                     detail=scorer.describe())
        return False
    return True


def check_occlusion(ctx: HandlerContext, events: Sequence[StoredEvent[ev.FaceAnalyzed]]) -> list[ev.Event]:
    todo: list[tuple[Face, bytes]] = []
    for se in events:
        e = se.event
        if e.face_count != 1:
            continue
        face = active_face(ctx, e.path, e.sha256)
        if face is None:
            continue
        try:
            todo.append((face, (ctx.config.corpus / face.path).read_bytes()))
        except FileNotFoundError:
            continue
    if not todo or not scorer_available(ctx):
        return []
    scorer = ctx.models.occlusion
    model = scorer.describe()
    limit = ctx.config.thresholds.occlusion_prune
    out: list[ev.Event] = []
    ctx.batch.occlusion_scored.update(f.faceset for f, _d in todo)
    for (face, _data), scores in zip(todo, scorer.score([d for _f, d in todo])):
        mask, sunglasses = float(scores.get("mask", 0.0)), float(scores.get("sunglasses", 0.0))
        out.append(ev.OcclusionScored(path=face.path, sha256=face.sha256, mask=round(mask, 6),
                                      sunglasses=round(sunglasses, 6), model=model))
        flagged = {a: p for a, p in (("mask", mask), ("sunglasses", sunglasses)) if p >= limit}
        if not flagged or overridden(ctx, face.faceset, CHECK, face.sha256):
            continue
        what = " and ".join(f"P({a})={p:.2f}" for a, p in flagged.items())
        out.append(prune(ctx, face, CHECK, f"occluded: {what} >= {limit}", {
            "mask": round(mask, 6), "sunglasses": round(sunglasses, 6), "threshold": limit, "model": model,
        }))
    return out
