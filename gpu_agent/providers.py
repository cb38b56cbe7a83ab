"""Which onnxruntime execution providers to use, and the session options (thread counts) for them.

onnxruntime-directml (Windows), onnxruntime-gpu (CUDA) and onnxruntime (CPU) all install the module
`onnxruntime`; what `get_available_providers()` reports tells us which one is installed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
import structlog

from .errors import ModelError
from .settings import ModelSettings

# Preference when [models] providers is empty: DirectML (Windows GPUs of any vendor), CUDA, then CPU.
AUTO_ORDER = ("DmlExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

log = structlog.get_logger("facesetd.gpu_agent")


def available_providers() -> list[str]:
    """Providers the installed onnxruntime build offers on this machine."""
    return list(ort.get_available_providers())


def choose_providers(settings: ModelSettings, available: Sequence[str] | None = None) -> list[str]:
    """The explicit [models] providers list if set (each must be available), else the best of AUTO_ORDER.

    CPU is always appended as the last resort, so a GPU provider that cannot run one node falls back
    inside onnxruntime instead of failing the session.
    """
    avail = list(available) if available is not None else available_providers()
    if settings.providers:
        missing = [p for p in settings.providers if p not in avail]
        if missing:
            raise ModelError(
                f"[models] providers asks for {', '.join(missing)}, but this onnxruntime offers only "
                f"{', '.join(avail)} (onnxruntime-directml / onnxruntime-gpu installed?)"
            )
        chosen = list(settings.providers)
    else:
        chosen = [p for p in AUTO_ORDER if p in avail][:1] or ["CPUExecutionProvider"]
    if "CPUExecutionProvider" not in chosen and "CPUExecutionProvider" in avail:
        chosen.append("CPUExecutionProvider")
    return chosen


def session_options(settings: ModelSettings, providers: Sequence[str] = ()) -> ort.SessionOptions:
    """Session options with the configured thread counts (0 keeps onnxruntime's default)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(settings.intra_op_threads))
    opts.inter_op_num_threads = max(0, int(settings.inter_op_threads))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not settings.intra_op_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if "DmlExecutionProvider" in providers:
        # DirectML does not support memory patterns or parallel execution (onnxruntime's DML docs).
        opts.enable_mem_pattern = False
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def new_session(model: Path, providers: Sequence[str], options: ort.SessionOptions) -> ort.InferenceSession:
    """An onnxruntime session of `model` on `providers`, set up as insightface sets up its own: onnxruntime's
    logger at errors only, and for CUDA the CUDA/cuDNN libraries of the environment preloaded first."""
    ort.set_default_logger_severity(3)
    if "CUDAExecutionProvider" in providers:
        _preload_cuda()
    return ort.InferenceSession(str(model), sess_options=options, providers=list(providers))


@functools.cache
def _preload_cuda() -> None:
    # onnxruntime >= 1.21 finds CUDA and cuDNN installed from pip (nvidia-* wheels) only when asked to; once per process.
    preload = getattr(ort, "preload_dlls", None)
    if callable(preload):
        preload()


def log_providers_in_use(what: str, requested: Sequence[str], in_use: Sequence[str]) -> None:
    """Log the providers a session really got: onnxruntime silently drops ones it cannot load."""
    log.info("onnxruntime providers", model=what, requested=list(requested), in_use=list(in_use))
    if requested and in_use and requested[0] != in_use[0]:
        log.warning("preferred provider not in use", model=what, wanted=requested[0], got=in_use[0])
