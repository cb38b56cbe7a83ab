"""The source photo's face size and sharpness, carried into the quality of the 512 crop cut from it.

A crop brings every face to the same size (its long edge about 256 px in 512 with 0.5 padding), so measured
on the crop a face of 105 px enlarged 2.4x and a face of 232 px from the same shot score alike: enlarging adds
no detail, and the aligned 112 px face gpu_agent.quality measures sharpness on shrinks both below their
blur. (obama_small.jpg and obama.jpg of ../shared/faces: crop quality 0.898 vs 0.896, the small one "better".)
Two terms are therefore measured on the photo, where the router has it (handlers/route_photo.py), recorded
in the crop's source (`face_px`, `face_sharpness`), and used in the crop's composite in place of its own:

- short_edge: the face box's short edge in the photo's pixels / 256, capped at 1 (as in gpu_agent.quality);
- sharpness: gpu_agent.quality's own term (variance of the Laplacian of the grey, aligned 112x112 face, / 1000,
  capped at 1), measured on the photo instead of on the crop: the same scale as a PNG found on disk, which is
  measured on itself, so crops from the inbox and found PNGs rank against each other fairly. (A variance of
  the face box at the photo's resolution was tried first: it reads 0.02 for a large, in-focus face and 1.0
  for a 31 px one, where JPEG noise dominates; aligned to 112 the 31 px face reads 0.07 and the large ones 1.0.)

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
    norm_crop_112,
)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def native_sharpness(image_bgr: np.ndarray, face: DetectedFace) -> float:
    """Laplacian variance of the aligned 112x112 grey face cut from the photo itself (as crop_quality measures
    it on a crop)."""
    aligned = norm_crop_112(image_bgr, np.asarray(face.kps, dtype=np.float32))
    return float(cv2.Laplacian(cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def measure_source(image_bgr: np.ndarray, face: DetectedFace) -> dict[str, Any]:
    """What a crop's source records of the face on its photo: the box's size in pixels and its sharpness."""
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    return {"face_px": [round(x2 - x1, 1), round(y2 - y1, 1)],
            "face_sharpness": round(native_sharpness(image_bgr, face), 1)}


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
