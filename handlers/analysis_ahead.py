"""The faces of the inbox photos waiting next, found in the same engine call as the photo being routed.

The router settles one photo at a time (route, checks, moves, promotion) before the next is received, so the
order of its decisions depends on the log alone. Only the analysis runs ahead: when the router is about to
analyse photo N and more photos wait in the inbox (the list the pipeline receives from next, in order), up to
[models] batch_size - 1 of them are read and decoded too, and the engine finds the faces of all of them in one
call; its recognition model then runs once over every face of the batch (gpu_agent/face_engine.py), which is
where a GPU's throughput is. Their faces wait here, keyed by the sha256 of the bytes read (with the pad flag,
the pixel limit and the engine), and are handed out once: when photo N+1 is received and routed with the same
bytes, the router takes its faces from here instead of calling the engine. Embeddings are the same batched or
not, so nothing recorded changes.

Looking ahead never moves, records or rejects anything: a file that is not a plain file (a link, a folder),
cannot be read, is over `AHEAD_BYTES`, is refused by the same decoder and limits as the router's (too many
pixels, a decompression bomb, not an image) or does not fit `AHEAD_PIXELS` is simply left out and handled when
it is received, as without this. A file replaced meanwhile has other bytes, so another sha256: it is analysed
afresh. Without an in-process engine (the HTTP agent takes bytes), nothing is looked at ahead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .plain_file import NotAFile, TooLarge, read_plain

# Pixels decoded ahead for one engine call, the photo being routed left out (~190 MB of BGR while the call
# runs; only the faces are kept after it).
AHEAD_PIXELS = 64_000_000
# A file larger than this is not read ahead (a photo rarely is): it is read when it is received.
AHEAD_BYTES = 64 * 1024 * 1024
# Waiting files looked at per call, per photo wanted (some are left out: known already, links, not images).
LOOK_AT = 4

Arrays = Callable[..., list[list[Any]]]  # an engine's analyze_arrays(images, pad=...)
Key = tuple[str, bool, int]  # (sha256 of the bytes, pad, [limits] max_pixels)


class AnalysisAhead:
    """The inbox photos to be received next, and the faces found ahead for some of them."""

    def __init__(self, pixels: int = AHEAD_PIXELS) -> None:
        self.pixels = pixels  # 0: nothing is looked at ahead
        self.waiting: list[Path] = []  # the files the pipeline receives next, in order
        self._found: dict[Key, list[Any]] = {}
        self._engine: Any = None  # the engine that found them
        self.hits = 0  # photos whose faces were handed out from here (for tests and the benchmark)
        self.ahead = 0  # photos analysed ahead

    def upcoming(self, paths: Sequence[Path]) -> None:
        """The files the pipeline will receive next, in order (the photo just received left out)."""
        self.waiting = list(paths)

    def faces(self, engine: Any, arrays: Arrays, photo: tuple[str, np.ndarray], *, pad: bool, max_pixels: int,
              batch: int, known: Callable[[str], bool]) -> list[Any]:
        """The faces of `photo` (sha256 of its bytes, its decoded pixels): found ahead, else found now in one
        call with up to `batch` - 1 of the photos waiting next (not those `known` already by their sha256)."""
        sha256, image = photo
        if self._engine is not engine:
            self._found.clear()
            self._engine = engine
        found = self._found.pop((sha256, pad, max_pixels), None)
        if found is not None:
            self.hits += 1
            return found
        window, todo = self._read_ahead(batch - 1, pad, max_pixels, {sha256}, known)
        # Kept: the faces of the photos still among the next ones; the rest will not be asked for in turn.
        self._found = {k: v for k, v in self._found.items() if k[0] in window}
        if not todo:
            return arrays([image], pad=pad)[0]
        try:
            results = arrays([image, *(pixels for _sha, pixels in todo)], pad=pad)
        except Exception:  # noqa: BLE001 - the photo alone, as without looking ahead: its error is its own
            return arrays([image], pad=pad)[0]
        for (sha, _pixels), faces in zip(todo, results[1:]):
            self._found[(sha, pad, max_pixels)] = faces
        self.ahead += len(todo)
        return results[0]

    def _read_ahead(self, count: int, pad: bool, max_pixels: int, seen: set[str],
                    known: Callable[[str], bool]) -> tuple[set[str], list[tuple[str, np.ndarray]]]:
        """The sha256 of the next `count` waiting photos that may be analysed (some already are), and the
        decoded pixels of those to analyse now (within `self.pixels` in all). Others are left out."""
        window: set[str] = set()
        todo: list[tuple[str, np.ndarray]] = []
        budget = self.pixels
        for path in self.waiting[: LOOK_AT * max(count, 0)]:
            if len(window) >= count or budget <= 0:
                break
            data = _read_plain_file(path)
            sha256 = hashlib.sha256(data).hexdigest() if data is not None else ""
            if data is None or sha256 in seen or known(sha256):
                continue
            seen.add(sha256)
            if (sha256, pad, max_pixels) in self._found:
                window.add(sha256)
                continue
            pixels = _decoded(data, min(max_pixels, budget))
            if pixels is not None:
                budget -= pixels.shape[0] * pixels.shape[1]
                window.add(sha256)
                todo.append((sha256, pixels))
        return window, todo

    def __len__(self) -> int:
        return len(self._found)


def _read_plain_file(path: Path) -> bytes | None:
    """The bytes of a regular file (a link is not followed) of at most AHEAD_BYTES; None for anything else (a FIFO,
    socket or device is never opened: handlers/plain_file.py)."""
    try:
        return read_plain(path, AHEAD_BYTES)[0]
    except (OSError, NotAFile, TooLarge):
        return None


def _decoded(data: bytes, max_pixels: int) -> np.ndarray | None:
    """The pixels as the router decodes them (the same function, header checked first); None when it refuses."""
    from gpu_agent.crop import decode_image

    try:
        image = decode_image(data, max_pixels)
    except Exception:  # noqa: BLE001 - too large, not an image, cut short: handled when it is received
        return None
    return image if image is not None and image.size else None
