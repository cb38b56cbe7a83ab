"""thin return: a faceset in _thin/ that grows back to [thresholds] thin_min_survivors kept PNGs returns to the
active facesets (FacesetReturned, check "thin_return", with the count in its reason and inputs).

It grows through arrivals: a photo dropped into inbox/faceset_NNN/ (its crop lands in _thin/faceset_NNN/faces/),
a pruned or taken-out PNG of it restored (`facesetd restore`), a PNG moved into it by hand. A faceset found in
_thin/ (adopted from the batch scripts) is not returned for what it held when it was found: only an arrival
makes it grow. `facesetd restore` of the FacesetReturned puts it back in _thin/, and this rule then leaves it
there (an override, as for every restored decision).

While thin, a faceset's new faces are not analysed (the checks look at active facesets only): once the return's
moves are done, their analysis is asked for (AnalysisRequested), and the checks run on them as on any new face.
"""

from __future__ import annotations

from collections.abc import Sequence

from state import events as ev
from state.eventlog import StoredEvent
from state.layout import THIN_AREA, parse_face_path

from .common import faceset_of, overridden
from .context import HandlerContext

CHECK = "thin_return"

Grown = ev.FaceAdded | ev.FaceMovedExternally | ev.DecisionReverted  # what can bring a face into a faceset


def _arrived_in(e: Grown) -> str | None:
    """The faceset a face arrived in with this event, or None."""
    if isinstance(e, ev.FaceAdded):
        # A crop routed from the inbox; a PNG found on disk is what the faceset already held (an adoption).
        return faceset_of(e.path) if "photo_sha256" in e.source else None
    if isinstance(e, ev.FaceMovedExternally):
        return faceset_of(e.dest)
    for _src, dest in e.moves:  # a restore: a face back from _dropped/ (a faceset's own move names no face)
        fp = parse_face_path(dest)
        if fp is not None and not fp.dropped:
            return fp.faceset
    return None


def _returned(ctx: HandlerContext, name: str) -> ev.FacesetReturned | None:
    """The return of thin faceset `name` when it holds enough PNGs now, else None."""
    if name in ctx.batch.claimed or ctx.state.faceset_area(name) != THIN_AREA or overridden(ctx, name, CHECK):
        return None
    kept, minimum = ctx.state.kept_count(name), ctx.config.thresholds.thin_min_survivors
    if kept < minimum:
        return None
    if (ctx.config.corpus / name).exists():
        ctx.say_once(f"{CHECK}:{name}", f"{name} grew back to {kept} images but stays in {THIN_AREA}/: {name}/ exists"
                     " among the active facesets", faceset=name)
        return None
    ctx.batch.claimed.add(name)
    return ev.FacesetReturned(
        faceset=name, area=THIN_AREA, moves=((f"{THIN_AREA}/{name}", name),), check=CHECK,
        reason=f"{kept} images now (at least {minimum}): grown back, it returns to the active facesets",
        inputs={"kept": kept, "thin_min_survivors": minimum})


def return_grown(ctx: HandlerContext, events: Sequence[StoredEvent[Grown]]) -> list[ev.Event]:
    """Return every thin faceset a face of this batch arrived in that now holds thin_min_survivors PNGs."""
    names: list[str] = []
    for se in events:
        name = _arrived_in(se.event)
        if name is not None and name not in names:
            names.append(name)
    out: list[ev.Event] = []
    for name in names:
        decision = _returned(ctx, name)
        if decision is not None:
            out.append(decision)
    return out


def analyse_returned(ctx: HandlerContext, events: Sequence[StoredEvent[ev.MoveCompleted]]) -> list[ev.Event]:
    """Once a return's moves are done: ask for the analysis of its faces that joined while it was thin."""
    kinds = ctx.state.decision_kinds([se.event.decision for se in events])
    returned = {se.event.decision for se in events if kinds.get(se.event.decision) == ev.FacesetReturned.KIND}
    if not returned:
        return []
    names = set()
    for position in sorted(returned):
        stored = ctx.state.log.get(position)
        if stored is not None and isinstance(stored.event, ev.FacesetReturned):
            names.add(stored.event.faceset)
    return [ev.AnalysisRequested(path=p, sha256=h, reason="joined while its faceset was thin")
            for p, h in ctx.state.faces_without_analysis() if faceset_of(p) in names]


def undo_moves(position: int, target: ev.FacesetReturned) -> tuple[tuple[str, str], ...]:
    """The moves of `facesetd restore` of a return (Pipeline.restore records them): the faceset back where it
    was, after which this rule leaves it there (whether it can go back is daemon/restore_rules.py's to say)."""
    return ((target.faceset, f"{target.area}/{target.faceset}"),)
