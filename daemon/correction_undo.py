"""`facesetd restore ID` of a correction, a promotion or a restore: the events that put things back as they were.

- face_moved: the face moves back where it was (a face_moved with `undoes`); out of the pool again, its pool entry
  comes back as it was recorded (the same PoolFaceAdded), and so do its candidacies; back into a faceset, its
  face_added is recorded again (the checks run on it as on any face).
- faceset_labelled: the label it replaced comes back.
- candidate_rejected: the face is proposed for that faceset again.
- faceset_promoted: its faces go back to the pool as they were recorded there, and the emptied faceset's folder
  moves to _thin/ in the same decision (a faceset of 0 faces is one under thin_min_survivors): the active corpus
  is as before the promotion, roop finds no empty .fsz, routing has no centroid of it, and its number is never
  reused. The pool promotion does not promote those faces again by itself (`facesetd promote` does, when a
  person asks).
- decision_reverted: the decision it reverted is in force again (decision_reapplied), for a prune, a routing taken
  out or a quarantine.

Pipeline.restore calls `restore_correction` for these kinds once daemon/restore_rules.py accepted the event (it
says why not otherwise); each returns the id of the event recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from state import events as ev
from state.errors import UnknownEvent
from state.layout import POOL_DIR, THIN_AREA, parse_face_path

from .corrections import DROPPED, POOL, POOL_DROPPED, append_and_settle, bring_up_to_date

if TYPE_CHECKING:
    from .pipeline import Pipeline

CORRECTION_KINDS = (ev.FaceMoved, ev.FacesetLabelled, ev.CandidateRejected, ev.FacesetPromoted, ev.DecisionReverted)


def restore_correction(pipeline: Pipeline, position: int, target: ev.Event) -> int:
    """Undo the event at `position` (one of CORRECTION_KINDS, accepted by restore_rules); the new event's id."""
    bring_up_to_date(pipeline)
    if isinstance(target, ev.FacesetLabelled):
        return append_and_settle(pipeline, [ev.FacesetLabelled(faceset=target.faceset, label=target.previous,
                                                     previous=target.label, undoes=position)])
    if isinstance(target, ev.CandidateRejected):
        return append_and_settle(pipeline, [_propose_again(pipeline, target)])
    if isinstance(target, ev.FaceMoved):
        return append_and_settle(pipeline, _move_back(pipeline, position, target))
    if isinstance(target, ev.FacesetPromoted):
        return append_and_settle(pipeline, _unpromote(pipeline, position, target))
    assert isinstance(target, ev.DecisionReverted)
    return append_and_settle(pipeline, [_reapply(pipeline, position, target)])


def _propose_again(pipeline: Pipeline, e: ev.CandidateRejected) -> ev.Event:
    original = pipeline.log.get(e.candidate)
    assert original is not None and isinstance(original.event, ev.FaceCandidate)
    return original.event


def _in_pool(path: str) -> bool:
    return path.startswith(POOL_DIR + "/") and not path.startswith(POOL_DROPPED + "/")


def _to_of(path: str) -> str:
    fp = parse_face_path(path)
    if fp is None:
        return POOL if _in_pool(path) else DROPPED
    return DROPPED if fp.dropped else fp.faceset


def _move_back(pipeline: Pipeline, position: int, e: ev.FaceMoved) -> list[ev.Event]:
    """The move of event `position` the other way, and the events that record the face where it returns."""
    corpus = pipeline.config.corpus_dir
    back = ev.FaceMoved(
        path=e.dest, dest=e.path, sha256=e.sha256, to=_to_of(e.path), face_id=e.face_id,
        face_ids=(e.face_id,) if _in_pool(e.dest) else (), moves=((e.dest, e.path),), check=e.check,
        undoes=position, reason=f"restored by the user (undoes event {position}: {e.reason})", inputs=e.inputs,
    )
    out: list[ev.Event] = [back]
    if _in_pool(e.path):  # back into the pool: as it was recorded there, with its candidacies
        for at in [int(e.inputs.get("pool_event") or 0), *e.inputs.get("candidates", ())]:
            found = pipeline.log.get(at) if at else None
            if found is not None:
                out.append(found.event)
    elif parse_face_path(e.path) is not None and parse_face_path(e.dest) is None:
        # back into a faceset from the pool: recorded there again (FaceAdded), as when it was first added
        st = (corpus / e.dest).stat()
        out.append(ev.FaceAdded(path=e.path, sha256=e.sha256, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                source=dict(e.inputs.get("source") or {})))
    return out


def _unpromote(pipeline: Pipeline, position: int, e: ev.FacesetPromoted) -> list[ev.Event]:
    """Every face of the promotion back to the pool, then the emptied faceset's folder to _thin/."""
    moves = (*((d, s) for s, d in e.moves), (e.faceset, f"{THIN_AREA}/{e.faceset}"))
    out: list[ev.Event] = [ev.DecisionReverted(
        target=position, path=e.faceset, moves=moves, check=e.check,
        reason=f"restored by the user (undoes event {position}: {e.reason}); the faces wait in the pool again,"
               f" the emptied {e.faceset} goes to {THIN_AREA}/",
    )]
    for src, _dest in e.moves:
        found = pipeline.log.latest(src, ev.PoolFaceAdded.KIND)
        if found is None or found.position > position:
            raise UnknownEvent(f"event {position}: no pool entry of {src} before it")
        out.append(found.event)
    out.append(ev.PoolFacesHeld(face_ids=e.face_ids, faceset=e.faceset, promotion=position,
                                reason=f"their promotion to {e.faceset} was undone by a person"))
    return out


def _reapply(pipeline: Pipeline, position: int, e: ev.DecisionReverted) -> ev.DecisionReapplied:
    """The decision event `position` reverted, in force again: its moves made again."""
    original = pipeline.log.get(e.target)
    assert original is not None and isinstance(original.event, ev.Decision)
    return ev.DecisionReapplied(
        target=position, original=e.target, path=e.path, moves=tuple((d, s) for s, d in e.moves),
        check=original.event.check, inputs=dict(original.event.inputs),
        reason=f"restored by the user (undoes event {position}; event {e.target} holds again: {original.event.reason})",
    )
