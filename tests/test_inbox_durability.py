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


OBAMA = ["obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
         "obama_partial_face2.jpg", "obama_small.jpg"]


def test_a_promotion_fsyncs_each_folder_once_before_its_moves_are_recorded(
        tmp_path: Path, faces_dir: Path, face_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    drop(faces_dir / "identities", data / "inbox", *[f"obama/{p}" for p in OBAMA])
    p = pipeline(data, lambda: (face_engine, GivenScorer(available=False)))
    synced: list[tuple[tuple[int, int], int]] = []  # (folder, log head when fsynced)
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append((_inode(fd), p.log.head()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    p.reconcile()
    (pos, promoted), = events_of(p, ev.FacesetPromoted)
    (done_at, _done), = [(q, e) for q, e in events_of(p, ev.MoveCompleted) if e.decision == pos]
    assert len(promoted.moves) >= 5  # the gate ([identity] min_new_faceset)
    folders = {(data / "corpus" / dest).parent for _src, dest in promoted.moves}
    folders |= {(data / "corpus" / src).parent for src, _dest in promoted.moves}
    assert len(folders) == 2  # _pool/ and the new faceset's faces/
    for folder in folders:
        during = [head for inode, head in synced if inode == _inode(folder) and pos <= head < done_at]
        assert len(during) == 1, f"{folder}: fsynced {len(during)} times for {len(promoted.moves)} moves"
