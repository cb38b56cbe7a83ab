"""The per-image checks and the faceset rules on real crops, end to end through Pipeline.reconcile()."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from state import events as ev
from tests.handler_fixtures import GivenScorer, decisions, events_of, pipeline, png, variant, write_corpus
from tests.helpers import images, projections


def _engines(face_engine, scorer=None):
    scorer = scorer or GivenScorer()
    return lambda: (face_engine, scorer)


def _restore_and_check(p, pos: int, original: dict[str, str]) -> None:
    """Restore decision `pos`: every PNG back where it was, projections equal to a rebuild from the log."""
    p.restore(pos)
    assert images(p.config.corpus_dir) == original
    rendered = projections(p.config.corpus_dir)
    p.rebuild()
    assert projections(p.config.corpus_dir) == rendered


def test_multi_face_and_zero_face_prune_and_restore(tmp_path: Path, face_engine, crops) -> None:
    corpus = tmp_path / "corpus"
    files = {f"faceset_001/faces/{n}.png": png(crops[n]) for n in ("obama", "obama1", "obama2", "obama3", "biden")}
    files["faceset_001/faces/pair.png"] = png(crops["two_faces"])
    files["faceset_001/faces/empty.png"] = png(crops["no_face"])
    files["faceset_001/faces/_dropped/pair.png"] = png(variant(crops["no_face"], 1))  # pruned by the batch scripts
    original = write_corpus(corpus, files)
    p = pipeline(tmp_path, _engines(face_engine))
    p.reconcile()

    pruned = {e.path: (pos, e) for pos, e in decisions(p, "multi_face")}
    assert set(pruned) == {"faceset_001/faces/pair.png", "faceset_001/faces/empty.png"}
    pair, empty = pruned["faceset_001/faces/pair.png"][1], pruned["faceset_001/faces/empty.png"][1]
    assert pair.inputs["face_count"] == 2 and "2 faces at det_thresh 0.5" in pair.reason
    assert empty.inputs["face_count"] == 0 and "no face" in empty.reason
    for e in (pair, empty):
        assert e.inputs["det_thresh"] == 0.5 and e.inputs["det_size"] == 640
        assert e.inputs["model"]["pack"] == "buffalo_sc"
    assert pair.moves == (("faceset_001/faces/pair.png", "faceset_001/faces/_dropped/pair~2.png"),)  # name taken
    assert (corpus / "faceset_001/faces/_dropped/pair~2.png").is_file()
    manifest = json.loads((corpus / "faceset_001/manifest.json").read_text())
    assert {f["file"] for f in manifest["dropped"]} == {"_dropped/pair.png", "_dropped/pair~2.png", "_dropped/empty.png"}
    assert len(manifest["faces"]) == 5  # 5 survivors: not thin
    assert p.state.faceset_area("faceset_001") == ""

    # Restore both: files and projections come back; the check does not act on those bytes again.
    pos_pair = pruned["faceset_001/faces/pair.png"][0]
    p.restore(pruned["faceset_001/faces/empty.png"][0])
    _restore_and_check(p, pos_pair, original)
    p.reconcile()
    assert images(corpus) == original and len(decisions(p, "multi_face")) == 2
    from handlers.multi_face import check_multi_face

    analyzed = [se for se in p.log.read(0, None, kinds=[ev.FaceAnalyzed.KIND]) if se.event.path.endswith("pair.png")]
    assert check_multi_face(p.ctx, analyzed) == []

    # New bytes at the same path: the override no longer holds and the check runs again.
    (corpus / "faceset_001/faces/pair.png").write_bytes(png(variant(crops["two_faces"], 3)))
    p.reconcile()
    again = [e for _pos, e in decisions(p, "multi_face") if e.path.endswith("pair.png")]
    assert len(again) == 2 and again[-1].sha256 != again[0].sha256
    assert not (corpus / "faceset_001/faces/pair.png").exists()


def test_near_dup_and_byte_dup(tmp_path: Path, face_engine, crops) -> None:
    corpus = tmp_path / "corpus"
    files = {f"faceset_002/faces/{n}.png": png(crops[n]) for n in ("obama", "obama_copy", "obama1", "obama2", "obama3", "alex1")}
    # faceset_003: another identity holding a byte-identical copy of one of faceset_002's PNGs.
    files.update({f"faceset_003/faces/{n}.png": png(crops[n]) for n in ("biden", "biden2", "alex2", "lin")})
    files["faceset_003/faces/obama3.png"] = png(variant(crops["obama3"], 5))
    files["faceset_003/faces/zz_copy.png"] = files["faceset_002/faces/obama1.png"]
    files["faceset_003/faces/lin_b.png"] = png(variant(crops["lin"], 9))
    # faceset_004: the copy is found first, the better original after it: the existing copy is pruned.
    files.update({f"faceset_004/faces/{n}.png": png(variant(crops[n], 20 + i))
                  for i, n in enumerate(("obama1", "obama2", "biden", "alex1"))})
    files["faceset_004/faces/a_copy.png"] = png(variant(crops["obama_copy"], 30))
    files["faceset_004/faces/b_original.png"] = png(variant(crops["obama"], 31))
    original = write_corpus(corpus, files)
    p = pipeline(tmp_path, _engines(face_engine))
    p.reconcile()

    near = decisions(p, "near_dup")
    assert len(near) == 3  # the copy of obama (twice), and lin_b (a one-pixel variant) in faceset_003
    by_set = {e.path.split("/")[0]: (pos, e) for pos, e in near}
    existing = by_set["faceset_004"][1]
    assert existing.path == "faceset_004/faces/a_copy.png"
    assert existing.inputs["duplicate_of"] == "faceset_004/faces/b_original.png"
    assert existing.inputs["quality"] < existing.inputs["quality_of_kept"]
    pos, e = by_set["faceset_002"]
    pair = {e.path.split("/")[-1], e.inputs["duplicate_of"].split("/")[-1]}
    assert pair == {"obama.png", "obama_copy.png"}
    assert e.inputs["similarity"] >= 0.95 and e.inputs["threshold"] == 0.95
    assert e.inputs["quality"] <= e.inputs["quality_of_kept"]
    # another photo of the same person is not a near-duplicate
    assert all("obama1" not in x.path and "obama2" not in x.path for _p, x in near)

    (bpos, byte), = decisions(p, "byte_dup")
    assert byte.path == "faceset_003/faces/zz_copy.png"
    assert byte.inputs["duplicate_of"] == "faceset_002/faces/obama1.png"
    assert p.state.faceset_area("faceset_002") == "" and p.state.faceset_area("faceset_003") == ""

    p.restore(by_set["faceset_003"][0])
    p.restore(by_set["faceset_004"][0])
    p.restore(bpos)
    _restore_and_check(p, pos, original)
    p.reconcile()
    assert images(corpus) == original


ERAS = """
[[eras.buckets]]
faceset = "faceset_101"
family = "faceset_001"
year = 2010

[[eras.buckets]]
faceset = "faceset_102"
family = "faceset_001"
year = 1990
"""


@pytest.mark.parametrize("buckets_from", ["config", "adopted"])
def test_slot_into_era(tmp_path: Path, face_engine, crops, buckets_from: str) -> None:
    corpus = tmp_path / "corpus"
    files = {
        "faceset_101/faces/a.png": png(crops["obama"]),  # anchors of the 2010 era
        "faceset_101/faces/b.png": png(crops["obama2"]),
        "faceset_001/faces/y2012.png": png(crops["obama1"], year=2012),  # near, 2 years off: joins 2010
        "faceset_001/faces/y2016.png": png(crops["obama3"], year=2016),  # near, but 6 years off
        "faceset_001/faces/noyear.png": png(crops["obama2"]),
    }
    # The 1990 era holds the very bytes of y2016.png: byte-identical within one family is left alone.
    files["faceset_102/faces/c.png"] = files["faceset_001/faces/y2016.png"]
    write_corpus(corpus, files)
    if buckets_from == "adopted":  # the batch scripts' master manifest names the buckets
        (corpus / "manifest.json").write_text(json.dumps({"facesets": [], "era_buckets": [
            {"faceset": "faceset_101", "family": "faceset_001", "year": 2010},
            {"faceset": "faceset_102", "family": "faceset_001", "year": 1990},
        ]}))
    p = pipeline(tmp_path, _engines(face_engine), ERAS if buckets_from == "config" else "")
    p.reconcile()

    slotted = {e.path: e for _pos, e in events_of(p, ev.FaceSlotted)}
    unslotted = {e.path: e for _pos, e in events_of(p, ev.FaceUnslotted)}
    assert set(slotted) == {"faceset_001/faces/y2012.png"}
    s = slotted["faceset_001/faces/y2012.png"]
    assert s.era == "faceset_101" and s.inputs["year"] == 2012
    assert s.inputs["buckets"]["faceset_101"]["distance"] <= 0.40
    u = unslotted["faceset_001/faces/y2016.png"]
    assert u.inputs["buckets"]["faceset_101"]["years_off"] == 6
    assert u.inputs["buckets"]["faceset_101"]["distance"] <= 0.40
    assert "6 years off > 5" in u.reason
    assert "no year" in unslotted["faceset_001/faces/noyear.png"].reason
    assert decisions(p) == []  # nothing pruned: no byte-dup within the family, nothing thin

    manifest = json.loads((corpus / "faceset_001/manifest.json").read_text())
    assert {f["file"]: f.get("era") for f in manifest["faces"]}["y2012.png"] == "faceset_101"
    # the era bucket's manifest and .fsz carry the slotted PNG beside its anchors (read in place, not copied)
    bucket = json.loads((corpus / "faceset_101/manifest.json").read_text())
    assert [f["file"] for f in bucket["slotted"]] == ["faceset_001/faces/y2012.png"]
    with zipfile.ZipFile(corpus / "faceset_101/faceset_101.fsz") as zf:
        members = [zf.read(n) for n in zf.namelist()]
    assert len(members) == 3 and (corpus / "faceset_001/faces/y2012.png").read_bytes() in members
    assert not (corpus / "faceset_101/faces/y2012.png").exists()
    master = json.loads((corpus / "manifest.json").read_text())
    assert master["thin_eras"] == ["faceset_101", "faceset_102"]
    assert [f["name"] for f in master["facesets"]] == ["faceset_001", "faceset_101", "faceset_102"]
    # pruning the slotted PNG from its own faceset takes it out of the bucket's .fsz as well
    from helpers import prune

    prune(p, "faceset_001/faces/y2012.png", check="test")
    with zipfile.ZipFile(corpus / "faceset_101/faceset_101.fsz") as zf:
        assert len(zf.namelist()) == 2


def _occlusion_corpus(crops) -> dict[str, bytes]:
    names = ["obama", "obama1", "biden", "biden2", "alex1", "alex2", "lin"]
    files, k = {}, 0
    for faceset, n in (("faceset_004", 6), ("faceset_005", 5), ("faceset_006", 4), ("faceset_007", 3)):
        for name in names[:n]:
            k += 1
            files[f"{faceset}/faces/{name}.png"] = png(variant(crops[name], k))
    return files


def test_occlusion_rules_with_given_scores(tmp_path: Path, face_engine, crops) -> None:
    import hashlib

    corpus = tmp_path / "corpus"
    files = _occlusion_corpus(crops)
    sha = {rel: hashlib.sha256(b).hexdigest() for rel, b in files.items()}
    given = {
        sha["faceset_004/faces/obama.png"]: {"mask": 0.1, "sunglasses": 0.9},  # 1 of 6: pruned, set stays
        sha["faceset_004/faces/biden.png"]: {"mask": 0.69, "sunglasses": 0.2},  # under 0.7: stays
        sha["faceset_005/faces/obama.png"]: {"mask": 0.8, "sunglasses": 0.0},  # 2 of 5 = 40%: _masked
        sha["faceset_005/faces/biden.png"]: {"mask": 0.0, "sunglasses": 0.7},
        sha["faceset_006/faces/obama.png"]: {"mask": 0.75, "sunglasses": 0.0},  # 1 of 4, 3 left: _thin
    }
    original = write_corpus(corpus, files)
    p = pipeline(tmp_path, _engines(face_engine, GivenScorer(given)))
    p.reconcile()

    occluded = {e.path: (pos, e) for pos, e in decisions(p, "occlusion")}
    assert set(occluded) == {"faceset_004/faces/obama.png", "faceset_005/faces/obama.png",
                             "faceset_005/faces/biden.png", "faceset_006/faces/obama.png"}
    e = occluded["faceset_004/faces/obama.png"][1]
    assert e.inputs["sunglasses"] == 0.9 and e.inputs["threshold"] == 0.7
    assert len(events_of(p, ev.OcclusionScored)) == 18
    areas = dict(p.state.facesets())
    assert areas == {"faceset_004": "", "faceset_005": "_masked", "faceset_006": "_thin", "faceset_007": ""}
    (mpos, masked), = decisions(p, "masked")
    assert masked.inputs["flagged"] == 2 and masked.inputs["scored"] == 5 and masked.inputs["masked_fraction"] == 0.4
    (tpos, thin), = decisions(p, "thin")
    assert thin.inputs == {"survivors": 3, "pruned": 1, "thin_min_survivors": 5}
    assert (corpus / "_masked/faceset_005/faces/_dropped/obama.png").is_file()
    master = json.loads((corpus / "manifest.json").read_text())
    assert [m["name"] for m in master["masked"]] == ["faceset_005"]
    assert [m["name"] for m in master["thin"]] == ["faceset_006"]

    # Undo: the quarantines, then the prunes; every file comes back and stays.
    p.restore(mpos)
    p.restore(tpos)
    for pos, _e in list(occluded.values())[:-1]:
        p.restore(pos)
    _restore_and_check(p, list(occluded.values())[-1][0], original)
    p.reconcile()
    assert images(corpus) == original
    assert dict(p.state.facesets()) == {n: "" for n in areas}
    from handlers.faceset_rules import evaluate

    assert evaluate(p.ctx, "faceset_005", True) is None and evaluate(p.ctx, "faceset_006", True) is None


def test_without_clip_the_other_checks_run(tmp_path: Path, face_engine, crops) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, {
        "faceset_001/faces/a.png": png(crops["obama"]), "faceset_001/faces/b.png": png(crops["two_faces"]),
        "faceset_001/faces/c.png": png(crops["biden"]),
    })
    scorer = GivenScorer(available=False)
    p = pipeline(tmp_path, _engines(face_engine, scorer))
    p.reconcile()
    assert [e.path for _p, e in decisions(p, "multi_face")] == ["faceset_001/faces/b.png"]
    assert events_of(p, ev.OcclusionScored) == [] and scorer.calls == 0
    assert "occlusion_off" in p.ctx._said_once
    # 2 survivors after a multi-face prune: not thin (seed 000's thin rule counts occlusion prunes only)
    assert p.state.faceset_area("faceset_001") == ""


def test_checks_are_registered_in_order() -> None:
    import handlers  # noqa: F401
    from handlers.registry import HANDLERS

    assert [r.name for r in HANDLERS[ev.FaceAdded.KIND]] == ["embed", "return_grown"]
    assert [r.name for r in HANDLERS[ev.FaceChanged.KIND]] == ["embed"]
    assert [r.name for r in HANDLERS[ev.FaceAnalyzed.KIND]] == [
        "check_multi_face", "check_occlusion", "check_near_dup", "slot_into_era", "apply_faceset_rules"]
    assert [r.name for r in HANDLERS[ev.FacePruned.KIND]] == ["apply_faceset_rules"]


def test_faces_analyzed_before_clip_do_not_hold_the_rules_back(tmp_path: Path, face_engine, crops) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, {f"faceset_001/faces/{n}.png": png(crops[n]) for n in ("obama", "biden", "alex1")})
    p = pipeline(tmp_path, _engines(face_engine, GivenScorer(available=False)))
    p.reconcile()
    assert p.state.faceset_area("faceset_001") == ""  # small, nothing pruned: stays
    p.ctx.models._engines = (face_engine, GivenScorer(available=True))  # a CLIP model is installed now
    write_corpus(corpus, {"faceset_001/faces/pair.png": png(crops["two_faces"])})
    p.reconcile()
    assert [e.path for _p, e in decisions(p, "multi_face")] == ["faceset_001/faces/pair.png"]
    assert p.state.faceset_area("faceset_001") == ""  # 3 left after a prune that is not an occlusion: not thin


def test_photo_year_sources(tmp_path: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    from handlers.common import Face
    from handlers.context import HandlerConfig, HandlerContext
    from handlers.era import photo_year

    inbox, corpus = tmp_path / "inbox", tmp_path / "corpus"
    (inbox / "trip").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x8769] = {0x9003: "2008:07:14 10:00:00"}
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG", exif=exif.tobytes())
    (inbox / "trip" / "a.jpg").write_bytes(buf.getvalue())
    write_corpus(corpus, {"faceset_001/faces/x.png": png(np.zeros((8, 8, 3), np.uint8), year=2015),
                          "faceset_001/faces/y.png": png(np.zeros((8, 8, 3), np.uint8))})
    ctx = HandlerContext(config=HandlerConfig(corpus=corpus, inbox=inbox), state=None)  # type: ignore[arg-type]

    def face(name: str, source: dict) -> Face:
        return Face(f"faceset_001/faces/{name}", "faceset_001", "", {}, None, 0, source)

    assert photo_year(ctx, face("x.png", {"photo": "trip/a.jpg"})) == (2008, "EXIF DateTimeOriginal of trip/a.jpg")
    assert photo_year(ctx, face("x.png", {"immich": {"takenAt": "2011-03-02T10:00:00.000Z"}}))[0] == 2011
    assert photo_year(ctx, face("x.png", {})) == (2015, "EXIF DateTimeOriginal of the PNG")
    assert photo_year(ctx, face("y.png", {"photo": "gone.jpg"})) == (None, "")
