"""Small helpers the tests share: run the real CLI, read projections, append decisions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from daemon.config import load_config
from daemon.pipeline import Pipeline
from state import events as ev
from state.eventlog import EventLog

REPO = Path(__file__).resolve().parents[1]


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, env=full_env, cwd=REPO, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"facesetd {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def projections(corpus: Path) -> dict[str, str]:
    """sha256 of every manifest and .fsz under the corpus."""
    return {
        str(p.relative_to(corpus)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(corpus.rglob("*"))
        if p.is_file() and (p.name == "manifest.json" or p.suffix == ".fsz")
    }


def sockets(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: the daemon's control socket (state/facesetd.sock), which a copy cannot take."""
    return [n for n in names if stat.S_ISSOCK(os.lstat(os.path.join(folder, n)).st_mode)]


def rebuilt_from_log_alone(data: Path, copy: Path) -> dict[str, str]:
    """The projections `facesetd rebuild` writes into a copy of the data folder with every manifest and .fsz
    removed: what the log alone regenerates."""
    shutil.copytree(data, copy, ignore=sockets)
    for f in (copy / "corpus").rglob("*"):
        if f.name == "manifest.json" or f.suffix == ".fsz":
            f.unlink()
    cli(copy, "rebuild")
    return projections(copy / "corpus")


def images(corpus: Path) -> dict[str, str]:
    return {
        str(p.relative_to(corpus)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(corpus.rglob("*.png"))
    }


def open_pipeline(data_dir: Path) -> Pipeline:
    config = load_config(None, data_dir=str(data_dir), environ={})
    config.state_dir.mkdir(parents=True, exist_ok=True)
    return Pipeline(config, EventLog(config.log_path))


def prune(pipeline: Pipeline, path: str, check: str = "near_dup", reason: str = "test prune") -> int:
    """Append a prune decision the way a handler does, and carry it out."""
    folder, name = path.rsplit("/", 1)
    sha = pipeline.state.files()[path][2]
    (pos,) = pipeline.log.append([ev.FacePruned(
        path=path, sha256=sha, moves=((path, f"{folder}/_dropped/{name}"),), check=check, reason=reason,
    )])
    pipeline.settle()
    return pos


def quarantine(pipeline: Pipeline, faceset: str, area: str = "_masked", check: str = "masked") -> int:
    (pos,) = pipeline.log.append([ev.FacesetQuarantined(
        faceset=faceset, area=area, moves=((faceset, f"{area}/{faceset}"),), check=check, reason="test quarantine",
    )])
    pipeline.settle()
    return pos


def drop(faces: Path, inbox: Path, *photos: str, into: str = "") -> None:
    """Copy photos (paths relative to `faces`) into the inbox, or into inbox/<into>/ (a seed folder)."""
    target = inbox / into
    target.mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy(faces / p, target / Path(p).name)


def log_events(data: Path, env: dict[str, str]) -> list[dict]:
    """The log as `facesetd events --json` prints it (the user's view of it)."""
    return [json.loads(line) for line in cli(data, "events", "--json", env=env).stdout.splitlines()]
