"""What a handler gets, in three parts that change at different times:

- `HandlerConfig`: folders and tunables, frozen; a reload (SIGHUP) replaces it whole (`Pipeline.apply_config`).
- services: the corpus state, the models (`Models`, opened on first use), the logger, the centroid cache,
  the pixels of the crops just written and the faces found ahead; they live as long as the process.
- `Batch`: what the handlers of one batch tell each other; the dispatcher starts a fresh one before each batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gpu_agent.interface import FaceEngine, OcclusionScorer
from state.corpus_state import CorpusState

from .analysis_ahead import AnalysisAhead
from .centroids import CentroidCache
from .limits import Limits
from .recent_crops import RecentCrops
from .thresholds import EraBucket, EraSettings, IdentityThresholds, Thresholds
from .video_frames import VideoSettings

Engines = tuple[FaceEngine, OcclusionScorer]


@dataclass(frozen=True)
class HandlerConfig:
    """The folders and tunables the handlers read; replaced whole when the configuration is reloaded."""

    corpus: Path
    inbox: Path
    staging: Path | None = None  # Immich originals staged for the inbox router (PhotoReceived root "staging")
    thresholds: Thresholds = field(default_factory=Thresholds)
    identity: IdentityThresholds = field(default_factory=IdentityThresholds)
    eras: EraSettings = field(default_factory=EraSettings)  # config [eras]: which facesets are age eras of whom
    limits: Limits = field(default_factory=Limits)  # config [limits]: image size, incomplete-photo grace
    video: VideoSettings = field(default_factory=VideoSettings)  # config [video]: frame sampling, groups, size
    model_retry_s: float = 30.0  # seconds before trying to open the models again after they failed to open
    analysis_batch: int = 8  # [models] batch_size: photos analysed in one engine call (handlers/analysis_ahead.py)


class Models:
    """The (face engine, occlusion scorer), opened on the first handler that needs them. A failure to open is
    remembered with its time, so the checks that need models stay off until `retry_s` has passed."""

    def __init__(self, open_engines: Callable[[], Engines] | None) -> None:
        self.open_engines = open_engines
        self.failed = ""  # why the models could not be opened ("" = not tried, or fine)
        self.failed_at = 0.0  # time.monotonic() of that failure
        self._engines: Engines | None = None

    @property
    def configured(self) -> bool:
        return self.open_engines is not None

    def engines(self) -> Engines:
        """Open the models if they are not open yet; raises what opening raised."""
        if self._engines is None:
            if self.open_engines is None:
                raise RuntimeError("no models configured for the handlers")
            self._engines = self.open_engines()
        return self._engines

    def in_backoff(self, retry_s: float) -> bool:
        """The last try to open them failed less than `retry_s` seconds ago."""
        return bool(self.failed) and time.monotonic() - self.failed_at < retry_s

    def note_failure(self, error: BaseException) -> str:
        self.failed, self.failed_at = f"{type(error).__name__}: {error}", time.monotonic()
        return self.failed

    @property
    def face_engine(self) -> FaceEngine:
        return self.engines()[0]

    @property
    def occlusion(self) -> OcclusionScorer:
        return self.engines()[1]


@dataclass
class Batch:
    """What the handlers of one batch share: their decisions are not in the state until the batch is appended."""

    # Face paths and _dropped/ destinations decided on in this batch: a later handler must not decide again.
    claimed: set[str] = field(default_factory=set)
    claimed_dests: set[str] = field(default_factory=set)
    # Facesets whose occlusion scores this batch appends (the faceset rules wait for them to be applied).
    occlusion_scored: set[str] = field(default_factory=set)
    # The era buckets (configured and adopted), looked up once per batch.
    era_buckets: tuple[EraBucket, ...] | None = None


@dataclass
class HandlerContext:
    config: HandlerConfig
    state: CorpusState
    models: Models = field(default_factory=lambda: Models(None))
    log: Any = field(default_factory=lambda: structlog.get_logger("facesetd.handlers"))
    # The active facesets' centroids, kept for the life of the process and updated from the state's marks.
    centroid_cache: CentroidCache = field(default_factory=CentroidCache)
    # The pixels of the crops the router just wrote, by their PNG's sha256: embed reads them instead of decoding.
    recent_crops: RecentCrops = field(default_factory=RecentCrops)
    # The inbox photos received next (the pipeline says which) and their faces, found with the one being routed.
    ahead: AnalysisAhead = field(default_factory=AnalysisAhead)
    batch: Batch = field(default_factory=Batch)
    _said_once: set[str] = field(default_factory=set)

    def begin_batch(self) -> None:
        """Called by the dispatcher before the handlers of each batch run."""
        self.batch = Batch()

    def say_once(self, key: str, message: str, **fields: Any) -> None:
        """Log a warning the first time only (e.g. 'occlusion check off: no CLIP model')."""
        if key not in self._said_once:
            self._said_once.add(key)
            self.log.warning(message, **fields)
