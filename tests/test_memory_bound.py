"""Decoding, padding and cropping a photo allocate at most a fixed multiple of `[limits] max_pixels` (issue 23, item 3).

A faceless 53 KB 30000x100 JPEG (3 MP, under max_pixels) was padded by half its long edge on every side for the
detector's second look: a 60000x30100 array, 5.4 GB. The border is now at most the short edge (gpu_agent/crop.py
pad_image: at most 9 times the photo's pixels), and a crop's black canvas at most CANVAS_MAX_FACTOR times them.

The real path runs in a child process whose address space is limited (RLIMIT_AS) to what it uses after loading the
models and one warm-up photo, plus BYTES_PER_PIXEL x max_pixels: an allocation past the bound fails the child. The
real daemon runs under `prlimit --as` the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from daemon_proc import DaemonProcess
from helpers import REPO
from invariants import photos_accounted_once, sha256_file

MAX_PIXELS = 3_000_000  # the attacker's photo was 3 MP, under the default 100 MP
# The bound: the decoded photo (3 bytes a pixel), then the larger of its padded copy (at most 9 x 3) and a crop's
# canvas (at most 16 x 3), with room for the allocator: 64 bytes a pixel, about 21 times the decoded photo.
BYTES_PER_PIXEL = 64
BUDGET = BYTES_PER_PIXEL * MAX_PIXELS  # 192 MB


def _thin(width: int, height: int) -> bytes:
    """A faceless JPEG of width x height: a smooth gradient with a little texture (tens of KB)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 64, height, dtype=np.float32)[:, None]
    gray = ((x + y) % 256).astype(np.uint8)
    img = cv2.merge([gray, np.flipud(gray), np.full_like(gray, 90)])
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return jpg.tobytes()


def _face_on_canvas(faces_dir: Path, width: int, height: int) -> bytes:
    """A real face photo scaled to the canvas's height and put at its left edge: a large canvas whose face's crop
    square reaches past the photo (the black-canvas path of crop_face)."""
    face = cv2.imread(str(faces_dir / "identities/obama/obama.jpg"))
    scale = height / face.shape[0]
    face = cv2.resize(face, (max(1, round(face.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 40, np.uint8)
    canvas[:, : face.shape[1]] = face
    ok, jpg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return jpg.tobytes()


def _photos(faces_dir: Path, folder: Path) -> dict[str, Path]:
    """The attacker's thin photo, the same turned upright, and two face-bearing canvases, as files."""
    folder.mkdir(parents=True, exist_ok=True)
    wide = _thin(30000, 100)
    ok, tall = cv2.imencode(".jpg", cv2.rotate(cv2.imdecode(np.frombuffer(wide, np.uint8), cv2.IMREAD_COLOR),
                                               cv2.ROTATE_90_CLOCKWISE), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    made = {"thin_30000x100.jpg": wide, "tall_100x30000.jpg": tall.tobytes(),
            "face_4000x750.jpg": _face_on_canvas(faces_dir, 4000, 750),
            "face_6000x500.jpg": _face_on_canvas(faces_dir, 6000, 500)}
    out = {}
    for name, data in made.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


_CHILD = r"""
import json, resource, sys
from pathlib import Path

import numpy as np

from gpu_agent.crop import crop_face, decode_image
from gpu_agent.face_engine import InsightFaceEngine
from gpu_agent.interface import DetectedFace
from gpu_agent.settings import ModelSettings


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


models_root, warm, budget, max_pixels, *photos = sys.argv[1:]
engine = InsightFaceEngine(ModelSettings(face_pack="buffalo_sc"), Path(models_root))
img = decode_image(Path(warm).read_bytes(), int(max_pixels))  # every thread and pool the path uses, started
for f in engine.analyze_arrays([img], pad=True)[0]:
    crop_face(img, f)
engine.analyze_arrays([np.zeros((64, 2048, 3), np.uint8)], pad=True)  # the padded second look too
del img
limit = status("VmSize") + int(budget)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for photo in photos:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size (Linux 4.0+)
    before = status("VmRSS")
    img = decode_image(Path(photo).read_bytes(), int(max_pixels))
    faces = engine.analyze_arrays([img], pad=True)[0]
    h, w = img.shape[:2]  # and a box as large as the photo: no face gives one, a detector's guess might
    guess = DetectedFace(bbox=(0.0, 0.0, float(w), float(h)), kps=((0.0, 0.0),) * 5, det_score=0.5,
                         embedding=np.zeros(512, np.float32))
    crops = [crop_face(img, f) for f in [*faces, guess]]
    print(json.dumps({"photo": Path(photo).name, "shape": list(img.shape), "faces": len(faces),
                      "crops": [list(c.shape) for c in crops], "peak_rss_growth": status("VmHWM") - before}),
          flush=True)
    del img, faces, crops
"""


def test_decode_pad_and_crop_stay_within_a_multiple_of_max_pixels(tmp_path: Path, faces_dir: Path,
                                                                   models_root: Path) -> None:
    photos = _photos(faces_dir, tmp_path / "photos")
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(models_root), str(faces_dir / "identities/biden/biden.jpg"), str(BUDGET),
         str(MAX_PIXELS), *map(str, photos.values())],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, f"the path allocated past {BUDGET} bytes (or failed):\n{run.stderr[-3000:]}"
    seen = {r["photo"]: r for r in map(json.loads, (x for x in run.stdout.splitlines() if x.startswith('{"photo"')))}
    assert set(seen) == set(photos)
    assert seen["thin_30000x100.jpg"]["shape"] == [100, 30000, 3] and seen["thin_30000x100.jpg"]["faces"] == 0
    assert seen["tall_100x30000.jpg"]["shape"] == [30000, 100, 3] and seen["tall_100x30000.jpg"]["faces"] == 0
    for name in ("face_4000x750.jpg", "face_6000x500.jpg"):
        assert seen[name]["faces"] >= 1, seen[name]
    assert all(c == [512, 512, 3] for r in seen.values() for c in r["crops"])
    for r in seen.values():  # what it resided in, measured: far below the bound
        assert r["peak_rss_growth"] < BUDGET, r
    print(json.dumps({n: round(r["peak_rss_growth"] / MAX_PIXELS, 1) for n, r in seen.items()}))  # bytes a pixel


def test_pad_bound() -> None:
    """The padded copy of the attacker's shapes, and of ordinary ones, without a model: at most 9 times the photo."""
    from gpu_agent.crop import pad_image

    for h, w in ((100, 30000), (30000, 100), (1000, 1000), (750, 4000)):
        img = np.zeros((h, w, 3), np.uint8)
        padded, dx, dy = pad_image(img, 0.5)
        assert padded.size <= 9 * img.size and dx == dy == min(min(h, w), round(max(h, w) * 0.5))


@pytest.mark.slow
def test_the_daemon_handles_thin_photos_within_its_address_space_limit(tmp_path: Path, faces_dir: Path,
                                                                      models_root: Path) -> None:
    """The daemon measured on an ordinary photo (its peak virtual size), then started again under `prlimit --as` at
    that peak plus the bound, with the attacker's shapes dropped in: each handled, the daemon alive."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) is missing")
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
           "FACESETD_WATCH_SETTLE_S": "0.5", "FACESETD_LIMITS_MAX_PIXELS": str(MAX_PIXELS), "MALLOC_ARENA_MAX": "2"}
    shutil.copy(faces_dir / "identities/biden/biden.jpg", inbox / "warm.jpg")
    d = DaemonProcess(data, env).start()
    d.wait_for(lambda: "photo_processed" in d.kinds(), "the warm-up photo")
    d.idle()
    assert d.proc is not None
    status = Path(f"/proc/{d.proc.pid}/status").read_text().splitlines()
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmPeak:"))
    assert d.terminate() == 0
    limit = peak + BUDGET + 256 * 2**20  # room for what differs between two starts (threads, arenas)
    d = DaemonProcess(data, env, prefix=[prlimit, f"--as={limit}", "--"])
    d.log_file = tmp_path / "limited.log"
    d.start()
    photos = _photos(faces_dir, tmp_path / "photos")
    for path in photos.values():
        shutil.copy(path, inbox / path.name)
    d.wait_for(lambda: d.kinds().count("photo_processed") == 1 + len(photos), "every photo handled", timeout=120)
    d.idle()
    assert d.proc.poll() is None, d.output()[-3000:]
    assert d.terminate() == 0
    done = {e["path"]: e for e in d.events() if e["kind"] == "photo_processed"}
    assert done["thin_30000x100.jpg"]["note"] == done["tall_100x30000.jpg"]["note"] == "no face found"
    assert done["face_4000x750.jpg"]["faces"] and done["face_6000x500.jpg"]["faces"]
    problems = photos_accounted_once(data, [sha256_file(p) for p in [faces_dir / "identities/biden/biden.jpg",
                                                                      *photos.values()]])
    assert not problems, "\n".join(problems)
    assert "MemoryError" not in d.output() and "Traceback" not in d.output()
