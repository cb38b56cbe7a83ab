"""The corpus crop's PNG encoding and the in-bounds fast path of crop_face (bench/e2e.py, issue 13)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from isal import isal_zlib
from PIL import Image

from gpu_agent import png
from gpu_agent.crop import crop_box, crop_face, decode_image, encode_png
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


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, data) of each chunk, its CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        pos += 12 + length
    return out


def _decodes_to(data: bytes, crop: np.ndarray) -> None:
    """cv2 (what roop and the checks use) and Pillow both give back exactly the crop's pixels."""
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), crop)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im)[:, :, ::-1], crop)


def _crops(faces_dir: Path) -> list[np.ndarray]:
    """Random images (noise, smooth, flat, extremes) and crops cut from the real photos at random boxes."""
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
             cv2.GaussianBlur(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), (5, 5), 0),
             np.zeros((512, 512, 3), np.uint8), np.full((512, 512, 3), 255, np.uint8),
             rng.integers(0, 256, (1, 1, 3), dtype=np.uint8), rng.integers(0, 256, (7, 300, 3), dtype=np.uint8),
             np.tile(np.array([0, 255], np.uint8).repeat(3).reshape(2, 1, 3), (256, 512, 1))]
    for path in sorted(faces_dir.rglob("*.jpg"))[::3]:
        image = decode_image(path.read_bytes())
        h, w = image.shape[:2]
        for _ in range(2):
            x, y, side = rng.uniform(-50, w), rng.uniform(-50, h), rng.uniform(20, min(h, w) / 2)
            crops.append(crop_face(image, _face((x, y, x + side, y + side))))
    return crops


def test_encode_png_is_lossless_for_cv2_and_pillow(faces_dir: Path) -> None:
    crops = _crops(faces_dir)
    assert len(crops) > 25
    for crop in crops:
        _decodes_to(encode_png(crop), crop)
        _decodes_to(png.encode_png(crop, png._deflate_zlib), crop)  # the fallback without python-isal


def test_encode_png_is_deterministic_up_filtered_and_deflated_by_isal(faces_dir: Path) -> None:
    for crop in _crops(faces_dir)[::4]:
        data = encode_png(crop)
        assert encode_png(crop.copy()) == data  # the same pixels, the same bytes (a rerun rewrites nothing)
        chunks = _chunks(data)
        assert [k for k, _b in chunks] == [b"IHDR", b"IDAT", b"IEND"]
        h, w = crop.shape[:2]
        assert chunks[0][1] == struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        raw = zlib.decompress(chunks[1][1])
        stride = 1 + w * 3
        assert len(raw) == h * stride
        assert {raw[i * stride] for i in range(h)} == {2}  # every scanline UP-filtered
        # ISA-L's stream at its level (OpenCV's zlib gave other bytes: this fails on cv2.imencode).
        assert chunks[1][1] == isal_zlib.compress(png.up_filtered(crop), png.ISAL_LEVEL)


def test_encode_png_refuses_what_is_not_a_colour_crop() -> None:
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.uint16)):
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            encode_png(bad)
