"""The thin rule as seed 000 meant it, on real photos through the inbox and real crops adopted from disk.

"< 5 surviving AND something pruned" is a rule of the occlusion filter: only occlusion prunes of a faceset's
own PNGs count (handlers/faceset_rules.py); a faceset being built from the inbox is never thinned for being
new; a thin faceset that grows back to thin_min_survivors returns (handlers/thin_return.py), undoably."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from state import events as ev
from tests.handler_fixtures import GivenScorer, decisions, events_of, pipeline, png, variant, write_corpus
from tests.helpers import drop, images, projections, rebuilt_from_log_alone


class FlagWhenAsked(GivenScorer):
    """Scores 0 until `flag` is set; then every image it scores is sunglassed (P = 0.9)."""

    flag = False

    def score(self, images: Sequence[bytes]) -> list[dict[str, float]]:
        self.calls += 1
        p = 0.9 if self.flag else 0.0
        return [{"mask": 0.0, "sunglasses": p} for _ in images]


def _master(p) -> dict:
    return json.loads((p.config.corpus_dir / "manifest.json").read_text())


def test_a_seeded_three_face_faceset_survives_a_near_duplicate_prune(tmp_path: Path, faces_dir: Path,
                                                                      face_engine) -> None:
    p = pipeline(tmp_path, lambda: (face_engine, GivenScorer()))
    drop(faces_dir / "identities", p.config.inbox_dir, "obama/obama.jpg", "obama/obama1.jpg", "obama/obama_small.jpg",
         into="faceset_001")
    p.reconcile()
    (_pos, pruned), = decisions(p)
    assert pruned.check == "near_dup"
    assert p.state.faceset_area("faceset_001") == "" and p.state.kept_count("faceset_001") == 2
    assert [f["name"] for f in _master(p)["facesets"]] == ["faceset_001"] and _master(p)["thin"] == []


def test_an_occluded_photo_does_not_thin_a_faceset_being_built_from_the_inbox(tmp_path: Path, faces_dir: Path,
                                                                               face_engine) -> None:
    scorer = FlagWhenAsked()
    p = pipeline(tmp_path, lambda: (face_engine, scorer))
    ids, inbox = faces_dir / "identities", p.config.inbox_dir
    drop(ids, inbox, "obama/obama.jpg", "obama/obama1.jpg", into="faceset_001")
    p.reconcile()
    scorer.flag = True  # the next photo is "sunglassed": pruned on arrival, the faceset stays as it was
    drop(ids, inbox, "obama/obama2.jpg", into="faceset_001")
    p.reconcile()
    (_pos, pruned), = decisions(p)
    assert pruned.check == "occlusion" and "_processed" not in pruned.path
    assert p.state.faceset_area("faceset_001") == "" and p.state.kept_count("faceset_001") == 2


def _thinned(tmp_path: Path, face_engine, crops) -> tuple:
    """faceset_002 adopted from disk with 4 PNGs, 1 of them occluded (25%, not masked): 3 survivors, thinned as
    seed 000 says."""
    files = {f"faceset_002/faces/{n}.png": png(variant(crops[n], i)) for i, n in enumerate(
        ("obama", "obama1", "obama2", "biden"))}
    shas = write_corpus(tmp_path / "corpus", files)
    occluded = {shas["faceset_002/faces/biden.png"]: {"mask": 0.8, "sunglasses": 0.0}}
    p = pipeline(tmp_path, lambda: (face_engine, GivenScorer(occluded)))
    p.reconcile()
    (tpos, thin), = decisions(p, "thin")
    assert thin.inputs == {"survivors": 3, "pruned": 1, "thin_min_survivors": 5}
    assert "pruned as occluded" in thin.reason
    assert p.state.faceset_area("faceset_002") == "_thin"
    return p, tpos


def test_a_thin_faceset_that_regains_five_faces_returns_and_the_return_can_be_restored(
        tmp_path: Path, faces_dir: Path, face_engine, crops) -> None:
    p, tpos = _thinned(tmp_path, face_engine, crops)
    corpus, ids, inbox = p.config.corpus_dir, faces_dir / "identities", p.config.inbox_dir

    drop(ids, inbox, "biden/biden2.jpg", into="faceset_002")  # 4 faces: still thin
    p.reconcile()
    assert p.state.faceset_area("faceset_002") == "_thin" and p.state.kept_count("faceset_002") == 4
    assert events_of(p, ev.FacesetReturned) == []
    drop(ids, inbox, "lin_manuel_miranda/lin-manuel-miranda.jpg", into="faceset_002")  # 5: it returns
    p.reconcile()

    (rpos, back), = events_of(p, ev.FacesetReturned)
    assert back.faceset == "faceset_002" and back.check == "thin_return" and back.area == "_thin"
    assert back.moves == (("_thin/faceset_002", "faceset_002"),)
    assert back.inputs == {"kept": 5, "thin_min_survivors": 5} and "grown back" in back.reason
    assert p.state.faceset_area("faceset_002") == "" and not (corpus / "_thin/faceset_002").exists()
    assert len(list((corpus / "faceset_002/faces").glob("*.png"))) == 5
    # The two faces that joined while it was thin are analysed once it is active, and checked like any other.
    asked = [e for _p, e in events_of(p, ev.AnalysisRequested)]
    assert len(asked) == 2 and all(e.reason == "joined while its faceset was thin" for e in asked)
    analysed = {e.path for _p, e in events_of(p, ev.FaceAnalyzed)}
    assert {e.path for e in asked} <= analysed
    assert p.state.faces_without_analysis() == []
    master = _master(p)
    (entry,) = [f for f in master["facesets"] if f["name"] == "faceset_002"]
    assert entry == {"name": "faceset_002", "faces": 5, "dropped": 1, "decision": rpos, "check": "thin_return"}
    assert master["thin"] == []
    assert json.loads((corpus / "faceset_002/manifest.json").read_text())["area"] == "active"
    assert rebuilt_from_log_alone(tmp_path, tmp_path / "copy1") == projections(corpus)

    # Restored: back in _thin/, byte for byte, and the rule leaves it there however it grows.
    before_return = images(corpus)
    p.restore(rpos)
    assert p.state.faceset_area("faceset_002") == "_thin"
    assert {k.removeprefix("_thin/"): sha for k, sha in images(corpus).items()} == before_return
    (tentry,) = _master(p)["thin"]
    assert tentry["name"] == "faceset_002" and tentry["decision"] == tpos and tentry["check"] == "thin"
    drop(ids, inbox, "obama/obama3.jpg", into="faceset_002")
    p.reconcile()
    assert p.state.faceset_area("faceset_002") == "_thin" and len(events_of(p, ev.FacesetReturned)) == 1
    assert rebuilt_from_log_alone(tmp_path, tmp_path / "copy2") == projections(corpus)


def test_a_thin_faceset_found_on_disk_is_not_returned_for_what_it_holds(tmp_path: Path, face_engine, crops) -> None:
    """Adopted as the batch scripts left it: _thin/ with 6 PNGs stays there (nothing arrived)."""
    write_corpus(tmp_path / "corpus", {f"_thin/faceset_003/faces/{n}.png": png(crops[n]) for n in (
        "obama", "obama1", "biden", "biden2", "alex1", "lin")})
    p = pipeline(tmp_path, lambda: (face_engine, GivenScorer()))
    p.reconcile()
    assert p.state.faceset_area("faceset_003") == "_thin" and events_of(p, ev.FacesetReturned) == []
