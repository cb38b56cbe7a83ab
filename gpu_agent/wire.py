"""The agent's wire format, shared by server and client: JSON with base64 for bytes.

Images travel as base64 of their encoded bytes (no path mapping between Windows and WSL). Embeddings travel as
base64 of little-endian float32, and floats as JSON numbers (exact for float32 values), so a face analysed over
HTTP equals the in-process result bit for bit.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from .interface import DetectedFace


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def face_to_json(face: DetectedFace) -> dict[str, Any]:
    return {
        "bbox": list(face.bbox),
        "kps": [list(p) for p in face.kps],
        "det_score": face.det_score,
        "embedding": b64(np.asarray(face.embedding, dtype="<f4").tobytes()),
    }


def face_from_json(d: dict[str, Any]) -> DetectedFace:
    return DetectedFace(
        bbox=tuple(float(v) for v in d["bbox"]),  # type: ignore[arg-type]
        kps=tuple((float(x), float(y)) for x, y in d["kps"]),
        det_score=float(d["det_score"]),
        embedding=np.frombuffer(unb64(d["embedding"]), dtype="<f4").astype(np.float32),
    )
