"""One set of restore rules: daemon/restore_rules.py says whether `facesetd restore ID` undoes an event now (the
review pages show a Restore button by it), and Pipeline.restore refuses with its words. Here, on every event of a
rich log built with real photos through the inbox and the corrections (a multi-face prune, a near-dup prune, a
forced routing and its taking out, a label, moves, a candidate rejected then accepted, an automatic promotion, a
merge, restores of some of these and restores of restores), `refusal(...)` is None exactly when the restore, tried on a fresh copy of the
data folder, records its undo and carries out every move of it; where it refuses, with the same line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon.corrections import label_faceset, move_face
from daemon.pipeline import Pipeline
from daemon.restore_rules import RULES, refusal
from handlers.centroids import centroids
from state import events as ev
from state.errors import UnknownEvent
from tests.handler_fixtures import GivenScorer, decisions, events_of, pipeline
from tests.helpers import drop

pytestmark = pytest.mark.slow

# The automatic promotion needs 2 faces of distinct photos (biden's two); merging is turned on for one reconcile.
CONFIG = "[identity]\nmin_new_faceset = 2\n"


def _open(data: Path, face_engine, *, merge: bool = False) -> Pipeline:
    scorer = GivenScorer()
    return pipeline(data, lambda: (face_engine, scorer), CONFIG, merge=merge)


def _build(data: Path, faces_dir: Path, face_engine) -> Pipeline:
    """The rich log (see the module's docstring); returns the pipeline on it."""
    p = _open(data, face_engine)
    ids, inbox = faces_dir / "identities", p.config.inbox_dir
    # obama seeds faceset_001 with a two-person photo forced in (its crop of two faces: multi_face) and the same
    # shot small (near_dup); alex seeds faceset_002; obama again (other photos) seeds faceset_003
    drop(ids, inbox, "obama/obama.jpg", "obama/obama1.jpg", "obama/obama_small.jpg", into="faceset_001")
    drop(faces_dir, inbox, "group/pp_overlap_1.jpg", into="faceset_001")
    drop(ids, inbox, "alex_lacamoire/img1.jpg", into="faceset_002")
    drop(ids, inbox, "obama/obama2.jpg", "obama/obama3.jpg", into="faceset_003")
    p.reconcile()
    # alex again, past match_distance but within the band: a candidate; biden twice: promoted from the pool
    drop(ids, inbox, "alex_lacamoire/alex-lacamoire.jpg", "biden/biden.jpg", "biden/biden2.jpg")
    p.reconcile()
    assert decisions(p, "multi_face") and decisions(p, "near_dup") and events_of(p, ev.ForcedFaceDistant)
    ((_c, cand),) = events_of(p, ev.FaceCandidate)
    ((promotion, promoted),) = events_of(p, ev.FacesetPromoted)
    # corrections: a label, a move to dropped, the candidate rejected, that rejection restored
    label_faceset(p, "faceset_001", "Barack Obama")
    kept = sorted(f.name for f in (p.config.corpus_dir / "faceset_003/faces").glob("*.png"))
    moved = move_face(p, f"faceset_003/faces/{kept[0]}", "dropped")
    rejected = move_face(p, cand.face_id, "pool")
    p.restore(rejected)
    # restores: the multi-face prune, the near-dup prune and that restore again (a restore of a restore), the move,
    # the promotion (its faces back to the pool, the emptied faceset to _thin/)
    ((multi, _m), *_rest) = decisions(p, "multi_face")
    ((near, _n),) = decisions(p, "near_dup")
    p.restore(multi)
    undone = p.restore(near)
    p.restore(undone)
    p.restore(moved)
    p.restore(promotion)
    decided = {e.sha256 for _p, e in [*events_of(p, ev.ForcedFaceDistant), *events_of(p, ev.FacePruned)]}
    routed = [pos for pos, e in events_of(p, ev.FaceRouted) if e.faceset == "faceset_001" and e.sha256 not in decided]
    p.restore(routed[0])  # a routed face (neither forced nor pruned) taken out: face_unrouted
    assert p.state.faceset_area(promoted.faceset) == "_thin" and promoted.faceset not in centroids(p.ctx)
    # the merge of obama's two facesets (merging on for one reconcile)
    p = _open(data, face_engine, merge=True)
    p.reconcile()
    assert decisions(p, "merge")
    move_face(p, cand.face_id, "faceset_002")  # the candidate accepted after all
    return p


def _outcome(copy: Path, face_engine, position: int) -> tuple[str | None, str | None]:
    """(refusal, restore's answer) on this copy: None for an undo recorded with its moves done."""
    p = _open(copy, face_engine)
    p.state.catch_up()
    stored = p.log.get(position)
    assert stored is not None
    said = refusal(p.state, p.config.corpus_dir, stored)
    head = p.log.head()
    try:
        p.restore(position)
    except UnknownEvent as e:
        return said, str(e)
    failed = [se.event.error for se in p.log.read(head, None, kinds=[ev.MoveFailed.KIND])]
    return said, "; ".join(failed) or None


def test_restore_refuses_exactly_what_the_rules_refuse_on_every_event_of_a_rich_log(
        tmp_path: Path, faces_dir: Path, face_engine) -> None:
    data = tmp_path / "data"
    p = _build(data, faces_dir, face_engine)
    stored = list(p.log.read(0, None))
    restorable: set[str] = set()
    refused: set[str] = set()
    for se in stored:
        copy = tmp_path / f"at{se.position}"
        shutil.copytree(data, copy)
        said, answer = _outcome(copy, face_engine, se.position)
        assert said == answer, f"event {se.position} ({se.kind}): the rules say {said!r}, restore says {answer!r}"
        (restorable if said is None else refused).add(se.kind)
        shutil.rmtree(copy)
    # every rule but those of kinds this log lacks (a quarantine, a thin return) accepts one of its events here,
    # and refuses another where this log has one: a rule dropped or a check lost shows
    assert set(RULES) - {ev.FacesetQuarantined.KIND, ev.FacesetReturned.KIND, ev.FacesetPromoted.KIND,
                         ev.CandidateRejected.KIND} <= restorable
    assert {ev.FacePruned.KIND, ev.FaceMoved.KIND, ev.DecisionReverted.KIND, ev.FacesetPromoted.KIND,
            ev.CandidateRejected.KIND, ev.PhotoReceived.KIND, ev.PoolFaceAdded.KIND} <= refused


def test_restore_help_lists_every_kind_restore_takes() -> None:
    """`facesetd restore --help` names exactly the kinds daemon/restore_rules.py takes (the README's list too)."""
    from daemon.cli.restore import UNDOES
    from daemon.restore_rules import RULES, UNDONE_ONCE

    listed = [k.strip() for kinds, _what in UNDOES for k in kinds.split(",")]
    assert sorted(listed) == sorted([*RULES, *UNDONE_ONCE])
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `facesetd restore EVENT_ID`"))
    for kind in ("face_pruned", "faceset_quarantined", "face_routed", "forced_face_distant", "face_unrouted",
                 "eras_split", "facesets_merged", "faceset_returned", "decision_reverted"):
        assert f"`{kind}`" in row, kind
