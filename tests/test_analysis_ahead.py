"""The router analyses the photos waiting next with the one it routes (handlers/analysis_ahead.py): the engine is
called once per [models] batch_size photos instead of once per photo, and everything recorded and written is
what it is without looking ahead."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handler_fixtures import GivenScorer, pipeline
from helpers import drop, images

from daemon.pipeline import Pipeline
from handlers.analysis_ahead import AnalysisAhead
from state import events as ev

SEEDS = ["biden/biden.jpg", "biden/biden2.jpg"]
PHOTOS = [
    "identities/obama/obama.jpg", "identities/obama/obama1.jpg", "identities/obama/obama2.jpg",
    "identities/obama/obama3.jpg", "identities/obama/obama_small.jpg", "identities/obama/obama_partial_face.jpg",
    "identities/alex_lacamoire/alex_lacamoire1.jpg", "identities/alex_lacamoire/img1.jpg",
    "identities/alex_lacamoire/alex-lacamoire.jpg", "identities/lin_manuel_miranda/lin-manuel-miranda.jpg",
    "identities/pp_man/pp2_clear_glasses.jpg", "group/obama_and_biden.jpg", "group/two_people_obama_biden.jpg",
    "group/pp_overlap_1.jpg", "sunglasses/pp4.jpg", "mask/pp1_two_people_ffp2_masks.jpg", "no_face/pp7.jpg",
    "aligned_112/insightface_Tom_Hanks_54745.jpg",
]
# [limits] incomplete_grace_s = 0: a photo cut short is rejected at once (not deferred with its age recorded).
CONFIG = "[limits]\nincomplete_grace_s = 0\n"


class CountingEngine:
    """The real engine, each call's images counted (as bench/e2e.py records them)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[tuple[bool, int]] = []  # (pad, images)

    def analyze(self, images: Sequence[bytes], *, pad: bool = True) -> Any:
        return self.engine.analyze(images, pad=pad)

    def analyze_arrays(self, images: Sequence[Any], *, pad: bool = True) -> Any:
        self.calls.append((pad, len(images)))
        return self.engine.analyze_arrays(images, pad=pad)

    def describe(self) -> dict[str, Any]:
        return dict(self.engine.describe())

    def photo_calls(self) -> list[int]:
        """Images in each call the router made (pad=True: photos; embed analyses its crops with pad=False)."""
        return [n for pad, n in self.calls if pad]


def _normal(stored: ev.Event) -> tuple[str, str, Any, bytes | None]:
    """An event as encoded, less the files' modification times (each run writes its own files)."""
    kind, subject, payload, vector = ev.encode_event(stored)
    fields = json.loads(payload)
    fields.pop("mtime_ns", None)
    return kind, subject, fields, vector


def _backlog(data: Path, faces_dir: Path) -> None:
    inbox = data / "inbox"
    drop(faces_dir / "identities", inbox, *SEEDS, into="faceset_001")
    drop(faces_dir, inbox, *PHOTOS)
    whole = (faces_dir / "identities/obama/obama1.jpg").read_bytes()
    (inbox / "m_cut_short.jpg").write_bytes(whole[: len(whole) // 3])  # undecodable: rejected when received
    (inbox / "n_notes.jpg").write_text("not an image\n")  # a non-image file among the photos
    (inbox / "o_folder.jpg").mkdir()  # a folder with a photo's name (never received)
    os.symlink("missing.jpg", inbox / "p_link.jpg")  # a link to nothing: rejected as dangling


def _reconcile(data: Path, faces_dir: Path, face_engine: Any, *, ahead: bool) -> tuple[Pipeline, CountingEngine]:
    _backlog(data, faces_dir)
    counting = CountingEngine(face_engine)
    p = pipeline(data, lambda: (counting, GivenScorer(available=False)), CONFIG)
    p.ctx.ahead = AnalysisAhead() if ahead else AnalysisAhead(pixels=0)
    p.reconcile()
    return p, counting


def _files(data: Path) -> dict[str, str]:
    inbox = {f"inbox/{k}": v for k, v in images(data / "inbox").items()}
    return {**images(data / "corpus"), **inbox}


def test_backlog_analysed_in_batches_records_the_same(tmp_path: Path, faces_dir: Path, face_engine: Any) -> None:
    batched, counted = _reconcile(tmp_path / "ahead", faces_dir, face_engine, ahead=True)
    alone, counted_alone = _reconcile(tmp_path / "alone", faces_dir, face_engine, ahead=False)

    # The same events, in the same order, payloads and vectors included; the same files in the corpus and inbox.
    got = [_normal(se.event) for se in batched.log.read(0, None)]
    want = [_normal(se.event) for se in alone.log.read(0, None)]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert got == want
    assert _files(tmp_path / "ahead") == _files(tmp_path / "alone")

    processed = [se.event for se in batched.log.read(0, None) if isinstance(se.event, ev.PhotoProcessed)]
    rejected = {e.path: e.reason for e in (se.event for se in batched.log.read(0, None))
                if isinstance(e, ev.PhotoRejected)}
    assert len(processed) == len(SEEDS) + len(PHOTOS)
    # The file cut short, the text file and the link are handled as without looking ahead: rejected in their turn.
    assert rejected == {"m_cut_short.jpg": "unreadable", "n_notes.jpg": "unreadable", "p_link.jpg": "symlink_dangling"}
    assert (tmp_path / "ahead/inbox/o_folder.jpg").is_dir()

    # 20 photos to analyse: 3 engine calls of at most [models] batch_size photos, not 20 calls of one.
    n = len(SEEDS) + len(PHOTOS)
    batch = batched.config.models.batch_size
    assert counted_alone.photo_calls() == [1] * n
    assert sum(counted.photo_calls()) == n
    assert max(counted.photo_calls()) <= batch
    assert len(counted.photo_calls()) == -(-n // batch) == 3
    assert batched.ctx.ahead.hits == batched.ctx.ahead.ahead == n - 3
    shutil.rmtree(tmp_path)


def test_a_photo_replaced_before_it_is_received_is_analysed_afresh(tmp_path: Path, faces_dir: Path,
                                                                   face_engine: Any) -> None:
    names = ["a.jpg", "b.jpg", "c.jpg"]
    ids = faces_dir / "identities"
    runs = {}
    for mode in ("replaced", "fresh"):
        data = tmp_path / mode
        inbox = data / "inbox"
        inbox.mkdir(parents=True)
        for name, photo in zip(names, ["obama/obama.jpg", "obama/obama1.jpg", "biden/biden.jpg"]):
            shutil.copy(ids / photo, inbox / name)
        if mode == "fresh":  # the bytes b.jpg will have when it is received, from the start
            shutil.copy(ids / "alex_lacamoire/img1.jpg", inbox / "b.jpg")
        counting = CountingEngine(face_engine)
        p = pipeline(data, lambda c=counting: (c, GivenScorer(available=False)), CONFIG)
        waiting = p.waiting_photos()
        assert waiting == names
        p.receive_next(waiting)
        p.settle()  # a.jpg routed; b.jpg and c.jpg analysed with it
        assert len(p.ctx.ahead) == 2 and counting.photo_calls() == [3]
        shutil.copy(ids / "alex_lacamoire/img1.jpg", inbox / "b.jpg")  # other bytes, before b.jpg is received
        while p.receive_next(waiting) is not None:
            p.settle()
        runs[mode] = (p, counting)

    p, counting = runs["replaced"]
    assert counting.photo_calls() == [3, 1]  # b.jpg's new bytes: the engine again; c.jpg: found ahead
    assert p.ctx.ahead.hits == 1
    fresh, _c = runs["fresh"]
    # b.jpg's events are those of its new bytes (a run that had them from the start records the same).
    got = [_normal(se.event) for se in p.log.read(0, None)]
    want = [_normal(se.event) for se in fresh.log.read(0, None)]
    assert got == want
    assert images(tmp_path / "replaced/corpus") == images(tmp_path / "fresh/corpus")
    shutil.rmtree(tmp_path)


def test_nothing_but_plain_decodable_photos_is_analysed_ahead(tmp_path: Path, faces_dir: Path,
                                                              face_engine: Any) -> None:
    """Files that cannot be analysed are left out of the call (not moved, not recorded); the photo routed gets
    its own faces whatever the others are."""
    from gpu_agent.crop import decode_image

    photo = (faces_dir / "identities/obama/obama.jpg").read_bytes()
    good = tmp_path / "good.jpg"
    shutil.copy(faces_dir / "identities/biden/biden.jpg", good)
    whole = (faces_dir / "identities/obama/obama1.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:2000])
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    os.symlink(good, tmp_path / "link.jpg")
    os.mkfifo(tmp_path / "fifo.jpg")
    waiting = [tmp_path / n for n in ("cut.jpg", "text.jpg", "empty.jpg", "dir.jpg", "link.jpg", "fifo.jpg",
                                      "gone.jpg", "good.jpg")]
    counting = CountingEngine(face_engine)
    ahead = AnalysisAhead()
    ahead.upcoming(waiting)
    image = decode_image(photo)
    found = ahead.faces(counting, counting.analyze_arrays, ("photo-sha", image), pad=True, max_pixels=10**8,
                        batch=8, known=lambda _sha: False)
    assert counting.photo_calls() == [2] and len(ahead) == 1 and ahead.ahead == 1
    (alone,) = face_engine.analyze_arrays([image])
    assert [f.embedding.tobytes() for f in found] == [f.embedding.tobytes() for f in alone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cut.jpg", "text.jpg", "empty.jpg", "dir.jpg", "link.jpg", "fifo.jpg", "good.jpg"])

    # Over the pixel budget, or over [limits] max_pixels: not decoded ahead (the router refuses it in its turn).
    for kept in (AnalysisAhead(pixels=1000), AnalysisAhead()):
        kept.upcoming([good])
        counting.calls.clear()
        kept.faces(counting, counting.analyze_arrays, ("photo-sha", image), pad=True,
                   max_pixels=10**8 if kept.pixels == 1000 else 1000, batch=8, known=lambda _sha: False)
        assert counting.photo_calls() == [1] and len(kept) == 0
