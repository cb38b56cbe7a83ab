"""kill -9 inside the inbox router: the next run finishes the photo, never processes it twice, loses nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import cli
from test_crash import run_until_crash_point


@pytest.mark.parametrize("point", ["inbox:crops_written", "inbox:photo_moved", "write:1e495731c568_0.png"])
def test_kill_inside_the_router_then_next_run_completes(
    tmp_path: Path, faces_dir: Path, models_root: Path, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    inbox = data / "inbox"
    (inbox / "faceset_001").mkdir(parents=True)
    ids = faces_dir / "identities"
    shutil.copy(ids / "obama/obama.jpg", inbox / "faceset_001/obama.jpg")  # handled first: the seed
    shutil.copy(ids / "obama/obama1.jpg", inbox / "obama1.jpg")
    shutil.copy(ids / "biden/biden.jpg", inbox / "biden.jpg")

    run_until_crash_point(data, point, args=("reconcile",))
    cli(data, "reconcile", env=env)  # the next start
    cli(data, "reconcile", env=env)  # and one more: nothing left to do

    evs = [json.loads(line) for line in cli(data, "events", "--json", env=env).stdout.splitlines()]
    received = [e["payload"]["path"] for e in evs if e["kind"] == "photo_received"]
    processed = [e["payload"]["path"] for e in evs if e["kind"] == "photo_processed"]
    assert sorted(received) == sorted(processed) == ["biden.jpg", "faceset_001/obama.jpg", "obama1.jpg"]
    assert "photo_rejected" not in [e["kind"] for e in evs]
    moved = sorted(str(p.relative_to(inbox / "_processed")) for p in (inbox / "_processed").rglob("*.jpg"))
    assert moved == ["biden.jpg", "faceset_001/obama.jpg", "obama1.jpg"]
    assert not [p for p in inbox.rglob("*.jpg") if "_processed" not in p.parts]
    corpus = data / "corpus"
    assert sorted(p.name for p in (corpus / "faceset_001/faces").glob("*.png")) == [
        "1e495731c568_0.png", "a3438d8091a6_0.png"]
    assert not list(corpus.rglob(".*.tmp-*"))
    manifest = json.loads((corpus / "faceset_001/manifest.json").read_text())
    # each face names where its photo is now, and the name it arrived under, also after a crash mid-way
    assert sorted(f["source"]["photo"] for f in manifest["faces"]) == ["_processed/faceset_001/obama.jpg",
                                                                       "_processed/obama1.jpg"]
    assert sorted(f["source"]["received_as"] for f in manifest["faces"]) == ["inbox/faceset_001/obama.jpg",
                                                                             "inbox/obama1.jpg"]


@pytest.mark.parametrize("point", ["move:before_rename", "move:after_rename"])
def test_kill_mid_promotion_then_next_run_completes(
    tmp_path: Path, faces_dir: Path, models_root: Path, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
           "FACESETD_IDENTITY_MIN_NEW_FACESET": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    for p in ("obama1.jpg", "obama2.jpg"):
        shutil.copy(faces_dir / "identities/obama" / p, data / "inbox" / p)

    run_until_crash_point(data, point, args=("reconcile",))
    cli(data, "reconcile", env=env)
    cli(data, "reconcile", env=env)

    evs = [json.loads(line) for line in cli(data, "events", "--json", env=env).stdout.splitlines()]
    kinds = [e["kind"] for e in evs]
    assert kinds.count("faceset_promoted") == 1 and kinds.count("move_completed") == 1
    assert "move_failed" not in kinds and "face_missing" not in kinds
    corpus = data / "corpus"
    assert len(list((corpus / "faceset_001/faces").glob("*.png"))) == 2
    assert not list((corpus / "_pool").glob("*.png"))
    assert not (corpus / "faceset_002").exists()
