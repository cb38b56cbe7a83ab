"""Crop geometry, decoding and the composite quality score."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gpu_agent import quality
from gpu_agent.crop import crop_box, crop_face, decode_image, pad_image
from gpu_agent.errors import ImageDecodeError
from gpu_agent.interface import DetectedFace


def _face(bbox: tuple[float, float, float, float], kps: list[tuple[float, float]], score: float = 0.8) -> DetectedFace:
    return DetectedFace(bbox=bbox, kps=tuple(kps), det_score=score, embedding=np.zeros(512, np.float32))


FRONTAL_KPS = [(80.0, 90.0), (120.0, 90.0), (100.0, 110.0), (85.0, 130.0), (115.0, 130.0)]


def test_crop_box_pads_half_the_box_each_side() -> None:
    x0, y0, side = crop_box((100, 100, 200, 180))
    assert side == 200 and (x0, y0) == (50, 40)


def test_crop_outside_the_image_is_black() -> None:
    img = np.full((100, 100, 3), 255, np.uint8)
    crop = crop_face(img, _face((0, 0, 50, 50), FRONTAL_KPS))
    assert crop.shape == (512, 512, 3)
    assert crop[5, 5].tolist() == [0, 0, 0] and crop[256, 256].tolist() == [255, 255, 255]


def test_pad_image_offsets() -> None:
    padded, dx, dy = pad_image(np.zeros((112, 100, 3), np.uint8), 0.5)
    assert (dx, dy) == (56, 56) and padded.shape == (224, 212, 3)


def test_decode_png_jpeg_webp_and_pillow_fallback() -> None:
    img = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".webp"):
        ok, buf = cv2.imencode(ext, img)
        assert ok and decode_image(buf.tobytes()).shape == (20, 30, 3)
    gif = io.BytesIO()
    Image.fromarray(img[:, :, ::-1]).save(gif, format="GIF")  # OpenCV cannot read GIF: Pillow does
    assert decode_image(gif.getvalue()).shape == (20, 30, 3)
    with pytest.raises(ImageDecodeError):
        decode_image(b"not an image")


def test_weights_sum_to_one() -> None:
    w = quality.W_DET_SCORE + quality.W_SHORT_EDGE + quality.W_SHARPNESS + quality.W_FRONTALITY + quality.W_SYMMETRY
    assert w == pytest.approx(1.0)


def test_frontality_and_symmetry_from_landmarks() -> None:
    kps = np.array(FRONTAL_KPS, np.float32)
    assert quality.frontality_term(kps) == pytest.approx(1.0)
    assert quality.symmetry_term(kps) == pytest.approx(1.0)
    turned = kps.copy()
    turned[2, 0] += 15  # nose 15 px towards the right eye: 3/4 of the way
    assert quality.frontality_term(turned) == pytest.approx(0.25)
    assert quality.symmetry_term(turned) < 0.8


def test_total_is_the_weighted_sum_and_sharpness_reacts_to_blur(faces_dir: Path, models_root: Path) -> None:
    from gpu_agent.face_engine import InsightFaceEngine
    from gpu_agent.settings import ModelSettings

    engine = InsightFaceEngine(ModelSettings(face_pack="buffalo_sc"), models_root)
    img = decode_image((faces_dir / "identities" / "obama" / "obama.jpg").read_bytes())
    [[face]] = engine.analyze_arrays([img])
    q = quality.crop_quality(img, face)
    expected = (0.30 * q.det_score + 0.20 * q.short_edge + 0.20 * q.sharpness + 0.15 * q.frontality
                + 0.15 * q.symmetry)
    assert q.total == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= q.total <= 1.0 and q.det_score == pytest.approx(face.det_score)
    blurred = cv2.GaussianBlur(img, (0, 0), 6)
    assert quality.crop_quality(blurred, face).sharpness < q.sharpness


def test_pad_image_of_a_thin_canvas_stays_within_a_multiple_of_its_pixels() -> None:
    """Issue 23: a faceless 30000x100 photo was padded by half its long edge (a 60000x30100 array, 5.4 GB); the
    border is now at most the short edge, so the padded image holds at most 9 times the photo's pixels."""
    thin = np.zeros((100, 30000, 3), np.uint8)
    padded, dx, dy = pad_image(thin, 0.5)
    assert (dx, dy) == (100, 100) and padded.shape == (300, 30200, 3)
    assert padded.size <= 9 * thin.size
    square = np.zeros((640, 640, 3), np.uint8)  # up to 2:1, as before: half the long edge
    assert pad_image(square, 0.5)[0].shape == (1280, 1280, 3)
    assert pad_image(np.zeros((400, 800, 3), np.uint8), 0.5)[1] == 400
