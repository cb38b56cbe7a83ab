"""Whether `facesetd restore ID` undoes an event now: the one set of restore's rules, read-only.

`refusal(state, corpus, stored)` is None when restore accepts the event as things stand, else the one line it
answers. Pipeline.restore asks it first and refuses with that line (daemon/pipeline.py), and the review pages
show a Restore button only where it is None: both read the same rules, so they cannot drift apart (a test
compares them on every event of a rich log, tests/test_restore_rules.py). Read-only: it takes the state's named
reads and the corpus folder, never the pipeline, so the pages call it from their own connection.

What is left to the undo code (daemon/correction_undo.py, handlers/era_split.py, handlers/merge_restore.py) are
the deeper checks that need the pipeline's work (the prunes a merge led to, an era split's faces, a promotion's
pool entries): where one of those refuses, the button was shown and the click says why.

Kinds restore does not take (pool matches, seeded pool faces, a re-applied decision, candidates) have no rule:
refused. A decision kind whose restore here only asks that it was not restored already is named in UNDONE_ONCE.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from state import events as ev
from state.correction_queries import StateQueries
from state.eventlog import StoredEvent
from state.layout import MERGED_AREA, POOL_DIR, THIN_AREA, faceset_dir, parse_face_path

Rule = Callable[[StateQueries, Path, int, Any], "str | None"]
POOL_DROPPED = f"{POOL_DIR}/_dropped"
# Decision kinds restore undoes while not restored already (its own checks beyond that say why at the click).
UNDONE_ONCE = (ev.ErasSplit.KIND,)


def refusal(state: StateQueries, corpus: Path, stored: StoredEvent[ev.Event]) -> str | None:
    """None when `facesetd restore stored.position` would undo it now; else why not, in one line."""
    rule = RULES.get(stored.kind)
    if rule is None:
        if stored.kind in UNDONE_ONCE:
            return _not_reverted(state, stored.position)
        return (f"event {stored.position} is a {stored.kind}; only prunes, quarantines, routed faces (face_routed,"
                " forced_face_distant), era splits, thin returns, merges, corrections, promotions and restores can"
                " be restored")
    return rule(state, corpus, stored.position, stored.event)


def restorable(state: StateQueries, corpus: Path, stored: StoredEvent[ev.Event]) -> bool:
    return refusal(state, corpus, stored) is None


def _not_reverted(state: StateQueries, position: int) -> str | None:
    found = state.decision_state(position)
    if found is None:
        return f"event {position} is no decision"
    return f"event {position} was already restored" if found == "reverted" else None


def _done(state: StateQueries, position: int) -> str | None:
    found = state.decision_state(position)
    if found == "reverted":
        return f"event {position} was already restored"
    return None if found == "done" else f"event {position}'s moves are not done ({found}); nothing to restore"


def _pruned(state: StateQueries, corpus: Path, position: int, e: ev.FacePruned | ev.FaceUnrouted) -> str | None:
    """A prune or a face taken out: back from _dropped/ under the name it had."""
    why = _not_reverted(state, position)
    if why:
        return why
    current = state.face_pruned_by(position)
    fp = parse_face_path(current) if current else None
    if fp is None:
        return f"the face pruned by event {position} is no longer in _dropped/"
    original = parse_face_path(e.moves[0][0]) if e.moves else None
    dest = f"{faceset_dir(fp.area, fp.faceset)}/faces/{original.name if original else fp.name}"
    return f"cannot restore: {dest} is taken by another file" if (corpus / dest).exists() else None


def _quarantined(state: StateQueries, corpus: Path, position: int, e: ev.FacesetQuarantined) -> str | None:
    why = _not_reverted(state, position)
    if why:
        return why
    if not state.faceset_area(e.faceset):
        return f"{e.faceset} is already active"
    return f"cannot restore: {e.faceset}/ exists among the active facesets" if (corpus / e.faceset).exists() else None


def _routed(state: StateQueries, corpus: Path, position: int, e: ev.FaceRouted | ev.ForcedFaceDistant) -> str | None:
    """A routed face can be taken out while it is kept in its faceset; else the decision that moved it, if any."""
    if state.active_paths_of(e.faceset, e.sha256):
        return None
    last = state.last_removal(e.sha256, (ev.FaceUnrouted.KIND, ev.FacePruned.KIND))
    if last and last.kind == ev.FaceUnrouted.KIND:
        return f"event {position}: the face {e.path} was already taken out of {e.faceset} by event {last.position}"
    if last:
        return (f"event {position}: the face {e.path} was pruned ({last.check_name}) by event {last.position};"
                " restore that event instead")
    return f"event {position}: the face {e.path} is no longer in {e.faceset}"


def _in_pool(path: str) -> bool:
    return path.startswith(POOL_DIR + "/") and not path.startswith(POOL_DROPPED + "/")


def _moved(state: StateQueries, corpus: Path, position: int, e: ev.FaceMoved) -> str | None:
    why = _done(state, position)
    if why:
        return why
    if not (corpus / e.dest).is_file():
        return f"event {position}: the face is no longer at {e.dest}"
    if (corpus / e.path).exists() or state.has_face_at(e.path):
        return f"cannot restore: {e.path} is taken by another file"
    if _in_pool(e.dest) and not state.pool_rows_of([e.face_id]):
        return f"event {position}: {e.face_id} has left the pool since; move it instead"
    return None


def _labelled(state: StateQueries, corpus: Path, position: int, e: ev.FacesetLabelled) -> str | None:
    now = state.label_of(e.faceset)
    if now == e.label:
        return None
    return f"{e.faceset} was labelled again since event {position} ({now!r}); restore that one"


def _rejected(state: StateQueries, corpus: Path, position: int, e: ev.CandidateRejected) -> str | None:
    if not state.pool_rows_of([e.face_id]):
        return f"event {position}: {e.face_id} is no longer in the pool"
    if any(c.faceset == e.faceset for c in state.candidates_of_face(e.face_id)):
        return f"event {position}: {e.face_id} is proposed for {e.faceset} already"
    original = state.log.get(e.candidate)
    if original is None or not isinstance(original.event, ev.FaceCandidate):
        return f"event {position}: its candidate event {e.candidate} is not in the log"
    return None


def _promoted(state: StateQueries, corpus: Path, position: int, e: ev.FacesetPromoted) -> str | None:
    why = _done(state, position)
    if why:
        return why
    dests = sorted(d for _s, d in e.moves)
    kept = state.kept_paths_of(e.faceset)
    if kept != dests or state.face_count_of(e.faceset) != len(dests):
        joined, left = len(set(kept) - set(dests)), len(set(dests) - set(kept))
        changes = [f"{n} face{'s' * (n != 1)} {what}" for n, what in ((joined, "joined it"), (left, "left it"))
                   if n] or ["its faces were dropped or checked again"]
        return (f"{e.faceset} changed since its promotion (event {position}): {' and '.join(changes)}; restore puts"
                " back only a faceset as its promotion made it: restore those changes first (`facesetd events` lists"
                " them), or send its faces to the pool one by one (`facesetd move FACE --to pool`)")
    if (corpus / THIN_AREA / e.faceset).exists():
        return f"cannot restore: {THIN_AREA}/{e.faceset}/ exists"
    return None


def _returned(state: StateQueries, corpus: Path, position: int, e: ev.FacesetReturned) -> str | None:
    """A thin faceset's return: back to where it was, while it is active and that place is free."""
    why = _not_reverted(state, position)
    if why:
        return why
    if state.faceset_area(e.faceset) != "":
        return f"{e.faceset} is no longer active; event {position} cannot be restored"
    return f"cannot restore: {e.area}/{e.faceset}/ exists" if (corpus / e.area / e.faceset).exists() else None


def _merged(state: StateQueries, corpus: Path, position: int, e: ev.FacesetsMerged) -> str | None:
    """A merge: the survivor active, every merged faceset still in _merged/ and its place among the active free
    (the prunes it led to are looked at by handlers/merge_restore.py)."""
    why = _not_reverted(state, position)
    if why:
        return why
    area = state.faceset_area(e.faceset)
    if area != "":
        return (f"cannot restore event {position}: {e.faceset} is in {area}/ now; restore the decision that moved"
                " it there first (`facesetd events --kind faceset_quarantined --kind facesets_merged`)")
    for name in [src for src, _dest in e.moves if "/" not in src]:
        if state.faceset_area(name) != MERGED_AREA:
            return f"cannot restore event {position}: {name} is no longer in {MERGED_AREA}/"
        if (corpus / name).exists():
            return f"cannot restore: {name}/ exists among the active facesets"
    return None


def _reverted(state: StateQueries, corpus: Path, position: int, e: ev.DecisionReverted) -> str | None:
    """A restore, made again (decision_reapplied): for a prune, a routing taken out or a quarantine."""
    why = _done(state, position)
    if why:
        return why
    original = state.log.get(e.target)
    if original is None or not isinstance(original.event, (ev.FacePruned, ev.FaceUnrouted, ev.FacesetQuarantined)):
        kind = original.kind if original is not None else "nothing"
        hint = " (promote the faces again with `facesetd promote`)" if kind == ev.FacesetPromoted.KIND else ""
        return f"event {position} undid a {kind}; that cannot be made again by restore{hint}"
    for src, dest in e.moves:
        if not (corpus / dest).exists():
            return f"event {position}: {dest} is no longer there"
        if (corpus / src).exists():
            return f"cannot restore: {src} is taken by another file"
    return None


RULES: dict[str, Rule] = {
    ev.FacePruned.KIND: _pruned,
    ev.FaceUnrouted.KIND: _pruned,
    ev.FacesetQuarantined.KIND: _quarantined,
    ev.FaceRouted.KIND: _routed,
    ev.ForcedFaceDistant.KIND: _routed,
    ev.FaceMoved.KIND: _moved,
    ev.FacesetLabelled.KIND: _labelled,
    ev.CandidateRejected.KIND: _rejected,
    ev.FacesetPromoted.KIND: _promoted,
    ev.DecisionReverted.KIND: _reverted,
    ev.FacesetReturned.KIND: _returned,
    ev.FacesetsMerged.KIND: _merged,
}
