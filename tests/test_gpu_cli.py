"""The `models` and `doctor` verbs, called as the CLI calls them: run(args, app)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import structlog

from daemon.app import App
from daemon.cli import doctor, models
from daemon.config import load_config


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """App() points structlog at the sys.stdout of the moment (capsys's); later tests must not write there."""
    yield
    structlog.reset_defaults()


def _app(tmp_path: Path, models_root: Path, **env: str) -> App:
    environ = {"FACESETD_MODELS_ROOT": str(models_root), "FACESETD_MODELS_FACE_PACK": "buffalo_sc", **env}
    return App(load_config(None, data_dir=str(tmp_path), environ=environ))


def _run(module: ModuleType, argv: list[str], app: App) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv), app)


def test_models_list(tmp_path: Path, models_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(models, ["list"], _app(tmp_path, models_root)) == 0
    out = capsys.readouterr().out
    assert "pack buffalo_sc: scrfd_500m_bnkps.onnx, w600k_mbf.onnx" in out and "verified" in out


def test_models_fetch_is_idempotent(tmp_path: Path, models_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(models, ["fetch", "--pack", "buffalo_sc"], _app(tmp_path, models_root)) == 0
    assert "buffalo_sc: installed and verified" in capsys.readouterr().out


def test_doctor_usable(tmp_path: Path, models_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(doctor, [], _app(tmp_path, models_root)) == 0
    out = capsys.readouterr().out
    assert "providers available:" in out and "CPUExecutionProvider" in out
    assert "one 640x480 image in" in out and "occlusion scorer: unavailable" in out
    assert out.strip().endswith("usable")


def test_doctor_not_usable_without_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty_models"
    empty.mkdir()
    assert _run(doctor, [], _app(tmp_path, empty)) == 1
    out = capsys.readouterr().out
    assert "facesetd models fetch --pack buffalo_sc" in out and out.strip().endswith("not usable")


def test_doctor_reports_agent_down(tmp_path: Path, models_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = _app(tmp_path, models_root, FACESETD_GPU_AGENT_MODE="http", FACESETD_GPU_AGENT_URL="http://127.0.0.1:9",
               FACESETD_GPU_AGENT_RETRIES="0", FACESETD_GPU_AGENT_TOKEN="tok-1234")
    assert _run(doctor, [], app) == 1
    assert "is not answering" in capsys.readouterr().out
