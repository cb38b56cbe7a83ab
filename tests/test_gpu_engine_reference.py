"""The face engine's own SCRFD/ArcFace port against insightface itself, on the real buffalo_sc models and every photo
of ../shared/faces: the same faces, boxes, landmarks and scores, the same embeddings; and the engine never imports
the insightface package (which stays installed, as the reference here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpu_agent.crop import pad_image
from gpu_agent.face_align import estimate_norm
from gpu_agent.face_engine import PAD_FRACTION, PAD_MIN_FILL, InsightFaceEngine
from gpu_agent.interface import DetectedFace
from gpu_agent.pack_models import find_pack_models
from gpu_agent.providers import choose_providers, session_options
from gpu_agent.settings import ModelSettings
from tests.helpers import REPO

BOX_PX = 1e-3  # boxes and landmarks, in pixels
SCORE = 1e-5
COSINE = 0.99999
# Never imported by a process that loads the engine and analyzes a photo.
NOT_IMPORTED = ("insightface", "onnx", "skimage", "scipy", "requests")
# The reference's own norm_crop calls scikit-image's deprecated SimilarityTransform.estimate.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def reference_app(engine: InsightFaceEngine, det_thresh: float | None = None):  # type: ignore[no-untyped-def]
    """insightface's FaceAnalysis on the engine's pack, providers and session options, as the engine used to load it."""
    from insightface.app import FaceAnalysis

    s = engine.settings
    providers = choose_providers(s)
    app = FaceAnalysis(name=str(engine.pack_path.resolve()), allowed_modules=["detection", "recognition"],
                       providers=providers, sess_options=session_options(s, providers))
    app.prepare(ctx_id=0, det_size=(s.det_size, s.det_size), det_thresh=s.det_thresh if det_thresh is None else det_thresh)
    return app


def reference_analyze(app, img: np.ndarray, pad: bool) -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray]]:  # type: ignore[no-untyped-def]
    """(box, kps, score, raw embedding) per face, by insightface's detector, norm_crop and recognizer, with the engine's
    padding rule (the engine before it had its own port)."""
    from insightface.utils import face_align

    boxes, kpss = app.det_model.detect(img, max_num=0)
    src, dx, dy = img, 0, 0
    if boxes.shape[0] == 0 and pad:
        padded, pdx, pdy = pad_image(img, PAD_FRACTION)
        pboxes, pkpss = app.det_model.detect(padded, max_num=0)
        keep = np.maximum(pboxes[:, 2] - pboxes[:, 0], pboxes[:, 3] - pboxes[:, 1]) >= PAD_MIN_FILL * min(img.shape[:2])
        if keep.any():
            boxes, kpss, src, dx, dy = pboxes[keep], pkpss[keep], padded, pdx, pdy
    rec = app.models["recognition"]
    out = []
    for box, kps in zip(boxes, kpss):
        emb = rec.get_feat(face_align.norm_crop(src, landmark=kps, image_size=rec.input_size[0]))[0]
        out.append((box[:4] - [dx, dy, dx, dy], kps - [dx, dy], float(box[4]), emb))
    return out


def assert_same_faces(got: list[DetectedFace], want: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]],
                      what: str) -> None:
    assert len(got) == len(want), what
    for g, (box, kps, score, emb) in zip(got, want):
        assert np.abs(np.array(g.bbox) - box).max() <= BOX_PX, what
        assert np.abs(np.array(g.kps) - kps).max() <= BOX_PX, what
        assert abs(g.det_score - score) <= SCORE, what
        assert float(np.dot(g.embedding, emb / np.linalg.norm(emb))) >= COSINE, what


def photos(faces_dir: Path) -> list[Path]:
    paths = sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert len(paths) >= 40
    return paths


@pytest.fixture(scope="module")
def engine(models_root: Path) -> InsightFaceEngine:
    return InsightFaceEngine(ModelSettings(face_pack="buffalo_sc"), models_root)


@pytest.mark.parametrize("pad", [False, True])
def test_every_photo_gives_insightfaces_faces(engine: InsightFaceEngine, faces_dir: Path, pad: bool) -> None:
    app = reference_app(engine)
    paths = photos(faces_dir)
    images = [cv2.imread(str(p)) for p in paths]
    got = engine.analyze_arrays(images, pad=pad)  # batches of 8: one recognition call per batch
    assert sum(map(len, got)) >= 45
    for path, img, faces in zip(paths, images, got):
        assert_same_faces(faces, reference_analyze(app, img, pad), f"{path.relative_to(faces_dir)} pad={pad}")


def test_a_lower_threshold_gives_insightfaces_extra_faces(models_root: Path, faces_dir: Path) -> None:
    """At 0.2 the detector's weak candidates come through (more faces, more NMS): still insightface's."""
    low = InsightFaceEngine(ModelSettings(face_pack="buffalo_sc", det_thresh=0.2), models_root)
    app = reference_app(low)
    paths = [faces_dir / "group" / "insightface_t1.jpg", *sorted((faces_dir / "no_face").glob("*.jpg"))]
    images = [cv2.imread(str(p)) for p in paths]
    got = low.analyze_arrays(images, pad=False)
    assert sum(map(len, got)) > 6
    for path, img, faces in zip(paths, images, got):
        assert_same_faces(faces, reference_analyze(app, img, False), path.name)


def test_alignment_matrix_is_insightfaces_to_the_bit() -> None:
    """The numpy Umeyama estimate gives scikit-image's matrix exactly (float32 and float64 landmarks, every
    crop size insightface allows, a degenerate set of points)."""
    from insightface.utils import face_align

    rng = np.random.default_rng(13)
    template = face_align.arcface_dst
    for i in range(2000):
        kps = template * rng.uniform(0.3, 12) + rng.normal(0, rng.uniform(0.1, 25), (5, 2)) + rng.uniform(-300, 3000, 2)
        kps = kps.astype(np.float32 if i % 3 else np.float64)
        size = (112, 128, 224, 256)[i % 4]
        assert np.array_equal(estimate_norm(kps, size), face_align.estimate_norm(kps, size)), (i, size)
    line = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [4, 4]], dtype=np.float32)
    assert np.array_equal(estimate_norm(line), face_align.estimate_norm(line))


def test_loading_and_running_the_engine_imports_no_insightface(models_root: Path, faces_dir: Path) -> None:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from gpu_agent.face_engine import InsightFaceEngine\n"
        "from gpu_agent.settings import ModelSettings\n"
        "e = InsightFaceEngine(ModelSettings(face_pack='buffalo_sc'), Path(sys.argv[1]))\n"
        "[faces] = e.analyze([Path(sys.argv[2]).read_bytes()])\n"
        "print(json.dumps({'faces': len(faces), 'modules': sorted(sys.modules)}))\n"
    )
    photo = faces_dir / "identities" / "obama" / "obama.jpg"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACESETD_LOGGING_FORMAT": "json"}
    proc = subprocess.run([sys.executable, "-c", code, str(models_root), str(photo)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["faces"] == 1
    stack = sorted(m for m in out["modules"] if m.split(".")[0] in NOT_IMPORTED)
    assert stack == [], stack


# Packs laid out otherwise: other file names, other models beside the two, other detector outputs -------------------

def _tiny_model(path: Path, inputs: list[tuple[str, list[int | str]]], outputs: int) -> None:
    """A real, minimal ONNX model with these inputs and `outputs` outputs (a pack's landmark, attribute or swapper
    model stands in by its shapes alone: that is all the routing looks at)."""
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    outs = [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, None) for i in range(outputs)]
    nodes = [helper.make_node("GlobalAveragePool", [inputs[0][0]], [f"out{i}"]) for i in range(outputs)]
    graph = helper.make_graph(nodes, "tiny", ins, outs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_the_pack_models_are_the_ones_insightface_picks(models_root: Path, tmp_path: Path) -> None:
    """A buffalo_l-like folder: landmark (192) models sorted before the detector and recognizer, gender/age (96)
    between them, a second recognizer after them; the engine loads the ones FaceAnalysis loads."""
    from insightface.app import FaceAnalysis

    from gpu_agent.arcface import is_recognizer
    from gpu_agent.onnx_graph import graph_info

    src = models_root / "models" / "buffalo_sc"
    pack = tmp_path / "models" / "pack"
    pack.mkdir(parents=True)
    _tiny_model(pack / "1k3d68.onnx", [("x", [1, 3, 192, 192])], 1)
    _tiny_model(pack / "2d106det.onnx", [("x", [1, 3, 192, 192])], 1)
    (pack / "det_10g.onnx").symlink_to(src / "scrfd_500m_bnkps.onnx")
    _tiny_model(pack / "genderage.onnx", [("x", [1, 3, 96, 96])], 1)
    (pack / "w600k_r50.onnx").symlink_to(src / "w600k_mbf.onnx")
    (pack / "z_second_rec.onnx").symlink_to(src / "w600k_mbf.onnx")
    app = FaceAnalysis(name=str(pack), allowed_modules=["detection", "recognition"], providers=["CPUExecutionProvider"])
    found = find_pack_models(pack, "pack")
    assert found.detector.name == Path(app.det_model.model_file).name == "det_10g.onnx"
    assert found.recognizer.name == Path(app.models["recognition"].model_file).name == "w600k_r50.onnx"
    engine = InsightFaceEngine(ModelSettings(face_pack="pack"), tmp_path)
    assert set(engine.describe()["files"]) == {"det_10g.onnx", "w600k_r50.onnx"}
    # insightface's face swapper (two inputs, 128 square) is no recognizer (FaceAnalysis itself fails on one).
    _tiny_model(tmp_path / "swapper.onnx", [("x", [1, 3, 128, 128]), ("y", [1, 512])], 1)
    _tiny_model(tmp_path / "rec128.onnx", [("x", [1, 3, 128, 128])], 1)
    assert not is_recognizer(graph_info(tmp_path / "swapper.onnx"))
    assert is_recognizer(graph_info(tmp_path / "rec128.onnx"))


def _edited(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    import onnx

    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def _unbatched(model) -> None:  # type: ignore[no-untyped-def]
    """Outputs without the batch axis, as the official buffalo_sc/buffalo_l detectors give them."""
    from onnx import helper

    for out in model.graph.output:
        inner = out.name + "_batched"
        for node in model.graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
        model.graph.node.append(helper.make_node("Squeeze", [inner], [out.name], axes=[0]))  # opset 11
        del out.type.tensor_type.shape.dim[0]


def _mxnet_named(model) -> None:  # type: ignore[no-untyped-def]
    """The first nodes named as in an mxnet-converted ArcFace (insightface then feeds raw pixels)."""
    model.graph.node[0].name = "_minus0"
    model.graph.node[1].name = "_mul0"


def test_unbatched_detector_and_mxnet_recognizer_give_insightfaces_faces(models_root: Path, faces_dir: Path,
                                                                         tmp_path: Path) -> None:
    src = models_root / "models" / "buffalo_sc"
    pack = tmp_path / "models" / "variant"
    pack.mkdir(parents=True)
    _edited(src / "scrfd_500m_bnkps.onnx", pack / "det.onnx", _unbatched)
    _edited(src / "w600k_mbf.onnx", pack / "rec.onnx", _mxnet_named)
    engine = InsightFaceEngine(ModelSettings(face_pack="variant"), tmp_path)
    app = reference_app(engine)
    assert not engine.det.batched and app.models["recognition"].input_mean == engine.rec.input_mean == 0.0
    paths = [faces_dir / "group" / "insightface_t1.jpg", faces_dir / "identities" / "biden" / "biden.jpg"]
    images = [cv2.imread(str(p)) for p in paths]
    for path, img, faces in zip(paths, images, engine.analyze_arrays(images, pad=False)):
        assert faces
        assert_same_faces(faces, reference_analyze(app, img, False), path.name)


def test_a_detector_without_landmarks_is_refused_by_name(models_root: Path, faces_dir: Path, tmp_path: Path) -> None:
    """Six outputs (scores and boxes only): decoded as insightface decodes them, but no face can be aligned."""
    from insightface.model_zoo.scrfd import SCRFD

    from gpu_agent.errors import ModelNotFound
    from gpu_agent.onnx_graph import graph_info
    from gpu_agent.providers import new_session
    from gpu_agent.scrfd import Scrfd

    def drop_kps(model) -> None:  # type: ignore[no-untyped-def]
        keep = [o for o in model.graph.output if not o.name.startswith("kps")]
        del model.graph.output[:]
        model.graph.output.extend(keep)

    pack = tmp_path / "models" / "nokps"
    pack.mkdir(parents=True)
    det = _edited(models_root / "models" / "buffalo_sc" / "scrfd_500m_bnkps.onnx", pack / "det.onnx", drop_kps)
    (pack / "rec.onnx").symlink_to(models_root / "models" / "buffalo_sc" / "w600k_mbf.onnx")
    with pytest.raises(ModelNotFound, match="det.onnx .* no 5-point landmarks"):
        InsightFaceEngine(ModelSettings(face_pack="nokps"), tmp_path)
    ours = Scrfd(new_session(det, ["CPUExecutionProvider"], session_options(ModelSettings())), graph_info(det),
                 (640, 640), 0.5)
    theirs = SCRFD(model_file=str(det))
    theirs.prepare(0, input_size=(640, 640), det_thresh=0.5)
    img = cv2.imread(str(faces_dir / "group" / "insightface_t1.jpg"))
    (boxes, kpss), (ref_boxes, ref_kpss) = ours.detect(img), theirs.detect(img, max_num=0)
    assert kpss is None and ref_kpss is None and boxes.shape == ref_boxes.shape == (6, 5)
    assert np.abs(boxes - ref_boxes).max() <= BOX_PX


def _five_stride_detector(path: Path, with_kps: bool) -> Path:
    """A real ONNX model in SCRFD's five-stride layout (strides 8 ... 128, one anchor, outputs without a batch axis;
    10 outputs, or 15 with landmarks), random 1x1 convolutions over average-pooled pixels: no trained 5-stride
    detector is at hand, and the decoding only depends on the layout."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    nodes, inits, outs = [], [], []
    widths = {"score": 1, "bbox": 4, "kps": 10} if with_kps else {"score": 1, "bbox": 4}
    for kind, k in widths.items():
        for s in (8, 16, 32, 64, 128):
            name = f"{kind}_{s}"
            w = rng.normal(0, 1.5, (k, 3, 1, 1)).astype(np.float32)
            b = np.full(k, -1.0 if kind == "score" else 1.0, np.float32)
            inits += [numpy_helper.from_array(w, name + "_w"), numpy_helper.from_array(b, name + "_b"),
                      numpy_helper.from_array(np.array([-1, k], np.int64), name + "_shape")]
            nodes += [helper.make_node("AveragePool", ["input"], [name + "_p"], kernel_shape=[s, s], strides=[s, s]),
                      helper.make_node("Conv", [name + "_p", name + "_w", name + "_b"], [name + "_c"]),
                      helper.make_node("Transpose", [name + "_c"], [name + "_t"], perm=[0, 2, 3, 1]),
                      helper.make_node("Reshape", [name + "_t", name + "_shape"], [name + "_r"]),
                      helper.make_node("Sigmoid" if kind == "score" else "Abs", [name + "_r"], [name])]
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", k]))
    graph = helper.make_graph(nodes, "scrfd5", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [1, 3, "h", "w"])], outs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("with_kps", [True, False], ids=["15 outputs", "10 outputs"])
def test_five_stride_layouts_decode_as_insightface_decodes_them(tmp_path: Path, faces_dir: Path, with_kps: bool) -> None:
    from insightface.model_zoo.scrfd import SCRFD

    from gpu_agent.onnx_graph import graph_info
    from gpu_agent.providers import new_session
    from gpu_agent.scrfd import Scrfd

    det = _five_stride_detector(tmp_path / "det.onnx", with_kps)
    ours = Scrfd(new_session(det, ["CPUExecutionProvider"], session_options(ModelSettings())), graph_info(det),
                 (640, 640), 0.5)
    theirs = SCRFD(model_file=str(det))
    theirs.prepare(0, input_size=(640, 640), det_thresh=0.5)
    assert (ours.strides, ours.num_anchors, ours.use_kps) == (tuple(theirs._feat_stride_fpn), 1, with_kps)
    for photo in (faces_dir / "group" / "insightface_t1.jpg", faces_dir / "identities" / "obama" / "obama_small.jpg"):
        img = cv2.imread(str(photo))
        (boxes, kpss), (ref_boxes, ref_kpss) = ours.detect(img), theirs.detect(img, max_num=0)
        assert boxes.shape == ref_boxes.shape and boxes.shape[0] >= 3, photo.name
        assert np.abs(boxes - ref_boxes).max() <= BOX_PX, photo.name
        if with_kps:
            assert kpss is not None and ref_kpss is not None and np.abs(kpss - ref_kpss).max() <= BOX_PX
        else:
            assert kpss is None and ref_kpss is None
