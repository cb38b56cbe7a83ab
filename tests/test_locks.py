"""One writer per data folder, and a daemon that outlives another process's long write lock on the log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog
import structlog.testing
from daemon_proc import DaemonProcess
from helpers import cli

IDS = "identities"

# Holds the log's write lock (BEGIN IMMEDIATE) until its stdin closes or HOLD seconds pass.
HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
print("released", flush=True)
"""


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("facesetd: error: ") and "Traceback" not in proc.stderr
    return lines[0]


def test_a_second_run_exits_1_naming_the_first_which_keeps_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data).start()
    assert d.proc is not None
    try:
        second = cli(data, "run", check=False, timeout=60)
        assert second.returncode == 1
        line = _one_line(second)
        assert f"another facesetd (pid {d.proc.pid}, run) is using {data}" in line and "stop it first" in line
        time.sleep(0.5)
        assert d.proc.poll() is None, "the first daemon stopped"
        assert (data / "state" / "facesetd.lock").read_text().split() == [str(d.proc.pid), "run"]
    finally:
        d.terminate()


def test_writing_verbs_wait_then_refuse_while_read_only_verbs_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data).start()
    assert d.proc is not None
    pid = d.proc.pid
    try:
        # reconcile beside the daemon: nothing for it to do, said at once (the daemon does not end by itself)
        t0 = time.monotonic()
        beside = cli(data, "reconcile")
        assert time.monotonic() - t0 < 8.0
        assert f"facesetd run (pid {pid}) is working on this data folder" in beside.stdout
        assert json.loads(cli(data, "reconcile", "--json").stdout) == {"left_to_daemon": {"pid": pid}}
        # the corrections and rebuild are handed to the daemon (daemon/control.py): its answer at once, no wait
        t0 = time.monotonic()
        assert cli(data, "rebuild", "--wait", "0").stdout.startswith("rebuilt projections from ")
        for verb, refusal in ((["restore", "1"], "event 1"), (["label", "faceset_001", "Ann"], "no faceset faceset_001"),
                              (["move", "x", "--to", "pool"], "no face x"), (["promote", "x"], "x")):
            proc = cli(data, *verb, "--wait", "0", check=False)
            assert proc.returncode == 1 and refusal in _one_line(proc), (verb, proc.stderr)
            assert "another facesetd" not in proc.stderr
        assert time.monotonic() - t0 < 30.0  # five verbs, each its own interpreter
        # the read-only verbs take no lock
        status = json.loads(cli(data, "status", "--json").stdout)
        assert status["corpus"] == str(data / "corpus")
        assert cli(data, "events", "--json").returncode == 0
        assert cli(data, "config").returncode == 0
        assert cli(data, "reconcile", "--dry-run").returncode == 0
        assert d.proc.poll() is None
    finally:
        d.kill()  # kill -9: the kernel drops the lock with the process
    assert cli(data, "reconcile", "--wait", "0").returncode == 0
    d.log_file.unlink()  # the next daemon's "facesetd running" must be its own
    again = DaemonProcess(data).start()
    assert again.terminate() == 0


def test_a_one_shot_holder_is_named_and_waited_for(tmp_path: Path) -> None:
    from daemon.lock import DataLock

    data = tmp_path / "data"
    lock = DataLock(data / "state", data)
    lock.acquire("rebuild")
    try:
        proc = cli(data, "restore", "1", "--wait", "0", check=False, timeout=60)
        assert proc.returncode == 1
        assert f"(pid {os.getpid()}, rebuild) is using {data}; wait for it to finish" in _one_line(proc)
        # the daemon does not fail a boot on a one-shot verb: it waits for it, then starts
        d = DaemonProcess(data).start(wait=False)
        try:
            time.sleep(1.5)
            assert d.proc is not None and d.proc.poll() is None, d.output()
            assert "facesetd running" not in d.output()
        finally:
            lock.close()
        d.wait_for(lambda: "facesetd running" in d.output(), "the daemon starting once the rebuild let go")
        assert d.terminate() == 0
    finally:
        lock.close()
    # a writer that waits long enough gets the lock once the holder lets go
    lock.acquire("rebuild")
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "rebuild", "--wait", "30"],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(1.0)
    assert proc.poll() is None, "rebuild did not wait"
    lock.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "rebuilt projections" in out


def test_a_log_write_lock_held_past_the_busy_timeout_is_survived(
    tmp_path: Path, faces_dir: Path, models_root: Path
) -> None:
    data = tmp_path / "data"
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
           "FACESETD_QUEUE_LOG_BUSY_TIMEOUT_S": "1.0"}
    d = DaemonProcess(data, env).start()
    assert d.proc is not None
    hold_s = 6.0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data / "state" / "events.sqlite3"), str(hold_s)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        (data / "inbox" / "faceset_001").mkdir(parents=True, exist_ok=True)
        shutil.copy(faces_dir / IDS / "obama" / "obama.jpg", data / "inbox" / "faceset_001" / "obama.jpg")
        d.wait_for(lambda: "event log busy" in d.output(), "the busy log reported", timeout=30)
        assert "photo_received" not in d.kinds()
        assert holder.stdout.readline().strip() == "released"
        holder.wait(10)
        d.wait_for(lambda: "photo_processed" in d.kinds(), "the photo processed after the lock was released",
                   timeout=120)
        d.wait_for(lambda: "event log writable again" in d.output(), "the end of the busy spell logged")
        out = d.output()
        assert out.count("event log busy") == 1, "the busy spell is logged once"
        assert "database is locked" not in out and "Traceback" not in out
        assert d.proc.poll() is None
        assert d.terminate() == 0
    finally:
        if holder.poll() is None:
            holder.kill()
        if d.proc.poll() is None:
            d.kill()


def test_a_one_shot_verb_gives_up_on_a_held_log_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli(data, "reconcile")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data / "state" / "events.sqlite3"), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        proc = cli(data, "reconcile", "--wait", "1", check=False, env={"FACESETD_QUEUE_LOG_BUSY_TIMEOUT_S": "0.5"})
        assert proc.returncode == 1 and time.monotonic() - t0 < 20
        line = _one_line(proc)
        assert f"event log {data / 'state' / 'events.sqlite3'} is locked by another process (waited 1 s" in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)


def test_an_immich_poll_on_a_busy_log_stops_and_the_next_poll_imports(tmp_path: Path, faces_dir: Path) -> None:
    import sqlite3

    from daemon.config import ImmichSettings, ImmichUser
    from daemon.immich.scheduler import ImmichScheduler
    from daemon.immich.store import EventLogImportStore
    from state import events as ev
    from state.corpus_state import CorpusState
    from state.eventlog import EventLog
    from tests.immich_fake import FakeImmich, library

    log = EventLog(tmp_path / "events.sqlite3", busy_timeout_s=0.3)
    CorpusState(log)  # the tables the store reads beside the log
    store = EventLogImportStore(log, lambda asset: [], busy_hold_s=0.5)
    photos = sorted((faces_dir / IDS / "obama").glob("*.jpg"))[:3]
    other = sqlite3.connect(str(log.path), isolation_level=None)
    with FakeImmich(api_key="fake-key-busy") as fake:
        library(fake, photos)
        settings = ImmichSettings(url=fake.url, interval_minutes=2 / 60, page_size=10, workers=2,
                                  users=(ImmichUser("alice", "FACESETD_T_BUSY"),))
        other.execute("BEGIN IMMEDIATE")  # another process keeps the write lock during the first pass
        sched = ImmichScheduler(settings, store, tmp_path / "staging", environ={"FACESETD_T_BUSY": "fake-key-busy"},
                               min_face_px=90)
        with structlog.testing.capture_logs() as logs:
            sched.start()
            try:
                time.sleep(1.0)  # the first pass runs at once and meets the busy log
                assert log.head() == 0
                other.execute("ROLLBACK")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and len(log.read(kinds=[ev.ImmichAssetImported.KIND])) < len(photos):
                    time.sleep(0.2)
            finally:
                sched.shutdown()
    assert [e["event"] for e in logs].count("immich import paused: the event log is busy; the next poll tries again") == 1
    imported = log.read(kinds=[ev.ImmichAssetImported.KIND])
    assert len(imported) == len(photos), "the next poll did not import what the busy one could not"
    assert len(log.read(kinds=[ev.ImmichWatermarkAdvanced.KIND])) == 1
    other.close()
    log.close()
