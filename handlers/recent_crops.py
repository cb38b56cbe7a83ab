"""The pixels of the crops this process just wrote, so the checks need not decode their PNGs again.

The router cuts a face's 512x512 crop, encodes it as a PNG and writes it; moments later `embed` analyses the
same file (its FaceAdded, or the FaceAdded of a pool face promoted into a faceset). The PNG is lossless, so its
pixels are the crop the router held: `embed` takes them from here instead of decoding the file (~4 ms a crop).

Keyed by the sha256 of the PNG's bytes, which `embed` checks against the file before it looks here, so what it
gets is always what the file decodes to. Bounded: the newest `RECENT_CROPS` crops (~0.75 MB each); a crop is
handed out once (a crop is analysed once per FaceAdded); anything missing is decoded from the file as before.
Nothing here changes an event or a byte written: it only saves a decode.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

# Crops kept (~0.75 MB each, so ~24 MB): a group photo's faces and a promotion's moved pool faces fit; the
# router's crops are analysed right after their photo, so more would rarely be read.
RECENT_CROPS = 32


class RecentCrops:
    """sha256 of a crop's PNG bytes -> its BGR pixels (read-only), the newest `limit` of them."""

    def __init__(self, limit: int = RECENT_CROPS) -> None:
        self.limit = limit
        self._crops: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # the router may write crops on a worker thread
        self.hits = 0  # crops handed out (for tests and the benchmark)

    def put(self, sha256: str, pixels: Any) -> None:
        """Keep `pixels` (an HxWx3 uint8 array, made read-only) as the decode of the PNG whose sha256 is given."""
        pixels.flags.writeable = False  # shared with whoever takes it: nobody may draw on it
        with self._lock:
            self._crops[sha256] = pixels
            self._crops.move_to_end(sha256)
            while len(self._crops) > self.limit:
                self._crops.popitem(last=False)

    def take(self, sha256: str) -> Any | None:
        """The pixels of the PNG with this sha256, removed from here; None when they are not kept."""
        with self._lock:
            pixels = self._crops.pop(sha256, None)
        if pixels is not None:
            self.hits += 1
        return pixels

    def __len__(self) -> int:
        return len(self._crops)
