"""Settings of the models and of the loopback agent. Plain values: gpu_agent reads no config file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSettings:
    # insightface pack to load from <root>/models/<face_pack>; buffalo_l is what roop re-detects with.
    face_pack: str = "buffalo_l"
    # folder holding insightface packs (models/<pack>/) and the exported CLIP model (clip/); "" = <data-dir>/models.
    root: str = ""
    # onnxruntime execution providers in order of preference; [] = auto (DirectML, CUDA, then CPU).
    providers: tuple[str, ...] = ()
    # onnxruntime intra-op threads; 0 = onnxruntime's default (all cores).
    intra_op_threads: int = 0
    # onnxruntime inter-op threads; 0 = onnxruntime's default.
    inter_op_threads: int = 0
    # detector input size (square); 640 is what roop uses.
    det_size: int = 640
    # detector score threshold; 0.5 is insightface's and roop's default.
    det_thresh: float = 0.5
    # open_clip architecture exported by `facesetd models export-clip`.
    clip_model: str = "ViT-L-14"
    # open_clip pretrained tag for that architecture.
    clip_pretrained: str = "dfn2b_s39b"
    # "fp32" or "int8" (image.int8.onnx, export-clip --quantize int8): int8 is ~4x faster on VNNI CPUs, scores differ by up to ~0.02.
    clip_precision: str = "fp32"
    # images per model call.
    batch_size: int = 8


@dataclass(frozen=True)
class AgentSettings:
    # "in-process" runs the models inside the daemon; "http" asks a `facesetd gpu-agent serve` at `url`.
    mode: str = "in-process"
    # where the daemon finds the agent in "http" mode.
    url: str = "http://127.0.0.1:8765"
    # where `facesetd gpu-agent serve` listens (host:port); keep it on loopback.
    listen: str = "127.0.0.1:8765"
    # bearer token both sides share; set it through FACESETD_GPU_AGENT_TOKEN rather than in the file.
    token: str = ""
    # seconds before one request to the agent times out.
    timeout_s: float = 120.0
    # retries (with exponential backoff) before the agent counts as down.
    retries: int = 3
