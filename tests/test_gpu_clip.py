"""The CLIP occlusion path with a real open_clip architecture (ViT-B-32) and random weights.

No CLIP weights are reachable here, so zero-shot quality is not tested; loading, export, preprocessing,
the prompt ensembles and the scoring arithmetic are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CLIP_ARCH
from PIL import Image

from gpu_agent.clip_export import (
    IMAGE_FILE,
    INT8_IMAGE_FILE,
    META_FILE,
    TEXT_FILE,
    ensemble_embeddings,
    export_built,
)
from gpu_agent.occlusion import OnnxOcclusionScorer, preprocess, probabilities
from gpu_agent.prompts import PROMPTS
from gpu_agent.settings import ModelSettings

ARCH = CLIP_ARCH  # the architecture of conftest's clip_export (random weights)
SETTINGS = ModelSettings(clip_model=ARCH, clip_pretrained="")
INT8_SETTINGS = ModelSettings(clip_model=ARCH, clip_pretrained="", clip_precision="int8")
# int8 vs fp32 on the photos of ../shared/faces (ViT-B-32, random weights, exp(logit_scale) = 100). Measured:
# cosine >= 0.9997 per image, probabilities within 0.017 (mean 0.005); the bounds leave room for other
# CPUs' int8 kernels.
# Documented in docs/models.md; trained weights may spread differently.
INT8_MIN_COSINE = 0.99
INT8_PROB_TOL = 0.03


@pytest.fixture(scope="session")
def scorer(clip_export: tuple[Any, Any, Any, Path]) -> OnnxOcclusionScorer:
    s = OnnxOcclusionScorer(SETTINGS, clip_export[3])
    assert s.available, s.describe()
    return s


def _photos(faces_dir: Path) -> list[Path]:
    return sorted((faces_dir / "sunglasses").glob("*.jpg"))[:3] + sorted((faces_dir / "mask").glob("*.jpg"))


def test_preprocess_matches_open_clip(clip_export: tuple[Any, Any, Any, Path], faces_dir: Path) -> None:
    _, pre, _, models_dir = clip_export
    import json

    meta = json.loads((next((models_dir / "clip").iterdir()) / META_FILE).read_text())
    for p in _photos(faces_dir)[:2]:
        img = Image.open(p).convert("RGB")
        ours = preprocess(img, meta["resize"], meta["image_size"], meta["mean"], meta["std"])
        theirs = pre(img).numpy()
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-4


def test_onnx_image_tower_agrees_with_torch(
    clip_export: tuple[Any, Any, Any, Path], scorer: OnnxOcclusionScorer, faces_dir: Path
) -> None:
    import torch

    model = clip_export[0]
    batch = np.stack([scorer.prepare(p.read_bytes()) for p in _photos(faces_dir)])
    onnx_emb = scorer.embed_arrays(batch)
    with torch.no_grad():
        torch_emb = model.encode_image(torch.from_numpy(batch)).numpy()
    assert onnx_emb.shape == torch_emb.shape == (len(batch), 512)
    np.testing.assert_allclose(onnx_emb, torch_emb, atol=1e-4, rtol=0)


def test_ensembles_are_mean_pooled_and_normalised(clip_export: tuple[Any, Any, Any, Path]) -> None:
    import torch

    model, _, tok, models_dir = clip_export
    with np.load(next((models_dir / "clip").iterdir()) / TEXT_FILE) as z:
        stored = {k: z[k] for k in z.files}
    assert stored["logit_scale"] == pytest.approx(math.log(100.0), abs=1e-5)
    for attr, classes in PROMPTS.items():
        for cls, texts in classes.items():
            assert 5 <= len(texts) <= 6
            with torch.no_grad():
                f = model.encode_text(tok(list(texts))).numpy()
            f = f / np.linalg.norm(f, axis=1, keepdims=True)
            expected = f.mean(axis=0)
            expected /= np.linalg.norm(expected)
            vec = stored[f"{attr}_{cls}"]
            assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(vec, expected, atol=1e-5)
            assert not np.allclose(vec, f[0], atol=1e-3)  # an ensemble, not the first prompt
    assert ensemble_embeddings(model, tok, {"x": {"positive": ("a face",)}})["x_positive"].shape == (512,)


def test_sunglasses_negatives_hold_the_known_confusions() -> None:
    neg = " | ".join(PROMPTS["sunglasses"]["negative"])
    for phrase in ("pushed up on the forehead", "on top of the head", "clear prescription eyeglasses"):
        assert phrase in neg


def test_scores_use_the_logit_scale(scorer: OnnxOcclusionScorer, faces_dir: Path) -> None:
    photos = [p.read_bytes() for p in _photos(faces_dir)]
    scores = scorer.score(photos)
    assert all(set(s) == {"mask", "sunglasses"} and all(0.0 <= v <= 1.0 for v in s.values()) for s in scores)
    # With exp(logit_scale) = 100 the random model's small cosine gaps become clear probabilities;
    # without it (scale 1) every score collapses to ~0.5. This fails if the scale is dropped.
    spread = max(abs(v - 0.5) for s in scores for v in s.values())
    assert spread > 0.1, scores
    emb = scorer.embed_arrays(np.stack([scorer.prepare(b) for b in photos]))
    pos, neg = scorer.text["mask"]
    unscaled = probabilities(emb, pos, neg, 0.0)  # exp(0) = 1: the bug this guards against
    assert np.abs(unscaled - 0.5).max() < 0.02
    np.testing.assert_allclose([s["mask"] for s in scores], probabilities(emb, pos, neg, math.log(100.0)), atol=1e-6)


def test_probability_arithmetic() -> None:
    pos, neg = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    emb = np.array([[0.3, 0.2]], np.float32) / np.linalg.norm([0.3, 0.2])
    p = probabilities(emb, pos, neg, math.log(100.0))[0]
    cp, cn = emb[0]
    assert p == pytest.approx(1.0 / (1.0 + math.exp(-100.0 * (cp - cn))))
    assert p > 0.99


def test_missing_export_reports_unavailable(tmp_path: Path) -> None:
    s = OnnxOcclusionScorer(ModelSettings(), tmp_path)
    assert s.available is False
    d = s.describe()
    assert d["available"] is False and "export-clip" in d["reason"]
    from gpu_agent.errors import ModelError

    with pytest.raises(ModelError, match="unavailable"):
        s.score([b""])


@pytest.fixture(scope="session")
def int8_scorer(clip_export: tuple[Any, Any, Any, Path]) -> OnnxOcclusionScorer:
    s = OnnxOcclusionScorer(INT8_SETTINGS, clip_export[3])
    assert s.available, s.describe()
    return s


def test_int8_export_is_written_and_recorded(clip_export: tuple[Any, Any, Any, Path]) -> None:
    import json

    d = next((clip_export[3] / "clip").iterdir())
    assert (d / INT8_IMAGE_FILE).stat().st_size < 0.4 * (d / IMAGE_FILE).stat().st_size  # int8 weights
    meta = json.loads((d / META_FILE).read_text())
    assert meta["int8"]["method"] == "onnxruntime.quantization.quantize_dynamic"
    assert meta["int8"]["per_channel"] is True and meta["int8"]["op_types_to_quantize"] == ["MatMul", "Gemm"]


def test_scorer_uses_the_int8_file_when_configured(
    scorer: OnnxOcclusionScorer, int8_scorer: OnnxOcclusionScorer, faces_dir: Path
) -> None:
    assert scorer.describe()["precision"] == "fp32" and scorer.describe()["image_file"] == IMAGE_FILE
    d = int8_scorer.describe()
    assert d["precision"] == "int8" and d["image_file"] == INT8_IMAGE_FILE
    batch = np.stack([scorer.prepare(p.read_bytes()) for p in _photos(faces_dir)[:2]])
    assert not np.array_equal(int8_scorer.embed_arrays(batch), scorer.embed_arrays(batch))  # another graph


def test_int8_agrees_with_fp32_on_photos(
    scorer: OnnxOcclusionScorer, int8_scorer: OnnxOcclusionScorer, faces_dir: Path
) -> None:
    photos = [p.read_bytes() for p in sorted(faces_dir.glob("*/*.jpg"))]
    assert len(photos) >= 20
    batch = np.stack([scorer.prepare(b) for b in photos])
    e32, e8 = scorer.embed_arrays(batch), int8_scorer.embed_arrays(batch)
    cos = (e32 * e8).sum(axis=1) / (np.linalg.norm(e32, axis=1) * np.linalg.norm(e8, axis=1))
    assert cos.min() >= INT8_MIN_COSINE, cos
    s32, s8 = scorer.score(photos), int8_scorer.score(photos)
    diff = max(abs(a[k] - b[k]) for a, b in zip(s32, s8) for k in a)
    assert diff <= INT8_PROB_TOL, diff
    spread = max(abs(v - 0.5) for s in s8 for v in s.values())
    assert spread > 0.1  # the scale still applies: not a pass by every score sitting at 0.5


def test_int8_missing_reports_unavailable(clip_export: tuple[Any, Any, Any, Path], tmp_path: Path) -> None:
    src = next((clip_export[3] / "clip").iterdir())
    dst = tmp_path / "clip" / src.name
    dst.mkdir(parents=True)
    for f in (IMAGE_FILE, TEXT_FILE, META_FILE):  # an fp32-only export
        (dst / f).symlink_to(src / f)
    assert OnnxOcclusionScorer(SETTINGS, tmp_path).available
    s = OnnxOcclusionScorer(INT8_SETTINGS, tmp_path)
    assert s.available is False
    d = s.describe()
    assert d["precision"] == "int8" and INT8_IMAGE_FILE in d["reason"] and "--quantize int8" in d["reason"]
    from gpu_agent.errors import ModelError

    with pytest.raises(ModelError, match="unavailable"):
        s.score([b""])
    bad = OnnxOcclusionScorer(ModelSettings(clip_model=ARCH, clip_pretrained="", clip_precision="fp16"), tmp_path)
    assert bad.available is False and "fp32, int8" in bad.describe()["reason"]


def test_export_without_quantize_drops_a_stale_int8_file(
    clip_export: tuple[Any, Any, Any, Path], tmp_path: Path
) -> None:
    from gpu_agent.clip_export import clip_dir

    model, pre, tok, _ = clip_export
    d = clip_dir(tmp_path, ARCH, None)
    d.mkdir(parents=True)
    (d / INT8_IMAGE_FILE).write_bytes(b"from an earlier export")
    export_built(model, pre, tok, ARCH, None, tmp_path)
    assert sorted(p.name for p in d.iterdir()) == [META_FILE, IMAGE_FILE, TEXT_FILE]
    import json

    assert json.loads((d / META_FILE).read_text())["int8"] is None


def test_failed_quantize_leaves_no_partial_file(tmp_path: Path) -> None:
    from gpu_agent.clip_export import quantize_int8

    (tmp_path / "bad.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(Exception):  # noqa: B017 - whatever onnx raises for a corrupt file
        quantize_int8(tmp_path / "bad.onnx", tmp_path / INT8_IMAGE_FILE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]
