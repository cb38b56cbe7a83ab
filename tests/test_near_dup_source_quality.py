"""Near-duplicates keep the better face: the quality they are compared by carries the source photo's face size
and sharpness (gpu_agent/source_quality.py), which the 512 crop hides.

The pair a new user met: identities/obama/obama.jpg (face 232x342 px) and obama_small.jpg (the same shot at
240x320, face 105x155 px). Measured on their crops alone the small one scored higher (0.8976 vs 0.8963) and
obama.jpg was pruned in its favour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from state import events as ev
from tests.handler_fixtures import GivenScorer, decisions, events_of, pipeline
from tests.helpers import drop, projections, rebuilt_from_log_alone

OBAMA, SMALL = "obama/obama.jpg", "obama/obama_small.jpg"


def _engines(face_engine):
    return lambda: (face_engine, GivenScorer())


def _settle_photos(p, faces_dir: Path, photos: list[str]) -> None:
    """Each photo into inbox/faceset_001/, one reconcile each: the order in which they arrive is the test's."""
    for photo in photos:
        drop(faces_dir / "identities", p.config.inbox_dir, photo, into="faceset_001")
        p.reconcile()


@pytest.mark.parametrize("order", [[OBAMA, SMALL], [SMALL, OBAMA]], ids=["large_first", "small_first"])
def test_the_larger_sharper_source_is_kept_whichever_arrives_first(tmp_path: Path, faces_dir: Path, face_engine,
                                                                    order: list[str]) -> None:
    p = pipeline(tmp_path, _engines(face_engine))
    _settle_photos(p, faces_dir, order)

    (_pos, pruned), = decisions(p, "near_dup")
    added = {e.path: e for _p, e in events_of(p, ev.FaceAdded)}
    small_crop, large_crop = (pruned.path, pruned.inputs["duplicate_of"])
    assert added[small_crop].source["received_as"] == "inbox/faceset_001/obama_small.jpg"
    assert added[large_crop].source["received_as"] == "inbox/faceset_001/obama.jpg"
    assert pruned.inputs["quality"] < pruned.inputs["quality_of_kept"]
    assert pruned.inputs["similarity"] >= 0.95

    # What each crop's source recorded of its photo, and the terms its analysis used in place of the crop's own.
    assert [round(v) for v in added[large_crop].source["face_px"]] == [232, 342]
    assert [round(v) for v in added[small_crop].source["face_px"]] == [105, 155]
    analyzed = {e.path: e for _p, e in events_of(p, ev.FaceAnalyzed)}
    large, small = analyzed[large_crop], analyzed[small_crop]
    assert large.source_terms["short_edge"] > 0.9 > 0.45 > small.source_terms["short_edge"]
    # on the crops alone the small one measures as well as the large one: the crop hides its size
    assert small.quality_terms["short_edge"] >= large.quality_terms["short_edge"] - 0.02
    assert large.quality is not None and small.quality is not None and large.quality - small.quality > 0.08

    # The manifest ranks and lists them by that quality; the faceset is not thinned by the prune.
    corpus = p.config.corpus_dir
    manifest = json.loads((corpus / "faceset_001/manifest.json").read_text())
    assert [f["file"] for f in manifest["faces"]] == [large_crop.rsplit("/", 1)[1]]
    assert manifest["faces"][0]["quality"] == round(large.quality, 6)
    assert manifest["faces"][0]["source"]["face_sharpness"] > 0
    assert p.state.faceset_area("faceset_001") == ""
    assert rebuilt_from_log_alone(tmp_path, tmp_path / "copy") == projections(corpus)


def test_a_log_written_before_source_terms_replays_as_it_was(tmp_path: Path) -> None:
    """Events recorded before the source's face size and sharpness were kept decode with none, and their
    recorded quality stands: old logs rebuild to the same state."""
    from state.events import decode_event

    old = ('{"bbox":[1.0,2.0,3.0,4.0],"det_score":0.9,"face_count":1,"kps":[],"model":{},"path":"faceset_001/faces/a.png",'
           '"quality":0.5,"quality_terms":{},"sha256":"ab"}')
    e = decode_event(ev.FaceAnalyzed.KIND, old, None)
    assert isinstance(e, ev.FaceAnalyzed) and e.source_terms == {} and e.quality == 0.5
    from gpu_agent.quality import QualityScore
    from gpu_agent.source_quality import quality_with_source, source_terms

    assert source_terms({"photo": "x.jpg", "bbox": [0, 0, 100, 100]}) == {}  # recorded before: no terms
    q = QualityScore(0.7, 0.8, 0.6, 0.5, 0.9, 0.9)
    assert quality_with_source(q, {}) == 0.7


def test_the_top_n_bundle_ranks_by_the_source_aware_quality(tmp_path: Path, faces_dir: Path, face_engine) -> None:
    """Both kept (near-dup set out of reach): the top-1 .fsz holds obama.jpg's crop, not obama_small.jpg's. Two
    faces lie equally close to their own centroid, so the top N's rule (state/topn.py) takes the better quality."""
    import zipfile

    p = pipeline(tmp_path, _engines(face_engine),
                 "[thresholds]\nnear_dup_similarity = 0.999\n[projection]\ntop_n = 1\n")
    _settle_photos(p, faces_dir, [SMALL, OBAMA])
    assert decisions(p) == []
    added = {e.source["received_as"].rsplit("/", 1)[1]: e.path.rsplit("/", 1)[1] for _p, e in events_of(p, ev.FaceAdded)}
    folder = p.config.corpus_dir / "faceset_001"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fsz"]["top_files"] == [added["obama.jpg"]]
    with zipfile.ZipFile(folder / manifest["fsz"]["top"]) as z:
        assert len(z.namelist()) == 1
        top = z.read(z.namelist()[0])
    assert top == (folder / "faces" / added["obama.jpg"]).read_bytes()


def test_a_photos_sharpness_is_on_the_scale_of_a_crops(faces_dir: Path, face_engine) -> None:
    """A crop from the inbox and a PNG found on disk rank against each other: for a large face (the crop holds
    it at about its own size) the sharpness measured on the photo matches the one measured on its crop. The box
    variance at the photo's resolution read 0.23 for img1.jpg's 293 px face and 1.0 on its crop."""
    import cv2

    from gpu_agent.crop import crop_face
    from gpu_agent.quality import crop_quality
    from gpu_agent.source_quality import measure_source, source_terms

    gaps: list[float] = []
    for path in sorted((faces_dir / "identities").glob("*/*.jpg")):
        image = cv2.imread(str(path))
        face = max(face_engine.analyze_arrays([image])[0], key=lambda f: f.det_score)
        if min(face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1]) < 200:
            continue
        crop = crop_face(image, face)
        (on_crop,) = face_engine.analyze_arrays([crop], pad=False)
        crop_term = crop_quality(crop, max(on_crop, key=lambda f: f.det_score)).sharpness
        photo_term = source_terms(measure_source(image, face))["sharpness"]
        gaps.append(abs(photo_term - crop_term))
    # Measured: gaps 0 to 0.35 (biden2.jpg's 437 px face loses detail when the crop shrinks it), mean 0.11; the
    # box variance gave gaps up to 0.78 (img1.jpg: 0.23 on the photo, 1.0 on the crop), mean 0.42.
    assert len(gaps) >= 6 and max(gaps) <= 0.4 and sum(gaps) / len(gaps) <= 0.2, gaps

