"""Small helpers every check shares: is a face still current, is a check overridden, where does a prune go."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from state import events as ev
from state import names
from state.layout import DROPPED, parse_face_path

from .context import HandlerContext


@dataclass(frozen=True)
class Face:
    """One active face as the corpus state holds it now."""

    path: str
    faceset: str
    sha256: str
    scores: dict[str, Any]
    quality: float | None
    changed: int
    source: dict[str, Any]


def active_face(ctx: HandlerContext, path: str, sha256: str) -> Face | None:
    """The face at `path` if it still holds these bytes, is not pruned and sits in an active faceset.

    Anything else (moved, changed since, pruned, quarantined) means the event no longer describes it.
    """
    if path in ctx.batch.claimed:
        return None  # another check decided on it in this same batch
    row = ctx.state.active_face(path)
    if row is None or row.sha256 != sha256:
        return None
    return Face(path, row.faceset, row.sha256, json.loads(row.scores), row.quality, row.changed,
                json.loads(row.source))


def overridden(ctx: HandlerContext, faceset: str, check: str, sha256: str = "*") -> bool:
    """True when the user restored a decision of `check` on these bytes (or, with "*", on the faceset)."""
    return ctx.state.is_overridden(faceset, check, sha256)


def _dropped_name_taken(ctx: HandlerContext, rel: str) -> bool:
    if rel in ctx.batch.claimed_dests or (ctx.config.corpus / rel).exists():
        return True
    return ctx.state.has_face_at(rel)


def dropped_dest(ctx: HandlerContext, path: str) -> str:
    """Where a pruned PNG goes: its faceset's faces/_dropped/, as name~2.png, name~3.png ... if taken.

    Every candidate fits NAME_MAX bytes (a 255-byte name loses the end of its stem to make room for ~2).
    """
    folder, name = path.rsplit("/", 1)
    n = 1
    candidate = f"{folder}/{DROPPED}/{names.fit(name)}"
    while _dropped_name_taken(ctx, candidate):
        n += 1
        candidate = f"{folder}/{DROPPED}/{names.fit(name, f'~{n}')}"
    return candidate


def prune(ctx: HandlerContext, face: Face, check: str, reason: str, inputs: dict[str, Any]) -> ev.FacePruned:
    """The decision to move one PNG to _dropped/ (the destination is decided here, so replay is deterministic)."""
    dest = dropped_dest(ctx, face.path)
    ctx.batch.claimed.add(face.path)
    ctx.batch.claimed_dests.add(dest)
    return ev.FacePruned(path=face.path, sha256=face.sha256, moves=((face.path, dest),), check=check,
                         reason=reason, inputs=inputs)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def faceset_of(path: str) -> str | None:
    fp = parse_face_path(path)
    return fp.faceset if fp else None


def open_models(ctx: HandlerContext, check: str) -> tuple[Any, Any] | None:
    """The (face engine, occlusion scorer), or None (logged once) when no models can be opened."""
    models = ctx.models
    if not models.configured:
        ctx.say_once("no_models", "checks that need models are off: no models configured", check=check)
        return None
    if models.in_backoff(ctx.config.model_retry_s):
        return None  # opening is slow (the HTTP agent retries with backoff): not for every batch
    try:
        engines = models.engines()
    except Exception as e:  # noqa: BLE001  (a missing pack must not stop the checks that need no model)
        # The faces skipped meanwhile are asked for again once the models open (AnalysisRequested).
        ctx.say_once("no_models", "checks that need models are off: the models could not be opened",
                     check=check, error=models.note_failure(e))
        return None
    models.failed = ""
    return engines
