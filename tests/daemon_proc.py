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
    def __init__(self, data: Path, env: dict[str, str] | None = None, umask: int | None = None) -> None:
        self.data = data
        self.env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.umask = umask  # the daemon's umask (as systemd's UMask= or a shell's umask sets it); None: ours
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = data.parent / f"{data.name}-daemon.log"

    def start(self, wait: bool = True) -> "DaemonProcess":
        self.data.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--data-dir", str(self.data), "run"],
            env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            umask=-1 if self.umask is None else self.umask,  # set in the child before exec
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

    def head(self) -> int:
        """The position of the last event in the log (0 when there is none yet)."""
        path = self.data / "state" / "events.sqlite3"
        if not path.exists():
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0])
        finally:
            conn.close()

    def lines(self) -> list[dict[str, Any]]:
        """Every line the daemon wrote (stdout and stderr, all its starts), parsed as JSON; a line that is
        not one JSON object fails the test."""
        parsed = []
        for line in self.output().splitlines():
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"a log line that is not JSON: {line!r}") from None
        return parsed

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
        """Wait until the daemon (since its latest start) says it is caught up (nothing queued, settling,
        unhandled or unrendered) at the log's current head: nothing was appended since it said so.

        The log position, not the absence of per-event lines: those are DEBUG, not in the output at INFO."""
        def quiet() -> bool:
            out = self.output().rsplit('"facesetd running"', 1)[-1]
            last = out.rfind('"caught up"')
            if last < 0:
                return False
            line = out[out.rfind("\n", 0, last) + 1:].split("\n", 1)[0]
            try:
                said = json.loads(line)["log_position"]
            except (json.JSONDecodeError, KeyError):  # a line still being written
                return False
            return bool(said == self.head())
        self.wait_for(quiet, "idle", timeout)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
