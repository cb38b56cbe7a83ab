"""What a handler gets: the corpus state, folders, thresholds and (opened on first use) the models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gpu_agent.interface import FaceEngine, OcclusionScorer
from state.corpus_state import CorpusState

from .limits import Limits
from .thresholds import IdentityThresholds, Thresholds


@dataclass
class HandlerContext:
    state: CorpusState
    corpus: Path
    inbox: Path
    thresholds: Thresholds = field(default_factory=Thresholds)
    identity: IdentityThresholds = field(default_factory=IdentityThresholds)
    top_n: int = 8
    # Opens (face engine, occlusion scorer); called once, on the first handler that needs a model.
    open_engines: Callable[[], tuple[FaceEngine, OcclusionScorer]] | None = None
    staging: Path | None = None  # Immich originals staged for the inbox router (PhotoReceived root "staging")
    log: Any = field(default_factory=lambda: structlog.get_logger("facesetd.handlers"))
    # Era buckets (config [eras]): which facesets are age eras of which identity, and their years.
    eras: Any = None
    # Face paths (and _dropped/ destinations) decided on in the batch being handled: the next handler of
    # the same batch must not decide on them again (its decisions are not in the state yet).
    claimed: set[str] = field(default_factory=set)
    claimed_dests: set[str] = field(default_factory=set)
    # Lookups that hold for one batch (e.g. the era buckets an adopted master manifest names).
    batch_cache: dict[str, Any] = field(default_factory=dict)
    # Why the models could not be opened ("" = not tried or fine); the model checks stay off in this process.
    open_failed: str = ""  # why the models could not be opened, until the next try
    open_failed_at: float = 0.0  # time.monotonic() of that failure
    model_retry_s: float = 30.0  # seconds before trying to open the models again
    limits: Limits = field(default_factory=Limits)  # config [limits]: image size, incomplete-photo grace
    _engines: tuple[FaceEngine, OcclusionScorer] | None = None
    _said_once: set[str] = field(default_factory=set)

    def engines(self) -> tuple[FaceEngine, OcclusionScorer]:
        if self._engines is None:
            if self.open_engines is None:
                raise RuntimeError("no models configured for the handlers")
            self._engines = self.open_engines()
        return self._engines

    @property
    def face_engine(self) -> FaceEngine:
        return self.engines()[0]

    @property
    def occlusion(self) -> OcclusionScorer:
        return self.engines()[1]

    def begin_batch(self) -> None:
        """Called by the dispatcher before the handlers of each batch run."""
        self.claimed.clear()
        self.claimed_dests.clear()
        self.batch_cache.clear()

    def say_once(self, key: str, message: str, **fields: Any) -> None:
        """Log a warning the first time only (e.g. 'occlusion check off: no CLIP model')."""
        if key not in self._said_once:
            self._said_once.add(key)
            self.log.warning(message, **fields)
