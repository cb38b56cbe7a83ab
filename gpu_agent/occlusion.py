"""The occlusion scorer at run time: the exported CLIP image tower on onnxruntime, no torch.

P(attribute) = softmax(exp(logit_scale) * [cos(image, positive), cos(image, negative)])[0]. The scale
matters: cosines of CLIP image and text embeddings differ by a few hundredths, so without the ~100x
factor every probability sits at 0.5.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from PIL import Image

from .clip_export import IMAGE_FILE, INT8_IMAGE_FILE, META_FILE, PRECISIONS, TEXT_FILE, clip_dir
from .crop import decode_image
from .errors import ModelError
from .providers import choose_providers, log_providers_in_use, session_options
from .settings import ModelSettings

log = structlog.get_logger("facesetd.gpu_agent")


def preprocess(image_rgb: Image.Image, resize: int, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """CLIP's validation transform in numpy: shortest side to `resize` (bicubic), centre crop, normalise.

    Same arithmetic as torchvision's Resize/CenterCrop on a PIL image, so the ONNX tower sees what open_clip's
    own preprocess would feed the torch model. Returns float32 [3, size, size].
    """
    w, h = image_rgb.size
    if w <= h:
        nw, nh = resize, int(resize * h / w)
    else:
        nw, nh = int(resize * w / h), resize
    img = image_rgb.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = round((nw - size) / 2.0), round((nh - size) / 2.0)
    img = img.crop((left, top, left + size, top + size))
    unit = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    normed = (unit - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normed.transpose(2, 0, 1), dtype=np.float32)


def probabilities(embeddings: np.ndarray, pos: np.ndarray, neg: np.ndarray, logit_scale: float) -> np.ndarray:
    """P(positive) per row of `embeddings` (N, D); the rows need not be normalised."""
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    scale = float(np.exp(logit_scale))  # the stored parameter is log-space, as in CLIP
    logits = scale * np.stack([e @ pos, e @ neg], axis=1).astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))  # stable softmax
    return np.asarray(p[:, 0] / p.sum(axis=1), dtype=np.float64)


class OnnxOcclusionScorer:
    """OcclusionScorer over <models_dir>/clip/<model>__<pretrained>/ as written by export_clip."""

    def __init__(self, settings: ModelSettings, models_dir: Path) -> None:
        """Load the export for [models] clip_model / clip_pretrained ("" = random weights, tests only).

        clip_precision picks the image tower: "fp32" runs image.onnx, "int8" image.int8.onnx (no fallback to
        fp32: a missing int8 file makes the scorer unavailable, with the command that writes it).
        """
        self.settings = settings
        tag = settings.clip_pretrained or None
        self.path = clip_dir(Path(models_dir), settings.clip_model, tag)
        self.model_name = f"{settings.clip_model}/{tag or 'random'}"
        self.available = False
        self.reason = ""
        self.providers_in_use: list[str] = []
        self._lock = threading.Lock()
        self.precision = settings.clip_precision
        if self.precision not in PRECISIONS:
            self.reason = f"clip_precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            return
        image_file = INT8_IMAGE_FILE if self.precision == "int8" else IMAGE_FILE
        missing = [f for f in (IMAGE_FILE, TEXT_FILE, META_FILE) if not (self.path / f).is_file()]
        if missing:
            self.reason = (
                f"no exported CLIP model in {self.path} (missing {', '.join(missing)}); run "
                f"`facesetd models export-clip --model {settings.clip_model} --pretrained {tag}"
                f"{' --quantize int8' if self.precision == 'int8' else ''}`"
            )
            return
        if not (self.path / image_file).is_file():
            self.reason = (
                f'clip_precision = "int8" but {self.path / image_file} is missing (the export was fp32 only); run '
                f"`facesetd models export-clip --model {settings.clip_model} --pretrained {tag} --quantize int8`, "
                f'or set [models] clip_precision = "fp32"'
            )
            return
        self.image_file = self.path / image_file
        import onnxruntime as ort

        self.meta: dict[str, Any] = json.loads((self.path / META_FILE).read_text(encoding="utf-8"))
        with np.load(self.path / TEXT_FILE) as z:
            self.logit_scale = float(z["logit_scale"])
            self.text = {a: (z[f"{a}_positive"].astype(np.float32), z[f"{a}_negative"].astype(np.float32))
                         for a in self.meta["attributes"]}
        providers = choose_providers(settings)
        self.session = ort.InferenceSession(
            str(self.image_file), sess_options=session_options(settings, providers), providers=providers
        )
        self.providers_in_use = list(self.session.get_providers())
        log_providers_in_use(f"clip/{self.model_name}/{self.precision}", providers, self.providers_in_use)
        self.input_name = self.session.get_inputs()[0].name
        self.available = True

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"scorer": "open_clip-onnx", "model": self.model_name, "precision": self.precision,
                             "available": self.available}
        if self.available:
            d.update(image_file=self.image_file.name, providers=self.providers_in_use,
                     logit_scale_exp=round(float(np.exp(self.logit_scale)), 4),
                     attributes=sorted(self.text))
        else:
            d["reason"] = self.reason
        return d

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Image-tower embeddings (N, D), unnormalised, for preprocessed [N, 3, S, S] input."""
        with self._lock:
            found = self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]
            return np.asarray(found)

    def prepare(self, data: bytes) -> np.ndarray:
        bgr = decode_image(data)
        m = self.meta
        return preprocess(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])), m["resize"], m["image_size"],
                          m["mean"], m["std"])

    def score(self, images: Sequence[bytes]) -> list[dict[str, float]]:
        """{"mask": P, "sunglasses": P} per image."""
        if not self.available:
            raise ModelError(f"occlusion scorer unavailable: {self.reason}")
        # One image a run: the image tower's float sums depend on what else is in its batch (ViT-B-32 on CPU: the
        # 7th decimal moves), and the scores must not depend on which crops a check took together or on a
        # backfill's batches (the records answer for the inbox path). Batching bought ~4% on CPU.
        out: list[dict[str, float]] = []
        for data in images:
            emb = self.embed_arrays(self.prepare(data)[None])
            probs = {a: probabilities(emb, pos, neg, self.logit_scale) for a, (pos, neg) in self.text.items()}
            out.append({a: float(probs[a][0]) for a in probs})
        return out
