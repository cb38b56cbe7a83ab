"""embed: detect and embed a new or changed corpus PNG exactly as roop loads it (no padding).

The detections and the best face's embedding become one FaceAnalyzed event; every other check reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpu_agent.interface import DetectedFace
from state import events as ev
from state.eventlog import StoredEvent

from .common import Face, active_face, open_models, prune, sha256_bytes
from .context import HandlerContext

Embedded = ev.FaceAdded | ev.FaceChanged | ev.AnalysisRequested  # the kinds that ask for an analysis


def embed(ctx: HandlerContext, events: Sequence[StoredEvent[Embedded]]) -> list[ev.Event]:
    todo = _still_current(ctx, events)
    if not todo:
        return []
    models = open_models(ctx, "embed")
    if models is None:
        return []
    engine = models[0]
    model = engine.describe()
    _warn_if_engine_differs(ctx, model)
    # pad=False: what roop sees on load. An in-process engine takes the decoded images, so each PNG is
    # decoded once for detection and quality (not at all when the router just wrote it: ctx.recent_crops);
    # the HTTP agent takes the bytes.
    out, readable, decoded = _decode_all(ctx, todo)
    if not readable:
        return out
    arrays = getattr(engine, "analyze_arrays", None)
    found = arrays(decoded, pad=False) if arrays is not None else engine.analyze([d for _f, d in readable], pad=False)
    for (face, _data), image, faces in zip(readable, decoded, found):
        out.append(_analyzed(ctx, face, image, faces, model))
    return out


def _still_current(ctx: HandlerContext, events: Sequence[StoredEvent[Embedded]]) -> list[tuple[Face, bytes]]:
    """(face, bytes) of each event's PNG that is still active and still holds the bytes the event names."""
    todo: list[tuple[Face, bytes]] = []
    for se in events:
        e = se.event
        face = active_face(ctx, e.path, e.sha256)
        if face is None:
            continue  # pruned, quarantined or changed again since: a later event covers it
        try:
            data = (ctx.config.corpus / face.path).read_bytes()
        except FileNotFoundError:
            continue  # gone by hand; the next scan records it
        if sha256_bytes(data) != face.sha256:
            continue  # rewritten since the scan; its FaceChanged will come
        todo.append((face, data))
    return todo


def _warn_if_engine_differs(ctx: HandlerContext, model: dict[str, Any]) -> None:
    t = ctx.config.thresholds
    if model.get("det_size", t.multi_face_det_size) != t.multi_face_det_size or \
            model.get("det_thresh", t.multi_face_det_thresh) > t.multi_face_det_thresh:
        ctx.say_once("det_settings", "the face engine detects with other settings than the multi-face check"
                     " expects ([models] det_size/det_thresh vs [thresholds] multi_face_*)",
                     engine_det_size=model.get("det_size"), engine_det_thresh=model.get("det_thresh"),
                     check_det_size=t.multi_face_det_size, check_det_thresh=t.multi_face_det_thresh)


def _decode_all(ctx: HandlerContext, todo: list[tuple[Face, bytes]]
                ) -> tuple[list[ev.Event], list[tuple[Face, bytes]], list[Any]]:
    """(prunes of the PNGs that do not decode, the readable ones, their pixels)."""
    from gpu_agent.crop import decode_image  # here: cv2 and scikit-image are heavy imports for the reading verbs
    from gpu_agent.errors import ImageDecodeError, ImageTooLarge

    out: list[ev.Event] = []
    decoded: list[Any] = []
    readable: list[tuple[Face, bytes]] = []
    max_pixels = ctx.config.limits.max_pixels
    for face, data in todo:
        try:
            # A crop the router just wrote: its pixels are kept (the file's sha256 was checked against the
            # event's), else the header first: a bomb is never decoded.
            pixels = ctx.recent_crops.take(face.sha256)
            decoded.append(pixels if pixels is not None else decode_image(data, max_pixels))
            readable.append((face, data))
        except ImageTooLarge as err:  # bad input: moved aside with the reason, the rest go on
            out.append(prune(ctx, face, "too_large", f"{face.path} is too large to decode: {err}",
                             {"size": len(data), "pixels": err.pixels, "max_pixels": max_pixels}))
        except ImageDecodeError as err:
            out.append(prune(ctx, face, "unreadable", f"cannot decode {face.path}: {err}", {"size": len(data)}))
    return out, readable, decoded


def _analyzed(ctx: HandlerContext, face: Face, image: Any, detected: list[DetectedFace],
              model: dict[str, Any]) -> ev.FaceAnalyzed:
    """The FaceAnalyzed of one PNG: faces at or above the multi-face threshold, the best one's embedding."""
    from gpu_agent.quality import crop_quality
    from gpu_agent.source_quality import quality_with_source, source_terms

    faces = [f for f in detected if f.det_score >= ctx.config.thresholds.multi_face_det_thresh]
    if not faces:
        return ev.FaceAnalyzed(path=face.path, sha256=face.sha256, face_count=0, model=model)
    best = max(faces, key=lambda f: f.det_score)
    q = crop_quality(image, best)
    # A crop routed from a photo ranks by its photo's face size and sharpness (the crop hides both).
    from_source = source_terms(face.source)
    return ev.FaceAnalyzed(
        path=face.path, sha256=face.sha256, face_count=len(faces), det_score=round(best.det_score, 6),
        bbox=tuple(round(v, 2) for v in best.bbox), kps=tuple((round(x, 2), round(y, 2)) for x, y in best.kps),
        quality=quality_with_source(q, from_source),
        quality_terms={k: round(getattr(q, k), 6)
                       for k in ("det_score", "short_edge", "sharpness", "frontality", "symmetry")},
        model=model, embedding=best.embedding.astype("float32"), source_terms=from_source,
    )
