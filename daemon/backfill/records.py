"""The backfill's records: what the models found in one photo and in its crops, keyed by sha256, in Parquet files.

One row per photo (`kind` "photo"): its sha256, the models that analysed it (`model`, a key of the engine's
description without its execution providers, so a record made on a CUDA box serves a CPU daemon with the same
pack), the full description (`engine`, JSON), an `error` ("" when the photo decoded) and its faces as parallel
lists: `bbox` (x1, y1, x2, y2), `kps` (5 x (x, y), flattened), `det_score` and `embedding` (512 float32, raw
bytes). Floats are stored as float64, which holds the engine's float32 values exactly, so a face read back is the
face the engine returned.

And one row per 512x512 crop the router would cut from it (`kind` "crop", keyed by the PNG's sha256, `photo` the
photo's sha256): the faces the engine finds in the PNG as roop loads it (pad=False: the embed and multi-face
checks' call) and, where an occlusion model was open, its `occlusion` scores [mask, sunglasses] with `scorer` the
key of that model's description. A crop is a pure function of the photo's pixels and one face's box and landmarks
(gpu_agent.crop), so the PNG the router writes has the same bytes, and its record answers for it.

Files are written whole under a temp name and renamed (state.atomic), so a reader sees a complete file or none;
one whose footer does not parse (a copy cut short on shared storage) is skipped until it is complete. When two
files hold the same photo the first by name is used: only one answer per photo ever reaches the log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from gpu_agent.interface import DetectedFace
from gpu_agent.settings import ModelSettings
from state.atomic import atomic_write

log = structlog.get_logger("facesetd.backfill")

SUFFIX = ".parquet"
COLUMNS = ("sha256", "model", "engine", "error", "bbox", "kps", "det_score", "embedding", "kind", "photo", "occlusion",
           "scorer")
PHOTO, CROP = "photo", "crop"  # the two kinds of row
# Columns a record file written before crops were recorded lacks, with the value its rows have.
DEFAULTS: dict[str, Any] = {"kind": PHOTO, "photo": "", "occlusion": [], "scorer": ""}


def engine_identity(settings: ModelSettings, models_dir: Path) -> dict[str, Any]:
    """What the in-process engine's describe() says, less its providers, computed without loading a model:
    the pack, its two model files' sha256, det_size and det_thresh. Records are used only for the same."""
    from gpu_agent.fetch import require_pack, sha256_file
    from gpu_agent.pack_models import find_pack_models

    found = find_pack_models(require_pack(settings.face_pack, Path(models_dir)), settings.face_pack)
    return {"engine": "insightface", "pack": settings.face_pack,
            "files": {p.name: sha256_file(p) for p in (found.detector, found.recognizer)},
            "det_size": settings.det_size, "det_thresh": settings.det_thresh}


def model_key(description: dict[str, Any]) -> str:
    """The key of an engine description (providers left out): which records answer for which models."""
    same = {k: v for k, v in description.items() if k != "providers"}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()[:16]


def photo_row(sha256: str, model: str, engine: str, faces: Sequence[DetectedFace] = (), error: str = "") -> dict[str, Any]:
    """One photo's record."""
    return {
        "sha256": sha256, "model": model, "engine": engine, "error": error,
        "bbox": [[float(v) for v in f.bbox] for f in faces],
        "kps": [[float(c) for point in f.kps for c in point] for f in faces],
        "det_score": [float(f.det_score) for f in faces],
        "embedding": [np.asarray(f.embedding, dtype=np.float32).tobytes() for f in faces],
        "kind": PHOTO, "photo": sha256, "occlusion": [], "scorer": "",
    }


def crop_row(sha256: str, photo: str, model: str, engine: str, faces: Sequence[DetectedFace],
             occlusion: dict[str, float] | None, scorer: str) -> dict[str, Any]:
    """One crop's record: its faces as roop loads it, and its occlusion scores when a scorer was open."""
    scores = [] if occlusion is None else [float(occlusion.get("mask", 0.0)), float(occlusion.get("sunglasses", 0.0))]
    return {**photo_row(sha256, model, engine, faces), "kind": CROP, "photo": photo, "occlusion": scores,
            "scorer": scorer if occlusion is not None else ""}


def table_of(rows: Sequence[dict[str, Any]]) -> Any:
    """The rows as a pyarrow Table with the records' schema."""
    import pyarrow as pa

    return pa.Table.from_pylist(list(rows), schema=schema())


def schema() -> Any:
    import pyarrow as pa

    floats = pa.list_(pa.float64())
    return pa.schema([("sha256", pa.string()), ("model", pa.string()), ("engine", pa.string()),
                      ("error", pa.string()), ("bbox", pa.list_(floats)), ("kps", pa.list_(floats)),
                      ("det_score", floats), ("embedding", pa.list_(pa.binary())), ("kind", pa.string()),
                      ("photo", pa.string()), ("occlusion", floats), ("scorer", pa.string())])


def write_records(folder: Path, table: Any) -> Path | None:
    """Write one batch of records as one Parquet file, atomically; its name derives from the photos in it (a
    batch analysed again replaces its own file). None for an empty batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if table.num_rows == 0:
        return None
    shas = sorted(str(s) for s in table.column("sha256").to_pylist())
    name = hashlib.sha256("\n".join(shas).encode()).hexdigest()[:32] + SUFFIX
    sink = pa.BufferOutputStream()
    pq.write_table(table.select(list(COLUMNS)), sink)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    atomic_write(path, sink.getvalue().to_pybytes())
    return path


@dataclass(frozen=True)
class Record:
    """One photo's or crop's record as read back: its faces (or why it could not be analysed), and a crop's
    occlusion scores with the key of the scorer that gave them."""

    sha256: str
    faces: tuple[DetectedFace, ...]
    error: str = ""
    kind: str = PHOTO
    occlusion: dict[str, float] | None = None
    scorer: str = ""


def record_files(folder: Path) -> list[Path]:
    """The complete-looking record files, by name (temp files start with '.')."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == SUFFIX and not p.name.startswith(".") and p.is_file())


def _tables(folder: Path, columns: Sequence[str]) -> Iterable[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in record_files(folder):
        try:
            present = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[c for c in columns if c in present])
        except Exception as err:  # noqa: BLE001 - half-written or not Parquet: skipped until it is complete
            log.warning("record file skipped", path=str(path), error=f"{type(err).__name__}: {err}")
            continue
        for name in columns:  # a file from before crops were recorded: its rows are photos
            if name not in present:
                table = table.append_column(schema().field(name), pa.array([DEFAULTS[name]] * table.num_rows,
                                                                           schema().field(name).type))
        yield table


def recorded(folder: Path, model: str) -> set[str]:
    """The sha256 of every photo with a record for these models (an error record counts: it is not retried)."""
    found: set[str] = set()
    for table in _tables(folder, ("sha256", "model", "kind")):
        for sha, key, kind in zip(table.column("sha256").to_pylist(), table.column("model").to_pylist(),
                                  table.column("kind").to_pylist()):
            if key == model and kind == PHOTO:
                found.add(str(sha))
    return found


def read_records(folder: Path, model: str, wanted: set[str] | None = None) -> dict[str, Record]:
    """The records for these models (only those of `wanted` photos, and of their crops, when given), the first per
    sha256."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Record] = {}
    keep = None if wanted is None else pa.array(sorted(wanted), pa.string())
    for table in _tables(folder, COLUMNS):
        mask = pc.equal(table.column("model"), model)
        if keep is not None:
            photo = pc.if_else(pc.equal(table.column("kind"), CROP), table.column("photo"), table.column("sha256"))
            mask = pc.and_(mask, pc.is_in(photo, value_set=keep))
        for row in table.filter(mask).to_pylist():  # only these rows are turned into Python objects
            sha = row["sha256"]
            if sha in out:
                continue
            scores = row["occlusion"] or []
            out[sha] = Record(sha, tuple(_faces(row)), row["error"] or "", row["kind"] or PHOTO,
                              {"mask": scores[0], "sunglasses": scores[1]} if len(scores) == 2 else None,
                              row["scorer"] or "")
    return out


def _faces(row: dict[str, Any]) -> Iterable[DetectedFace]:
    for bbox, kps, score, emb in zip(row["bbox"], row["kps"], row["det_score"], row["embedding"]):
        x1, y1, x2, y2 = (float(v) for v in bbox)
        yield DetectedFace(bbox=(x1, y1, x2, y2), kps=tuple((float(kps[i]), float(kps[i + 1])) for i in range(0, len(kps), 2)),
                           det_score=float(score), embedding=np.frombuffer(emb, dtype=np.float32).copy())
