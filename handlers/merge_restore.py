"""Undo a merge of duplicate identities: `facesetd restore` of a FacesetsMerged.

Every PNG goes back to the faceset it came from under the name it had, and every emptied folder comes back from
_merged/ with what it had dropped. The checks the moved faces went through in the survivor may have pruned some of
them, or pruned faces of the survivor in favour of them (near-dup keeps the better face): those prunes are
restored first, each its own DecisionReverted, so the survivor gets back every face it had. Then one
DecisionReverted of the merge moves the folders and the PNGs back; from then on the merge check keeps those
facesets apart (state/corpus_state.py records the pairs). The files and the projections are as before the merge.

A merge whose faces have gone on elsewhere (the survivor merged or quarantined since) is refused with the event to
restore first (daemon/restore_rules.py says so before this runs; a face moved on is found missing here). Not a
handler: Pipeline.restore calls it; it returns the decisions, the caller appends them.
"""

from __future__ import annotations

from state import events as ev
from state.errors import UnknownEvent
from state.layout import MERGED_AREA, faceset_dir, parse_face_path

from .context import HandlerContext


def _folders(target: ev.FacesetsMerged) -> list[str]:
    return [src for src, _dest in target.moves if "/" not in src]


def _pngs(target: ev.FacesetsMerged) -> list[tuple[str, str]]:
    return [(src, dest) for src, dest in target.moves if "/" in src]


def _added_shas(ctx: HandlerContext, position: int, count: int) -> dict[str, str]:
    """dest -> sha256 of the moved PNGs, from the FaceAdded events appended right after the merge."""
    return {se.event.path: se.event.sha256 for se in ctx.state.log.read(position, count)
            if isinstance(se.event, ev.FaceAdded)}


def _revert_prune(ctx: HandlerContext, pruned: int, merge: int) -> ev.DecisionReverted:
    """Put back the face decision `pruned` moved to _dropped/ (under the name it had), as `facesetd restore` does."""
    stored = ctx.state.log.get(pruned)
    current = ctx.state.face_pruned_by(pruned)
    if stored is None or not isinstance(stored.event, ev.FacePruned) or current is None:
        raise UnknownEvent(f"cannot restore event {merge}: the face pruned by event {pruned} is no longer in"
                           " _dropped/")
    target = stored.event
    fp = parse_face_path(current)
    original = parse_face_path(target.moves[0][0]) if target.moves else None
    assert fp is not None
    dest = f"{faceset_dir(fp.area, fp.faceset)}/faces/{original.name if original else fp.name}"
    if (ctx.config.corpus / dest).exists():
        raise UnknownEvent(f"cannot restore event {merge}: {dest} is taken by another file")
    return ev.DecisionReverted(
        target=pruned, path=dest, moves=((current, dest),), check=target.check,
        reason=f"restored with the merge of event {merge} (undoes event {pruned}: {target.reason})")


def _prunes_to_undo(ctx: HandlerContext, position: int, target: ev.FacesetsMerged,
                    shas: dict[str, str]) -> list[int]:
    """The prunes since the merge of a moved face, or of a survivor's face in favour of one, still in effect."""
    dests = {dest for _src, dest in _pngs(target)}
    found: list[int] = []
    for dest in sorted(dests):
        where = ctx.state.faces_with_sha_in(target.faceset, shas.get(dest, ""))
        if any(w.path == dest and not w.dropped for w in where):
            continue
        pruned = [w.pruned_by for w in where if w.dropped and w.pruned_by is not None and w.pruned_by > position]
        if not pruned:
            raise UnknownEvent(f"cannot restore event {position}: {dest} is no longer in {target.faceset}"
                               " (moved on since, by hand or by a later decision)")
        found.append(pruned[0])
    for se in ctx.state.log.read(position, None, kinds=[ev.FacePruned.KIND]):
        e = se.event
        if (isinstance(e, ev.FacePruned) and e.inputs.get("duplicate_of") in dests
                and ctx.state.face_pruned_by(se.position) is not None and se.position not in found):
            found.append(se.position)
    return sorted(found)


def unmerge(ctx: HandlerContext, position: int, target: ev.FacesetsMerged) -> list[ev.DecisionReverted]:
    """The decisions that undo the merge at event `position`: the prunes it led to, then the merge itself."""
    pngs = _pngs(target)
    shas = _added_shas(ctx, position, len(pngs))
    out = [_revert_prune(ctx, p, position) for p in _prunes_to_undo(ctx, position, target, shas)]
    moves = [(f"{MERGED_AREA}/{name}", name) for name in _folders(target)]
    moves += [(dest, src) for src, dest in pngs]
    out.append(ev.DecisionReverted(
        target=position, path=target.faceset, moves=tuple(moves), check=target.check,
        reason=f"restored by the user (undoes event {position}: {target.reason})"))
    return out
