"""Run the real daemon as a subprocess on temporary folders, and read its event log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers import REPO
from invariants import read_events


class DaemonProcess:
    def __init__(self, data: Path, env: dict[str, str] | None = None, umask: int | None = None,
                 prefix: Sequence[str] | None = None) -> None:
        self.data = data
        # A command the daemon runs under (e.g. setpriv dropping a capability, prlimit setting a limit).
        self.prefix = list(prefix or [])
        # The review pages on a free port of their own: daemons of several tests (and sessions) never share 8476.
        self.env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                    "FACESETD_REVIEW_LISTEN": f"127.0.0.1:{free_port()}", **(env or {})}
        self.umask = umask  # the daemon's umask (as systemd's UMask= or a shell's umask sets it); None: ours
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = data.parent / f"{data.name}-daemon.log"

    def start(self, wait: bool = True) -> DaemonProcess:
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "daemon.cli", "--data-dir", str(self.data), "run"],
                env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                umask=-1 if self.umask is None else self.umask,  # set in the child before exec
            )
        if wait:
            self.wait_for(lambda: "facesetd running" in self.output(), "daemon start", timeout=60)
        return self

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        """The daemon's event log, read-only (tests/invariants.py read_events)."""
        return read_events(self.data)

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


class NotifyListener:
    """A NOTIFY_SOCKET as systemd binds one: records every line the daemon sends with its arrival time."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fsd-notify-", dir="/tmp"))  # AF_UNIX paths are short
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(65536).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            self.messages.extend((now, line) for line in msg.splitlines())

    def first(self, prefix: str) -> float | None:
        """When the first line starting with `prefix` came (None: not yet)."""
        return next((t for t, m in list(self.messages) if m.startswith(prefix)), None)

    def count(self, prefix: str, after: float = 0.0) -> int:
        return sum(1 for t, m in list(self.messages) if m.startswith(prefix) and t >= after)

    def statuses_since(self, t: float) -> list[str]:
        """The STATUS= texts that came at or after `t`."""
        return [m[7:] for ts, m in list(self.messages) if ts >= t and m.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_agent(folder: Path, models_root: Path, token: str) -> Iterator[str]:
    """`facesetd gpu-agent serve` as its own process with the buffalo_sc pack, logging to folder/agent.log;
    yields its URL once /v1/health answers, and stops it at the end."""
    import requests

    port = free_port()
    env = {**os.environ, "FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
           "FACESETD_GPU_AGENT_TOKEN": token, "FACESETD_LOGGING_FORMAT": "json"}
    log_path = folder / "agent.log"
    with open(log_path, "wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--data-dir", str(folder / "agent-data"), "gpu-agent",
                                  "serve", "--listen", f"127.0.0.1:{port}"], env=env, cwd=REPO, stdout=out,
                                 stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/v1/health", headers={"Authorization": f"Bearer {token}"}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert agent.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield url
    finally:
        agent.terminate()
        agent.wait(20)
