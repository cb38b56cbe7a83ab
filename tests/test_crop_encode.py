"""The corpus crop's PNG encoding and the in-bounds fast path of crop_face (bench/e2e.py, issue 13)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from gpu_agent.crop import crop_box, crop_face, encode_png
from gpu_agent.interface import DetectedFace


def _face(bbox: tuple[float, float, float, float]) -> DetectedFace:
    return DetectedFace(bbox=bbox, kps=((0.0, 0.0),) * 5, det_score=0.9, embedding=np.zeros(512, np.float32))


def _canvas_crop(image: np.ndarray, face: DetectedFace, size: int = 512) -> np.ndarray:
    """crop_face as it was: always through a black canvas."""
    h, w = image.shape[:2]
    x0, y0, s = crop_box(face.bbox)
    canvas = np.zeros((s, s, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + s), min(h, y0 + s)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_CUBIC)


def test_crop_face_same_pixels_inside_and_across_the_edge() -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (700, 1000, 3), dtype=np.uint8)
    inside = 0
    for _ in range(300):
        x1, y1, side = rng.uniform(-80, 1000), rng.uniform(-80, 700), rng.uniform(8, 400)
        face = _face((x1, y1, x1 + side * rng.uniform(0.7, 1.3), y1 + side))
        x0, y0, s = crop_box(face.bbox)
        inside += x0 >= 0 and y0 >= 0 and x0 + s <= 1000 and y0 + s <= 700
        assert np.array_equal(crop_face(image, face), _canvas_crop(image, face))
    assert inside > 30  # the fast path was taken


def test_encode_png_is_lossless_and_uses_the_up_filter() -> None:
    rng = np.random.default_rng(3)
    crop = cv2.GaussianBlur(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), (5, 5), 0)
    data = encode_png(crop)
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), crop)
    # Every scanline of the (single or split) IDAT stream starts with its filter type: 2 = UP.
    idat, pos = b"", 8
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 512 * 3
    assert len(raw) == 512 * stride
    assert {raw[i * stride] for i in range(512)} == {2}
