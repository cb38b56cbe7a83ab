"""Which ONNX files of an insightface pack are its face detector and its recognizer.

As insightface's FaceAnalysis picks them (insightface, MIT licence: app/face_analysis.py and model_zoo.py's
ModelRouter): the pack's *.onnx files in sorted order, each classified by its inputs' and outputs' shapes, the first
detector and the first recognizer kept, every other model (buffalo_l's landmark and gender/age ones) ignored.
The shapes are read from the files themselves (gpu_agent.onnx_graph), so no session is built for a file not kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .arcface import is_recognizer
from .errors import ModelNotFound
from .onnx_graph import GraphInfo, OnnxFormatError, graph_info
from .scrfd import LAYOUTS, is_detector


@dataclass(frozen=True)
class PackModels:
    detector: Path
    detector_graph: GraphInfo
    recognizer: Path
    recognizer_graph: GraphInfo

    def detector_input_size(self, det_size: int) -> tuple[int, int]:
        """(width, height) the detector runs at: det_size square, unless the model fixes its own input size
        (insightface then uses the model's)."""
        shape = self.detector_graph.inputs[0].shape
        height, width = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            return width, height
        return det_size, det_size


def _read(path: Path) -> GraphInfo:
    try:
        return graph_info(path)
    except (OnnxFormatError, OSError, ValueError) as e:
        raise ModelNotFound(f"{path} is not a readable ONNX model ({e}); fetch the pack again") from e


def find_pack_models(pack_path: Path, pack: str) -> PackModels:
    """The pack's detector and recognizer, or ModelNotFound naming what is missing."""
    detector: tuple[Path, GraphInfo] | None = None
    recognizer: tuple[Path, GraphInfo] | None = None
    for path in sorted(pack_path.glob("*.onnx")):
        graph = _read(path)
        if detector is None and is_detector(graph):
            detector = (path, graph)
        elif recognizer is None and is_recognizer(graph):
            recognizer = (path, graph)
    if detector is None:
        raise ModelNotFound(f"model pack {pack} in {pack_path} has no detection model")
    if recognizer is None:
        raise ModelNotFound(f"model pack {pack} in {pack_path} has no recognition model")
    outputs = len(detector[1].outputs)
    if outputs not in LAYOUTS or not LAYOUTS[outputs][2]:
        raise ModelNotFound(f"the detector {detector[0].name} of pack {pack} gives no 5-point landmarks "
                            f"({outputs} outputs), which aligning a face for recognition needs")
    return PackModels(detector[0], detector[1], recognizer[0], recognizer[1])
