"""What an event changed, in the few words `facesetd events` prints after its subject.

A label and its undo, a move and its move back, two photos of one name: the kind and the subject alone print the
same line for each. These words tell them apart: the old and the new label, where a file went, the photo's bytes.
"""

from __future__ import annotations

from typing import Any

SHORT_SHA = 8  # hex digits of a sha256 shown beside a photo: enough to tell a person's photos apart

# Kinds spelt here rather than imported: state.events is imported only where an event is decoded (events.py).
PHOTO_KINDS = ("photo_received", "photo_processed", "photo_rejected", "photo_deferred")
CROP_KINDS = ("face_added", "pool_face_added")  # a face crop cut from a photo (or found on disk)
LABELLED = "faceset_labelled"


def short_sha(sha256: str) -> str:
    """The photo's sha256 as shown beside its name: its first SHORT_SHA hex digits in brackets."""
    return f"[{sha256[:SHORT_SHA]}]" if sha256 else ""


def change(kind: str, subject: str, payload: dict[str, Any]) -> str:
    """The words after the subject: the photo's short sha256, the crop's photo, the old and new label, where a file
    moved (from the subject, or `src -> dest` when the move is not the subject's own); "" when nothing to add."""
    if kind in PHOTO_KINDS:
        return short_sha(str(payload.get("sha256") or ""))
    if kind in CROP_KINDS:
        source = payload.get("source") or {}
        photo = payload.get("photo_sha256") or (source.get("photo_sha256") if isinstance(source, dict) else "")
        return f"from photo {short_sha(str(photo))}" if photo else ""
    if kind == LABELLED:
        return _undoes(_label_change(str(payload.get("label") or ""), str(payload.get("previous") or "")), payload)
    if kind == "face_moved_externally":
        return f"-> {payload.get('dest', '')}"
    moves: list[Any] = list(payload.get("moves") or ())
    if len(moves) == 1:
        src, dest = moves[0]
        return _undoes(f"-> {dest}" if src == subject else f"{src} -> {dest}", payload)
    if moves:
        return _undoes(f"{len(moves)} moves", payload)
    return ""


def _label_change(label: str, previous: str) -> str:
    if not label:
        return f"label {previous!r} taken off" if previous else "label taken off"
    return f"{previous!r} -> {label!r}" if previous else f"(no label) -> {label!r}"


def _undoes(text: str, payload: dict[str, Any]) -> str:
    """`text`, and which correction it undoes when it is a `facesetd restore` of one."""
    undone = payload.get("undoes")
    return f"{text} (undoes event {undone})" if undone else text
