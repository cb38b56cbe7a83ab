"""The source photo's face size and sharpness, carried into the quality of the 512 crop cut from it.

A crop brings every face to the same size (its long edge about 256 px in 512 with 0.5 padding), so measured
on the crop a face of 105 px enlarged 2.4x and a face of 232 px from the same shot score alike: enlarging adds
no detail, and the aligned 112 px face gpu_agent.quality measures sharpness on shrinks both below their
blur. (obama_small.jpg and obama.jpg of ../shared/faces: crop quality 0.898 vs 0.896, the small one "better".)
Two terms are therefore measured on the photo, where the router has it (handlers/route_photo.py), recorded
in the crop's source (`face_px`, `face_sharpness`), and used in the crop's composite in place of its own:

- short_edge: the face box's short edge in the photo's pixels / 256, capped at 1 (as in gpu_agent.quality);
- sharpness: variance of the Laplacian of the grey face box at the photo's own resolution, / 1000, capped at
  1. A face larger than it will be in the crop (short edge over 256 px) is first shrunk to that size, as the
  crop will hold it (the Laplacian of a face spread over more pixels is weaker, not less sharp); a smaller face
  is never enlarged (that would measure the enlargement's blur, which short_edge already counts).

The other three terms (det_score, frontality, symmetry) stay the crop's: they describe the PNG roop loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from .interface import DetectedFace
from .quality import (
    SHARPNESS_FULL,
    SHORT_EDGE_FULL_PX,
    W_DET_SCORE,
    W_FRONTALITY,
    W_SHARPNESS,
    W_SHORT_EDGE,
    W_SYMMETRY,
    QualityScore,
)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def native_sharpness(image_bgr: np.ndarray, bbox: tuple[float, float, float, float]) -> float:
    """Variance of the Laplacian of the grey face box (clipped to the image), at the photo's resolution or
    shrunk to a short edge of SHORT_EDGE_FULL_PX when larger; 0.0 for a box with no area inside the image."""
    h, w = image_bgr.shape[:2]
    x1, y1 = max(0, int(round(bbox[0]))), max(0, int(round(bbox[1])))
    x2, y2 = min(w, int(round(bbox[2]))), min(h, int(round(bbox[3])))
    if x2 - x1 < 3 or y2 - y1 < 3:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(image_bgr[y1:y2, x1:x2]), cv2.COLOR_BGR2GRAY)
    short = min(grey.shape)
    if short > SHORT_EDGE_FULL_PX:
        scale = SHORT_EDGE_FULL_PX / short
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def measure_source(image_bgr: np.ndarray, face: DetectedFace) -> dict[str, Any]:
    """What a crop's source records of the face on its photo: the box's size in pixels and its sharpness."""
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    return {"face_px": [round(x2 - x1, 1), round(y2 - y1, 1)],
            "face_sharpness": round(native_sharpness(image_bgr, face.bbox), 1)}


def source_terms(source: Mapping[str, Any]) -> dict[str, float]:
    """The short_edge and sharpness terms of a crop's source photo, from what its source recorded; {} when it
    recorded neither (a PNG found on disk, or a crop routed before they were measured)."""
    px, sharpness = source.get("face_px"), source.get("face_sharpness")
    if not isinstance(px, (list, tuple)) or len(px) != 2 or not isinstance(sharpness, (int, float)):
        return {}
    return {"short_edge": round(_clip01(min(float(px[0]), float(px[1])) / SHORT_EDGE_FULL_PX), 6),
            "sharpness": round(_clip01(float(sharpness) / SHARPNESS_FULL), 6)}


def quality_with_source(q: QualityScore, terms: Mapping[str, float]) -> float:
    """The crop's composite with the source's short_edge and sharpness in place of its own (q.total without)."""
    if not terms:
        return q.total
    total = (W_DET_SCORE * q.det_score + W_SHORT_EDGE * terms["short_edge"] + W_SHARPNESS * terms["sharpness"]
             + W_FRONTALITY * q.frontality + W_SYMMETRY * q.symmetry)
    return round(total, 6)
