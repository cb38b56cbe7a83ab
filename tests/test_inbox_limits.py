"""What the inbox and the corpus refuse to decode, and what they wait for, through the real CLI and daemon.

- A decompression bomb (a ~140 KB PNG claiming 12000x12000) is moved aside as too_large from its header
  alone: the process's peak RSS stays far below the 432 MB one BGR decode of it costs (the original code
  peaked at 2.7 GB in the inbox, 1 GB in the corpus).
- A photo that does not decode while its writer is still at it (paused, or reopening the file per chunk)
  waits; it is rejected as unreadable only once unchanged for [limits] incomplete_grace_s.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_proc import DaemonProcess
from helpers import REPO, cli
from PIL import Image

from state import events as ev

BOMB_SIDE = 12000  # 144 MP: over the 100 MP default; one BGR decode is 432 MB
MAX_RSS_MB = 600  # the CLI with buffalo_sc loaded peaks near 200 MB; a decode of the bomb alone adds 432 MB


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_QUEUE_CLUSTER_INTERVAL_S": "1.0"}


def write_bomb(path: Path) -> Path:
    """A 12000x12000 black PNG: about 140 KB on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((BOMB_SIDE, BOMB_SIDE), np.uint8)).save(path)
    assert path.stat().st_size < 1_000_000
    return path


def run_measured(data: Path, *args: str, env: dict[str, str], timeout: float = 180) -> tuple[int, str, float]:
    """Run `facesetd --data-dir data ARGS` and return (exit code, stdout, peak RSS in MB of that process).

    The peak is the process's own VmHWM, written at exit: ru_maxrss (wait4, getrusage) would also count the
    forking parent's memory, which Linux carries across exec (a big pytest process would look like a bomb)."""
    full_env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", **env}
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "status"
        code = (
            "import atexit, runpy, sys\n"
            f"atexit.register(lambda: open({str(hwm)!r}, 'w').write(open('/proc/self/status').read()))\n"
            f"sys.argv = ['facesetd', '--data-dir', {str(data)!r}, *{list(args)!r}]\n"
            "runpy.run_module('daemon.cli', run_name='__main__')\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=REPO,
                              timeout=timeout)
        assert proc.returncode == 0, f"facesetd {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
        peak_kb = next(int(line.split()[1]) for line in hwm.read_text().splitlines() if line.startswith("VmHWM:"))
    return proc.returncode, proc.stdout, peak_kb / 1024


def events(data: Path, env: dict[str, str], kind: str | None = None) -> list[dict[str, Any]]:
    args = ["events", "--json"] + (["--kind", kind] if kind else [])
    return [json.loads(line)["payload"] | {"kind": json.loads(line)["kind"]}
            for line in cli(data, *args, env=env).stdout.splitlines()]


def photo_states(data: Path) -> dict[str, int]:
    """How many photos (receipts) the corpus state holds in each state."""
    conn = sqlite3.connect(f"file:{data / 'state' / 'events.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM photos GROUP BY state").fetchall())
    finally:
        conn.close()


# --- Decompression bombs ------------------------------------------------------------------------------


def test_a_bomb_in_the_inbox_is_rejected_as_too_large_without_decoding(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    write_bomb(data / "inbox" / "bomb.png")
    _rc, _out, peak = run_measured(data, "reconcile", env=env)
    rejected = events(data, env, "photo_rejected")
    assert [(e["path"], e["reason"]) for e in rejected] == [("bomb.png", "too_large")]
    assert "12000x12000" in rejected[0]["error"] and "max_pixels" in rejected[0]["error"]
    assert rejected[0]["dest"] == "_rejected/too_large/bomb.png"
    assert (data / "inbox" / "_rejected" / "too_large" / "bomb.png").exists()
    assert not events(data, env, "photo_processed")
    assert peak < MAX_RSS_MB, f"peak RSS {peak:.0f} MB: the bomb was decoded"


def test_the_pixel_limit_is_configurable(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    img = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    (data / "inbox").mkdir(parents=True)
    Image.fromarray(img).save(data / "inbox" / "small.png")
    cli(data, "reconcile", env={**env, "FACESETD_LIMITS_MAX_PIXELS": "100000"})  # 120000 pixels: over it
    rejected = events(data, env, "photo_rejected")
    assert [(e["path"], e["reason"]) for e in rejected] == [("small.png", "too_large")]
    assert "400x300" in rejected[0]["error"]


def test_a_bomb_in_the_corpus_is_moved_aside_as_too_large(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    write_bomb(data / "corpus" / "faceset_001" / "faces" / "bomb.png")
    _rc, _out, peak = run_measured(data, "reconcile", env=env)
    pruned = events(data, env, "face_pruned")
    assert [(e["path"], e["check"]) for e in pruned] == [("faceset_001/faces/bomb.png", "too_large")]
    assert "12000x12000" in pruned[0]["reason"] and pruned[0]["inputs"]["pixels"] == BOMB_SIDE ** 2
    assert [p.parent.name for p in (data / "corpus").rglob("bomb.png")] == ["_dropped"]
    assert not events(data, env, "face_analyzed")
    assert peak < MAX_RSS_MB, f"peak RSS {peak:.0f} MB: the bomb was decoded"


def test_a_bomb_from_immich_is_rejected_as_too_large(tmp_path: Path, env: dict[str, str]) -> None:
    from tests.immich_fake import FakeAsset, FakeImmich, big_face

    key = "fake-key-BombImport-5Rt1"
    bomb = write_bomb(tmp_path / "library" / "bomb.png")
    data = tmp_path / "data"
    config = tmp_path / "facesetd.toml"
    start = datetime.now(timezone.utc) - timedelta(days=1)
    with FakeImmich(api_key=key) as fake:
        # No size in the API: the poller measures the original itself (from its header).
        fake.add(FakeAsset(file=bomb, width=BOMB_SIDE, height=BOMB_SIDE, faces=[big_face(BOMB_SIDE, BOMB_SIDE)],
                           updated_at=start, created_at=start, size_unknown=True))
        config.write_text(f'[immich]\nurl = "{fake.url}"\ntimeout_s = 10.0\n'
                          '[[immich.users]]\nname = "alice"\napi_key_env = "IMMICH_KEY_ALICE"\n')
        _rc, out, peak = run_measured(data, "--config", str(config), "immich", "poll", "--once",
                                      env={**env, "IMMICH_KEY_ALICE": key})
        assert fake.validation_errors == []
    assert "delivered 1" in out
    rejected = events(data, env, "photo_rejected")
    assert [(e["root"], e["reason"]) for e in rejected] == [("staging", "too_large")]
    assert rejected[0]["dest"].startswith("_rejected/too_large/staging/")
    assert (data / "inbox" / rejected[0]["dest"]).exists()
    assert peak < MAX_RSS_MB, f"peak RSS {peak:.0f} MB: the bomb was decoded"


# --- Photos still being written --------------------------------------------------------------------------


def _settled(d: DaemonProcess, n: int) -> bool:
    """The daemon has looked at (deferred or rejected) n partial versions of the photo."""
    kinds = d.kinds()
    return kinds.count("photo_deferred") + kinds.count("photo_rejected") >= n


def test_a_writer_that_pauses_longer_than_settle_gets_its_photo_processed(
        tmp_path: Path, faces_dir: Path, daemon: Any) -> None:
    data = tmp_path / "data"
    d = daemon(data)
    payload = (faces_dir / "identities" / "biden" / "biden.jpg").read_bytes()
    target = data / "inbox" / "slow.jpg"
    with open(target, "wb") as f:  # held open throughout: no close event until the end
        f.write(payload[: len(payload) // 2])
        f.flush()
        time.sleep(3.0)  # longer than [watch] settle_s (2 s): the half photo is received
        d.wait_for(lambda: _settled(d, 1), "the half photo looked at", timeout=60)
        assert "photo_rejected" not in d.kinds(), "the half-written photo was rejected"
        f.write(payload[len(payload) // 2:])
    d.wait_for(lambda: "photo_processed" in d.kinds(), "the photo processed", timeout=60)
    time.sleep(1.0)
    assert d.terminate() == 0
    evs = d.events()
    assert [e["kind"] for e in evs if e["kind"].startswith("photo_")] == [
        "photo_received", "photo_deferred", "photo_received", "photo_processed"]
    done = next(e for e in evs if e["kind"] == "photo_processed")
    assert done["dest"] == "_processed/slow.jpg" and done["faces"]
    assert (data / "inbox" / "_processed" / "slow.jpg").read_bytes() == payload
    assert not (data / "inbox" / "_rejected").exists()
    assert photo_states(data) == {"superseded": 1, "processed": 1}


def test_a_writer_reopening_the_file_per_chunk_gets_one_photo_processed(
        tmp_path: Path, faces_dir: Path, daemon: Any) -> None:
    data = tmp_path / "data"
    d = daemon(data)
    payload = (faces_dir / "identities" / "obama" / "obama.jpg").read_bytes()
    target = data / "inbox" / "chunks.jpg"
    step = len(payload) // 3 + 1
    chunks = [payload[i: i + step] for i in range(0, len(payload), step)]
    assert len(chunks) == 3
    for n, chunk in enumerate(chunks[:-1], start=1):
        with open(target, "ab") as f:  # each chunk closes the file: a close event every time
            f.write(chunk)
        time.sleep(3.0)
        d.wait_for(lambda n=n: _settled(d, n), f"partial {n} looked at", timeout=60)
        assert "photo_rejected" not in d.kinds(), f"partial {n} was rejected"
    with open(target, "ab") as f:
        f.write(chunks[-1])
    d.wait_for(lambda: "photo_processed" in d.kinds(), "the photo processed", timeout=60)
    time.sleep(1.0)
    assert d.terminate() == 0
    kinds = d.kinds()
    assert kinds.count("photo_processed") == 1 and "photo_rejected" not in kinds
    assert kinds.count("photo_received") == 3 and kinds.count("photo_deferred") == 2
    assert (data / "inbox" / "_processed" / "chunks.jpg").read_bytes() == payload
    assert not (data / "inbox" / "_rejected").exists()
    assert photo_states(data) == {"superseded": 2, "processed": 1}


def test_a_truncated_photo_waits_then_is_rejected_once_unchanged_for_the_grace(
        tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    env = {**env, "FACESETD_LIMITS_INCOMPLETE_GRACE_S": "10"}  # room for two CLI runs on a busy machine
    payload = (faces_dir / "identities" / "biden" / "biden.jpg").read_bytes()
    target = data / "inbox" / "cut.jpg"
    target.parent.mkdir(parents=True)
    target.write_bytes(payload[: len(payload) // 2])
    written = time.time()

    first = cli(data, "reconcile", env=env)  # fresh: its writer may come back
    assert "waiting: inbox/cut.jpg does not decode yet" in first.stdout
    assert target.exists() and not (data / "inbox" / "_rejected").exists()
    assert [e["kind"] for e in events(data, env) if e["kind"].startswith("photo_")] == [
        "photo_received", "photo_deferred"]
    assert json.loads(cli(data, "reconcile", "--json", env=env).stdout)["waiting"] == ["cut.jpg"]

    time.sleep(max(0.0, written + 10.5 - time.time()))  # unchanged for the grace now
    last = cli(data, "reconcile", env=env)
    assert "waiting" not in last.stdout
    rejected = events(data, env, "photo_rejected")
    assert [(e["path"], e["reason"]) for e in rejected] == [("cut.jpg", "unreadable")]
    assert (data / "inbox" / "_rejected" / "unreadable" / "cut.jpg").read_bytes() == payload[: len(payload) // 2]
    assert not target.exists()
    states = photo_states(data)
    assert states.get("rejected") == 1 and set(states) == {"superseded", "rejected"}
    assert "photo_processed" not in [e["kind"] for e in events(data, env)]


def test_a_deferred_photo_whose_file_is_gone_is_closed_as_vanished(tmp_path: Path) -> None:
    """retry_due in process (no models needed: the photo never decodes), the way the daemon will call it. The
    vanished photo is received again (unread) and closed by the router: one open receipt, one verdict (it was
    closed without a receipt before, which the invariants call a photo finished twice)."""
    from helpers import open_pipeline
    from invariants import photos_accounted_once

    from daemon.deferred import retry_due, waiting
    from daemon.inbox import photo_event

    data = tmp_path / "data"
    pipeline = open_pipeline(data)
    inbox = pipeline.config.inbox_dir
    inbox.mkdir(parents=True)
    (inbox / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)  # a JPEG cut short
    (inbox / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x01" * 100)
    received = [photo_event(inbox, "a.jpg"), photo_event(inbox, "b.jpg")]
    pipeline.log.append(received)
    pipeline.settle()
    assert [p.path for p in pipeline.state.deferred_photos()] == ["a.jpg", "b.jpg"]
    assert pipeline.state.photo_waiting("inbox", "a.jpg", received[0].sha256)
    assert not pipeline.state.photo_waiting("inbox", "a.jpg", "0" * 64)
    assert [w.path for w in waiting(pipeline)] == ["a.jpg", "b.jpg"]

    assert retry_due(pipeline) == 0  # within the grace: nothing to do
    (inbox / "a.jpg").unlink()
    assert retry_due(pipeline) == 1  # a.jpg: gone, received again unread
    pipeline.settle()
    assert [p.path for p in pipeline.state.deferred_photos()] == ["b.jpg"]
    old = time.time() - 601
    os.utime(inbox / "b.jpg", (old, old))  # b.jpg: unchanged past the default grace, received again
    assert retry_due(pipeline) == 1
    pipeline.settle()
    assert pipeline.state.deferred_photos() == []
    rows = pipeline.state.query("SELECT path, state, dest FROM photos ORDER BY position")
    assert rows[0] == ("a.jpg", "superseded", None) and rows[1] == ("b.jpg", "superseded", None)
    assert rows[2] == ("a.jpg", "rejected", "")
    assert rows[3][:2] == ("b.jpg", "rejected") and rows[3][2] == "_rejected/unreadable/b.jpg"
    events = [se.event for se in pipeline.log.read(0, 100)]
    again = [e for e in events if isinstance(e, ev.PhotoReceived) and e.unread]
    assert [(e.path, e.sha256, e.unread) for e in again] == [("a.jpg", received[0].sha256, "vanished")]
    vanished = [e for e in events if isinstance(e, ev.PhotoRejected) and e.path == "a.jpg"]
    assert [e.reason for e in vanished] == ["vanished"] and "disappeared while it waited" in vanished[0].error
    kinds = [e.KIND for e in events]
    assert kinds.count("photo_rejected") == 2 and kinds.count("photo_deferred") == 2
    assert kinds.count("photo_received") == 4
    assert not photos_accounted_once(data, [received[1].sha256])


def test_the_daemon_rejects_a_truncated_photo_after_the_grace(
        tmp_path: Path, faces_dir: Path, daemon: Any) -> None:
    data = tmp_path / "data"
    d = daemon(data, FACESETD_LIMITS_INCOMPLETE_GRACE_S="4")
    payload = (faces_dir / "identities" / "biden" / "biden.jpg").read_bytes()
    target = data / "inbox" / "cut.jpg"
    target.write_bytes(payload[: len(payload) // 2])
    d.wait_for(lambda: "photo_deferred" in d.kinds(), "the truncated photo deferred", timeout=60)
    assert target.exists()
    d.wait_for(lambda: "photo_rejected" in d.kinds(), "the truncated photo rejected after the grace", timeout=60)
    assert d.terminate() == 0
    rejected = [e for e in d.events() if e["kind"] == "photo_rejected"]
    assert [(e["path"], e["reason"]) for e in rejected] == [("cut.jpg", "unreadable")]
    assert (data / "inbox" / "_rejected" / "unreadable" / "cut.jpg").exists()
