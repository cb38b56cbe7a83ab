"""The in-process face engine: insightface FaceAnalysis (detector + ArcFace) on onnxruntime.

Detection runs image by image (as roop does); recognition runs once per batch over every face found in it,
which is where batching pays off. Embeddings are L2-normalised here, once, so every consumer compares
unit vectors.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from .crop import decode_image, pad_image
from .errors import ModelNotFound
from .fetch import require_pack, sha256_file
from .interface import DetectedFace
from .providers import choose_providers, log_providers_in_use, session_options
from .settings import ModelSettings

log = structlog.get_logger("facesetd.gpu_agent")

# insightface's norm_crop calls scikit-image's deprecated SimilarityTransform.estimate once per face.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.utils\.face_align")

# Border added (each side, as a fraction of the long edge) when pad=True and the plain pass found nothing.
PAD_FRACTION = 0.5
# A face found only after padding counts if its box's long edge is at least this fraction of the image's
# short edge: padding exists for faces that fill the frame. Smaller finds on the padded image are the
# detector's low-confidence guesses on changed context (two photos in no_face/ produce such ghosts).
PAD_MIN_FILL = 0.6


class InsightFaceEngine:
    """FaceEngine backed by insightface's FaceAnalysis loaded from <models_dir>/models/<face_pack>/."""

    def __init__(self, settings: ModelSettings, models_dir: Path) -> None:
        from insightface.app import FaceAnalysis

        self.settings = settings
        self.pack_path = require_pack(settings.face_pack, Path(models_dir))
        self.providers = choose_providers(settings)
        # Only detection and recognition: buffalo_l's landmark and gender/age models would triple the cost
        # for outputs the corpus never uses.
        self.app = FaceAnalysis(
            name=str(self.pack_path.resolve()),  # an absolute folder: insightface loads it, never downloads
            allowed_modules=["detection", "recognition"],
            providers=self.providers,
            sess_options=session_options(settings, self.providers),
        )
        if "recognition" not in self.app.models:
            raise ModelNotFound(f"model pack {settings.face_pack} in {self.pack_path} has no recognition model")
        # ctx_id 0 keeps our providers; a negative ctx_id would make insightface force the CPU.
        self.app.prepare(ctx_id=0, det_size=(settings.det_size, settings.det_size), det_thresh=settings.det_thresh)
        self.det = self.app.det_model
        self.rec = self.app.models["recognition"]
        self.providers_in_use = list(self.det.session.get_providers())
        log_providers_in_use(f"{settings.face_pack}/detection", self.providers, self.providers_in_use)
        self._files = {Path(m.model_file).name: sha256_file(Path(m.model_file)) for m in (self.det, self.rec)}
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
        boxes, kpss = self.det.detect(img, max_num=0)
        if boxes.shape[0] == 0 and pad:
            padded, dx, dy = pad_image(img, PAD_FRACTION)
            pboxes, pkpss = self.det.detect(padded, max_num=0)
            long_edge = np.maximum(pboxes[:, 2] - pboxes[:, 0], pboxes[:, 3] - pboxes[:, 1])
            keep = long_edge >= PAD_MIN_FILL * min(img.shape[:2])
            pboxes, pkpss = pboxes[keep], pkpss[keep]
            if pboxes.shape[0]:
                # Align on the padded image (the face may reach past the original edges); report
                # coordinates in the original image's frame.
                return pboxes, pkpss, padded, dx, dy
        return boxes, kpss, img, 0, 0

    def _analyze_batch(self, images: Sequence[np.ndarray], pad: bool) -> list[list[DetectedFace]]:
        from insightface.utils import face_align

        found = []
        aligned: list[np.ndarray] = []
        for img in images:
            boxes, kpss, src, dx, dy = self._detect(img, pad)
            for i in range(boxes.shape[0]):
                aligned.append(face_align.norm_crop(src, landmark=kpss[i], image_size=self.rec.input_size[0]))
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
