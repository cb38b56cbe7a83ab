"""The faceset rules, once every face of a faceset has been checked:
- masked: at least 40% of its scored images flagged (P >= 0.7) for either attribute moves it to _masked/;
- thin: fewer than 5 survivors AND at least one of its own PNGs pruned as occluded moves it to _thin/. As in
  seed 000, this is a rule of the occlusion filter: small hand-sorted sets with nothing pruned stay where they
  are, and so does a set that lost a near-duplicate or a multi-face PNG (a seeded 3-face faceset that lost a
  near-duplicate is not thin). "Own" PNGs are those found on disk (adopted, or put there by hand); a crop routed
  from the inbox and pruned on arrival only turns that arrival down, so a faceset being built from the inbox is
  never thinned for being new. (A thin faceset that grows back returns: handlers/thin_return.py.)
A restored quarantine is an override: that rule no longer acts on that faceset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from state import events as ev
from state.eventlog import StoredEvent
from state.layout import MASKED_AREA, THIN_AREA, parse_face_path

from .common import overridden
from .context import HandlerContext
from .occlusion import CHECK as OCCLUSION
from .occlusion import scorer_available

MASKED_CHECK, THIN_CHECK = "masked", "thin"  # the checks; their areas are MASKED_AREA, THIN_AREA


Checked = ev.FacePruned | ev.FaceAnalyzed | ev.OcclusionScored  # what brings a faceset back to its rules


def _facesets_of(events: Sequence[StoredEvent[Checked]]) -> list[str]:
    names: list[str] = []
    for se in events:
        fp = parse_face_path(se.event.path)
        if fp is not None and fp.faceset not in names:
            names.append(fp.faceset)
    return names


def _quarantine(ctx: HandlerContext, faceset: str, area: str, check: str, reason: str, inputs: dict[str, Any]) -> ev.Event:
    ctx.batch.claimed.add(faceset)
    return ev.FacesetQuarantined(faceset=faceset, area=area, moves=((faceset, f"{area}/{faceset}"),),
                                 check=check, reason=reason, inputs=inputs)


def _checks_pending(ctx: HandlerContext, path: str, scores: dict[str, Any], occlusion_on: bool, upto: int) -> bool:
    """True while a face still waits for its analysis, or for an occlusion score that is on its way."""
    if "face_count" not in scores:
        return True
    if not occlusion_on or scores["face_count"] != 1 or "mask" in scores:
        return False
    # No score: pending if its analysis is past this batch; an analysis the scorer already saw (while no CLIP
    # model was installed) will not get one, and must not hold the rules back forever.
    last = ctx.state.log.last_position(path, ev.FaceAnalyzed.KIND)
    return last is not None and last > upto


def evaluate(ctx: HandlerContext, faceset: str, occlusion_on: bool, upto: int | None = None) -> ev.Event | None:
    """The rule that applies to an active, fully checked faceset, or None. `upto`: the last event handled."""
    if faceset in ctx.batch.claimed or ctx.state.faceset_area(faceset) != "":
        return None
    if faceset in ctx.batch.occlusion_scored:
        return None  # its scores of this batch are not in the state yet; their events bring it back here
    upto = ctx.state.log.head() if upto is None else upto
    t = ctx.config.thresholds
    rows = ctx.state.faces_of(faceset)
    active = [(p, json.loads(s)) for p, d, s in rows if not d and p not in ctx.batch.claimed]
    if any(_checks_pending(ctx, p, s, occlusion_on, upto) for p, s in active):
        return None
    scored = [json.loads(s) for _p, _d, s in rows if "mask" in json.loads(s)]
    flagged = [s for s in scored if max(s["mask"], s["sunglasses"]) >= t.occlusion_prune]
    if scored and len(flagged) / len(scored) >= t.masked_fraction and not overridden(ctx, faceset, MASKED_CHECK):
        share = len(flagged) / len(scored)
        return _quarantine(ctx, faceset, MASKED_AREA, MASKED_CHECK,
                           f"{len(flagged)} of {len(scored)} images ({share:.0%}) masked or sunglassed"
                           f" (P >= {t.occlusion_prune}); the threshold is {t.masked_fraction:.0%}",
                           {"flagged": len(flagged), "scored": len(scored), "fraction": round(share, 6),
                            "masked_fraction": t.masked_fraction, "occlusion_prune": t.occlusion_prune})
    pruned = ctx.state.own_prunes(faceset, OCCLUSION)
    survivors = len(active)
    if pruned and survivors < t.thin_min_survivors and not overridden(ctx, faceset, THIN_CHECK):
        return _quarantine(ctx, faceset, THIN_AREA, THIN_CHECK,
                           f"{survivors} images left after {pruned} pruned as occluded"
                           f" (fewer than {t.thin_min_survivors})",
                           {"survivors": survivors, "pruned": pruned, "thin_min_survivors": t.thin_min_survivors})
    return None


def apply_faceset_rules(ctx: HandlerContext, events: Sequence[StoredEvent[Checked]]) -> list[ev.Event]:
    names = _facesets_of(events)
    if not names:
        return []
    occlusion_on = scorer_available(ctx) if ctx.models.configured else False
    out = []
    for name in names:
        decision = evaluate(ctx, name, occlusion_on, events[-1].position)
        if decision is not None:
            out.append(decision)
    return out
