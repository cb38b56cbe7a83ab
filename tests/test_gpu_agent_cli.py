"""`facesetd gpu-agent serve` as its own process, and a daemon-side reconcile that uses it over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from helpers import REPO, cli

TOKEN = "agent-token-Xk29pQ77"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_then_a_reconcile_over_http(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    port = _free_port()
    models = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    env = {**os.environ, **models, "FACESETD_GPU_AGENT_TOKEN": TOKEN, "FACESETD_LOGGING_FORMAT": "json"}
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--data-dir", str(tmp_path / "agent"), "gpu-agent", "serve",
             "--listen", f"127.0.0.1:{port}"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert agent.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert requests.get(f"{url}/v1/health", timeout=2).status_code == 401
        # the daemon side: models come from the agent, nothing is loaded in this process
        data = tmp_path / "data"
        (data / "inbox" / "faceset_001").mkdir(parents=True)
        shutil.copy(faces_dir / "identities" / "biden" / "biden.jpg", data / "inbox" / "faceset_001" / "b.jpg")
        shutil.copy(faces_dir / "identities" / "biden" / "biden2.jpg", data / "inbox" / "b2.jpg")
        daemon_env = {"FACESETD_GPU_AGENT_MODE": "http", "FACESETD_GPU_AGENT_URL": url,
                      "FACESETD_GPU_AGENT_TOKEN": TOKEN, "FACESETD_MODELS_ROOT": str(tmp_path / "no-models")}
        (tmp_path / "no-models").mkdir()
        doctor = cli(data, "doctor", env=daemon_env, check=False)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        done = cli(data, "reconcile", env=daemon_env)
        manifest = json.loads((data / "corpus" / "faceset_001" / "manifest.json").read_text())
        assert len(manifest["faces"]) == 2
        for output in (doctor.stdout + doctor.stderr, done.stdout + done.stderr):
            assert TOKEN not in output
        # a wrong token is one clear line, exit 1
        wrong = cli(data, "doctor", env={**daemon_env, "FACESETD_GPU_AGENT_TOKEN": "not-the-token-1"}, check=False)
        assert wrong.returncode == 1 and "not-the-token-1" not in wrong.stdout + wrong.stderr
    finally:
        agent.terminate()
        agent.wait(20)
    assert TOKEN not in log_path.read_text()
