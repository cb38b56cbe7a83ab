"""The inbox end to end with real photos and the real buffalo_sc models, through `facesetd reconcile`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from helpers import cli, drop, projections
from helpers import log_events as events

OBAMA = ["obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
         "obama_partial_face2.jpg", "obama_small.jpg"]


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}






def kinds(evs: list[dict]) -> list[str]:
    return [e["kind"] for e in evs]


def pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def crops(corpus: Path, faceset: str) -> list[str]:
    """Every crop routed to a faceset, wherever the checks then put it (faces/, faces/_dropped/, or the
    whole faceset quarantined): routing is what these tests are about, not the checks."""
    return sorted(p.name for p in corpus.rglob("*.png") if faceset in p.parts)


def test_seed_route_pool_promote_reject(tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    ids = faces_dir / "identities"
    # biden seeds faceset_001; obama has no faceset yet: 7 photos + the group photo reach the default gate (6).
    drop(ids, inbox, "biden/biden.jpg", "biden/biden2.jpg", into="faceset_001")
    drop(ids, inbox, *[f"obama/{p}" for p in OBAMA], "pp_woman/pp3.jpg")
    drop(faces_dir, inbox, "group/obama_and_biden.jpg")
    (inbox / "x.jpg").write_bytes(bytes(range(256)) * 20)  # not an image
    (inbox / ".hidden.jpg").write_bytes(b"ignored")

    cli(data, "reconcile", env=env)

    corpus = data / "corpus"
    evs = events(data, env)
    # the unreadable file: moved aside with a specific error, the run went on
    rejected = [e for e in evs if e["kind"] == "photo_rejected"]
    assert len(rejected) == 1 and rejected[0]["payload"]["path"] == "x.jpg"
    assert rejected[0]["payload"]["reason"] == "unreadable" and "cannot decode" in rejected[0]["payload"]["error"]
    assert rejected[0]["payload"]["error"].startswith("inbox/x.jpg: ") and "object at 0x" not in rejected[0]["payload"]["error"]
    assert (inbox / "_rejected/unreadable/x.jpg").exists()
    # every photo moved to _processed/ under its relative path; the hidden file stays untouched
    processed = sorted(str(p.relative_to(inbox / "_processed")) for p in (inbox / "_processed").rglob("*.jpg"))
    assert processed == sorted(["faceset_001/biden.jpg", "faceset_001/biden2.jpg", "pp3.jpg",
                                "obama_and_biden.jpg", *OBAMA])
    assert sorted(p.name for p in inbox.iterdir()) == [".hidden.jpg", "_processed", "_rejected", "faceset_001"]
    # the seed plus the biden face of the group photo; not the obama face next to it
    biden = crops(corpus, "faceset_001")
    assert len(biden) == 3
    # obama went through the pool and became the next faceset at the default gate
    promoted = [e for e in evs if e["kind"] == "faceset_promoted"]
    assert [e["payload"]["faceset"] for e in promoted] == ["faceset_002"]
    assert len(crops(corpus, "faceset_002")) == 8
    # the group photo's background stranger waits in the pool
    assert len(pngs(corpus / "_pool")) == 1
    # small faces (pp_woman: 31-50 px) are not cropped
    pp3 = next(e for e in evs if e["kind"] == "photo_processed" and e["payload"]["path"] == "pp3.jpg")
    assert pp3["payload"]["faces"] == [] and pp3["payload"]["skipped"] == {"small": 1}
    # crops are 512x512; manifests name where each face's photo is now (inbox-relative) and the name it came as
    for png in (corpus / "faceset_002/faces").glob("*.png"):
        assert cv2.imread(str(png)).shape == (512, 512, 3)
    manifest = json.loads((corpus / "faceset_002/manifest.json").read_text())
    faces = manifest["faces"] + manifest["dropped"]  # dropped: by a check
    assert sorted(f["source"]["photo"] for f in faces) == sorted(
        [f"_processed/{p}" for p in OBAMA] + ["_processed/obama_and_biden.jpg"])
    assert sorted(f["source"]["received_as"] for f in faces) == sorted(
        [f"inbox/{p}" for p in OBAMA] + ["inbox/obama_and_biden.jpg"])
    assert all((inbox / f["source"]["photo"]).is_file() for f in faces)
    seed = json.loads((corpus / "faceset_001/manifest.json").read_text())
    assert {f["source"]["photo"] for f in seed["faces"]} == {
        "_processed/faceset_001/biden.jpg", "_processed/faceset_001/biden2.jpg", "_processed/obama_and_biden.jpg"}
    assert {f["source"]["received_as"] for f in seed["faces"]} == {
        "inbox/faceset_001/biden.jpg", "inbox/faceset_001/biden2.jpg", "inbox/obama_and_biden.jpg"}

    # a second reconcile does nothing
    head = len(evs)
    cli(data, "reconcile", env=env)
    assert len(events(data, env)) == head
    # the projections (manifests, .fsz) are the log's: a rebuild gives the same bytes
    before = projections(corpus)
    cli(data, "rebuild", env=env)
    assert projections(corpus) == before


def test_pool_waits_for_gate_then_new_faceset_past_the_maximum(
    tmp_path: Path, faces_dir: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    ids = faces_dir / "identities"
    env = {**env, "FACESETD_IDENTITY_MIN_NEW_FACESET": "3"}
    # faceset_004 exists (seeded): the new person must become faceset_005
    drop(ids, inbox, "lin_manuel_miranda/lin-manuel-miranda.jpg", into="faceset_004")
    drop(ids, inbox, "obama/obama.jpg", "obama/obama1.jpg")
    cli(data, "reconcile", env=env)
    corpus = data / "corpus"
    assert len(pngs(corpus / "_pool")) == 2 and not (corpus / "faceset_005").exists()

    drop(ids, inbox, "obama/obama2.jpg", "alex_lacamoire/img1.jpg")
    cli(data, "reconcile", env=env)
    assert len(crops(corpus, "faceset_005")) == 3
    assert len(pngs(corpus / "_pool")) == 1  # alex waits

    # later photos of that person join the promoted faceset directly; others do not
    drop(ids, inbox, "obama/obama3.jpg", "biden/biden.jpg")
    cli(data, "reconcile", env=env)
    assert len(crops(corpus, "faceset_005")) == 4
    assert len(crops(corpus, "faceset_004")) == 1
    routed = [e for e in events(data, env) if e["kind"] == "photo_processed" and e["payload"]["path"] == "obama3.jpg"]
    assert routed[0]["payload"]["faces"][0]["to"] == "faceset_005"
    assert routed[0]["payload"]["faces"][0]["distance"] <= 0.45


def test_forced_folder_keeps_one_face_per_photo_and_pool_rematches(
    tmp_path: Path, faces_dir: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    ids = faces_dir / "identities"
    # obama arrives before anyone seeds him: pooled
    drop(ids, inbox, "obama/obama.jpg")
    cli(data, "reconcile", env=env)
    corpus = data / "corpus"
    assert len(pngs(corpus / "_pool")) == 1
    # seeding biden with a two-person photo: only one face (the biden one, by the seed's centroid) is forced
    drop(ids, inbox, "biden/biden.jpg", into="faceset_001")
    drop(faces_dir, inbox, "group/two_people_obama_biden.jpg", into="faceset_001")
    # ... and obama gets seeded later: the pooled obama faces join faceset_002 at the end of the run
    drop(ids, inbox, "obama/obama1.jpg", into="faceset_002")
    cli(data, "reconcile", env=env)
    evs = events(data, env)
    group = next(e for e in evs if e["kind"] == "photo_processed"
                 and e["payload"]["path"] == "faceset_001/two_people_obama_biden.jpg")
    # the other face was routed like any face: faceset_002 was seeded after this photo, so the pool
    assert sorted(f["to"] for f in group["payload"]["faces"]) == ["faceset_001", "pool"]
    assert len(crops(corpus, "faceset_001")) == 2
    assert len(crops(corpus, "faceset_002")) == 3  # obama1, the group's obama, the pooled obama.jpg
    assert pngs(corpus / "_pool") == []
    assert "pool_faces_matched" in kinds(evs)


def test_routing_log_line_says_why_each_face_went_where(tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    """The "photo routed" line gives each face's cosine distance and the match distance it was held against."""
    data = tmp_path / "data"
    inbox, ids = data / "inbox", faces_dir / "identities"
    drop(ids, inbox, "obama/obama.jpg", into="faceset_001")
    cli(data, "reconcile", env=env)
    drop(ids, inbox, "obama/obama1.jpg", "biden/biden.jpg")
    run = cli(data, "reconcile", env={**env, "FACESETD_LOGGING_LEVEL": "info"})
    lines = [json.loads(ln) for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("{")]
    routed = {ln["path"]: ln for ln in lines if ln["event"] == "photo routed"}
    same, other = routed["inbox/obama1.jpg"], routed["inbox/biden.jpg"]
    match = same["match_distance"]
    assert same["to"] == ["faceset_001"] and 0 < same["distance"][0] <= match
    assert same["why"] == [f"faceset_001 at {same['distance'][0]:.4f} <= match_distance {match}"]
    assert other["to"] == ["pool"] and other["distance"][0] > match
    assert other["why"] == [f"pool: nearest faceset_001 at {other['distance'][0]:.4f} > match_distance {match}"]
