"""Start-up of the reading verbs (issue 13): `--help`, `status`, `events`, `rebuild` and `config` import only what
they need, never the model stack, and `status` and `rebuild` start in under 0.2 s beside `python -c pass`.

Each check runs the real CLI in a child process; what it imported is read from `python -X importtime`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus_factory import batch_corpus
from helpers import REPO, cli

# Imported by no reading verb: the model stack, image decoding, the Immich client, the daemon's own machinery.
NEVER = ("scipy", "cv2", "PIL", "pillow_heif", "skimage", "insightface", "onnxruntime", "torch", "open_clip",
         "requests", "urllib3", "certifi", "tqdm", "watchdog", "apscheduler")
# `--help` builds the parser only: no config, no event classes, no logging, no numpy.
HELP_NEVER = (*NEVER, "numpy", "structlog", "orjson", "daemon.app", "daemon.config", "daemon.pipeline",
              "state.events", "gpu_agent", "handlers")
# The verbs that run no check import no handler beyond the config's dataclasses (handlers.limits, .thresholds).
NO_CHECKS = ("daemon.pipeline", "handlers.dispatch", "handlers.flow", "handlers.pool", "handlers.route_photo")

LIMIT_S = 0.2  # the bound on `status` and `rebuild`, over a bare interpreter's start
RUNS = 5  # best of: a busy machine slows some runs, not the best one


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


@pytest.mark.parametrize("args", [("--help",), ("status", "--help"), ("events", "--help")])
def test_help_imports_nothing_heavy(data: Path, args: tuple[str, ...]) -> None:
    # `events --help` lists the event kinds: it defines the event classes (state.events, orjson), nothing more.
    banned = tuple(b for b in HELP_NEVER if b not in ("state.events", "orjson")) if args[0] == "events" else HELP_NEVER
    assert heavy(imported(_facesetd(data, *args)), banned) == []


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("events",), ("rebuild",), ("config",)])
def test_reading_verbs_import_no_model_stack(data: Path, args: tuple[str, ...]) -> None:
    names = imported(_facesetd(data, *args))
    assert heavy(names, NEVER) == []
    if args[0] != "status":  # status counts the pending work and the pool, which are the handlers'
        assert heavy(names, NO_CHECKS) == []


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=REPO, timeout=60,
                   check=True)
    return time.perf_counter() - start


@pytest.mark.parametrize("verb", ["status", "rebuild"])
def test_reading_verb_starts_within_limit_of_a_bare_interpreter(data: Path, verb: str) -> None:
    bare_cmd, verb_cmd = [sys.executable, "-c", "pass"], _facesetd(data, verb)
    _wall(verb_cmd)  # compiles the modules once, as an install does
    bare = took = float("inf")
    # The best of RUNS of each, taken in turns so both see the same load; a machine busy enough to keep every
    # run slow gets up to two more rounds before the bound is judged.
    for _round in range(3):
        for _ in range(RUNS):
            bare = min(bare, _wall(bare_cmd))
            took = min(took, _wall(verb_cmd))
        if took - bare < LIMIT_S:
            break
    figures = f"`facesetd {verb}` {took:.3f} s, `python -c pass` {bare:.3f} s (best of {RUNS}+): +{took - bare:.3f} s"
    print(figures)
    assert took - bare < LIMIT_S, figures
