"""The router makes a photo's files durable before the events naming them are appended: each crop fsynced, and
each folder it touched (the crops' folders, _processed/ and the photo's own) fsynced once, not once per file."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from handler_fixtures import GivenScorer, events_of, pipeline
from helpers import drop

from state import events as ev


def _inode(path: Path | int) -> tuple[int, int]:
    st = os.fstat(path) if isinstance(path, int) else os.stat(path)
    return st.st_dev, st.st_ino


def test_a_group_photo_fsyncs_each_crop_and_each_folder_once(tmp_path: Path, faces_dir: Path, face_engine,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    drop(faces_dir / "group", data / "inbox", "insightface_t1.jpg")
    p = pipeline(data, lambda: (face_engine, GivenScorer(available=False)))
    synced: Counter[tuple[int, int]] = Counter()
    head_when: dict[tuple[int, int], int] = {}
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced[_inode(fd)] += 1
        head_when[_inode(fd)] = p.log.head()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    p.reconcile()
    (pos, done), = events_of(p, ev.PhotoProcessed)
    crops = [data / "corpus" / f["crop"] for f in done.faces]
    assert len(crops) >= 3, "a group photo: several crops"
    folders = {c.parent for c in crops} | {data / "inbox/_processed", data / "inbox"}
    for path in [*crops, *folders]:
        assert synced[_inode(path)] == 1, f"{path} fsynced {synced[_inode(path)]} times"
        assert head_when[_inode(path)] < pos, f"{path} fsynced after the photo's events were appended"
