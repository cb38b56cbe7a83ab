"""The gpu_agent boundary: the daemon loads the model stack only when it runs the models itself.

With the models on a remote agent (`facesetd gpu-agent serve`, [gpu_agent] mode = "http"), a reconcile
imports neither insightface nor onnxruntime; the reading verbs import nothing of the model stack at all.
Each command runs as its own process and writes sorted(sys.modules) to a file as it exits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from daemon_proc import serve_agent
from helpers import REPO

TOKEN = "boundary-token-Qw81zR"
# What loading the models takes: never in a process whose models run on the agent.
INFERENCE_STACK = {"insightface", "onnxruntime", "onnx", "torch", "open_clip", "torchvision"}
# The reading verbs take none of the model stack, nor the image libraries the daemon crops with.
MODEL_STACK = INFERENCE_STACK | {"cv2", "skimage", "scipy", "huggingface_hub"}
READING_VERBS = [("status",), ("events",), ("rebuild",), ("config",), ("--help",), ("status", "--json")]

# Runs `facesetd ARGS...` (daemon.cli.main) and, at exit, writes the top-level modules it imported to $OUT.
PROBE = (
    "import atexit, json, os, sys\n"
    "atexit.register(lambda: open(os.environ['BOUNDARY_TEST_MODULES_OUT'], 'w').write("
    "json.dumps(sorted({m.split('.')[0] for m in sys.modules}))))\n"
    "from daemon.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def facesetd_modules(data: Path, *args: str, env: dict[str, str], out: Path) -> tuple[subprocess.CompletedProcess[str],
                                                                                       set[str]]:
    """Run `facesetd --data-dir DATA ARGS` as a new process; its output and the top-level modules it imported."""
    full_env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", **env, "BOUNDARY_TEST_MODULES_OUT": str(out)}
    proc = subprocess.run([sys.executable, "-c", PROBE, "--data-dir", str(data), *args], capture_output=True,
                          text=True, env=full_env, cwd=REPO, timeout=300)
    return proc, set(json.loads(out.read_text()))


@pytest.fixture(scope="module")
def agent_url(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[str]:
    """`facesetd gpu-agent serve` as its own process, with the real buffalo_sc pack."""
    with serve_agent(tmp_path_factory.mktemp("agent"), models_root, TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def remote(agent_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The daemon side's settings: models on the agent, and no models root it could load from."""
    no_models = tmp_path_factory.mktemp("no-models")
    return {"FACESETD_GPU_AGENT_MODE": "http", "FACESETD_GPU_AGENT_URL": agent_url,
            "FACESETD_GPU_AGENT_TOKEN": TOKEN, "FACESETD_MODELS_ROOT": str(no_models)}


@pytest.fixture(scope="module")
def reconciled(remote: dict[str, str], faces_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], set[str]]:
    """A data folder whose inbox a reconcile handled over the agent: the folder, the run, its modules."""
    data = tmp_path_factory.mktemp("boundary") / "data"
    (data / "inbox" / "faceset_001").mkdir(parents=True)
    biden = faces_dir / "identities" / "biden"
    shutil.copy(biden / "biden.jpg", data / "inbox" / "faceset_001" / "b.jpg")
    shutil.copy(biden / "biden2.jpg", data / "inbox" / "b2.jpg")
    proc, modules = facesetd_modules(data, "reconcile", env=remote, out=data.parent / "reconcile.modules.json")
    return data, proc, modules


def test_a_reconcile_over_the_agent_loads_no_model(reconciled: tuple[Path, subprocess.CompletedProcess[str],
                                                                      set[str]]) -> None:
    data, proc, modules = reconciled
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((data / "corpus" / "faceset_001" / "manifest.json").read_text())
    assert len(manifest["faces"]) == 2  # the work was done: detected on the agent, cropped and scored here
    assert modules & INFERENCE_STACK == set(), f"the daemon imported {sorted(modules & INFERENCE_STACK)}"
    assert "FutureWarning" not in proc.stdout + proc.stderr  # skimage's deprecation, as in-process: silenced


@pytest.mark.parametrize("args", READING_VERBS, ids=" ".join)
def test_the_reading_verbs_import_no_model_stack(args: tuple[str, ...], remote: dict[str, str],
                                                 reconciled: tuple[Path, subprocess.CompletedProcess[str], set[str]],
                                                 tmp_path: Path) -> None:
    data = reconciled[0]
    proc, modules = facesetd_modules(data, *args, env=remote, out=tmp_path / "modules.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert modules & MODEL_STACK == set(), f"`facesetd {' '.join(args)}` imported {sorted(modules & MODEL_STACK)}"


def test_the_daemons_face_alignment_is_insightfaces(face_engine, faces_dir: Path) -> None:
    """Quality is scored on the same aligned 112x112 face as before, to the bit, on real detections."""
    import cv2
    from insightface.utils import face_align

    from gpu_agent.quality import norm_crop_112, sharpness_term

    photos = sorted((faces_dir / "identities").glob("*/*.jpg"))[:6] + [faces_dir / "group" / "insightface_t1.jpg"]
    compared = 0
    for path, faces in zip(photos, face_engine.analyze([p.read_bytes() for p in photos])):
        image = cv2.imread(str(path))
        for face in faces:
            kps = np.asarray(face.kps, dtype=np.float32)
            expected = face_align.norm_crop(image, landmark=kps, image_size=112)
            assert np.array_equal(norm_crop_112(image, kps), expected)
            grey = cv2.cvtColor(expected, cv2.COLOR_BGR2GRAY)
            assert sharpness_term(image, kps) == float(min(1.0, max(0.0, cv2.Laplacian(grey, cv2.CV_64F).var() / 1000.0)))
            compared += 1
    assert compared >= 7
