"""A damaged event log (state/logcheck.py), on the user's path: bytes flipped inside the SQLite file of a real data
folder (real photos reconciled with the real models), then the real CLI verbs and the real daemon subprocess. Each
stops with one line naming the damaged positions and exits 65 (no traceback), and nothing in the data folder
changes; a sound log passes the check."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess, NotifyListener
from helpers import cli

from state import events as ev
from state.errors import EXIT_LOG_DAMAGED
from state.eventlog import EventLog
from state.logcheck import WINDOW, LogCheck, check_log

PHOTOS = ("identities/obama/obama.jpg", "identities/obama/obama1.jpg", "identities/biden/biden.jpg",
          "no_face/pp7.jpg")
# What a verb's data folder work leaves behind that is not data: the check's own record, SQLite's side files, the lock.
NOT_DATA = ("log_check.json", "events.sqlite3-wal", "events.sqlite3-shm", "facesetd.lock")


@pytest.fixture(scope="module")
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, env: dict[str, str]) -> Path:
    """A data folder whose inbox of real photos was reconciled once (the daemon stopped: its WAL folded in)."""
    data = tmp_path_factory.mktemp("logcheck") / "data"
    (data / "inbox").mkdir(parents=True)
    for rel in PHOTOS:
        shutil.copy(faces_dir / rel, data / "inbox" / Path(rel).name)
    cli(data, "reconcile", env=env)
    return data


@pytest.fixture
def data(reconciled: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(reconciled, copy)
    assert not (copy / "state/events.sqlite3-wal").exists()  # every page is in the file itself
    return copy


def _log(data: Path) -> Path:
    return data / "state" / "events.sqlite3"


def _event_at(data: Path, kind: str) -> tuple[int, str]:
    """(position, payload) of the first event of `kind`, read-only."""
    conn = sqlite3.connect(f"file:{_log(data)}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT position, payload FROM events WHERE kind = ? ORDER BY position LIMIT 1",
                            (kind,)).fetchone()
    finally:
        conn.close()


def _flip_payload(data: Path, kind: str) -> int:
    """Flip the bits of one byte inside the stored payload of the first `kind` event (its first byte, '{': the
    payload is no longer JSON); returns its position. SQLite's structure is intact."""
    position, payload = _event_at(data, kind)
    raw = _log(data).read_bytes()
    assert raw.count(payload.encode()) == 1  # the row's one copy in the file
    _patch(data, raw.index(payload.encode()), bytes([raw[raw.index(payload.encode())] ^ 0xFF]))
    return position


def _damage_page(data: Path, kind: str) -> int:
    """Overwrite the header of the b-tree page that holds the first `kind` event (its page type and cell count):
    SQLite's structure is damaged there. Returns the event's position."""
    position, payload = _event_at(data, kind)
    raw = _log(data).read_bytes()
    page_size = int.from_bytes(raw[16:18], "big")
    page = raw.index(payload.encode()) // page_size
    assert page > 0  # not the first page: the file stays an SQLite file
    _patch(data, page * page_size, b"\xff" * 8)
    return position


def _patch(data: Path, offset: int, new: bytes) -> None:
    """Overwrite bytes of the log file in place, as a failing disk does (the file is never shorter meanwhile)."""
    with open(_log(data), "r+b") as f:
        f.seek(offset)
        f.write(new)


def _snapshot(data: Path) -> dict[str, str]:
    """sha256 of every file of the data folder (the log included), but what NOT_DATA names."""
    return {p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file() and p.name not in NOT_DATA}


def _run(data: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli(data, *args, env=env, check=False)


def _one_line(proc: subprocess.CompletedProcess[str], position: int) -> str:
    """The verb stopped with exit 65 and one line on stderr naming `position`, and no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_LOG_DAMAGED, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("facesetd: error: event log "), proc.stderr
    first, last = _named(lines[0])
    assert first <= position <= last, lines[0]
    return lines[0]


def _named(line: str) -> tuple[int, int]:
    """The first and last position a damage line names ("at log position 5", "at log positions 5-7 (3 events)")."""
    found = re.search(r"is damaged at log positions? (\d+)(?:-(\d+))?", line)
    assert found, line
    return int(found.group(1)), int(found.group(2) or found.group(1))


def test_a_sound_log_passes_the_check_and_doctor_and_status_say_so(data: Path, env: dict[str, str]) -> None:
    check = check_log(_log(data))
    conn = sqlite3.connect(f"file:{_log(data)}?mode=ro", uri=True)
    head = conn.execute("SELECT MAX(position) FROM events").fetchone()[0]
    conn.close()
    assert check.done and check.damage is None and check.head == head > 0
    doctor = _run(data, env, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"event log: sound ({check.head} events read back" in doctor.stdout, doctor.stdout
    status = _run(data, env, "status")
    assert status.returncode == 0 and f"({check.head} events read back;" in status.stdout, status.stdout


@pytest.mark.damaged_log
@pytest.mark.parametrize("verb", ["events", "rebuild", "reconcile"])
def test_flipped_payload_bytes_stop_the_verb_with_one_line_and_exit_65(data: Path, env: dict[str, str],
                                                                      verb: str) -> None:
    position = _flip_payload(data, "photo_processed")  # an event every projection was built from
    before = _snapshot(data)
    line = _one_line(_run(data, env, verb), position)
    assert f"event {position}: photo_processed payload is not JSON" in line, line
    assert _snapshot(data) == before  # the log's bytes too: nothing was written into it


@pytest.mark.damaged_log
def test_the_daemon_finds_flipped_payload_bytes_at_start_and_exits_65_once(data: Path, env: dict[str, str]) -> None:
    position = _flip_payload(data, "pool_face_added")
    before = _snapshot(data)
    notify = NotifyListener()
    try:
        daemon = DaemonProcess(data, env={**env, "NOTIFY_SOCKET": str(notify.path)}).start()
        assert daemon.proc is not None and daemon.proc.wait(60) == EXIT_LOG_DAMAGED, daemon.output()
        errors = [line for line in daemon.lines() if line["level"] == "error"]
        assert len(errors) == 1 and f"is damaged at log position {position}: event {position}:" in errors[0]["event"]
        assert "Traceback" not in daemon.output() and "startup reconcile done" not in daemon.output()
        assert any(f"is damaged at log position {position}" in s for s in notify.statuses_since(0))  # systemctl status
    finally:
        notify.close()
    assert _snapshot(data) == before
    # Then every verb stops at once with the line the daemon recorded, the daemon again included.
    for verb in ("events", "rebuild", "reconcile", "status", "label"):
        args = ("label", "faceset_001", "Joe") if verb == "label" else (verb,)
        assert _one_line(_run(data, env, *args), position) == f"facesetd: error: {errors[0]['event']}"
    doctor = _run(data, env, "doctor")
    assert doctor.returncode == EXIT_LOG_DAMAGED and errors[0]["event"] in doctor.stdout, doctor.stdout
    again = DaemonProcess(data, env=env).start(wait=False)
    assert again.proc is not None and again.proc.wait(60) == EXIT_LOG_DAMAGED
    assert again.output().count("is damaged at log position") == 2  # its first run's line, and this one's
    assert _snapshot(data) == before


@pytest.mark.damaged_log
def test_a_damaged_page_stops_the_daemon_before_it_starts_anything(data: Path, env: dict[str, str]) -> None:
    position = _damage_page(data, "pool_face_added")
    before = _snapshot(data)
    daemon = DaemonProcess(data, env=env).start(wait=False)
    assert daemon.proc is not None and daemon.proc.wait(60) == EXIT_LOG_DAMAGED, daemon.output()
    out = daemon.output()
    lines = [line for line in out.splitlines() if "is damaged" in line]
    assert len(lines) == 1 and lines[0].startswith("facesetd: error: event log "), out
    assert "SQLite's structure check:" in lines[0] and "cannot be read" in lines[0], lines[0]
    first, last = _named(lines[0])
    assert first <= position <= last  # the positions on the damaged page, the one we broke among them
    assert "Traceback" not in out and "facesetd running" not in out  # no watcher, no socket, no READY=1
    for verb in ("events", "rebuild", "reconcile"):
        assert _one_line(_run(data, env, verb), position) == lines[0]
    assert _snapshot(data) == before


@pytest.mark.damaged_log
def test_the_scheduled_check_finds_bytes_flipped_while_the_daemon_runs(data: Path, env: dict[str, str]) -> None:
    daemon = DaemonProcess(data, env={**env, "FACESETD_QUEUE_LOG_CHECK_INTERVAL_S": "1"}).start()
    try:
        daemon.wait_for(lambda: '"at": "schedule"' in daemon.output(), "a scheduled check of the sound log")
        daemon.idle()
        position = _flip_payload(data, "photo_received")  # the disk rots under the running daemon
        assert daemon.proc is not None and daemon.proc.wait(60) == EXIT_LOG_DAMAGED, daemon.output()
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
    errors = [line for line in daemon.lines() if line["level"] == "error"]
    assert len(errors) == 1 and f"is damaged at log position {position}:" in errors[0]["event"], errors
    assert "Traceback" not in daemon.output()


def test_the_check_works_in_slices_of_a_window_each(tmp_path: Path) -> None:
    """A big log never holds the loop for long: each step is the structure check or one window of events."""
    log = EventLog(tmp_path / "events.sqlite3")
    n = 2 * WINDOW + 17
    log.append([ev.FaceMissing(path=f"faceset_001/faces/{i:05d}.png") for i in range(n)])
    log.close()
    check, steps = LogCheck(tmp_path / "events.sqlite3"), 0
    while not check.step(0):
        steps += 1
    assert steps + 1 == 1 + math.ceil(n / WINDOW) + 1  # the structure check, the windows, the end
    assert check.head == n and check.damage is None


@pytest.mark.damaged_log
def test_a_row_lost_from_the_log_is_a_gap_named_by_its_positions(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    log = EventLog(path)
    log.append([ev.FaceMissing(path=f"faceset_001/faces/{i}.png") for i in range(10)])
    log.close()
    conn = sqlite3.connect(path)  # what a damaged page can do: rows 4 and 5 gone, the others intact
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("DELETE FROM events WHERE position IN (4, 5)")
    conn.commit()
    conn.close()
    damage = check_log(path).damage
    assert damage is not None and (damage.first, damage.last, damage.events) == (4, 5, 2), damage
    assert damage.line().startswith(f"event log {path} is damaged at log positions 4-5 (2 events): events 4-5 are"
                                    " missing"), damage.line()

