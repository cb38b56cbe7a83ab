"""Manifests and .fsz files are deterministic projections of the log; adoption moves nothing;
restore undoes prunes and quarantines exactly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from corpus_factory import batch_corpus
from helpers import cli, images, open_pipeline, projections, prune, quarantine, rebuilt_from_log_alone


def _adopted(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    cli(data, "reconcile")
    return data


def test_adoption_moves_no_image_and_keeps_the_lists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    before = images(data / "corpus")
    out = cli(data, "reconcile", "--json").stdout.strip().splitlines()[-1]
    summary = json.loads(out)
    assert summary["adopted"] is True
    assert images(data / "corpus") == before  # same files, same places, same bytes
    master = json.loads((data / "corpus" / "manifest.json").read_text())
    assert [f["name"] for f in master["facesets"]] == ["faceset_001", "faceset_002", "faceset_003"]
    assert [f["name"] for f in master["masked"]] == ["faceset_004"]
    assert [f["name"] for f in master["thin"]] == ["faceset_005"]
    assert master["thin_eras"] == ["faceset_005"]
    assert master["provenance"]["adopted"]["occlusion_filter_run"]["pruned"] == 183
    m1 = json.loads((data / "corpus" / "faceset_001" / "manifest.json").read_text())
    assert [f["file"] for f in m1["faces"]] == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert m1["faces"][0]["source"]["photo"] == "/photos/faceset_001/img_0.jpg"
    assert [f["file"] for f in m1["dropped"]] == ["_dropped/0099.png"]
    masked = json.loads((data / "corpus" / "_masked" / "faceset_004" / "manifest.json").read_text())
    assert masked["area"] == "_masked" and len(masked["faces"]) == 3
    # a second reconcile of the unchanged corpus records nothing
    again = json.loads(cli(data, "reconcile", "--json").stdout.strip().splitlines()[-1])
    assert again["events"] == {} and again["hashed"] == 0


def test_fsz_is_what_roop_reads(tmp_path: Path) -> None:
    data = _adopted(tmp_path)
    folder = data / "corpus" / "faceset_003"
    for fsz, expected in ((folder / "faceset_003.fsz", 6), (folder / "faceset_003_top8.fsz", 6)):
        with zipfile.ZipFile(fsz) as zf:
            infos = zf.infolist()
            assert [i.filename for i in infos] == [f"{n}.png" for n in range(expected)]
            assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
            assert all("/" not in i.filename and i.filename.endswith(".png") for i in infos)
            faces = sorted((folder / "faces").glob("*.png"))
            assert [zf.read(i) for i in infos] == [p.read_bytes() for p in faces]
            assert zf.testzip() is None


def test_replaying_the_log_gives_byte_identical_projections(tmp_path: Path) -> None:
    data = _adopted(tmp_path)
    p = open_pipeline(data)
    prune(p, "faceset_003/faces/0002.png")
    quarantine(p, "faceset_002")
    first = projections(data / "corpus")
    assert "_masked/faceset_002/manifest.json" in first
    p.rebuild()
    assert projections(data / "corpus") == first
    cli(data, "rebuild")
    assert projections(data / "corpus") == first
    # a copy with every projection removed regenerates the same bytes from the log alone
    assert rebuilt_from_log_alone(data, tmp_path / "copy") == first


def test_restore_undoes_a_prune_exactly(tmp_path: Path) -> None:
    data = _adopted(tmp_path)
    before_images, before_proj = images(data / "corpus"), projections(data / "corpus")
    p = open_pipeline(data)
    pos = prune(p, "faceset_001/faces/0002.png")
    assert (data / "corpus/faceset_001/faces/_dropped/0002.png").exists()
    assert not (data / "corpus/faceset_001/faces/0002.png").exists()
    m = json.loads((data / "corpus/faceset_001/manifest.json").read_text())
    assert "0002.png" not in [f["file"] for f in m["faces"]]  # the manifest follows the move
    assert {"file": "_dropped/0002.png", "pruned_by": pos}.items() <= m["dropped"][0].items()
    out = cli(data, "restore", str(pos)).stdout
    assert f"restored event {pos}" in out
    assert images(data / "corpus") == before_images
    after_proj = projections(data / "corpus")
    del before_proj["manifest.json"], after_proj["manifest.json"]  # the master records the log position
    assert after_proj == before_proj
    m = json.loads((data / "corpus/faceset_001/manifest.json").read_text())
    assert "0002.png" in [f["file"] for f in m["faces"]]
    # restoring twice is a clear error, exit 1
    again = cli(data, "restore", str(pos), check=False)
    assert again.returncode == 1 and "already restored" in again.stderr


def test_restore_undoes_a_quarantine(tmp_path: Path) -> None:
    data = _adopted(tmp_path)
    before = images(data / "corpus")
    p = open_pipeline(data)
    pos = quarantine(p, "faceset_003", "_thin", check="thin")
    assert (data / "corpus/_thin/faceset_003/faces/0000.png").exists()
    master = json.loads((data / "corpus/manifest.json").read_text())
    assert "faceset_003" in [f["name"] for f in master["thin"]]
    p.log.close()
    cli(data, "restore", str(pos))
    assert images(data / "corpus") == before
    master = json.loads((data / "corpus/manifest.json").read_text())
    assert "faceset_003" in [f["name"] for f in master["facesets"]]
    events = cli(data, "events", "--kind", "decision_reverted", "--json").stdout.strip().splitlines()
    assert json.loads(events[-1])["payload"]["target"] == pos


def test_restore_of_a_non_decision_is_a_clear_error(tmp_path: Path) -> None:
    data = _adopted(tmp_path)
    proc = cli(data, "restore", "3", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("facesetd: error: event 3 is a ")
    proc = cli(data, "restore", "99999", check=False)
    assert proc.returncode == 1 and "no event 99999" in proc.stderr


def test_changed_moved_and_missing_files_become_events(tmp_path: Path) -> None:
    data = _adopted(tmp_path)
    corpus = data / "corpus"
    from corpus_factory import write_png

    write_png(corpus / "faceset_002/faces/0000.png", 5000)  # same path, new bytes
    (corpus / "faceset_002/faces/0001.png").rename(corpus / "faceset_003/faces/moved.png")
    (corpus / "faceset_002/faces/0002.png").unlink()
    write_png(corpus / "faceset_006/faces/new.png", 6000)
    summary = json.loads(cli(data, "reconcile", "--json").stdout.strip().splitlines()[-1])
    assert summary["events"] == {
        "face_added": 1, "face_changed": 1, "face_missing": 1, "face_moved_externally": 1, "faceset_created": 1,
    }
    m3 = json.loads((corpus / "faceset_003/manifest.json").read_text())
    assert "moved.png" in [f["file"] for f in m3["faces"]]
    assert (corpus / "faceset_006/faceset_006.fsz").exists()


def test_a_changed_projection_layout_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    import sqlite3

    data = _adopted(tmp_path)
    before = projections(data / "corpus")
    db = sqlite3.connect(data / "state" / "events.sqlite3")
    db.execute("UPDATE meta SET value='1' WHERE key='projection_version'")  # as an older facesetd left it
    db.execute("DELETE FROM faces")  # and its rows, in a layout this version cannot read
    db.commit()
    db.close()
    status = json.loads(cli(data, "status", "--json").stdout.strip().splitlines()[-1])
    assert status["images"] == {"active": 18, "dropped": 1}
    cli(data, "rebuild")
    assert projections(data / "corpus") == before


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    before = images(data / "corpus") | projections(data / "corpus")
    out = cli(data, "reconcile", "--dry-run").stdout
    assert "would record corpus_adopted" in out and "would record face_added" in out
    assert "25 events would be recorded (19 files scanned)" in out
    assert images(data / "corpus") | projections(data / "corpus") == before
    assert json.loads(cli(data, "status", "--json").stdout.splitlines()[-1])["log_position"] == 0


def test_events_follow_prints_new_events_as_they_come(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from helpers import REPO, open_pipeline

    data = _adopted(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "events", "--follow", "--json",
         "--kind", "face_pruned"],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "FACESETD_LOGGING_FORMAT": "json"},
    )
    try:
        time.sleep(1.0)
        pos = prune(open_pipeline(data), "faceset_002/faces/0001.png", reason="followed")
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["id"] == pos and line["kind"] == "face_pruned" and line["payload"]["reason"] == "followed"
    finally:
        proc.kill()
        proc.wait()


def test_faces_added_while_no_model_opens_are_analysed_once_one_does(tmp_path: Path, models_root: Path) -> None:
    from corpus_factory import write_png

    data = tmp_path / "data"
    write_png(data / "corpus" / "faceset_001" / "faces" / "noise.png", 31)  # no face in it
    cli(data, "reconcile")  # no face pack installed: recorded, not analysed
    kinds = [json.loads(line)["kind"] for line in cli(data, "events", "--json").stdout.splitlines()]
    assert "face_added" in kinds and "face_analyzed" not in kinds
    cli(data, "reconcile")  # still none: nothing new is recorded
    assert [json.loads(line)["kind"] for line in cli(data, "events", "--json").stdout.splitlines()] == kinds
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    cli(data, "reconcile", env=env)
    events = [json.loads(line) for line in cli(data, "events", "--json").stdout.splitlines()]
    after = [e["kind"] for e in events[len(kinds):]]
    assert after[:2] == ["analysis_requested", "face_analyzed"] and "face_pruned" in after
    # pruned as zero-face (and the faceset, now empty with a prune, is quarantined as thin)
    assert [p.parent.name for p in (data / "corpus").rglob("noise.png")] == ["_dropped"]
    cli(data, "reconcile", env=env)  # and only once
    assert len(cli(data, "events", "--json").stdout.splitlines()) == len(events)


def test_a_corpus_png_no_decoder_reads_is_moved_aside_with_its_reason(tmp_path: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    faces = data / "corpus" / "faceset_001" / "faces"
    faces.mkdir(parents=True)
    (faces / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a truncated PNG
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    proc = cli(data, "reconcile", env=env)
    assert proc.returncode == 0
    events = [json.loads(line) for line in cli(data, "events", "--json", "--kind", "face_pruned").stdout.splitlines()]
    assert len(events) == 1
    assert events[0]["payload"]["check"] == "unreadable" and "cannot decode" in events[0]["payload"]["reason"]
    # the reason names the file, not the Python object its bytes were read through
    reason = events[0]["payload"]["reason"]
    assert "faceset_001/faces/broken.png" in reason and "object at 0x" not in reason
    assert [p.parent.name for p in (data / "corpus").rglob("broken.png")] == ["_dropped"]


def test_the_master_manifest_after_events_that_do_not_touch_it_equals_a_rebuild(tmp_path: Path) -> None:
    from daemon.immich.store import EventLogImportStore

    data = _adopted(tmp_path)
    p = open_pipeline(data)
    # events outside the corpus (the Immich poller's watermark and deferrals) move the log's head only
    store = EventLogImportStore(p.log, lambda asset: [])
    store.advance_watermark("http://immich.test", "alice", "2026-01-01T00:00:00.000Z")
    store.defer("http://immich.test", "alice", "3f0e1c2a-0000-4000-8000-000000000001")
    p.log.close()
    cli(data, "reconcile")
    live = projections(data / "corpus")
    master = json.loads((data / "corpus" / "manifest.json").read_text())
    head = json.loads(cli(data, "status", "--json").stdout)["log_position"]
    assert 0 < master["provenance"]["log_position"] < head  # the last event that changed it, not the head
    cli(data, "rebuild")
    assert projections(data / "corpus") == live


def test_a_pool_only_photo_leaves_the_corpus_a_rebuild_makes(tmp_path: Path, faces_dir: Path,
                                                                models_root: Path) -> None:
    """The first photo of an unseeded inbox sends its only face to the pool: no faceset changes, yet the corpus
    gets its (empty) master manifest, as `rebuild` writes it; the live and the rebuilt corpus are the same bytes."""
    import shutil

    from invariants import rebuild_identical

    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    shutil.copy(faces_dir / "identities/obama/obama.jpg", data / "inbox/obama.jpg")
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    cli(data, "reconcile", env=env)
    assert len(list((data / "corpus/_pool").glob("*.png"))) == 1
    master = json.loads((data / "corpus/manifest.json").read_text())
    assert master["facesets"] == [] and master["provenance"]["log_position"] == 0
    assert rebuild_identical(data, env) == []
