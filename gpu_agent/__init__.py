"""Models and inference: face detection, embedding, cropping, occlusion scores. Knows nothing of the corpus."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .interface import DetectedFace, FaceEngine, OcclusionScorer
    from .settings import AgentSettings, ModelSettings

__all__ = ["DetectedFace", "FaceEngine", "OcclusionScorer", "open_engines"]


def __getattr__(name: str) -> Any:
    # The interface names on first use: importing the package (daemon.config reads gpu_agent.settings) must not
    # import numpy through gpu_agent.interface, or every reading verb pays for it (tests/test_startup.py).
    if name in ("DetectedFace", "FaceEngine", "OcclusionScorer"):
        from . import interface

        return getattr(interface, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_engines(models: ModelSettings, agent: AgentSettings, models_dir: Path) -> tuple[FaceEngine, OcclusionScorer]:
    """The face engine and occlusion scorer the config asks for: in this process, or the loopback agent's.

    In "http" mode one HttpAgent serves as both; it checks the agent's health (and the token) right away so
    a wrong URL or token shows up at start, not at the first photo.
    """
    if agent.mode == "http":
        from .client import HttpAgent

        remote = HttpAgent(agent.url, agent.token, timeout_s=agent.timeout_s, retries=agent.retries)
        remote.health()
        return remote, remote  # type: ignore[return-value]  # HttpAgent.available is a property
    from .face_engine import InsightFaceEngine
    from .occlusion import OnnxOcclusionScorer

    return InsightFaceEngine(models, models_dir), OnnxOcclusionScorer(models, models_dir)
