"""The real daemon (a subprocess) on temporary folders, fed through its inbox with real photos."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess
from helpers import cli, projections
from PIL import Image

IDS = "identities"


def _env(models_root: Path, **extra: str) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_QUEUE_CLUSTER_INTERVAL_S": "1.0", **extra}


def _faceset_sources(data: Path, faceset: str) -> list[str]:
    path = data / "corpus" / faceset / "manifest.json"
    if not path.exists():
        return []
    return [f["source"].get("photo", "") for f in json.loads(path.read_text())["faces"]]


def _processed(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "inbox" / "_processed").rglob("*.jpg"))


def test_seed_then_join_then_pool_until_the_gate(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data, _env(models_root, FACESETD_IDENTITY_MIN_NEW_FACESET="3")).start()
    inbox = data / "inbox"
    # a user seeds a person through inbox/faceset_001/
    (inbox / "faceset_001").mkdir(parents=True)
    shutil.copy(faces_dir / IDS / "obama" / "obama.jpg", inbox / "faceset_001" / "obama.jpg")
    d.wait_for(lambda: len(_faceset_sources(data, "faceset_001")) == 1, "the seed face")
    # later photos of the same person join it; other people do not
    for name in ("obama1.jpg", "obama2.jpg"):
        shutil.copy(faces_dir / IDS / "obama" / name, inbox / name)
    shutil.copy(faces_dir / IDS / "lin_manuel_miranda" / "lin-manuel-miranda.jpg", inbox / "lin.jpg")
    d.wait_for(lambda: len(_processed(data)) == 4, "four photos processed")
    d.wait_for(lambda: len(_faceset_sources(data, "faceset_001")) == 3, "obama photos joined faceset_001")
    assert all("obama" in s for s in _faceset_sources(data, "faceset_001"))
    # a new person waits in the pool below the gate (3 here) ...
    for name in ("alex-lacamoire.jpg", "alex_lacamoire1.jpg"):
        shutil.copy(faces_dir / IDS / "alex_lacamoire" / name, inbox / name)
    d.wait_for(lambda: len(_processed(data)) == 6, "six photos processed")
    time.sleep(2.5)  # at least two runs of the clustering job
    assert not (data / "corpus" / "faceset_002").exists()
    # ... and becomes the next-numbered faceset once the gate is reached
    shutil.copy(faces_dir / IDS / "alex_lacamoire" / "img1.jpg", inbox / "img1.jpg")
    d.wait_for(lambda: len(_faceset_sources(data, "faceset_002")) == 3, "alex promoted to faceset_002", timeout=60)
    assert all("alex" in s or "img1" in s for s in _faceset_sources(data, "faceset_002"))
    assert d.terminate() == 0
    kinds = [e["kind"] for e in d.events()]
    assert kinds.count("photo_received") == 7 and kinds.count("photo_processed") == 7


@pytest.mark.parametrize("begun", [False, True], ids=["after-start", "while-starting"])
def test_a_photo_written_slowly_is_taken_once_complete(tmp_path: Path, faces_dir: Path, models_root: Path,
                                                       begun: bool) -> None:
    """Written chunk by chunk through one open file; with `begun`, the first chunk is there before the daemon
    starts, so its start-up listing finds the file half-written and must leave it to the watcher."""
    data = tmp_path / "data"
    payload = (faces_dir / IDS / "biden" / "biden.jpg").read_bytes()
    chunk = len(payload) // 5 + 1
    target = data / "inbox" / "slow.jpg"
    target.parent.mkdir(parents=True)
    # settle_s well past the writer's 0.3 s gaps, so a loaded machine's stall of a second or two is not an end
    daemon = DaemonProcess(data, _env(models_root, FACESETD_WATCH_SETTLE_S="5"))
    d = None if begun else daemon.start()
    with open(target, "wb") as f:
        if begun:
            f.write(payload[:chunk])
            f.flush()
            d = daemon.start()
        assert d is not None
        for i in range(chunk if begun else 0, len(payload), chunk):
            f.write(payload[i : i + chunk])
            f.flush()
            time.sleep(0.3)
    d.wait_for(lambda: "photo_processed" in d.kinds(), "the photo processed")
    time.sleep(1.5)
    assert d.terminate() == 0
    received = [e for e in d.events() if e["kind"] == "photo_received"]
    assert len(received) == 1 and received[0]["size"] == len(payload)
    assert "photo_rejected" not in d.kinds()


KILL_POINTS = [
    "inbox:crops_written", "inbox:photo_moved", "dispatch:before_commit", "move:after_rename", "write:manifest.json",
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_mid_batch_then_restart(tmp_path: Path, faces_dir: Path, models_root: Path, point: str) -> None:
    data = tmp_path / "data"
    marker = tmp_path / "crashed"
    photos = sorted((faces_dir / IDS / "obama").glob("obama[0-9].jpg")) + [faces_dir / "group" / "two_people_obama_biden.jpg"]
    (data / "inbox" / "faceset_001").mkdir(parents=True)
    shutil.copy(faces_dir / IDS / "obama" / "obama.jpg", data / "inbox" / "faceset_001" / "seed.jpg")
    # a re-encoded, slightly smaller copy: its crop is a near-duplicate, so a prune (a move) happens
    copy = tmp_path / "obama1_copy.jpg"
    with Image.open(faces_dir / IDS / "obama" / "obama1.jpg") as im:
        im.resize((im.width * 97 // 100, im.height * 97 // 100)).save(copy, quality=90)
    photos.append(copy)
    env = _env(models_root, FACESETD_CRASHPOINT=point, FACESETD_CRASHPOINT_FILE=str(marker))
    d = DaemonProcess(data, env).start(wait=False)  # it may reach the crash point while starting
    for p in photos:
        shutil.copy(p, data / "inbox" / p.name)
    d.wait_for(marker.exists, f"crash point {point}", timeout=120)
    d.kill()
    # restart without the crash point: it must finish everything, once
    d2 = DaemonProcess(data, _env(models_root)).start()
    d2.wait_for(lambda: d2.kinds().count("photo_processed") == len(photos) + 1, "every photo processed", timeout=120)
    time.sleep(1.5)
    assert d2.terminate() == 0
    events = d2.events()
    received = [e["sha256"] for e in events if e["kind"] == "photo_received"]
    processed = [e["path"] for e in events if e["kind"] == "photo_processed"]
    assert len(received) == len(set(received)) == len(photos) + 1, "a photo was received twice"
    assert len(processed) == len(set(processed)) == len(photos) + 1, "a photo was processed twice"
    assert sorted(p.name for p in (data / "inbox" / "_processed").rglob("*.jpg")) == sorted(
        [p.name for p in photos] + ["seed.jpg"])
    decided = [e["position"] for e in events if e["kind"] in ("face_pruned", "faceset_quarantined", "faceset_promoted")]
    completed = [e["decision"] for e in events if e["kind"] == "move_completed"]
    assert sorted(decided) == sorted(completed), "a decided move was never completed"
    recovered = projections(data / "corpus")
    cli(data, "rebuild", env=_env(models_root))
    assert projections(data / "corpus") == recovered
