"""systemd/facesetd.service: the settings the daemon relies on, and `systemd-analyze verify` when present."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from state.errors import EXIT_LOG_DAMAGED

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "facesetd.service"
EXEC = "/opt/facesetd/.venv/bin/facesetd"


def _service_settings() -> dict[str, list[str]]:
    """Key -> values of the [Service] section (systemd keys may repeat, so no configparser)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_declares_what_the_daemon_relies_on() -> None:
    s = _service_settings()
    expected = {
        "Type": "notify",  # READY=1 from daemon/notify.py
        "NotifyAccess": "main",
        "WatchdogSec": "60",  # the daemon pings every WATCHDOG_USEC/2
        "Restart": "on-failure",
        "RestartPreventExitStatus": str(EXIT_LOG_DAMAGED),  # a damaged event log: stop once, no restart loop
        "TimeoutStopSec": "30",  # SIGTERM -> checkpoint -> exit 0 must fit in this
        "Environment": "PYTHONUNBUFFERED=1",
        "ExecStart": f"{EXEC} --data-dir /var/lib/facesetd run",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/facesetd",
        "NoNewPrivileges": "true",
        "PrivateTmp": "true",
        "User": "facesetd",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], key
    # Hides GPUs: see the comments in the unit.
    assert "ProtectClock" not in s and s.get("PrivateDevices") == ["false"]


# "where available": a developer machine without systemd (macOS, WSL without systemd) skips; CI, whose image
# ships systemd, never does (CI=true turns a missing systemd-analyze into a failure).
@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                    reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart= exists and is executable, so point a copy at a stand-in.
    # It does not look up User=, so no throwaway user is needed.
    fake = tmp_path / "facesetd"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    copy = tmp_path / "facesetd.service"
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(EXEC, str(fake)), encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    # verify exits 0 even for unknown keys and bad values; those show up as lines naming the file.
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "facesetd.service" in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr
