"""Start-up of the reading verbs (issues 13 and 22): `--help`, `status`, `events`, `rebuild` and `config` import only
what they need, never scipy or the model stack, and none of them the checks. (How long they take beside
`python -c pass` is bench/startup.py's: a wall-time bound in the suite would fail on a busy machine for reasons that
are not the code's.)

Each check runs the real CLI in a child process on a real data folder; what it imported is read from
`python -X importtime`, which names every module the process imported, also those imported late, inside a function.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corpus_factory import batch_corpus
from helpers import REPO, cli

from daemon.config import load_config
from state import events as ev
from state.eventlog import EventLog

# What the reading verbs never import, in one place (a module or any of its submodules).
# The model stack and the science under it: the face engine and the CLIP scorer, their runtimes, the clustering.
MODEL_STACK = ("scipy", "sklearn", "skimage", "cv2", "onnx", "onnxruntime", "insightface", "torch", "open_clip",
               "faiss")
# Nor image decoding, the Immich client or the daemon's own machinery.
NEVER = (*MODEL_STACK, "PIL", "pillow_heif", "requests", "urllib3", "certifi", "tqdm", "watchdog", "apscheduler",
         "ray", "pyarrow")  # the optional extra `facesetd[ray]` (facesetd backfill)
# `--help` builds the parser only: no config, no event classes, no logging, no numpy.
HELP_NEVER = (*NEVER, "numpy", "structlog", "orjson", "daemon.app", "daemon.config", "daemon.pipeline",
              "state.events", "gpu_agent", "handlers")
# They run no check, so they import none, nor the pipeline that runs them or the model interface the checks call:
# of handlers/, only the config's dataclasses (handlers.limits, .thresholds) and the checks' tracked position.
NO_CHECKS = ("daemon.pipeline", "gpu_agent.interface", "handlers.common", "handlers.context", "handlers.dispatch",
             "handlers.flow", "handlers.pool", "handlers.pool_clusters", "handlers.route_photo")
# Installed with facesetd (pyproject.toml dependencies): their absence from a verb's imports means something.
INSTALLED = ("scipy", "cv2", "onnxruntime", "insightface", "PIL")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small corpus (5 facesets, 19 PNGs) with its log, as `reconcile` leaves it."""
    data = tmp_path_factory.mktemp("startup")
    batch_corpus(data / "corpus")
    cli(data, "reconcile")
    return data


def _env() -> dict[str, str]:
    env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json"}
    # As an installed facesetd runs: its modules compiled once (pip does it at install), not on every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _facesetd(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", "--data-dir", str(data), *args]


def imported(cmd: list[str]) -> set[str]:
    """Every module the command imported (it must succeed, or exit 0 after its help)."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, env=_env(),
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.split("|")[2].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line and "imported package" not in line}
    assert "daemon.cli" in names
    return names


def heavy(names: set[str], banned: tuple[str, ...]) -> list[str]:
    """The banned modules (or their submodules) among `names`."""
    return sorted(n for n in names if any(n == b or n.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("args", [("--help",), ("status", "--help"), ("events", "--help"), ("backfill", "--help")])
def test_help_imports_nothing_heavy(data: Path, args: tuple[str, ...]) -> None:
    # `events --help` lists the event kinds: it defines the event classes (state.events, orjson), nothing more.
    banned = tuple(b for b in HELP_NEVER if b not in ("state.events", "orjson")) if args[0] == "events" else HELP_NEVER
    assert heavy(imported(_facesetd(data, *args)), banned) == []


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("events",), ("rebuild",), ("config",)])
def test_reading_verbs_import_no_model_stack(data: Path, args: tuple[str, ...]) -> None:
    """status reads its counts, its pending work and an empty pool from the corpus state (daemon/summary.py):
    only a pool holding faces is clustered, and only then are the clustering and the checks' context imported."""
    names = imported(_facesetd(data, *args))
    assert heavy(names, NEVER) == []
    assert heavy(names, NO_CHECKS) == []


def test_the_import_record_would_show_a_late_import(data: Path, tmp_path: Path) -> None:
    """The checks above can fail: what they look for is installed here, and a verb that does decode images
    (`report`, its thumbnails) shows PIL in the record, though it is imported inside the verb's run."""
    assert [m for m in INSTALLED if importlib.util.find_spec(m) is None] == []
    names = imported(_facesetd(data, "report", "--out", str(tmp_path / "report")))
    assert "PIL.Image" in heavy(names, NEVER)


@pytest.mark.parametrize("args", [("events",), ("events", "--json"), ("config",), ("status",), ("rebuild",)])
def test_verbs_without_vectors_import_no_numpy(data: Path, args: tuple[str, ...]) -> None:
    """`config` shows settings, and `events` and `rebuild` (which replays the log) decode a vector (importing
    numpy) only when the log holds one: this small corpus, reconciled without models, has none. status reads
    the state's tables."""
    assert heavy(imported(_facesetd(data, *args)), ("numpy",)) == []


def test_status_decodes_no_vector_the_state_has_applied(tmp_path: Path) -> None:
    """The routing embeddings a log holds are decoded (numpy) by the one run that applies them to the state; a
    status after that, as every status beside a daemon that keeps the state current, reads tables alone."""
    batch_corpus(tmp_path / "corpus")
    cli(tmp_path, "reconcile")
    config = load_config(None, data_dir=str(tmp_path), environ={})
    log = EventLog(config.log_path)
    log.append([ev.FaceRouted(path=f"faceset_002/faces/{i:04d}.png", sha256=f"{i:064x}", faceset="faceset_002",
                              embedding=np.full(512, 1 / 512 ** 0.5, dtype=np.float32)) for i in range(3)])
    log.close()
    assert "numpy" in imported(_facesetd(tmp_path, "status"))  # the run that applies them
    assert heavy(imported(_facesetd(tmp_path, "status")), ("numpy",)) == []
