"""The backfill's model work on Ray Data: photo paths in, one record per photo out (daemon/backfill/records.py).

    ray.data.from_items([{"path": ...}, ...])          one block per batch of photos
      .map_batches(FaceRecords, compute=ActorPoolStrategy(size=N), num_cpus=1 | num_gpus=1, batch_size=B)
      .iter_batches(batch_size=None)                    each finished batch comes back to the driver

Each actor opens the configured face engine and occlusion scorer once (gpu_agent.face_engine.InsightFaceEngine
and gpu_agent.occlusion.OnnxOcclusionScorer, with the configured [models] settings: on a box with CUDA the
automatic provider order picks it) and returns, per photo, exactly what the router asks the engine for at
receipt, `analyze(photo, pad=True)`, and per face the router would crop (short side >= [identity] min_face_px)
what the checks ask about the crop: the 512x512 PNG's `analyze(png, pad=False)` (embed, multi-face) and its
occlusion scores. It is a pure function of the bytes and the models: no log, no corpus, no decision. The driver
(this process) writes each batch that comes back as one record file, so a driver killed mid-run keeps every
batch finished before; Ray retries an actor that died. The photos are read by the actors, so on a cluster of several machines DIR (and the models root) must be
at the same path on every node (shared storage); the records are written only here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gpu_agent.settings import ModelSettings
from state.errors import FacesetdError

from .records import crop_row, model_key, photo_row, table_of

log = structlog.get_logger("facesetd.backfill")

# A local Ray (no --address) gets an object store this small: it holds only paths and records (the actors read
# the photos themselves), and a small one leaves the memory to the models.
LOCAL_OBJECT_STORE_BYTES = 128 * 1024 * 1024
# Seconds to wait for a HOST:PORT --address to accept a connection before saying no cluster is there.
CONNECT_TIMEOUT_S = 10.0
# CPUs one actor asks Ray for (with one GPU where the cluster has GPUs); a CPU actor's onnxruntime runs this many
# threads unless [models] intra_op_threads sets a number.
CPUS_PER_ACTOR = 1


class FaceRecords:
    """A Ray Data actor: opens the models once, then turns batches of photo paths into records."""

    def __init__(self, settings: ModelSettings, models_dir: str, max_pixels: int, min_face_px: float) -> None:
        from gpu_agent.face_engine import InsightFaceEngine
        from gpu_agent.occlusion import OnnxOcclusionScorer

        self.engine = InsightFaceEngine(settings, Path(models_dir))
        description = self.engine.describe()
        self.model = model_key(description)
        self.description = json.dumps(description, sort_keys=True)
        self.scorer = OnnxOcclusionScorer(settings, Path(models_dir))
        self.scorer_key = model_key(self.scorer.describe()) if self.scorer.available else ""
        self.max_pixels = max_pixels
        self.min_face_px = min_face_px

    def __call__(self, batch: Any) -> Any:
        """A pyarrow batch with a `path` column -> the records' table (one row per photo that could be read)."""
        return table_of(self.rows([str(p) for p in batch.column("path").to_pylist()]))

    def rows(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        from gpu_agent.crop import decode_image

        rows: list[dict[str, Any]] = []
        decoded: list[tuple[str, Any]] = []
        for path in paths:
            try:
                data = Path(path).read_bytes()
            except OSError as err:  # gone meanwhile: no record; the ingest analyses it if it is still there
                log.warning("backfill photo unreadable", path=path, error=str(err))
                continue
            sha = hashlib.sha256(data).hexdigest()
            try:  # as the router decodes it: the same limits, so the same pixels or the same refusal
                decoded.append((sha, decode_image(data, self.max_pixels)))
            except Exception as err:  # noqa: BLE001 - the router refuses it too, before any model call
                rows.append(photo_row(sha, self.model, self.description, error=f"{type(err).__name__}: {err}"))
        if decoded:
            found = self.engine.analyze_arrays([image for _sha, image in decoded], pad=True)
            rows += [photo_row(sha, self.model, self.description, faces) for (sha, _img), faces in zip(decoded, found)]
            rows += self.crop_rows([(sha, image, faces) for (sha, image), faces in zip(decoded, found)])
        return rows

    def crop_rows(self, photos: Sequence[tuple[str, Any, Sequence[Any]]]) -> list[dict[str, Any]]:
        """The records of every crop the router would cut from these (photo sha256, pixels, faces): the same
        faces (handlers.face_assign.usable_faces), cut and encoded by the same functions."""
        from gpu_agent.crop import crop_face, encode_png
        from handlers.face_assign import usable_faces

        crops: list[tuple[str, Any, bytes]] = []  # (photo sha256, crop pixels, PNG)
        for sha, image, faces in photos:
            for _i, face in usable_faces(list(faces), self.min_face_px):
                crop = crop_face(image, face)
                crops.append((sha, crop, encode_png(crop)))
        if not crops:
            return []
        found = self.engine.analyze_arrays([crop for _sha, crop, _png in crops], pad=False)
        scores: list[dict[str, float] | None] = [None] * len(crops)
        if self.scorer.available:
            scores = list(self.scorer.score([png for _sha, _crop, png in crops]))
        return [crop_row(hashlib.sha256(png).hexdigest(), sha, self.model, self.description, faces, score,
                         self.scorer_key) for (sha, _crop, png), faces, score in zip(crops, found, scores)]


@dataclass
class RayRun:
    """Where and how wide the job ran (for the summary)."""

    address: str
    workers: int
    gpus_per_worker: int


def connect(address: str | None) -> Any:
    """Join the cluster at `address` ("auto", "ray://host:10001", "host:6379"), or start a local Ray sized to
    this machine. Returns the ray module."""
    import logging

    import ray

    # Ray's own lines at ERROR only: its INFO and WARNING lines (token authentication on, progress bars off) would
    # drown the verb's progress; failures still reach the verb as exceptions and are reported in one line.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if address:
        _reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:  # no cluster there, or its token is not ours
            raise FacesetdError(f"backfill: cannot join the Ray cluster at {address}: {str(err).splitlines()[0]}"
                                " (is `ray start` running there, and is its token in RAY_AUTH_TOKEN or"
                                " ~/.ray/auth_token?)") from None
    else:
        # "local": a Ray of its own even where `ray start` runs on this machine (ray.init() would join that one).
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    return ray


def _reachable(address: str) -> None:
    """A HOST:PORT address answers on TCP, or one line now (ray.init would retry for minutes first)."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto" (found by Ray from this machine's `ray start`), ray://... (Ray Client): Ray says itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise FacesetdError(f"backfill: no Ray cluster answers at {address} ({err}); start one with"
                            " `ray start --head` there, or leave out --address for a local Ray") from None


def pool_size(resources: dict[str, float], workers: int | None) -> tuple[int, int]:
    """(actors, GPUs per actor): one actor per GPU where the cluster has GPUs, else one per CPU; --workers wins."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return (workers or gpus), 1
    return (workers or max(1, int(resources.get("CPU", 1)) // CPUS_PER_ACTOR)), 0


def analyse_on_ray(paths: Sequence[str], *, settings: ModelSettings, models_dir: Path, max_pixels: int,
                   min_face_px: float, address: str | None, workers: int | None, batch_size: int,
                   on_records: Callable[[Any], None]) -> RayRun:
    """Run FaceRecords over `paths` on Ray; `on_records(table)` gets each finished batch, in the driver."""
    ray = connect(address)
    try:
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the verb prints its own progress lines
        context.print_on_execution_start = False
        actors, gpus = pool_size(ray.cluster_resources(), workers)
        if not gpus and not settings.intra_op_threads:
            # A CPU actor holds CPUS_PER_ACTOR of the node's cores: onnxruntime's default (a thread per core) in
            # each of N actors would oversubscribe them N times. The results do not depend on the thread count
            # (bench/backfill.py's machine: 43 photos, every box, landmark and embedding bit-identical, 1 vs 2).
            settings = dataclasses.replace(settings, intra_op_threads=CPUS_PER_ACTOR)
        # Batches of at most batch_size photos, and at least one per actor while there are photos for each.
        blocks = min(len(paths), max(actors, math.ceil(len(paths) / batch_size)))
        ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
        ds = ds.map_batches(FaceRecords, batch_size=math.ceil(len(paths) / blocks), batch_format="pyarrow",
                            fn_constructor_kwargs={"settings": settings, "models_dir": str(models_dir),
                                                   "max_pixels": max_pixels, "min_face_px": min_face_px},
                            compute=ActorPoolStrategy(size=actors), num_cpus=CPUS_PER_ACTOR, num_gpus=gpus or None)
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            on_records(table)
        return RayRun(address=address or "local", workers=actors, gpus_per_worker=gpus)
    finally:
        ray.shutdown()
