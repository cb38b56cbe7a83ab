"""`facesetd gpu-agent serve` as its own process, and a daemon-side reconcile that uses it over HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import requests
from daemon_proc import serve_agent
from helpers import cli

TOKEN = "agent-token-Xk29pQ77"


def test_serve_then_a_reconcile_over_http(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    log_path = tmp_path / "agent.log"
    with serve_agent(tmp_path, models_root, TOKEN) as url:
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
    assert TOKEN not in log_path.read_text()
