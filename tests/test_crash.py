"""kill -9 in the middle of a move and of a projection write: the next start completes the work,
and the projections equal a clean rebuild."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus_factory import batch_corpus
from helpers import REPO, cli, images, projections

PRUNE_AND_SETTLE = """
import sys
sys.path.insert(0, {tests!r})
from helpers import open_pipeline, prune
p = open_pipeline({data!r})
prune(p, "faceset_001/faces/0001.png")
"""


def run_until_crash_point(data: Path, point: str, code: str | None = None, args: tuple[str, ...] = ()) -> None:
    marker = data / "crashed"
    env = {**os.environ, "FACESETD_CRASHPOINT": point, "FACESETD_CRASHPOINT_FILE": str(marker),
           "FACESETD_LOGGING_FORMAT": "json"}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "daemon.cli", "--data-dir", str(data), *args]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {point}: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, f"never reached {point}"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    marker.unlink()


def _events(data: Path) -> list[dict]:
    return [json.loads(line) for line in cli(data, "events", "--json").stdout.splitlines()]


@pytest.mark.parametrize("point", ["move:before_rename", "move:after_rename"])
def test_kill_mid_move_then_next_start_completes_it(tmp_path: Path, point: str) -> None:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    cli(data, "reconcile")
    run_until_crash_point(data, point, PRUNE_AND_SETTLE.format(tests=str(REPO / "tests"), data=str(data)))
    moved = (data / "corpus/faceset_001/faces/_dropped/0001.png").exists()
    assert moved == (point == "move:after_rename")
    cli(data, "reconcile")  # the next start
    corpus = data / "corpus"
    assert (corpus / "faceset_001/faces/_dropped/0001.png").exists()
    assert not (corpus / "faceset_001/faces/0001.png").exists()
    kinds = [e["kind"] for e in _events(data)]
    assert kinds.count("face_pruned") == 1 and kinds.count("move_completed") == 1
    assert "face_missing" not in kinds and "face_moved_externally" not in kinds and "move_failed" not in kinds
    recovered = projections(corpus)
    manifest = json.loads((corpus / "faceset_001/manifest.json").read_text())
    assert "0001.png" not in [f["file"] for f in manifest["faces"]]
    cli(data, "rebuild")
    assert projections(corpus) == recovered


def test_kill_mid_projection_write_then_next_start_completes_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    before = images(data / "corpus")
    # the first reconcile dies while writing faceset_002's .fsz (its temp file written, not renamed)
    run_until_crash_point(data, "write:faceset_002.fsz", args=("reconcile",))
    leftovers = list((data / "corpus/faceset_002").glob(".faceset_002.fsz.tmp-*"))
    assert leftovers, "the crash should leave the half-done temp file behind"
    assert (data / "corpus/faceset_002/faceset_002.fsz").read_bytes() == b"old zip from the batch scripts"
    cli(data, "reconcile")
    corpus = data / "corpus"
    assert not list(corpus.rglob(".*.tmp-*"))
    assert images(corpus) == before
    recovered = projections(corpus)
    assert (corpus / "faceset_002/faceset_002.fsz").read_bytes()[:2] == b"PK"
    cli(data, "rebuild")
    assert projections(corpus) == recovered


def test_kill_while_linking_the_top_fsz_then_next_start_completes_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    folder = data / "corpus/faceset_002"
    # faceset_002 has 3 faces: its top-8 .fsz is a hard link of the full one; the first reconcile dies with
    # the link made under its temp name, not yet renamed
    run_until_crash_point(data, "write:faceset_002_top8.fsz", args=("reconcile",))
    leftovers = list(folder.glob(".faceset_002_top8.fsz.tmp-*"))
    assert len(leftovers) == 1 and os.path.samefile(leftovers[0], folder / "faceset_002.fsz")
    assert not (folder / "faceset_002_top8.fsz").exists()
    cli(data, "reconcile")
    corpus = data / "corpus"
    assert not list(corpus.rglob(".*.tmp-*"))
    assert os.path.samefile(folder / "faceset_002_top8.fsz", folder / "faceset_002.fsz")
    assert (folder / "faceset_002.fsz").stat().st_nlink == 2  # the temp name's link is gone
    recovered = projections(corpus)
    cli(data, "rebuild")
    assert projections(corpus) == recovered
