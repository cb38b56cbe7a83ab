"""The one small interface the rest of facesetd uses to reach the models.

Images travel as encoded bytes (JPEG/PNG/WebP as read from disk), so the same call works in-process
and over the loopback HTTP agent with no path mapping between Windows and WSL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face found in one image, in that image's pixel coordinates."""

    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2
    kps: tuple[tuple[float, float], ...]  # 5-point landmarks: eyes, nose, mouth corners
    det_score: float
    embedding: np.ndarray = field(repr=False)  # (512,) float32, L2-normalised

    @property
    def short_side(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return float(min(x2 - x1, y2 - y1))


class FaceEngine(Protocol):
    def analyze(self, images: Sequence[bytes], *, pad: bool = True) -> list[list[DetectedFace]]:
        """Detect and embed every face of every image (detector at det_size / det_thresh).

        pad=True retries an image with no face after padding it (a face that fills the frame);
        pad=False detects exactly as roop does on load (the multi-face invariant)."""
        ...

    def describe(self) -> dict[str, Any]:
        """pack, model files, execution providers in use: recorded in decision events."""
        ...


class OcclusionScorer(Protocol):
    available: bool

    def score(self, images: Sequence[bytes]) -> list[dict[str, float]]:
        """{"mask": P, "sunglasses": P} per image, P in [0, 1]."""
        ...

    def describe(self) -> dict[str, Any]:
        ...
