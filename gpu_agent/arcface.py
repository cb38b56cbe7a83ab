"""ArcFace recognition on an onnxruntime session: aligned faces in, one raw 512-d embedding per face out.

Ported from insightface (MIT licence), insightface/model_zoo/arcface_onnx.py (`ArcFaceONNX.__init__`,
`get_feat`) and the recognizer rule of model_zoo.py's ModelRouter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .onnx_graph import GraphInfo


def is_recognizer(graph: GraphInfo) -> bool:
    """insightface's routing rule for a recognizer (after detector, landmark, attribute and inswapper, none of
    which it can be here): one square image input of at least 112 pixels, a multiple of 16, and one output."""
    if not graph.inputs or len(graph.outputs) >= 5:
        return False
    shape = graph.inputs[0].shape
    if len(shape) < 4 or not all(isinstance(d, int) for d in shape[2:4]):
        return False
    side = shape[2]
    if shape[3] != side or side in (192, 96) or (len(graph.inputs) == 2 and side == 128):
        return False  # insightface's landmark (192), gender/age (96) and swapper (two inputs, 128) models
    return isinstance(side, int) and side >= 112 and side % 16 == 0 and len(graph.outputs) == 1


def input_normalisation(graph: GraphInfo) -> tuple[float, float]:
    """(mean, std) of the input: (0, 1) for mxnet-converted models, which subtract and scale in their own first
    nodes (insightface looks for Sub and Mul among the first eight node names), else (127.5, 127.5)."""
    sub = any(n.startswith(("Sub", "_minus")) for n in graph.first_nodes)
    mul = any(n.startswith(("Mul", "_mul")) for n in graph.first_nodes)
    return (0.0, 1.0) if sub and mul else (127.5, 127.5)


class ArcFace:
    """One ArcFace model on `session`."""

    def __init__(self, session: Any, graph: GraphInfo) -> None:
        self.session = session
        self.input_name = graph.inputs[0].name
        self.output_names = [o.name for o in graph.outputs]
        shape = graph.inputs[0].shape
        self.input_size = (int(shape[3] or 0), int(shape[2] or 0))  # (width, height), square: is_recognizer
        self.input_mean, self.input_std = input_normalisation(graph)

    def get_feat(self, imgs: Sequence[np.ndarray]) -> np.ndarray:
        """Raw (not normalised) embeddings of aligned BGR faces, one row each, in one session call."""
        mean = self.input_mean
        blob = cv2.dnn.blobFromImages(list(imgs), 1.0 / self.input_std, self.input_size, (mean, mean, mean), swapRB=True)
        out: np.ndarray = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob, np.float32)})[0]
        return out
