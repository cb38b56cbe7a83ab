"""Real 512x512 corpus crops cut by the project's own cropper from ../shared/faces, and a corpus builder."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from daemon.config import load_config
from daemon.pipeline import Pipeline
from gpu_agent.crop import crop_face, decode_image
from state import events as ev
from state.eventlog import EventLog

PHOTOS = {
    "obama": "identities/obama/obama.jpg",
    "obama1": "identities/obama/obama1.jpg",
    "obama2": "identities/obama/obama2.jpg",
    "obama3": "identities/obama/obama3.jpg",
    "biden": "identities/biden/biden.jpg",
    "biden2": "identities/biden/biden2.jpg",
    "alex1": "identities/alex_lacamoire/alex_lacamoire1.jpg",
    "alex2": "identities/alex_lacamoire/img1.jpg",
    "lin": "identities/lin_manuel_miranda/lin-manuel-miranda.jpg",
}


def png(bgr: np.ndarray, year: int | None = None) -> bytes:
    """PNG bytes of a BGR image, with EXIF DateTimeOriginal when `year` is given."""
    im = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
    buf = io.BytesIO()
    if year is None:
        im.save(buf, format="PNG")
    else:
        exif = Image.Exif()
        exif[0x8769] = {0x9003: f"{year}:06:01 12:00:00"}  # Exif IFD: DateTimeOriginal
        im.save(buf, format="PNG", exif=exif.tobytes())
    return buf.getvalue()


def make_crops(engine: Any, faces_dir: Path) -> dict[str, np.ndarray]:
    """name -> 512x512 BGR crop of the best face of each photo (gpu_agent.crop.crop_face)."""
    out = {}
    for name, rel in PHOTOS.items():
        img = decode_image((faces_dir / rel).read_bytes())
        face = max(engine.analyze_arrays([img])[0], key=lambda f: f.det_score)
        out[name] = crop_face(img, face)
    a, b = out["obama"], out["biden"]
    out["two_faces"] = np.hstack([a, b])  # two crops side by side: roop would average both
    out["no_face"] = cv2.resize(decode_image((faces_dir / "no_face/pp10.jpg").read_bytes()), (512, 512),
                                interpolation=cv2.INTER_AREA)
    # A re-encoded, slightly resized copy of a crop (JPEG q90 through 490 px and back to 512).
    small = cv2.resize(a, (490, 490), interpolation=cv2.INTER_AREA)
    _ok, jpg = cv2.imencode(".jpg", cv2.resize(small, (512, 512), interpolation=cv2.INTER_CUBIC),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    out["obama_copy"] = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    return out


def variant(bgr: np.ndarray, k: int) -> np.ndarray:
    """The same picture with one corner pixel changed: other bytes (no byte-dup), the same face."""
    out = bgr.copy()
    out[0, 0] = (k % 256, (k // 256) % 256, 7)
    return out


class GivenScorer:
    """An OcclusionScorer returning the scores given per PNG sha256 (0.0 for any other image)."""

    def __init__(self, scores: dict[str, dict[str, float]] | None = None, available: bool = True) -> None:
        self.scores = scores or {}
        self.available = available
        self.calls = 0

    def score(self, images: Sequence[bytes]) -> list[dict[str, float]]:
        self.calls += 1
        return [dict(self.scores.get(hashlib.sha256(b).hexdigest(), {"mask": 0.0, "sunglasses": 0.0})) for b in images]

    def describe(self) -> dict[str, Any]:
        return {"scorer": "given-scores", "available": self.available}


def write_corpus(corpus: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Write rel path -> bytes under corpus; returns rel path -> sha256."""
    out = {}
    for rel, data in files.items():
        p = corpus / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def pipeline(data_dir: Path, engines: Callable[[], Any], config_toml: str = "", *, merge: bool = False) -> Pipeline:
    """A pipeline on `data_dir` with these engines. Merging duplicate identities is off unless `merge` (these
    corpora put one person in several facesets, or several in one, on purpose: tests/test_merge_identities.py)."""
    path = None
    if config_toml:
        path = data_dir / "facesetd.toml"
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(config_toml)
    config = load_config(path, data_dir=str(data_dir), environ={} if merge else {"FACESETD_IDENTITY_MERGE_DISTANCE": "0"})
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.corpus_dir.mkdir(parents=True, exist_ok=True)
    return Pipeline(config, EventLog(config.log_path), open_engines=engines)


def decisions(p: Pipeline, check: str | None = None) -> list[tuple[int, ev.Event]]:
    out = []
    for se in p.log.read(0, None):
        e = se.event
        if isinstance(e, ev.Decision) and not isinstance(e, ev.DecisionReverted) and check in (None, e.check):
            out.append((se.position, e))
    return out


def events_of(p: Pipeline, kind: type[ev.Event]) -> list[tuple[int, Any]]:
    return [(se.position, se.event) for se in p.log.read(0, None, kinds=[kind.KIND])]
