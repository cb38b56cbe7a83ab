"""Settings of the models and of the loopback agent. Plain values: gpu_agent reads no config file."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSettings:
    # insightface pack to load from <root>/models/<face_pack>; buffalo_l is what roop re-detects with.
    face_pack: str = field(default="buffalo_l", metadata={"restart": True})
    # folder holding insightface packs (models/<pack>/) and the exported CLIP model (clip/); "" = <data-dir>/models.
    root: str = field(default="", metadata={"restart": True})
    # onnxruntime execution providers in order of preference; [] = auto (DirectML, CUDA, then CPU).
    providers: tuple[str, ...] = field(default=(), metadata={"restart": True})
    # onnxruntime intra-op threads; 0 = onnxruntime's default (all cores).
    intra_op_threads: int = field(default=0, metadata={"range": (0, 1024), "restart": True})
    # let onnxruntime's intra-op threads spin-wait between calls; off leaves the cores to the work between model calls
    # (bench/e2e.py, 2 cores: the model passes alone 3.09 -> 2.22 s, a whole reconcile 4.99 -> 4.48 s with it off).
    intra_op_spinning: bool = field(default=False, metadata={"restart": True})
    # onnxruntime inter-op threads; 0 = onnxruntime's default.
    inter_op_threads: int = field(default=0, metadata={"range": (0, 1024), "restart": True})
    # detector input size (square); 640 is what roop uses.
    det_size: int = field(default=640, metadata={"range": (32, 4096), "restart": True})
    # detector score threshold; 0.5 is insightface's and roop's default.
    det_thresh: float = field(default=0.5, metadata={"range": (0, 1), "restart": True})
    # open_clip architecture exported by `facesetd models export-clip`.
    clip_model: str = field(default="ViT-L-14", metadata={"restart": True})
    # open_clip pretrained tag for that architecture.
    clip_pretrained: str = field(default="dfn2b_s39b", metadata={"restart": True})
    # "fp32" or "int8" (image.int8.onnx, export-clip --quantize int8): int8 is 2-4x faster on VNNI CPUs (more with fewer threads), scores differ by up to ~0.02.
    clip_precision: str = field(default="fp32", metadata={"restart": True})
    # photos per face-engine call: the router analyses up to this many inbox photos in one call (the one it routes and the next waiting); the occlusion model scores one crop a call, so its scores never depend on the batch.
    batch_size: int = field(default=8, metadata={"range": (1, 1024), "restart": True})


@dataclass(frozen=True)
class AgentSettings:
    # "in-process" runs the models inside the daemon; "http" asks a `facesetd gpu-agent serve` at `url`.
    mode: str = field(default="in-process", metadata={"restart": True})
    # where the daemon finds the agent in "http" mode.
    url: str = field(default="http://127.0.0.1:8765", metadata={"restart": True})
    # where `facesetd gpu-agent serve` listens (host:port); keep it on loopback.
    listen: str = field(default="127.0.0.1:8765", metadata={"restart": True})
    # bearer token both sides share; set it through FACESETD_GPU_AGENT_TOKEN rather than in the file.
    token: str = field(default="", metadata={"restart": True})
    # seconds before one request to the agent times out.
    timeout_s: float = field(default=120.0, metadata={"range": (0.1, None), "restart": True})
    # retries (with exponential backoff) before the agent counts as down.
    retries: int = field(default=3, metadata={"range": (0, 100), "restart": True})
