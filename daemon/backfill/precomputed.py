"""The face engine and occlusion scorer that answer from the backfill's records, behind the interfaces the
handlers already use.

`analyze(photos, pad=True)` (the router's call when a photo is received) and `analyze(pngs, pad=False)` (the embed
and multi-face checks' call on a crop, as roop loads it) hash each image and answer from its record; `score(pngs)`
(the occlusion check) answers from a crop's record when the scorer that made it is the one configured here. An
image without a record, or whose record says it could not be decoded there, goes to the configured engine or
scorer, so a missing record costs time, never a different decision. Neither has `analyze_arrays`, so the
handlers hand them the images' bytes (handlers/route_photo.py, handlers/embed.py) and the in-process read-ahead
stays out of the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from gpu_agent.interface import DetectedFace, FaceEngine, OcclusionScorer

from .records import CROP, PHOTO, Record, model_key


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PrecomputedEngine:
    def __init__(self, records: dict[str, Record], fallback: FaceEngine) -> None:
        self.records = records
        self.fallback = fallback
        self.answered = 0  # photos answered from a record
        self.fell_back = 0  # photos of a pad=True call the configured engine analysed
        self.crops_answered = 0  # crops (pad=False) answered from a record
        self.crops_fell_back = 0  # crops the configured engine analysed

    def analyze(self, images: Sequence[bytes], *, pad: bool = True) -> list[list[DetectedFace]]:
        kind = PHOTO if pad else CROP  # a photo's record answers the router, a crop's the checks
        out: list[list[DetectedFace] | None] = []
        missing: list[int] = []
        for i, data in enumerate(images):
            record = self.records.get(_sha(data))
            if record is None or record.error or record.kind != kind:
                out.append(None)
                missing.append(i)
            else:
                out.append(list(record.faces))
        if missing:
            for i, faces in zip(missing, self.fallback.analyze([images[i] for i in missing], pad=pad)):
                out[i] = faces
        if pad:
            self.answered += len(images) - len(missing)
            self.fell_back += len(missing)
        else:
            self.crops_answered += len(images) - len(missing)
            self.crops_fell_back += len(missing)
        return [faces if faces is not None else [] for faces in out]

    def describe(self) -> dict[str, Any]:
        return self.fallback.describe()


class PrecomputedScorer:
    def __init__(self, records: dict[str, Record], fallback: OcclusionScorer) -> None:
        self.records = records
        self.fallback = fallback
        self.available = fallback.available  # no scorer here: the inbox path scores nothing, and neither does this
        self.key = model_key(fallback.describe()) if fallback.available else ""
        self.answered = 0  # crops scored from a record
        self.fell_back = 0  # crops the configured scorer scored

    def score(self, images: Sequence[bytes]) -> list[dict[str, float]]:
        out: list[dict[str, float] | None] = []
        missing: list[int] = []
        for i, data in enumerate(images):
            record = self.records.get(_sha(data))
            if record is None or record.occlusion is None or not self.key or record.scorer != self.key:
                out.append(None)
                missing.append(i)
            else:
                out.append(dict(record.occlusion))
        if missing:
            for i, scores in zip(missing, self.fallback.score([images[i] for i in missing])):
                out[i] = scores
        self.answered += len(images) - len(missing)
        self.fell_back += len(missing)
        return [scores if scores is not None else {} for scores in out]

    def describe(self) -> dict[str, Any]:
        return self.fallback.describe()
