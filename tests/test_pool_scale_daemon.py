"""The real daemon with a big pool: a long clustering pass runs in slices and never holds a photo back."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from daemon_proc import DaemonProcess
from helpers import cli

from state import events as ev
from state.eventlog import EventLog

IDS = "identities"
POOL_FACES = 20_000


def _env(models_root: Path) -> dict[str, str]:
    # Slices of 10 ms: the first pass over 20,000 faces (about a second of matrix products here) takes many.
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_IDENTITY_POOL_SLICE_S": "0.01"}


def _strangers(log: EventLog, n: int) -> None:
    """`n` one-off faces waiting in the pool, recorded as the router records them (random unit 512-d vectors:
    no two are within cluster_distance, so nothing is promoted and the files need not exist)."""
    rng = np.random.default_rng(20)
    vecs = rng.standard_normal((n, 512)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    log.append([ev.PoolFaceAdded(path=f"_pool/{i:064x}_0.png", face_id=f"{i:064x}_0", sha256=f"{i:064x}",
                                 photo_sha256=f"{i:064x}", quality=0.5, source={}, embedding=vecs[i])
                for i in range(n)])


def _fsz_mtime(data: Path) -> int:
    path = data / "corpus" / "faceset_001" / "faceset_001.fsz"
    return path.stat().st_mtime_ns if path.exists() else 0


def _sources(data: Path) -> list[str]:
    manifest = data / "corpus" / "faceset_001" / "manifest.json"
    return [f["source"].get("photo", "") for f in json.loads(manifest.read_text())["faces"]]


def _line(output: str, event: str, **fields: str) -> int:
    """Index of the first JSON log line of `event` whose fields contain `fields` (-1: none)."""
    for i, line in enumerate(output.splitlines()):
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == event and all(v in str(rec.get(k, "")) for k, v in fields.items()):
                return i
    return -1


@pytest.mark.slow
def test_a_known_face_reaches_its_fsz_while_a_big_pool_is_clustered(tmp_path: Path, faces_dir: Path,
                                                                       models_root: Path) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data, _env(models_root)).start()
    (data / "inbox" / "faceset_001").mkdir(parents=True)
    shutil.copy(faces_dir / IDS / "obama" / "obama.jpg", data / "inbox" / "faceset_001" / "obama.jpg")
    d.wait_for(lambda: _fsz_mtime(data) > 0, "the seeded faceset's .fsz")
    assert d.terminate() == 0

    log = EventLog(data / "state" / "events.sqlite3")
    _strangers(log, POOL_FACES)
    log.close()
    d.start()
    # A stranger's photo makes a pass over the 20,000 pool faces due (the first since the start: a full one) ...
    shutil.copy(faces_dir / IDS / "lin_manuel_miranda" / "lin-manuel-miranda.jpg", data / "inbox" / "lin.jpg")
    d.wait_for(lambda: _line(d.output(), "photo routed", path="lin.jpg") >= 0, "the stranger routed")
    # ... and a photo of the known person dropped meanwhile reaches faceset_001's .fsz within 5 s.
    before = _fsz_mtime(data)
    shutil.copy(faces_dir / IDS / "obama" / "obama1.jpg", data / "inbox" / "obama1.jpg")
    dropped = time.monotonic()
    d.wait_for(lambda: _fsz_mtime(data) != before, "obama1 in faceset_001.fsz", timeout=30)
    latency = time.monotonic() - dropped
    d.idle()  # the pass over the whole pool done, and the pool's clusters written beside the log
    assert d.terminate() == 0

    assert any(s.endswith("obama1.jpg") for s in _sources(data))
    assert latency <= 5.0, f"{latency:.1f} s from the drop to the .fsz"
    # When the pass ended against the drop, and in how many slices, is the machine's load and the pool's projection
    # as much as the rule: not asserted. The promise a user sees, the photo in its .fsz within 5 s of the drop while
    # 20,000 strangers wait in the pool, is; and the pool's clusters then cover every one of them.
    pool = json.loads(cli(data, "status", "--json", env=_env(models_root)).stdout)["pool"]
    assert pool["faces"] >= POOL_FACES and pool["projection"]["stored"] and not pool["projection"]["behind"], pool
