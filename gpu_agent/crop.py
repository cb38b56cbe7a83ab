"""Decoding image bytes and cutting the corpus crop: a 512x512 square around the face, bbox padded by 0.5."""

from __future__ import annotations

import cv2
import numpy as np

from .errors import ImageDecodeError
from .image_header import DEFAULT_MAX_PIXELS, check_pixels, open_header
from .interface import DetectedFace

# Corpus format (DOMAIN.md section 1): 512x512 PNGs, the face box padded by half its size on every side.
CROP_SIZE = 512
CROP_PADDING = 0.5
# The black canvas a crop is cut from, when its square reaches past the photo, holds at most this many times the
# photo's pixels (a face filling a square photo needs 4; a tight aligned crop a little more). A box larger still (no
# real face gives one: a detector's guess on a 30000x100 strip, say) has only the part of its square inside the
# photo scaled into the crop, so no crop allocates more than this multiple of [limits] max_pixels (issue 23).
CANVAS_MAX_FACTOR = 16


# The formats OpenCV decodes and turns upright by their EXIF orientation itself, as roop's cv2.imread does. Any
# other goes through Pillow and is turned upright here: OpenCV decodes AVIF too, but ignores its rotation (the
# irot/imir boxes, which Pillow reports as the EXIF orientation), so an AVIF from a phone held upright came out
# sideways.
OPENCV_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP"})  # MPO: a JPEG with more images after it


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> BGR uint8 array, upright, as roop's cv2.imread would give.

    The header is read first (Pillow) and an image over `max_pixels` raises ImageTooLarge before any
    pixel is decoded; bytes no header parser knows raise ImageDecodeError (OpenCV would decode them with
    no size check). JPEG (MPO too)/PNG/WebP/BMP/TIFF then go through OpenCV, which applies their EXIF orientation;
    anything else (HEIC with pillow_heif, AVIF, GIF, ...) through Pillow, with its orientation applied here.
    """
    from PIL import ImageOps

    with open_header(data) as im:
        width, height = im.size
        kind = im.format
    check_pixels(int(width), int(height), max_pixels)
    if kind in OPENCV_FORMATS:
        buf = np.frombuffer(data, dtype=np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if img is not None:
            return img
    try:
        with open_header(data) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except ImageDecodeError:
        raise
    except Exception as e:
        raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {type(e).__name__}: {e}") from e
    return np.ascontiguousarray(rgb[:, :, ::-1])


def crop_box(bbox: tuple[float, float, float, float], padding: float = CROP_PADDING) -> tuple[int, int, int]:
    """(x0, y0, side) of the square crop: centred on the box, side = (1 + 2*padding) x the box's long edge."""
    x1, y1, x2, y2 = bbox
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * padding)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    s = max(1, round(side))
    return round(cx - s / 2.0), round(cy - s / 2.0), s


def crop_face(
    image_bgr: np.ndarray, face: DetectedFace, size: int = CROP_SIZE, padding: float = CROP_PADDING
) -> np.ndarray:
    """The size x size BGR crop of one face. Parts of the square outside the image are black.

    Black rather than replicated borders: smeared edge pixels can form face-like texture, and the crop
    must re-detect as exactly one face when roop loads it.
    """
    h, w = image_bgr.shape[:2]
    x0, y0, s = crop_box(face.bbox, padding)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC  # AREA for shrinking, CUBIC for enlarging
    if x0 >= 0 and y0 >= 0 and x0 + s <= w and y0 + s <= h and image_bgr.ndim == 3 and image_bgr.shape[2] == 3:
        # The square lies inside the image: resize the view itself (the same pixels, so the same crop),
        # without allocating and filling a black canvas first.
        return cv2.resize(image_bgr[y0 : y0 + s, x0 : x0 + s], (size, size), interpolation=interp)
    if s * s > CANVAS_MAX_FACTOR * max(1, h * w):
        return _crop_visible(image_bgr, x0, y0, s, size, interp)
    canvas = np.zeros((s, s, 3), dtype=np.uint8)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + s), min(h, y0 + s)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image_bgr[sy0:sy1, sx0:sx1]
    return cv2.resize(canvas, (size, size), interpolation=interp)


def _crop_visible(image_bgr: np.ndarray, x0: int, y0: int, s: int, size: int, interp: int) -> np.ndarray:
    """crop_face for a square far larger than the photo: the part inside the photo scaled to where it falls in the
    size x size crop, the rest black, without the s x s canvas (the same picture, within a pixel at its edges)."""
    h, w = image_bgr.shape[:2]
    out = np.zeros((size, size, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + s), min(h, y0 + s)
    k = size / s
    dx0, dy0 = round((sx0 - x0) * k), round((sy0 - y0) * k)
    dx1, dy1 = min(size, round((sx1 - x0) * k)), min(size, round((sy1 - y0) * k))
    if sx1 > sx0 and sy1 > sy0 and dx1 > dx0 and dy1 > dy0:
        part = cv2.resize(image_bgr[sy0:sy1, sx0:sx1], (dx1 - dx0, dy1 - dy0), interpolation=interp)
        out[dy0:dy1, dx0:dx1] = part.reshape(dy1 - dy0, dx1 - dx0, -1)[:, :, :3]
    return out


def encode_png(image_bgr: np.ndarray) -> bytes:
    """PNG bytes of a crop, as the corpus stores it: lossless RGB, UP-filtered, deflated by ISA-L
    (gpu_agent/png.py says why not cv2.imencode)."""
    from .png import encode_png as write_png

    return write_png(image_bgr)


def pad_image(image_bgr: np.ndarray, fraction: float = 0.5) -> tuple[np.ndarray, int, int]:
    """A black border of `fraction` x the long edge on every side, but at most the short edge; returns (padded,
    dx, dy) offsets.

    A face that fills the frame (a tight aligned crop) has no context for the detector at 640: its
    anchors expect faces smaller than the input. The border shrinks it back into range. Such a face is at most
    as tall as the short edge, so a border of the short edge is room enough; the cap keeps a thin canvas from
    growing without bound (a 30000x100 photo padded by half its long edge was a 60000x30100 array, 5.4 GB): the
    padded image holds at most 9 times the photo's pixels (issue 23). Photos up to 2:1 pad as before.
    """
    h, w = image_bgr.shape[:2]
    b = max(1, min(round(max(h, w) * fraction), min(h, w)))
    padded = cv2.copyMakeBorder(image_bgr, b, b, b, b, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return padded, b, b
