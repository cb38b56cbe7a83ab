"""`facesetd models export-clip`: the open_clip image tower to ONNX, plus the fixed text side precomputed.

Needs the optional `clip` extra (torch, torchvision, open_clip_torch, onnx). Run time needs none of it: the
scorer (occlusion.py) runs image.onnx with onnxruntime and compares against the embeddings written here.

Layout: <models_dir>/clip/<model>__<pretrained>/
  image.onnx     input "image" float32 [N, 3, S, S] (normalised), output "embedding" float32 [N, D] (not normalised)
  image.int8.onnx  (--quantize int8 only) the same graph with onnxruntime's dynamic quantisation: MatMul/Gemm
                 weights int8 per output channel (7-bit range), activations quantised to uint8 per call; same
                 input and output. Used when [models] clip_precision = "int8".
  text.npz       <attribute>_positive / <attribute>_negative: the ensemble vectors (D,), mean-pooled over the
                 prompts' L2-normalised embeddings, then L2-normalised; logit_scale: the model's raw parameter
                 (the scorer applies exp(), as CLIP does)
  clip.json      model, pretrained, image_size, mean, std, resize interpolation, prompts, attributes
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from .errors import ModelError
from .prompts import PROMPTS

log = structlog.get_logger("facesetd.gpu_agent")

IMAGE_FILE = "image.onnx"
INT8_IMAGE_FILE = "image.int8.onnx"
PRECISIONS = ("fp32", "int8")
# quantize_dynamic options. reduce_range (7-bit weights) avoids the u8 x s8 overflow of AVX2 CPUs without
# VNNI; per-channel scales keep the accuracy that costs. Measured on ViT-B-32 (random weights, 8 photos):
# per-tensor/per-channel, with or without reduce_range all reach cosine >= 0.9995 vs fp32 at the same speed.
# quant_pre_process is not used: its symbolic shape inference fails on this graph (Reshape), and with that
# step skipped it changed neither speed nor accuracy.
INT8_OPTIONS: dict[str, Any] = {"per_channel": True, "reduce_range": True, "op_types_to_quantize": ["MatMul", "Gemm"]}
TEXT_FILE = "text.npz"
META_FILE = "clip.json"
OPSET = 17
# Seconds `export-clip` waits for the weights' host to answer before it says the host is unreachable (without
# this probe huggingface_hub retries for ~25 s per candidate file, then open_clip raises a chain of errors).
PROBE_TIMEOUT_S = 5.0
OFFLINE_SET = "HF_HUB_OFFLINE is set"  # the user asked for the cache alone: no probe, no request


def clip_dir(models_dir: Path, model: str, pretrained: str | None) -> Path:
    """<models_dir>/clip/<model>__<pretrained or 'random'>/ ('/' in hf-hub names becomes '_')."""
    tag = (pretrained or "random").replace("/", "_").replace(":", "_")
    return Path(models_dir) / "clip" / f"{model.replace('/', '_')}__{tag}"


def _declare_torchvision_ops() -> None:
    """Let torchvision's Python parts import on a CPU-only torch (DOMAIN.md section 5).

    PyPI's torchvision 0.28 is a CUDA build; against the local CPU torch its compiled ops library does not
    load, and `import torchvision` then dies registering fake kernels for `torchvision::nms` ("operator
    does not exist"). open_clip only uses torchvision's transforms, so declaring the two op schemas it
    registers at import (nms, qnms) is enough; the ops themselves are never called.
    """
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - present when torchvision's own ops loaded
        return
    except (AttributeError, RuntimeError):
        pass
    global _TV_LIB
    _TV_LIB = torch.library.Library("torchvision", "DEF")  # type: ignore[no-untyped-call]  # kept alive: the schemas live as long as it does
    _TV_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TV_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


_TV_LIB: Any = None


def import_open_clip() -> Any:
    """open_clip, with the torchvision workaround applied first; ModelError if the extra is missing."""
    try:
        _declare_torchvision_ops()
        import open_clip
    except ImportError as e:
        raise ModelError(
            f"export-clip needs the optional clip extra (torch, open_clip_torch, onnx): pip install 'facesetd[clip]' ({e})"
        ) from e
    return open_clip


def build_model(model: str, pretrained: str | None) -> tuple[Any, Any, Any]:
    """(model in eval mode, its validation preprocess, its tokenizer) from open_clip.

    Pretrained weights come from open_clip's download (the Hugging Face hub, or a URL) or its cache. The
    host is probed first: when it does not answer, the cache alone is used (HF_HUB_OFFLINE), and weights
    that are not cached give one ModelError saying what to do offline instead of minutes of retries.
    """
    open_clip = import_open_clip()
    _check_names(open_clip, model, pretrained)
    source = _weights_host(open_clip, model, pretrained)
    unreachable = _probe(source) if source else None
    try:
        with _hub_offline(unreachable is not None), _held_root_logs() as held:
            m, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained or None)
    except Exception as e:
        if source is None or not _is_download_error(e):
            raise
        if unreachable == OFFLINE_SET:
            why = f"{OFFLINE_SET} and they are not cached"
        elif unreachable:
            why = f"{source} is unreachable ({unreachable}) and they are not cached"
        else:
            why = f"download from {source} failed ({_first_line(e)})"
        raise ModelError(
            f"cannot get the CLIP weights {model}/{pretrained}: {why}; offline, copy an exported "
            f"clip/{clip_dir(Path('.'), model, pretrained).name}/ folder into the models root (docs/models.md, Offline)"
        ) from e
    for record in held:
        log.warning("open_clip", message=record.getMessage())
    m.eval()
    return m, preprocess, open_clip.get_tokenizer(model)


def _check_names(open_clip: Any, model: str, pretrained: str | None) -> None:
    """A misspelt --model or --pretrained as one line, before anything is downloaded."""
    if model.startswith("hf-hub:"):
        return  # a hub repository: only the hub knows it
    if model not in open_clip.list_models():
        raise ModelError(f"open_clip has no model {model!r} (--model, [models] clip_model); e.g. ViT-B-32, ViT-L-14")
    if pretrained and not open_clip.get_pretrained_cfg(model, pretrained) and not os.path.isfile(pretrained):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ModelError(f"open_clip has no pretrained tag {pretrained!r} for {model} (--pretrained, "
                         f"[models] clip_pretrained); its tags: {tags}; 'none' = random weights")


def _weights_host(open_clip: Any, model: str, pretrained: str | None) -> str | None:
    """The URL open_clip downloads these weights from; None when nothing is downloaded (random, a local file)."""
    from huggingface_hub import constants

    if model.startswith("hf-hub:"):
        return constants.ENDPOINT
    cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
    if cfg.get("hf_hub"):  # open_clip prefers the hub when a tag has both
        return constants.ENDPOINT
    return cfg.get("url") or None


def _probe(url: str) -> str | None:
    """None when the host of `url` answers an HTTP request at all (any status), else why not, in a few words."""
    import requests

    if _hub_is_offline():
        return OFFLINE_SET
    try:
        requests.head(url, timeout=PROBE_TIMEOUT_S, allow_redirects=False).close()
    except requests.Timeout:
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    except requests.RequestException as e:
        # requests nests the cause several exceptions deep; "[Errno 111] Connection refused" is what a user needs.
        found = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", str(e))
        return found[-1].strip() if found else type(e).__name__
    return None


def _hub_is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub's offline mode for the block: cached files only, no request and no retry."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline  # read on every call (constants.is_offline_mode())
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


class _Hold(logging.Handler):
    """Keeps WARNING and above from the root logger; huggingface_hub's are left to its own handler."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("huggingface_hub"):
            self.records.append(record)


@contextlib.contextmanager
def _held_root_logs() -> Iterator[list[logging.LogRecord]]:
    """open_clip logs through the root logger (logging.error(...)), which installs logging's default stderr
    handler: every hub warning would print twice and a failed download once more before our own one line.
    For the block, root's handlers (ours, that route library logging through structlog, included) are swapped
    for one that holds the records; the caller replays them only if the build worked."""
    root = logging.getLogger()
    hold = _Hold()
    saved = root.handlers[:]
    root.handlers = [hold]
    try:
        yield hold.records
    finally:
        root.handlers = saved


def _is_download_error(e: BaseException) -> bool:
    """Whether the chain open_clip raised holds a network or hub error (OSError covers hub, HTTP and URL errors)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) or type(cur).__module__.split(".")[0] in ("httpx", "huggingface_hub"):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The innermost error's first line, shortened: hub errors span several lines."""
    while e.__cause__ or e.__context__:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _ImageTower:
    """A torch module wrapper exposing only encode_image (unnormalised), for the export."""

    def __new__(cls, clip_model: Any) -> Any:
        import torch

        class ImageTower(torch.nn.Module):
            def __init__(self, m: Any) -> None:
                super().__init__()
                self.visual = m.visual

            def forward(self, image: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = self.visual(image)
                return out

        return ImageTower(clip_model).eval()


def ensemble_embeddings(clip_model: Any, tokenizer: Any, prompts: dict[str, dict[str, tuple[str, ...]]]) -> dict[str, np.ndarray]:
    """{"<attr>_positive": (D,), "<attr>_negative": (D,)}: per-prompt normalised, mean-pooled, normalised."""
    import torch

    out = {}
    with torch.no_grad():
        for attr, classes in prompts.items():
            for cls, texts in classes.items():
                feats = clip_model.encode_text(tokenizer(list(texts))).float()
                feats = feats / feats.norm(dim=-1, keepdim=True)
                mean = feats.mean(dim=0)
                out[f"{attr}_{cls}"] = (mean / mean.norm()).numpy().astype(np.float32)
    return out


def _preprocess_params(preprocess: Any, clip_model: Any) -> dict[str, Any]:
    """Image size, mean and std as the model's own preprocess uses them (model-agnostic run time)."""
    size = None
    mean = std = None
    for t in getattr(preprocess, "transforms", []):
        name = type(t).__name__
        if name == "Resize" and size is None:
            s = t.size
            size = int(s if isinstance(s, int) else min(s))
        elif name == "Normalize":
            mean, std = [float(x) for x in t.mean], [float(x) for x in t.std]
    img_size = clip_model.visual.image_size
    img_size = int(img_size if isinstance(img_size, int) else img_size[0])
    if mean is None or std is None:
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        mean, std = list(OPENAI_DATASET_MEAN), list(OPENAI_DATASET_STD)
    return {"image_size": img_size, "resize": size or img_size, "mean": mean, "std": std, "interpolation": "bicubic"}


def export_clip(model: str, pretrained: str | None, models_dir: Path, *, logit_scale: float | None = None,
                quantize: str | None = None) -> Path:
    """Build `model`/`pretrained` with open_clip and export it into clip_dir(models_dir, ...); return that folder.

    pretrained=None (or "") builds random weights (tests, benchmarks). logit_scale overrides the model's raw
    (log-space) parameter: random weights start at log(1/0.07), trained CLIP ends near log(100).
    quantize="int8" also writes image.int8.onnx (see quantize_int8).
    """
    import torch

    clip_model, preprocess, tokenizer = build_model(model, pretrained)
    if logit_scale is not None:
        with torch.no_grad():
            clip_model.logit_scale.fill_(float(logit_scale))
    return export_built(clip_model, preprocess, tokenizer, model, pretrained or None, models_dir, quantize=quantize)


def quantize_int8(fp32_onnx: Path, out_onnx: Path) -> None:
    """Dynamic int8 quantisation of the exported image tower (onnxruntime.quantization, export time only).

    Weights of MatMul/Gemm become int8 (INT8_OPTIONS); activations are quantised per call, so no calibration
    set is needed. Written through a temporary file, like image.onnx.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=out_onnx.parent) as tmp:
        tmp_onnx = Path(tmp) / out_onnx.name
        quantize_dynamic(str(fp32_onnx), str(tmp_onnx), weight_type=QuantType.QInt8, **INT8_OPTIONS)
        os.replace(tmp_onnx, out_onnx)


def export_built(clip_model: Any, preprocess: Any, tokenizer: Any, model: str, pretrained: str | None,
                 models_dir: Path, *, quantize: str | None = None) -> Path:
    """Export an already built open_clip model (lets tests compare the export with the very same weights)."""
    import torch

    if quantize not in (None, "int8"):
        raise ModelError(f"quantize must be None or 'int8', got {quantize!r}")

    params = _preprocess_params(preprocess, clip_model)
    out = clip_dir(models_dir, model, pretrained)
    out.mkdir(parents=True, exist_ok=True)

    tower = _ImageTower(clip_model)
    s = params["image_size"]
    dummy = torch.randn(2, 3, s, s)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp_onnx = Path(tmp) / IMAGE_FILE
        fastpath = torch.backends.mha.get_fastpath_enabled()
        # nn.MultiheadAttention's inference fast path is one fused op (aten::_native_multi_head_attention)
        # that ONNX cannot express and DirectML would run on the CPU: export the plain-op path instead.
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with torch.no_grad():
                # The TorchScript exporter (dynamo=False): one self-contained file, a dynamic batch axis,
                # and plain ops (MatMul/Softmax) that every execution provider runs natively.
                torch.onnx.export(
                    tower, (dummy,), str(tmp_onnx), input_names=["image"], output_names=["embedding"],
                    dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=OPSET,
                    do_constant_folding=True, dynamo=False,
                )
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        os.replace(tmp_onnx, out / IMAGE_FILE)
    if quantize == "int8":
        quantize_int8(out / IMAGE_FILE, out / INT8_IMAGE_FILE)
    else:
        # An int8 file from an earlier export would no longer match the new fp32 weights.
        (out / INT8_IMAGE_FILE).unlink(missing_ok=True)

    text = ensemble_embeddings(clip_model, tokenizer, PROMPTS)
    arrays: dict[str, Any] = {**text, "logit_scale": np.float32(clip_model.logit_scale.detach().item())}
    np.savez(out / TEXT_FILE, **arrays)
    meta = {
        "model": model,
        "pretrained": pretrained,
        **params,
        "embedding_dim": int(next(iter(text.values())).shape[0]),
        "attributes": {a: {k: list(v) for k, v in c.items()} for a, c in PROMPTS.items()},
        "logit_scale_exp": math.exp(float(clip_model.logit_scale.detach().item())),
        "int8": ({"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8", **INT8_OPTIONS}
                 if quantize == "int8" else None),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    log.info("clip exported", model=model, pretrained=pretrained, path=str(out), int8=quantize == "int8")
    return out
