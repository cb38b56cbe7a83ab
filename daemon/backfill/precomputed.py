"""A FaceEngine that answers from the backfill's records, behind the engine interface the handlers already use.

`analyze(photos, pad=True)` (the router's call when a photo is received) hashes each photo and answers from its
record; a photo without one, or whose record says it could not be decoded there, goes to the configured engine,
so a missing record costs time, never a different decision. Every other call (pad=False: the crops' analysis as
roop loads them; describe()) goes to the configured engine unchanged. It has no `analyze_arrays`, so the router
hands it the photo's bytes (handlers/route_photo.py) and the in-process read-ahead stays out of the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from gpu_agent.interface import DetectedFace, FaceEngine

from .records import Record


class PrecomputedEngine:
    def __init__(self, records: dict[str, Record], fallback: FaceEngine) -> None:
        self.records = records
        self.fallback = fallback
        self.answered = 0  # photos answered from a record
        self.fell_back = 0  # photos of a pad=True call the configured engine analysed

    def analyze(self, images: Sequence[bytes], *, pad: bool = True) -> list[list[DetectedFace]]:
        if not pad:
            return self.fallback.analyze(images, pad=False)
        out: list[list[DetectedFace] | None] = []
        missing: list[int] = []
        for i, data in enumerate(images):
            record = self.records.get(hashlib.sha256(data).hexdigest())
            if record is None or record.error:
                out.append(None)
                missing.append(i)
            else:
                out.append(list(record.faces))
        if missing:
            for i, faces in zip(missing, self.fallback.analyze([images[i] for i in missing], pad=True)):
                out[i] = faces
        self.answered += len(images) - len(missing)
        self.fell_back += len(missing)
        return [faces if faces is not None else [] for faces in out]

    def describe(self) -> dict[str, Any]:
        return self.fallback.describe()
