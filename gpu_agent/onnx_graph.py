"""What an ONNX file's graph takes and gives (names and shapes of its inputs and outputs, its first node names), read
straight from the protobuf, without the `onnx` package and without an onnxruntime session.

The face engine picks a pack's detector and recognizer by these shapes, as insightface's model router does; building
a session for every file of a pack to ask it (buffalo_l holds five) would cost more than the two it keeps.

Only the few fields needed are decoded (onnx.proto3 field numbers below); every other field is skipped by its wire
type, so a 170 MB model is walked in milliseconds (weights are length-delimited and skipped without a copy).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

# onnx.proto3 field numbers.
MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT = 1, 5, 11, 12
NODE_NAME = 3
TENSOR_NAME = 8
VALUE_INFO_NAME, VALUE_INFO_TYPE = 1, 2
TYPE_TENSOR = 1
TENSOR_TYPE_SHAPE = 2
SHAPE_DIM = 1
DIM_VALUE, DIM_PARAM = 1, 2
# Node names kept: insightface looks at the first eight to tell an mxnet-converted ArcFace (its own Sub/Mul).
FIRST_NODES = 8

Dim = int | str | None  # as onnxruntime reports a dimension: a size, a symbolic name, or unknown


class OnnxFormatError(ValueError):
    """Bytes that are not a well-formed ONNX protobuf."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class GraphInfo:
    inputs: tuple[TensorInfo, ...]  # without initializers, as onnxruntime's session.get_inputs()
    outputs: tuple[TensorInfo, ...]
    first_nodes: tuple[str, ...]  # names of the first FIRST_NODES nodes


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> list[tuple[int, int | memoryview]]:
    """(field number, value) of one message: an int for varints, the bytes of length-delimited fields."""
    out: list[tuple[int, int | memoryview]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((field, value))
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise OnnxFormatError("truncated field")
            out.append((field, buf[pos : pos + n]))
            pos += n
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise OnnxFormatError(f"unsupported wire type {wire}")
    return out


def _sub(fields: list[tuple[int, int | memoryview]], number: int) -> list[memoryview]:
    return [v for f, v in fields if f == number and isinstance(v, memoryview)]


def _text(buf: memoryview) -> str:
    return bytes(buf).decode("utf-8")


def _name(buf: memoryview, number: int) -> str:
    names = _sub(_fields(buf), number)
    return _text(names[-1]) if names else ""


def _dim(buf: memoryview) -> Dim:
    fields = _fields(buf)
    for f, v in fields:
        if f == DIM_VALUE and isinstance(v, int):
            return v - (1 << 64) if v >= 1 << 63 else v  # int64
        if f == DIM_PARAM and isinstance(v, memoryview):
            return _text(v)
    return None


def _value_info(buf: memoryview) -> TensorInfo:
    fields = _fields(buf)
    names = _sub(fields, VALUE_INFO_NAME)
    shape: tuple[Dim, ...] = ()
    for type_proto in _sub(fields, VALUE_INFO_TYPE):
        for tensor in _sub(_fields(type_proto), TYPE_TENSOR):
            for shape_proto in _sub(_fields(tensor), TENSOR_TYPE_SHAPE):
                shape = tuple(_dim(d) for d in _sub(_fields(shape_proto), SHAPE_DIM))
    return TensorInfo(_text(names[-1]) if names else "", shape)


def graph_info(path: Path) -> GraphInfo:
    """The inputs, outputs and first node names of the ONNX model at `path` (OnnxFormatError if it is not one)."""
    with open(path, "rb") as f:
        if not f.seek(0, 2):
            raise OnnxFormatError(f"{path.name} is empty")
        # Mapped, not read: the weights are skipped, never copied. The map closes when the last view of it goes
        # (an explicit close would fail while a traceback still holds one).
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return _parse(memoryview(mapped), path.name)


def _parse(view: memoryview, name: str) -> GraphInfo:
    graphs = _sub(_fields(view), MODEL_GRAPH)
    if not graphs:
        raise OnnxFormatError(f"{name} holds no ONNX graph")
    graph = _fields(graphs[-1])
    # Older IR versions list every initializer among the inputs too; onnxruntime does not report those.
    weights = {_name(t, TENSOR_NAME) for t in _sub(graph, GRAPH_INITIALIZER)}
    inputs = tuple(i for i in map(_value_info, _sub(graph, GRAPH_INPUT)) if i.name not in weights)
    outputs = tuple(map(_value_info, _sub(graph, GRAPH_OUTPUT)))
    nodes = tuple(_name(n, NODE_NAME) for n in _sub(graph, GRAPH_NODE)[:FIRST_NODES])
    return GraphInfo(inputs, outputs, nodes)
