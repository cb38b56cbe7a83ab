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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from gpu_agent.interface import DetectedFace, FaceEngine, OcclusionScorer

from .records import CROP, PHOTO, Record, model_key

T = TypeVar("T")


def _answer(images: Sequence[bytes], records: dict[str, Record], from_record: Callable[[Record], T | None],
            compute: Callable[[list[bytes]], list[T]], empty: Callable[[], T]) -> tuple[list[T], int]:
    """Each image's answer from its record (`from_record` gives None where the record cannot answer), the others
    computed together in one `compute` call; and how many were computed."""
    out: list[T | None] = []
    missing: list[int] = []
    for i, data in enumerate(images):
        record = records.get(hashlib.sha256(data).hexdigest())
        answer = None if record is None else from_record(record)
        out.append(answer)
        if answer is None:
            missing.append(i)
    if missing:
        for i, computed in zip(missing, compute([images[i] for i in missing])):
            out[i] = computed
    return [answer if answer is not None else empty() for answer in out], len(missing)


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

        def from_record(record: Record) -> list[DetectedFace] | None:
            return None if record.error or record.kind != kind else list(record.faces)

        found, computed = _answer(images, self.records, from_record,
                                  lambda todo: self.fallback.analyze(todo, pad=pad), list)
        if pad:
            self.answered += len(images) - computed
            self.fell_back += computed
        else:
            self.crops_answered += len(images) - computed
            self.crops_fell_back += computed
        return found

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
        def from_record(record: Record) -> dict[str, float] | None:
            if record.occlusion is None or not self.key or record.scorer != self.key:
                return None  # not scored there, or by another model than the one configured here
            return dict(record.occlusion)

        scores, computed = _answer(images, self.records, from_record, self.fallback.score, dict)
        self.answered += len(images) - computed
        self.fell_back += computed
        return scores

    def describe(self) -> dict[str, Any]:
        return self.fallback.describe()
