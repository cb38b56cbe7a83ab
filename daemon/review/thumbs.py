"""Thumbnails: made once per sha256 (small WebP), cached under <state>/thumbs/, never in the corpus."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from PIL import Image

SHA256 = re.compile(r"^[0-9a-f]{64}$")
QUALITY = 80  # WebP quality: a 160 px face stays recognisable at about 5 KB


class Thumbs:
    """`path(sha256, source)`: the cached thumbnail of these bytes, made from `source` the first time."""

    def __init__(self, cache_dir: Path, px: int) -> None:
        self.cache_dir = Path(cache_dir)
        self.px = px

    def cached(self, sha256: str) -> Path:
        if not SHA256.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.cache_dir / sha256[:2] / f"{sha256}.webp"

    def path(self, sha256: str, source: Path) -> Path:
        """The thumbnail of `source` (whose bytes hash to `sha256`), written atomically on first use."""
        out = self.cached(sha256)
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as opened:
            im = opened.convert("RGB")
            im.thumbnail((self.px, self.px))
            fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".thumb-", suffix=".webp")
            try:
                with os.fdopen(fd, "wb") as f:
                    im.save(f, "WEBP", quality=QUALITY, method=4)
                os.replace(tmp, out)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return out
