"""The real daemon as a process: systemd notifications, SIGTERM, restart without duplicates."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from corpus_factory import batch_corpus, write_png
from daemon_proc import DaemonProcess
from helpers import cli, projections


def _model_env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}


def test_notify_socket_gets_ready_watchdog_status_and_stopping(tmp_path: Path, models_root: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    env = {**_model_env(models_root), "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    d = DaemonProcess(tmp_path / "data", env).start()
    received: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        any("WATCHDOG=1" in m for m in received) and any("STATUS=" in m for m in received)
    ):
        with contextlib.suppress(TimeoutError):
            received.append(sock.recv(4096).decode())
    assert received[0] == "READY=1"
    assert sum("WATCHDOG=1" in m for m in received) >= 1
    assert any(m.startswith("STATUS=queue 0") for m in received)
    assert d.terminate() == 0
    rest = []
    try:
        while True:
            rest.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    assert "STOPPING=1" in rest


def test_sigterm_exits_0_and_a_restart_resumes_without_duplicates(tmp_path: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    env = _model_env(models_root)
    d = DaemonProcess(data, env).start()
    d.wait_for(lambda: "corpus_adopted" in d.kinds(), "the corpus adopted")  # the loop's first work, after READY
    assert d.kinds().count("corpus_adopted") == 1
    write_png(data / "corpus/faceset_002/faces/late.png", 4242)
    d.wait_for(lambda: any(e["kind"] == "face_added" and e["subject"].endswith("late.png") for e in d.events()),
               "the new face recorded")
    assert d.terminate() == 0
    before = d.events()
    d2 = DaemonProcess(data, env).start()
    time.sleep(1.0)
    assert d2.terminate() == 0
    after = d2.events()
    added = [e["subject"] for e in after if e["kind"] == "face_added"]
    assert len(added) == len(set(added)), "a face was recorded twice"
    assert [e for e in after[: len(before)]] == before
    assert "corpus_adopted" not in [e["kind"] for e in after[len(before):]]
    recovered = projections(data / "corpus")
    cli(data, "rebuild", env=env)
    assert projections(data / "corpus") == recovered


def test_sighup_reloads_the_config_and_a_bad_edit_keeps_the_old_one(tmp_path: Path, models_root: Path) -> None:
    import signal

    config = tmp_path / "facesetd.toml"
    config.write_text("[thresholds]\nnear_dup_similarity = 0.95\n")
    env = {**_model_env(models_root), "FACESETD_CONFIG": str(config)}
    d = DaemonProcess(tmp_path / "data", env).start()
    assert d.proc is not None
    config.write_text("[thresholds]\nnear_dup_similarity = 0.97\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: "config reloaded" in d.output(), "the reload")
    config.write_text("[thresholds]\nnear_dup_similarit = 0.97\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: "config reload failed" in d.output(), "the failed reload")
    assert "thresholds.near_dup_similarit: unknown key" in d.output()
    time.sleep(0.5)
    assert d.proc.poll() is None, "a bad config edit must not stop the daemon"
    assert d.terminate() == 0


def test_without_models_the_daemon_keeps_running_and_catches_up_once_they_come(
    tmp_path: Path, faces_dir: Path, models_root: Path
) -> None:
    import shutil

    empty = tmp_path / "models"
    empty.mkdir()
    data = tmp_path / "data"
    (data / "inbox" / "faceset_001").mkdir(parents=True)
    shutil.copy(faces_dir / "identities" / "biden" / "biden.jpg", data / "inbox" / "faceset_001" / "b.jpg")
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(empty),
           "FACESETD_QUEUE_MODEL_RETRY_S": "1.0"}
    d = DaemonProcess(data, env).start()
    d.wait_for(lambda: "models unavailable" in d.output(), "the models-unavailable error")
    assert "photo_received" in d.kinds() and "photo_processed" not in d.kinds()
    # a face PNG added by hand while no model is there: recorded, its checks wait
    write_png(data / "corpus/faceset_001/faces/by_hand.png", 77)
    d.wait_for(lambda: any(e["kind"] == "face_added" and e["subject"].endswith("by_hand.png") for e in d.events()),
               "the hand-added face recorded")
    time.sleep(1.5)
    assert d.proc is not None and d.proc.poll() is None
    # the pack arrives: the waiting photo is routed and the hand-added PNG analysed (and pruned: no face)
    shutil.copytree(models_root / "models", empty / "models")
    d.wait_for(lambda: "photo_processed" in d.kinds(), "the photo processed once models came", timeout=60)
    d.wait_for(lambda: any(e["kind"] == "face_pruned" and e["subject"].endswith("by_hand.png") for e in d.events()),
               "the hand-added PNG analysed once models came", timeout=60)
    assert d.terminate() == 0
    assert d.kinds().count("photo_processed") == 1
