"""What an image's header says, read without decoding its pixels: its size, its EXIF, whether it is too large.

A decoder allocates width x height x channels bytes whatever the file size: a 140 KB PNG can claim
12000x12000 and cost 2.8 GB to decode (a decompression bomb). Pillow's Image.open reads only the header,
so the size is known and checked before any full decode. OpenCV's imdecode has no such step.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ImageDecodeError, ImageTooLarge

# The default of [limits] max_pixels (handlers/limits.py): 100 MP, well above any camera's photo.
DEFAULT_MAX_PIXELS = 100_000_000

_heif_registered = False


def _register_heif() -> None:
    """HEIC/HEIF through pillow-heif, when installed (optional); once per process."""
    global _heif_registered
    if _heif_registered:
        return
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    _heif_registered = True


def open_header(source: bytes | Path | BinaryIO) -> Any:
    """The PIL image for `source` (bytes, a path, or a file open for reading, left open) with only its header read
    (a context manager), or ImageDecodeError.

    Pillow refuses sizes over twice its own MAX_IMAGE_PIXELS outright; that refusal is an ImageTooLarge.
    """
    from PIL import Image

    _register_heif()
    fp: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with warnings.catch_warnings():  # the size is checked against our own limit, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found.group(1)) if found else 0
        raise ImageTooLarge(f"image of {pixels / 1e6:.0f} MP refused before decoding: {e}", pixels=pixels) from e
    except Exception as e:  # whatever the header parser trips on, the bytes are not an image
        size = len(source) if isinstance(source, (bytes, bytearray, memoryview)) else "?"
        # Pillow names what it was given: for bytes that is "<_io.BytesIO object at 0x...>", which tells a
        # user nothing; the caller names the file.
        detail = str(e).replace(f" {fp!r}", "").replace(repr(fp), "") if fp is not source else str(e)
        raise ImageDecodeError(f"cannot decode image ({size} bytes): {type(e).__name__}: {detail}") from e


def image_size(source: bytes | Path) -> tuple[int, int]:
    """(width, height) from the header alone; ImageDecodeError when no header parser knows the bytes."""
    with open_header(source) as im:
        width, height = im.size
        return int(width), int(height)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise ImageTooLarge when width x height exceeds `max_pixels` (0 or less: no limit)."""
    pixels = int(width) * int(height)
    if max_pixels > 0 and pixels > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} ({pixels / 1e6:.0f} MP), over the limit of {max_pixels / 1e6:.0f} MP"
            " ([limits] max_pixels); not decoded",
            width=width, height=height, pixels=pixels, max_pixels=max_pixels,
        )


def header_exif(im: Any) -> Any:
    """The EXIF a header holds, without decoding pixels.

    PIL's PngImageFile.getexif() decodes the whole image when no eXIf chunk came before the pixel data,
    to look for one after it: such a late chunk is not read here (a capture date is not worth a decode).
    """
    from PIL import Image

    if im.format == "PNG" and "exif" not in im.info:
        return Image.Exif()
    return im.getexif()


# How the formats we read begin (None: any byte): JPEG, PNG, GIF, WebP, BMP, TIFF (both byte orders),
# ISO base media (HEIC/HEIF/AVIF: a box size, then "ftyp"), JPEG 2000 (codestream and container).
_SIGNATURES: tuple[tuple[int | None, ...], ...] = tuple(
    tuple(None if c == "?" else ord(c) for c in sig) for sig in (
        "\xff\xd8\xff", "\x89PNG\r\n\x1a\n", "GIF8", "RIFF????WEBP", "BM", "II*\x00", "MM\x00*", "????ftyp",
        "\xffO\xffQ", "\x00\x00\x00\x0cjP  \r\n\x87\n",
    )
)


def starts_like_an_image(data: bytes) -> bool:
    """Whether `data` begins the way an image format we read begins (or could, being shorter than that).

    An image cut short still starts like one; a text file or random bytes never will, however long one
    waits. Empty data is no evidence of an image.
    """
    if not data:
        return False
    head = data[:16]
    return any(all(b is None or b == head[i] for i, b in enumerate(sig[: len(head)])) for sig in _SIGNATURES)


__all__ = ["DEFAULT_MAX_PIXELS", "check_pixels", "header_exif", "image_size", "open_header", "starts_like_an_image"]
