"""What a person sees at a terminal (a real pty from os.openpty, 100x30, the real CLI as a subprocess), and what a
pipe gets: `reconcile` shows its bars with their totals, its warnings above them and its summary, INFO lines only
with -v; `doctor` prints its report and no log line; piped, the log is JSON lines at [logging] level as before."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow  # each test runs the real CLI on the real models

PHOTOS = {  # inbox path -> photo under ../shared/faces
    "faceset_001/biden.jpg": "identities/biden/biden.jpg",
    "obama.jpg": "identities/obama/obama.jpg",
    "obama1.jpg": "identities/obama/obama1.jpg",
    "nothing_here.jpg": "no_face/pp7.jpg",
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
INFO_LINE = re.compile(r"\[info\s*\]")
WARNING_LINE = re.compile(r"\[warning\s*\]")


def _env(models_root: Path) -> dict[str, str]:
    """The user's environment: [logging] level and format at their defaults (info, auto)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESETD_LOGGING_")}
    return {**env, "PYTHONPATH": str(REPO), "FACESETD_MODELS_FACE_PACK": "buffalo_sc",
            "FACESETD_MODELS_ROOT": str(models_root)}


def on_pty(data: Path, *args: str, env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """`facesetd --data-dir DATA ARGS` with stdin, stdout and stderr on one pty of 100x30, as typed at a terminal;
    (exit code, what the terminal showed, ANSI colours taken out)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), *args],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, close_fds=True)
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the pty's other side has closed it
                break
            if not chunk:
                break
            shown += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, ANSI.sub("", shown.decode(errors="replace"))


def _data(tmp_path: Path, faces_dir: Path, *, broken: bool = True) -> Path:
    """A data folder with the photos waiting in its inbox, and (`broken`) one file that does not decode."""
    data = tmp_path / "data"
    for rel, src in PHOTOS.items():
        (data / "inbox" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(faces_dir / src, data / "inbox" / rel)
    if broken:
        (data / "inbox" / "broken.jpg").write_bytes(b"not an image, whatever its name says\n" * 8)
    return data


def _lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").split("\n") if line.strip()]


def test_reconcile_at_a_terminal_shows_bars_warnings_and_summary_but_no_info(tmp_path: Path, faces_dir: Path,
                                                                             models_root: Path) -> None:
    data = _data(tmp_path, faces_dir)
    code, shown = on_pty(data, "reconcile", env=_env(models_root))
    assert code == 0, shown
    lines = _lines(shown)
    assert not [line for line in lines if INFO_LINE.search(line)], shown
    # the unreadable file's warning, on a line of its own (printed above the bars, not inside one)
    (rejected,) = [line for line in lines if "photo rejected" in line]
    assert WARNING_LINE.search(rejected) and rejected.lstrip().startswith("20"), rejected  # starts with its time
    # every bar knows its total: never `photos: 0photo [00:00, ?photo/s]`
    assert "photos: 100%" in shown and "5/5" in shown, shown
    assert "checks: 100%" in shown and "faces=3" in shown, shown
    assert not re.search(r"(photos|checks): \d+(photo|event) \[", shown), shown
    assert "received 5 inbox photos" in shown
    assert "Traceback" not in shown


def test_reconcile_verbose_at_a_terminal_shows_info_lines(tmp_path: Path, faces_dir: Path,
                                                          models_root: Path) -> None:
    data = _data(tmp_path, faces_dir, broken=False)
    code, shown = on_pty(data, "reconcile", "-v", env=_env(models_root))
    assert code == 0, shown
    routed = [line for line in _lines(shown) if "photo routed" in line]
    assert len(routed) == 4 and all(INFO_LINE.search(line) for line in routed), shown
    assert "received 4 inbox photos" in shown
    # the flag before the verb says the same
    again = _data(tmp_path / "again", faces_dir, broken=False)
    code, shown = on_pty(again, "-v", "reconcile", env=_env(models_root))
    assert code == 0 and len([line for line in _lines(shown) if "photo routed" in line]) == 4, shown


def test_reconcile_piped_logs_json_lines_at_the_configured_level(tmp_path: Path, faces_dir: Path,
                                                                 models_root: Path) -> None:
    """Into a pipe the log is what it always was: JSON lines on stderr at [logging] level (info), the summary on
    stdout; -v changes nothing there."""
    for verbose in ([], ["-v"]):
        data = _data(tmp_path / f"piped{len(verbose)}", faces_dir)
        run = subprocess.run([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "reconcile", *verbose],
                             capture_output=True, text=True, env=_env(models_root), cwd=REPO, timeout=300,
                             stdin=subprocess.DEVNULL)
        assert run.returncode == 0, run.stderr
        logged = [json.loads(line) for line in run.stderr.splitlines()]  # every line one JSON object
        routed = [line for line in logged if line["event"] == "photo routed"]
        assert len(routed) == 4 and {line["level"] for line in routed} == {"info"}
        assert [line["path"] for line in logged if line["event"] == "photo rejected"] == ["inbox/broken.jpg"]
        assert "photos:" not in run.stderr and "checks:" not in run.stderr  # no bars into a pipe
        assert "received 5 inbox photos" in run.stdout and "{" not in run.stdout


def test_doctor_prints_a_report_and_no_log_line(tmp_path: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    code, shown = on_pty(data, "doctor", env=_env(models_root))
    assert code == 0, shown
    assert "face engine: buffalo_sc" in shown and shown.rstrip().endswith("usable"), shown
    assert not INFO_LINE.search(shown) and "onnxruntime providers" not in shown, shown
    piped = subprocess.run([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "doctor"],
                           capture_output=True, text=True, env=_env(models_root), cwd=REPO, timeout=300,
                           stdin=subprocess.DEVNULL)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr  # nothing logged, not even as JSON
    assert "{" not in piped.stdout and piped.stdout.rstrip().endswith("usable")
