"""Limits on what the inbox and the corpus accept: file and image size, and how long an incomplete photo may wait.

`config.toml` section `[limits]`; the handlers read them from HandlerContext.limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    # images whose header claims more pixels than this are moved aside as too_large, never decoded.
    max_pixels: int = field(default=100_000_000, metadata={"range": (1, None)})
    # bytes; an inbox photo or Immich original larger than this is refused as too_large before it is read.
    max_file_bytes: int = field(default=256 * 1024 * 1024, metadata={"range": (1, None)})
    # seconds an inbox photo that does not decode waits for its writer to finish; unchanged this long, it is unreadable.
    incomplete_grace_s: float = field(default=600.0, metadata={"range": (0, None)})
