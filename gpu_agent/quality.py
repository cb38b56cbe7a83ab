"""Composite crop quality: how good a face is as a swap source, used to rank faces (near-dups) and as the top-N bundle's floor.

total = 0.30 det_score + 0.20 short_edge + 0.20 sharpness + 0.15 frontality + 0.15 symmetry, each term in [0, 1]:

- det_score: the detector's confidence, as is (already in [0, 1]).
- short_edge: the face box's short edge in source pixels / 256, capped at 1. 256 px is the face's size in a
  512 crop with 0.5 padding; smaller faces are upscaled into the crop and lose detail.
- sharpness: variance of the Laplacian of the grey, aligned 112x112 face (insightface's norm_crop, so the
  measure does not depend on the face's size), / 1000, capped at 1. On the test photos it ranges from 70
  (a small, soft face) to over 4000; sharp, well-lit faces reach 1000.
- frontality: 1 - |yaw proxy|: the nose tip's offset from the eye midpoint along the eye line, divided by half
  the eye distance (0 frontal, 1 = nose above an eye, i.e. a strong profile), capped to [0, 1].
- symmetry: 1 - the mean relative left/right difference of nose-to-eye and nose-to-mouth-corner distances
  (|dl - dr| / (dl + dr), times 2 so a 3:1 ratio scores 0), capped to [0, 1]. Low for twisted or misplaced
  landmarks, which also flags poor detections.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .face_align import norm_crop
from .interface import DetectedFace

# Weights of the composite (the predecessor's README); they sum to 1.
W_DET_SCORE = 0.30
W_SHORT_EDGE = 0.20
W_SHARPNESS = 0.20
W_FRONTALITY = 0.15
W_SYMMETRY = 0.15
# A face this many pixels on its short edge (its size in a 512 crop with 0.5 padding) scores 1.
SHORT_EDGE_FULL_PX = 256.0
# Laplacian variance of the aligned 112x112 grey face that scores 1 (in-focus photos reach it).
SHARPNESS_FULL = 1000.0


@dataclass(frozen=True)
class QualityScore:
    total: float
    det_score: float
    short_edge: float
    sharpness: float
    frontality: float
    symmetry: float


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def norm_crop_112(image_bgr: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """The aligned 112x112 face, as insightface's face_align.norm_crop(image, kps, 112) makes it, to the bit.

    gpu_agent.face_align rather than insightface's: `insightface` loads its model zoo and onnxruntime on import,
    and the daemon scores crops itself also when the models run on a remote gpu agent."""
    return norm_crop(image_bgr, kps, 112)


def sharpness_term(image_bgr: np.ndarray, kps: np.ndarray) -> float:
    aligned = norm_crop_112(image_bgr, kps)
    grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    return _clip01(cv2.Laplacian(grey, cv2.CV_64F).var() / SHARPNESS_FULL)


def frontality_term(kps: np.ndarray) -> float:
    left_eye, right_eye, nose = kps[0], kps[1], kps[2]
    eye_vec = right_eye - left_eye
    eye_dist = float(np.linalg.norm(eye_vec))
    if eye_dist < 1e-6:
        return 0.0
    along = float(np.dot(nose - (left_eye + right_eye) / 2.0, eye_vec / eye_dist))  # roll-invariant
    return _clip01(1.0 - abs(along) / (eye_dist / 2.0))


def symmetry_term(kps: np.ndarray) -> float:
    nose = kps[2]

    def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
        da, db = float(np.linalg.norm(a - nose)), float(np.linalg.norm(b - nose))
        return abs(da - db) / (da + db) if da + db > 1e-6 else 1.0

    return _clip01(1.0 - 2.0 * (rel_diff(kps[0], kps[1]) + rel_diff(kps[3], kps[4])) / 2.0)


def crop_quality(image_bgr: np.ndarray, face: DetectedFace) -> QualityScore:
    """Score one face in the image it was detected in (see the module docstring for each term)."""
    kps = np.asarray(face.kps, dtype=np.float32)
    det = _clip01(face.det_score)
    edge = _clip01(face.short_side / SHORT_EDGE_FULL_PX)
    sharp = sharpness_term(image_bgr, kps)
    front = frontality_term(kps)
    sym = symmetry_term(kps)
    total = W_DET_SCORE * det + W_SHORT_EDGE * edge + W_SHARPNESS * sharp + W_FRONTALITY * front + W_SYMMETRY * sym
    return QualityScore(round(total, 6), det, edge, sharp, front, sym)
