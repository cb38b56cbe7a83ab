"""The router hands the crops it just wrote to embed as pixels (handlers/recent_crops.py): embed decodes none of
them again, and records exactly what it records when it decodes every PNG."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from handler_fixtures import GivenScorer, events_of, pipeline
from helpers import drop, images

from handlers.recent_crops import RecentCrops
from state import events as ev

OBAMA = ["obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
         "obama_partial_face2.jpg", "obama_small.jpg"]


def test_kept_newest_first_out_handed_once_and_read_only() -> None:
    kept = RecentCrops(limit=2)
    a, b, c = (np.full((4, 4, 3), v, np.uint8) for v in (1, 2, 3))
    kept.put("a", a)
    kept.put("b", b)
    kept.put("c", c)  # over the limit: the oldest goes
    assert len(kept) == 2 and kept.take("a") is None
    got = kept.take("b")
    assert got is b and kept.take("b") is None and kept.hits == 1
    with pytest.raises(ValueError):
        got[0, 0, 0] = 9  # shared pixels: nobody may draw on them


def _reconcile(data: Path, faces_dir: Path, face_engine, limit: int) -> tuple[list[tuple], int, dict[str, str]]:
    ids = faces_dir / "identities"
    drop(ids, data / "inbox", "biden/biden.jpg", "biden/biden2.jpg", into="faceset_001")
    drop(ids, data / "inbox", *[f"obama/{p}" for p in OBAMA])
    drop(faces_dir, data / "inbox", "group/obama_and_biden.jpg")
    p = pipeline(data, lambda: (face_engine, GivenScorer(available=False)))
    p.ctx.recent_crops = RecentCrops(limit=limit)
    p.reconcile()
    analyzed = [ev.encode_event(e) for _pos, e in events_of(p, ev.FaceAnalyzed)]
    return analyzed, p.ctx.recent_crops.hits, images(data / "corpus")


def test_embed_takes_the_routers_pixels_and_records_the_same(tmp_path: Path, faces_dir: Path, face_engine) -> None:
    kept, hits, files = _reconcile(tmp_path / "kept", faces_dir, face_engine, limit=32)
    decoded, none, files_decoded = _reconcile(tmp_path / "decoded", faces_dir, face_engine, limit=0)
    assert none == 0
    # Every analysed crop was one the router had just written (the seeds, and the pool faces promoted).
    assert len(kept) >= 5 and hits == len(kept)
    assert kept == decoded  # the same FaceAnalyzed events, byte for byte (embeddings included)
    assert files == files_decoded
    shutil.rmtree(tmp_path)
