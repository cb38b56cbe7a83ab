"""The in-process face engine on the real buffalo_sc models and the real photos in ../shared/faces."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpu_agent.crop import crop_face, decode_image
from gpu_agent.face_engine import InsightFaceEngine
from gpu_agent.interface import DetectedFace
from gpu_agent.settings import ModelSettings


@pytest.fixture(scope="module")
def engine(models_root: Path) -> InsightFaceEngine:
    return InsightFaceEngine(ModelSettings(face_pack="buffalo_sc"), models_root)


@pytest.fixture(scope="module")
def identity_faces(engine: InsightFaceEngine, faces_dir: Path) -> dict[Path, list[DetectedFace]]:
    paths = sorted((faces_dir / "identities").glob("*/*.jpg"))
    assert len(paths) >= 15
    results = engine.analyze([p.read_bytes() for p in paths])
    return dict(zip(paths, results))


def test_every_identity_photo_has_exactly_one_face(identity_faces: dict[Path, list[DetectedFace]]) -> None:
    counts = {p.name: len(f) for p, f in identity_faces.items()}
    assert all(n == 1 for n in counts.values()), counts


def test_faces_are_well_formed(identity_faces: dict[Path, list[DetectedFace]]) -> None:
    for faces in identity_faces.values():
        f = faces[0]
        assert f.embedding.shape == (512,) and f.embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(f.embedding)) - 1.0) < 1e-5
        assert len(f.kps) == 5 and 0.5 <= f.det_score <= 1.0
        x1, y1, x2, y2 = f.bbox
        assert x2 > x1 and y2 > y1


def test_same_identity_close_different_far(identity_faces: dict[Path, list[DetectedFace]]) -> None:
    emb = [(p.parent.name, p.name, faces[0].embedding) for p, faces in identity_faces.items()]
    for (ia, na, ea), (ib, nb, eb) in itertools.combinations(emb, 2):
        cos = float(np.dot(ea, eb))
        if ia == ib:
            assert cos >= 0.3, (na, nb, cos)
        else:
            assert cos < 0.2, (na, nb, cos)


def test_group_photo_has_six(engine: InsightFaceEngine, faces_dir: Path) -> None:
    [faces] = engine.analyze([(faces_dir / "group" / "insightface_t1.jpg").read_bytes()])
    assert len(faces) == 6


def test_no_face_photos_have_none(engine: InsightFaceEngine, faces_dir: Path) -> None:
    paths = sorted((faces_dir / "no_face").glob("*.jpg"))
    assert paths
    for pad in (True, False):
        counts = {p.name: len(f) for p, f in zip(paths, engine.analyze([p.read_bytes() for p in paths], pad=pad))}
        assert all(n == 0 for n in counts.values()), (pad, counts)


def test_face_filling_the_frame_needs_padding(engine: InsightFaceEngine, faces_dir: Path) -> None:
    data = (faces_dir / "aligned_112" / "insightface_Tom_Hanks_54745.jpg").read_bytes()
    assert engine.analyze([data], pad=False) == [[]]  # roop's view: missed at 640
    [faces] = engine.analyze([data], pad=True)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].bbox
    assert -20 < x1 < 56 and -20 < y1 < 56 and 56 < x2 < 132 and 56 < y2 < 132  # in original coordinates


def test_crops_are_512_and_redetect_as_one_face(
    engine: InsightFaceEngine, identity_faces: dict[Path, list[DetectedFace]]
) -> None:
    crops = []
    for p, faces in identity_faces.items():
        crop = crop_face(decode_image(p.read_bytes()), faces[0])
        assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
        ok, png = cv2.imencode(".png", crop)
        assert ok
        crops.append(png.tobytes())
    # pad=False: exactly as roop re-detects the PNG on load.
    counts = [len(f) for f in engine.analyze(crops, pad=False)]
    assert counts == [1] * len(crops)


def test_batching_does_not_change_results(engine: InsightFaceEngine, faces_dir: Path) -> None:
    paths = sorted((faces_dir / "identities" / "obama").glob("*.jpg"))[:3]
    data = [p.read_bytes() for p in paths]
    batched = engine.analyze(data)
    single = [engine.analyze([d])[0] for d in data]
    for a, b in zip(batched, single):
        assert a[0].bbox == b[0].bbox
        assert np.allclose(a[0].embedding, b[0].embedding, atol=1e-5)


def test_describe_names_pack_and_providers(engine: InsightFaceEngine) -> None:
    d = engine.describe()
    assert d["pack"] == "buffalo_sc" and d["providers"][0] == "CPUExecutionProvider"
    assert set(d["files"]) == {"scrfd_500m_bnkps.onnx", "w600k_mbf.onnx"}


def test_provider_choice() -> None:
    from gpu_agent.errors import ModelError
    from gpu_agent.providers import choose_providers, session_options

    every = ["DmlExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(ModelSettings(), every) == ["DmlExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(ModelSettings(), every[1:]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(ModelSettings(), ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(ModelSettings(providers=("CUDAExecutionProvider",)), every) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ModelError, match="DmlExecutionProvider"):
        choose_providers(ModelSettings(providers=("DmlExecutionProvider",)), ["CPUExecutionProvider"])
    opts = session_options(ModelSettings(intra_op_threads=3, inter_op_threads=1), ["DmlExecutionProvider"])
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads, opts.enable_mem_pattern) == (3, 1, False)
    # the intra-op threads do not spin-wait between calls unless asked to (bench/e2e.py: faster on 2 cores)
    spin = "session.intra_op.allow_spinning"
    assert opts.get_session_config_entry(spin) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # onnxruntime's default: it spins
        session_options(ModelSettings(intra_op_spinning=True)).get_session_config_entry(spin)
