"""Writing the corpus's crop PNGs ourselves: 8-bit RGB, every row UP-filtered, deflated by ISA-L.

A crop is one 512x512 face; roop loads it with cv2.imread, the checks decode it again, so it must stay a
lossless PNG. OpenCV's encoder deflates with the system zlib, ~6.7 ms a crop (the largest cost outside the
models on the inbox path, issue 13). The format itself is simple enough to write here: the signature, IHDR,
one IDAT of the filtered rows, IEND, each chunk with its CRC. The rows are UP-filtered with numpy (each row
minus the row above, mod 256; the first row as it is), the filter OpenCV was already told to use.

The deflate is ISA-L's (`isal.isal_zlib`, python-isal) at level 1: on the crops of ../shared/faces
(bench/e2e.py --png) 1.9 ms a crop against zlib level 1's 6.7 ms, and 3% fewer bytes; they decode as fast.
ISA-L levels 0/2/3 take 1.8/2.0/2.2 ms for 13% more / 1% fewer / 2% more bytes; zlib-ng level 1 takes
3.3 ms for 30% more bytes. Where python-isal cannot be installed, the standard zlib at level 1 deflates the
same filtered rows (the same pixels, other bytes, ~3x the time).

Deterministic: the same pixels give the same bytes (with the same deflater), so a crop rewritten by a rerun
after a crash is found unchanged.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import cv2
import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_UP = 2  # PNG filter type 2: each byte minus the byte above it
# ISA-L level 1 (of 0-3): the fastest with the small output (see the module docstring for the others).
ISAL_LEVEL = 1
ZLIB_LEVEL = 1  # the fallback's: what OpenCV used


def _deflate_zlib(raw: np.ndarray) -> bytes:
    return zlib.compress(raw.data, ZLIB_LEVEL)


def isal_deflater(level: int = ISAL_LEVEL) -> Callable[[np.ndarray], bytes] | None:
    """ISA-L's deflate at `level` (0-3), or None where python-isal is not installed."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - python-isal is a dependency; a platform without its wheel falls back
        return None

    def deflate(raw: np.ndarray) -> bytes:
        return bytes(isal_zlib.compress(raw.data, level))

    return deflate


# The zlib stream of the filtered rows: ISA-L's where installed (~3.5x zlib's speed), the standard zlib's otherwise.
deflate: Callable[[np.ndarray], bytes] = isal_deflater() or _deflate_zlib


def up_filtered(image_bgr: np.ndarray) -> np.ndarray:
    """The PNG scanlines of a BGR uint8 image as RGB: (h, 1 + 3w) bytes, each row's filter byte UP."""
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"a crop is an HxWx3 uint8 array, not {image_bgr.dtype} {image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    rows = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB).reshape(h, w * 3)
    out = np.empty((h, w * 3 + 1), dtype=np.uint8)
    out[:, 0] = FILTER_UP
    out[0, 1:] = rows[0]  # the row above the first is zeros: UP leaves it as it is
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])  # uint8: wraps mod 256, as the filter is defined
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(image_bgr: np.ndarray, deflater: Callable[[np.ndarray], bytes] | None = None) -> bytes:
    """The PNG bytes of a BGR uint8 image: 8-bit RGB, not interlaced, every row UP-filtered, one IDAT.

    `deflater` (default `deflate`) turns the filtered rows into a zlib stream; a test passes the fallback's."""
    h, w = image_bgr.shape[:2]
    idat = (deflater or deflate)(up_filtered(image_bgr))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # bit depth 8, colour type 2 (RGB), deflate, filter 0
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
