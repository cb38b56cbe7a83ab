"""The top-N `.fsz` is chosen for roop's average (issue 25, state/topn.py): the N faces whose mean embedding lies
closest to the faceset's centroid, spread over sources and poses, crop quality as a floor; the manifest says why
each face is there, and the review pages show the same N."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from state import topn
from state.readonly import ReadOnlyState
from state.topn import TopInput, choose_top, mean_cosine, quality_top
from tests.handler_fixtures import GivenScorer, pipeline
from tests.helpers import drop, projections, rebuilt_from_log_alone

DIM = 512
FRONTAL = json.dumps([[40.0, 50.0], [80.0, 50.0], [60.0, 70.0], [45.0, 90.0], [75.0, 90.0]])


def _vec(*parts: tuple[int, float], seed: int = 0, noise: float = 0.0) -> np.ndarray:
    v = np.zeros(DIM)
    for axis, weight in parts:
        v[axis] += weight
    if noise:
        v += np.random.default_rng(seed).normal(0, noise, DIM)
    return v / np.linalg.norm(v)


def _face(file: str, vec: np.ndarray | None, quality: float | None = 0.9, source: dict | None = None,
          kps: str | None = FRONTAL) -> TopInput:
    blob = None if vec is None else vec.astype("<f4").tobytes()
    return TopInput(file, f"sha-{file}", quality, json.dumps(source if source is not None else {"photo_sha256": file}),
                    None, blob, kps)


def _kps_turned(yaw: float) -> str:
    """5 landmarks whose nose sits `yaw` half-eye-distances along the eye line from the eyes' midpoint."""
    return json.dumps([[40.0, 50.0], [80.0, 50.0], [60.0 + 20.0 * yaw, 70.0], [45.0, 90.0], [75.0, 90.0]])


def _burst_and_spread() -> list[TopInput]:
    """A person (axis 0): a burst of 4 near-identical sharp shots leaning one way (axis 1), and 6 slightly softer
    photos around the person in other directions: quality alone takes the burst."""
    burst = [_face(f"burst_{k}.png", _vec((0, 1.0), (1, 0.9), seed=k, noise=0.01), 0.95 - k * 0.001) for k in range(4)]
    spread = [_face(f"photo_{k}.png", _vec((0, 1.0), (2 + k, 0.6), seed=10 + k, noise=0.01), 0.85) for k in range(6)]
    return burst + spread


def test_quality_alone_takes_a_burst_whose_mean_drifts_the_new_rule_stays_with_the_person() -> None:
    faces = _burst_and_spread()
    old = quality_top(faces, 4)
    assert old == [f"burst_{k}.png" for k in range(4)]
    choice = choose_top(faces, 4)
    cos_old, cos_new = mean_cosine(faces, old), mean_cosine(faces, list(choice.files))
    assert cos_old is not None and cos_new is not None
    assert cos_new > cos_old + 0.05, (cos_old, cos_new)
    assert choice.cosine == round(cos_new, 6)
    # the burst is 4 of the 10 faces: its share of the top 4, not all of it
    assert sum(f.startswith("burst_") for f in choice.files) == 2
    # each chosen face says why: its rank, the reason, the cosine its addition gained, its pose
    assert [choice.reasons[f]["rank"] for f in choice.files] == [0, 1, 2, 3]
    assert {choice.reasons[f]["why"] for f in choice.files} <= {topn.WHY_CLOSEST, topn.WHY_SPREAD}
    assert all(choice.reasons[f]["pose"] == "frontal" for f in choice.files)
    assert choice.reasons[choice.files[0]]["gain"] > 0.5 > choice.reasons[choice.files[1]]["gain"]


def test_the_choice_does_not_depend_on_the_input_order_and_ties_go_to_quality_then_the_name() -> None:
    faces = _burst_and_spread()
    first = choose_top(faces, 5)
    assert choose_top(list(reversed(faces)), 5) == first
    assert choose_top(faces[3:] + faces[:3], 5) == first
    same = _vec((0, 1.0))
    twins = [_face("b.png", same, 0.9), _face("a.png", same, 0.9), _face("c.png", same, 0.95)]
    assert choose_top(twins, 1).files == ("c.png",)  # equally close: the better quality
    assert choose_top(twins[:2], 1).files == ("a.png",)  # and at equal quality, the file name


@pytest.mark.parametrize("seed", range(40))
def test_the_mean_is_never_farther_from_the_centroid_than_quality_alone_makes_it(seed: int) -> None:
    """Distinct photos, no landmarks (every face in one pose bin): the penalties are the same for every set, and
    the rule's swaps start from the best by quality too, so it can only come closer."""
    rng = np.random.default_rng(seed)
    person = rng.normal(0, 1, DIM)
    faces = [_face(f"f{k:02d}.png", (person + rng.normal(0, 1.2, DIM)) / 1.0, float(rng.uniform(0.6, 1.0)), kps=None)
             for k in range(int(rng.integers(5, 30)))]
    for n in (1, 3, 8):
        old = mean_cosine(faces, quality_top(faces, n))
        new = mean_cosine(faces, list(choose_top(faces, n).files))
        assert old is not None and new is not None and new >= old - 1e-9


def test_quality_is_a_floor_and_faces_below_it_fill_in_only_when_too_few_reach_it() -> None:
    person = _vec((0, 1.0))
    closest_but_blurred = _face("blurred.png", person, topn.QUALITY_FLOOR - 0.1)
    others = [_face(f"p{k}.png", _vec((0, 1.0), (1 + k, 0.7)), 0.9) for k in range(3)]
    assert "blurred.png" not in choose_top([closest_but_blurred, *others], 3).files
    choice = choose_top([closest_but_blurred, *others], 4)
    assert "blurred.png" in choice.files and choice.reasons["blurred.png"]["why"] == topn.WHY_BELOW_FLOOR


def test_faces_without_an_embedding_come_last_by_quality() -> None:
    faces = [_face("unanalysed_good.png", None, None), _face("no_vec.png", None, 0.99),
             _face("a.png", _vec((0, 1.0), (1, 0.3)), 0.7), _face("b.png", _vec((0, 1.0), (2, 0.3)), 0.65)]
    choice = choose_top(faces, 3)
    assert choice.files == ("a.png", "b.png", "no_vec.png") or choice.files == ("b.png", "a.png", "no_vec.png")
    assert choice.reasons["no_vec.png"] == {"rank": 2, "why": topn.WHY_NO_EMBEDDING, "pose": "frontal"}
    assert choose_top(faces[:2], 2) == topn.TopChoice(
        ("no_vec.png", "unanalysed_good.png"),
        {"no_vec.png": {"rank": 0, "why": topn.WHY_NO_EMBEDDING, "pose": "frontal"},
         "unanalysed_good.png": {"rank": 1, "why": topn.WHY_NO_EMBEDDING, "pose": "frontal"}}, None)


def test_a_second_frame_of_one_video_yields_to_a_face_from_another_source() -> None:
    """Two frames of one video as close to the person as a photo: the top 2 takes one frame and the photo."""
    video = {"video": {"sha256": "v1", "frame": 0}}
    frames = [_face(f"frame_{k}.png", _vec((0, 1.0), (1, 0.5), (3 + k, 0.05)), 0.95, {**video, "frame": k})
              for k in range(2)]
    photo = _face("photo.png", _vec((0, 1.0), (2, 0.5), (9, 0.05)), 0.9, {"photo_sha256": "p1"})
    other = _face("other.png", _vec((0, 1.0), (1, -0.5), (2, -0.5)), 0.9, {"photo_sha256": "p2"})
    choice = choose_top([*frames, photo, other], 2)
    assert sum(f.startswith("frame_") for f in choice.files) == 1
    assert topn.source_key(frames[0].source, "x") == topn.source_key(frames[1].source, "y") == "video:v1"
    assert topn.source_key(json.dumps({"immich": {"asset_id": "a"}, "photo": "p.jpg"}), "x") == "immich:a"
    assert topn.source_key("{}", "x.png") == "file:x.png"


def test_among_faces_about_as_close_the_top_n_spreads_over_poses() -> None:
    """Four faces as close to the person, two turned: the top 2 holds one frontal and one turned face."""
    faces = [_face(f"front_{k}.png", _vec((0, 1.0), (1 + k, 0.3)), 0.9) for k in range(2)]
    faces += [_face(f"turned_{k}.png", _vec((0, 1.0), (3 + k, 0.3)), 0.9, kps=_kps_turned(0.7)) for k in range(2)]
    choice = choose_top(faces, 2)
    assert sorted(choice.reasons[f]["pose"] for f in choice.files) == ["frontal", "right"]
    assert [topn.pose_bin(topn.yaw_of(_kps_turned(y))) for y in (-0.8, -0.3, 0.0, 0.3, 0.8)] == list(topn.YAW_BINS)
    assert topn.yaw_of(None) is None and topn.yaw_of("[[1, 2]]") is None


@pytest.mark.slow
def test_the_manifest_the_fsz_and_the_review_pages_hold_the_rules_top_n(tmp_path: Path, faces_dir: Path,
                                                                       face_engine) -> None:
    """Real crops of obama's photos seeded into one faceset (top_n = 3): the top .fsz holds the three faces the
    rule chooses over the faceset's real embeddings, each with its reason; its mean is at least as close to the
    centroid as the best three by quality; the review pages show the same faces; the log alone rebuilds it all."""
    data = tmp_path / "data"
    p = pipeline(data, lambda: (face_engine, GivenScorer()), "[projection]\ntop_n = 3\n")
    photos = ["obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
              "obama_partial_face2.jpg"]
    drop(faces_dir / "identities/obama", p.config.inbox_dir, *photos, into="faceset_001")
    p.reconcile()
    folder = p.config.corpus_dir / "faceset_001"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["faces"]) > 3
    state = ReadOnlyState(p.config.log_path)
    try:
        inputs = state.top_inputs("faceset_001")["faceset_001"]
        tops = state.top_faces_by_faceset(3)["faceset_001"]
    finally:
        state.close()
    choice = choose_top(inputs, 3)
    assert sorted(choice.files) != sorted(quality_top(inputs, 3))  # on these photos the rules differ
    assert manifest["fsz"]["top_files"] == list(choice.files)
    assert manifest["fsz"]["top_cosine"] == choice.cosine
    cos_new, cos_old = mean_cosine(inputs, list(choice.files)), mean_cosine(inputs, quality_top(inputs, 3))
    assert cos_new is not None and cos_old is not None and cos_new >= cos_old
    reasons = {f["file"]: f["top"] for f in manifest["faces"] if "top" in f}
    assert sorted(reasons) == sorted(choice.files)
    assert sorted(r["rank"] for r in reasons.values()) == [0, 1, 2]
    assert all(r["why"] in (topn.WHY_CLOSEST, topn.WHY_SPREAD) and r["pose"] in topn.YAW_BINS for r in reasons.values())
    with zipfile.ZipFile(folder / manifest["fsz"]["top"]) as z:
        members = [z.read(name) for name in z.namelist()]
    assert members == [(folder / "faces" / f).read_bytes() for f in choice.files]
    shas = {f["file"]: f["sha256"] for f in manifest["faces"]}
    assert tops == [shas[f] for f in choice.files]  # the review pages' thumbnails: the same faces, same order
    p.log.close()
    assert rebuilt_from_log_alone(data, tmp_path / "copy") == projections(p.config.corpus_dir)
