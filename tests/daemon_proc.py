"""Run the real daemon as a subprocess on temporary folders, and read its event log."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from helpers import REPO


class DaemonProcess:
    def __init__(self, data: Path, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = data.parent / f"{data.name}-daemon.log"

    def start(self, wait: bool = True) -> "DaemonProcess":
        self.data.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--data-dir", str(self.data), "run"],
            env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_for(lambda: "facesetd running" in self.output(), "daemon start", timeout=60)
        return self

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        path = self.data / "state" / "events.sqlite3"
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT position, kind, subject, payload FROM events ORDER BY position").fetchall()
        finally:
            conn.close()
        return [{"position": p, "kind": k, "subject": s, **json.loads(pl)} for p, k, s, pl in rows]

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events()]

    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.output()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output()[-4000:]}")

    def idle(self, timeout: float = 120) -> None:
        """Wait until the daemon says it is caught up (nothing queued, settling, unhandled or unrendered) and
        has appended nothing since."""
        def quiet() -> bool:
            out = self.output().rsplit('"facesetd running"', 1)[-1]
            last = out.rfind('"caught up"')
            return last >= 0 and '"event appended"' not in out[last:]
        self.wait_for(quiet, "idle", timeout)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
