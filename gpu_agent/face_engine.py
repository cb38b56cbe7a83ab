"""The in-process face engine: an insightface pack's SCRFD detector and ArcFace recognizer on onnxruntime.

The models are insightface's and so are the results (tests/test_gpu_engine_reference.py holds them to insightface's
FaceAnalysis on every test photo), but the code is our own small port (gpu_agent.scrfd, .arcface, .face_align):
the `insightface` package, whose import pulls its model zoo, onnx, requests, scipy and scikit-image (~0.3 s), is
not imported.

Detection runs image by image (as roop does); recognition runs once per batch over every face found in it,
which is where batching pays off. Embeddings are L2-normalised here, once, so every consumer compares
unit vectors.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from .arcface import ArcFace
from .crop import decode_image, pad_image
from .face_align import norm_crop
from .fetch import require_pack, sha256_file
from .interface import DetectedFace
from .pack_models import PackModels, find_pack_models
from .providers import choose_providers, log_providers_in_use, new_session, session_options
from .scrfd import Scrfd
from .settings import ModelSettings

log = structlog.get_logger("facesetd.gpu_agent")

# Border added (each side, as a fraction of the long edge) when pad=True and the plain pass found nothing.
PAD_FRACTION = 0.5
# A face found only after padding counts if its box's long edge is at least this fraction of the image's
# short edge: padding exists for faces that fill the frame. Smaller finds on the padded image are the
# detector's low-confidence guesses on changed context (two photos in no_face/ produce such ghosts).
PAD_MIN_FILL = 0.6


class InsightFaceEngine:
    """FaceEngine running the detector and recognizer of the insightface pack in <models_dir>/models/<face_pack>/."""

    def __init__(self, settings: ModelSettings, models_dir: Path) -> None:
        self.settings = settings
        self.pack_path = require_pack(settings.face_pack, Path(models_dir))
        self.providers = choose_providers(settings)
        # Only detection and recognition: buffalo_l's landmark and gender/age models would triple the cost
        # for outputs the corpus never uses.
        found: PackModels = find_pack_models(self.pack_path, settings.face_pack)
        options = session_options(settings, self.providers)
        self.det = Scrfd(new_session(found.detector, self.providers, options), found.detector_graph,
                         found.detector_input_size(settings.det_size), settings.det_thresh)
        self.rec = ArcFace(new_session(found.recognizer, self.providers, options), found.recognizer_graph)
        self.providers_in_use = list(self.det.session.get_providers())
        log_providers_in_use(f"{settings.face_pack}/detection", self.providers, self.providers_in_use)
        self._files = {p.name: sha256_file(p) for p in (found.detector, found.recognizer)}
        self._lock = threading.Lock()  # one inference at a time: the GPU (or CPU threads) is shared anyway

    # FaceEngine -------------------------------------------------------------------------------------
    def analyze(self, images: Sequence[bytes], *, pad: bool = True) -> list[list[DetectedFace]]:
        """Detect and embed every face of every image; see interface.FaceEngine.analyze."""
        return self.analyze_arrays([decode_image(b) for b in images], pad=pad)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "insightface",
            "pack": self.settings.face_pack,
            "files": self._files,
            "providers": self.providers_in_use,
            "det_size": self.settings.det_size,
            "det_thresh": self.settings.det_thresh,
        }

    # Arrays ----------------------------------------------------------------------------------------------
    def analyze_arrays(self, images_bgr: Sequence[np.ndarray], *, pad: bool = True) -> list[list[DetectedFace]]:
        """analyze() on already-decoded BGR images."""
        out: list[list[DetectedFace]] = []
        bs = max(1, self.settings.batch_size)
        with self._lock:
            for start in range(0, len(images_bgr), bs):
                out.extend(self._analyze_batch(images_bgr[start : start + bs], pad))
        return out

    def _detect(self, img: np.ndarray, pad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """(boxes Nx5, kps Nx5x2, the image they refer to, its x and y offset from the original)."""
        boxes, kpss = self._detect_once(img)
        if boxes.shape[0] == 0 and pad:
            padded, dx, dy = pad_image(img, PAD_FRACTION)
            pboxes, pkpss = self._detect_once(padded)
            long_edge = np.maximum(pboxes[:, 2] - pboxes[:, 0], pboxes[:, 3] - pboxes[:, 1])
            keep = long_edge >= PAD_MIN_FILL * min(img.shape[:2])
            pboxes, pkpss = pboxes[keep], pkpss[keep]
            if pboxes.shape[0]:
                # Align on the padded image (the face may reach past the original edges); report
                # coordinates in the original image's frame.
                return pboxes, pkpss, padded, dx, dy
        return boxes, kpss, img, 0, 0

    def _detect_once(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, kpss = self.det.detect(img)
        assert kpss is not None  # find_pack_models takes only detectors with landmarks
        return boxes, kpss

    def _analyze_batch(self, images: Sequence[np.ndarray], pad: bool) -> list[list[DetectedFace]]:
        found = []
        aligned: list[np.ndarray] = []
        for img in images:
            boxes, kpss, src, dx, dy = self._detect(img, pad)
            for i in range(boxes.shape[0]):
                aligned.append(norm_crop(src, kpss[i], self.rec.input_size[0]))
            found.append((boxes, kpss, dx, dy))
        feats = self.rec.get_feat(aligned) if aligned else np.zeros((0, 512), np.float32)
        feats = np.asarray(feats, dtype=np.float32)
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        result: list[list[DetectedFace]] = []
        k = 0
        for boxes, kpss, dx, dy in found:
            faces = []
            for i in range(boxes.shape[0]):
                x1, y1, x2, y2, score = (float(v) for v in boxes[i])
                faces.append(
                    DetectedFace(
                        bbox=(x1 - dx, y1 - dy, x2 - dx, y2 - dy),
                        kps=tuple((float(px) - dx, float(py) - dy) for px, py in kpss[i]),
                        det_score=score,
                        embedding=feats[k].copy(),
                    )
                )
                k += 1
            result.append(faces)
        return result
