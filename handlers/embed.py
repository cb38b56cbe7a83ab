"""embed: detect and embed a new or changed corpus PNG exactly as roop loads it (no padding).

The detections and the best face's embedding become one FaceAnalyzed event; every other check reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from state import events as ev
from state.eventlog import StoredEvent

from .common import Face, active_face, open_models, prune, sha256_bytes
from .context import HandlerContext


def embed(ctx: HandlerContext, events: Sequence[StoredEvent]) -> list[ev.Event]:
    todo: list[tuple[Face, bytes]] = []
    for se in events:
        e = se.event
        face = active_face(ctx, e.path, e.sha256)  # type: ignore[attr-defined]
        if face is None:
            continue  # pruned, quarantined or changed again since: a later event covers it
        try:
            data = (ctx.corpus / face.path).read_bytes()
        except FileNotFoundError:
            continue  # gone by hand; the next scan records it
        if sha256_bytes(data) != face.sha256:
            continue  # rewritten since the scan; its FaceChanged will come
        todo.append((face, data))
    if not todo:
        return []
    models = open_models(ctx, "embed")
    if models is None:
        return []
    from gpu_agent.crop import decode_image  # here: cv2 and scikit-image are heavy imports for the reading verbs
    from gpu_agent.errors import ImageDecodeError, ImageTooLarge
    from gpu_agent.quality import crop_quality

    engine = models[0]
    model = engine.describe()
    det_thresh = ctx.thresholds.multi_face_det_thresh
    if model.get("det_size", ctx.thresholds.multi_face_det_size) != ctx.thresholds.multi_face_det_size or \
            model.get("det_thresh", det_thresh) > det_thresh:
        ctx.say_once("det_settings", "the face engine detects with other settings than the multi-face check"
                     " expects ([models] det_size/det_thresh vs [thresholds] multi_face_*)",
                     engine_det_size=model.get("det_size"), engine_det_thresh=model.get("det_thresh"),
                     check_det_size=ctx.thresholds.multi_face_det_size, check_det_thresh=det_thresh)
    # pad=False: what roop sees on load. An in-process engine takes the decoded images, so each PNG is
    # decoded once for detection and quality; the HTTP agent takes the bytes.
    out: list[ev.Event] = []
    decoded: list[Any] = []
    readable: list[tuple[Face, bytes]] = []
    max_pixels = ctx.limits.max_pixels
    for face, data in todo:
        try:
            decoded.append(decode_image(data, max_pixels))  # the header first: a bomb is never decoded
            readable.append((face, data))
        except ImageTooLarge as err:  # bad input: moved aside with the reason, the rest go on
            out.append(prune(ctx, face, "too_large", f"{face.path} is too large to decode: {err}",
                             {"size": len(data), "pixels": err.pixels, "max_pixels": max_pixels}))
        except ImageDecodeError as err:
            out.append(prune(ctx, face, "unreadable", f"cannot decode {face.path}: {err}", {"size": len(data)}))
    todo = readable
    if not todo:
        return out
    arrays = getattr(engine, "analyze_arrays", None)
    if arrays is not None:
        found = arrays(decoded, pad=False)
    else:
        found = engine.analyze([d for _f, d in todo], pad=False)
    for (face, _data), image, faces in zip(todo, decoded, found):
        faces = [f for f in faces if f.det_score >= det_thresh]
        if not faces:
            out.append(ev.FaceAnalyzed(path=face.path, sha256=face.sha256, face_count=0, model=model))
            continue
        best = max(faces, key=lambda f: f.det_score)
        q = crop_quality(image, best)
        out.append(ev.FaceAnalyzed(
            path=face.path, sha256=face.sha256, face_count=len(faces), det_score=round(best.det_score, 6),
            bbox=tuple(round(v, 2) for v in best.bbox), kps=tuple((round(x, 2), round(y, 2)) for x, y in best.kps),
            quality=q.total,
            quality_terms={k: round(getattr(q, k), 6)
                           for k in ("det_score", "short_edge", "sharpness", "frontality", "symmetry")},
            model=model, embedding=best.embedding.astype("float32"),
        ))
    return out
