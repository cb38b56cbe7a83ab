"""The centroid cache and the vectorised near-dup (issue 12) give exactly what the from-scratch code gave: the
same centroids bit for bit after adds, routes, prunes, restores, quarantines, external moves, changed and missing
files on a real pipeline; the same nearest faceset and distance; the same near-dup events."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import drop, prune, quarantine
from routing_reference import old_centroids, old_check_near_dup, old_nearest

from daemon.pipeline import Pipeline
from handlers.centroids import Centroids, centroids, nearest, nearest_row, stack, unit
from handlers.context import HandlerConfig, HandlerContext
from handlers.near_dup import check_near_dup
from state import events as ev
from state.corpus_state import CorpusState
from state.eventlog import EventLog
from tests.handler_fixtures import GivenScorer, pipeline, png, variant, write_corpus


def _same_as_from_scratch(p: Pipeline, probes: list[np.ndarray]) -> None:
    """The cache (brought up to date incrementally) equals a from-scratch computation, and routes alike."""
    p.state.catch_up()
    snap = centroids(p.ctx)
    ref = old_centroids(p.ctx)
    assert list(snap) == list(ref)
    for name, c in ref.items():
        assert np.array_equal(snap[name], c), name
    cache = p.ctx.centroid_cache
    assert list(cache.names) == list(ref)
    assert np.array_equal(cache.matrix, np.stack(list(ref.values())) if ref else cache.matrix)
    for vec in probes:
        assert nearest(snap, vec) == old_nearest(ref, vec)
        for forced in list(ref)[:2]:
            assert nearest(snap, vec, exclude=forced) == old_nearest(
                {k: v for k, v in ref.items() if k != forced}, vec)


def _adopted(tmp_path: Path, face_engine: Any, crops: dict[str, np.ndarray]) -> tuple[Pipeline, dict[str, str]]:
    files = {
        "faceset_001/faces/a.png": png(crops["obama"]), "faceset_001/faces/b.png": png(crops["obama1"]),
        "faceset_001/faces/c.png": png(crops["obama2"]),
        "faceset_002/faces/a.png": png(crops["biden"]), "faceset_002/faces/b.png": png(crops["biden2"]),
        "faceset_003/faces/a.png": png(crops["alex1"]), "faceset_003/faces/b.png": png(crops["alex2"]),
        "faceset_004/faces/a.png": png(crops["lin"]),
    }
    original = write_corpus(tmp_path / "corpus", files)
    # No faceset goes to _thin/ after a prune here: the quarantines are the test's own.
    p = pipeline(tmp_path, lambda: (face_engine, GivenScorer()), "[thresholds]\nthin_min_survivors = 0\n")
    p.reconcile()
    return p, original


def test_cached_centroids_equal_a_from_scratch_computation_through_every_change(
        tmp_path: Path, face_engine: Any, crops: dict[str, np.ndarray], faces_dir: Path) -> None:
    p, _original = _adopted(tmp_path, face_engine, crops)
    corpus = p.config.corpus_dir
    rng = np.random.default_rng(3)
    probes = [unit(face_engine.analyze_arrays([crops[k]])[0][0].embedding) for k in ("obama3", "biden", "lin")]
    probes += [unit(rng.standard_normal(512).astype(np.float32)) for _ in range(3)]
    _same_as_from_scratch(p, probes)  # built once
    assert p.ctx.centroid_cache.position == p.state.applied_position()

    # Photos routed through the inbox (FaceAdded + FaceRouted), one of them seeding a new faceset.
    drop(faces_dir / "identities", p.config.inbox_dir, "obama/obama3.jpg", "biden/biden2.jpg")
    drop(faces_dir / "identities", p.config.inbox_dir, "lin_manuel_miranda/lin-manuel-miranda.jpg",
         into="faceset_005")
    p.reconcile()
    assert any(c.startswith("faceset_005") for c in p.state.files())
    _same_as_from_scratch(p, probes)

    # A prune, then its restore.
    pos = prune(p, "faceset_001/faces/b.png")
    _same_as_from_scratch(p, probes)
    p.restore(pos)
    _same_as_from_scratch(p, probes)

    # A quarantine (the faceset stops routing), then its restore.
    qpos = quarantine(p, "faceset_002")
    assert "faceset_002" not in centroids(p.ctx)
    _same_as_from_scratch(p, probes)
    p.restore(qpos)
    _same_as_from_scratch(p, probes)

    # Moved by hand from one faceset to another; a file deleted; a file's bytes replaced; a new faceset.
    shutil.move(corpus / "faceset_001/faces/c.png", corpus / "faceset_003/faces/c.png")
    (corpus / "faceset_004/faces/a.png").unlink()  # faceset_004 keeps no face: it stops routing
    (corpus / "faceset_003/faces/a.png").write_bytes(png(variant(crops["obama1"], 5)))
    (corpus / "faceset_006/faces").mkdir(parents=True)
    (corpus / "faceset_006/faces/x.png").write_bytes(png(crops["alex1"]))
    p.reconcile()
    assert "faceset_004" not in centroids(p.ctx) and "faceset_006" in centroids(p.ctx)
    _same_as_from_scratch(p, probes)

    # A rebuild of the state (positions replayed from 0) leaves it equal too.
    p.rebuild()
    _same_as_from_scratch(p, probes)

    # The test can fail: a cache that misses the membership marks goes stale after a prune.
    p.state.facesets_changed_after = lambda position: []  # type: ignore[method-assign]
    prune(p, "faceset_001/faces/a.png")
    with pytest.raises(AssertionError):
        _same_as_from_scratch(p, probes)


def test_crops_of_the_photo_being_routed_are_left_out(tmp_path: Path, face_engine: Any,
                                                     crops: dict[str, np.ndarray]) -> None:
    """exclude_prefix: crops written by an interrupted run (then found by a scan) do not pull the centroid."""
    p, _original = _adopted(tmp_path, face_engine, crops)
    corpus = p.config.corpus_dir
    centroids(p.ctx)  # the cache is built
    (corpus / "faceset_002/faces/0123456789ab_0.png").write_bytes(png(variant(crops["obama"], 9)))
    p.reconcile()
    plain, excluded = centroids(p.ctx), centroids(p.ctx, exclude_prefix="0123456789ab_")
    assert np.array_equal(excluded["faceset_002"], old_centroids(p.ctx, exclude_prefix="0123456789ab_")["faceset_002"])
    assert not np.array_equal(plain["faceset_002"], excluded["faceset_002"])
    assert p.ctx.centroid_cache.holds_crops("0123456789ab_")
    assert not p.ctx.centroid_cache.holds_crops("ba9876543210_")
    assert centroids(p.ctx, exclude_prefix="ba9876543210_").cache is p.ctx.centroid_cache  # type: ignore[attr-defined]
    _same_as_from_scratch(p, [])


def test_nearest_decides_as_the_loop_did_ties_included() -> None:
    rng = np.random.default_rng(7)
    rows = [unit(rng.standard_normal(512).astype(np.float32)) for _ in range(300)]
    rows[40] = rows[7].copy()  # an exact tie: the first in name order wins
    rows[200] = unit(rows[7] + np.float32(1e-6))  # all but tied
    cents = {f"faceset_{i:03d}": r for i, r in enumerate(rows)}
    for vec in [rows[7], rows[40], rows[123], unit(rng.standard_normal(512).astype(np.float32)),
                np.full(512, np.nan, dtype=np.float32)]:
        assert nearest(cents, vec) == old_nearest(cents, vec)
        assert nearest(cents, vec, exclude="faceset_007") == old_nearest(
            {k: v for k, v in cents.items() if k != "faceset_007"}, vec)
    assert nearest({}, rows[0]) == ("", 2.0)
    names, matrix = stack(cents)
    assert nearest_row(names, matrix, rows[7]) == ("faceset_007", old_nearest(cents, rows[7])[1])


def test_a_snapshot_outliving_a_change_stacks_its_own_values(tmp_path: Path, face_engine: Any,
                                                              crops: dict[str, np.ndarray]) -> None:
    p, _original = _adopted(tmp_path, face_engine, crops)
    old = centroids(p.ctx)
    assert isinstance(old, Centroids) and old.table()[1] is p.ctx.centroid_cache.matrix
    prune(p, "faceset_001/faces/a.png")
    new = centroids(p.ctx)
    assert not np.array_equal(old["faceset_001"], new["faceset_001"])  # the old snapshot kept its values
    names, matrix = old.table()
    assert matrix is not p.ctx.centroid_cache.matrix
    assert np.array_equal(matrix[names.index("faceset_001")], old["faceset_001"])


# --- near-dup ----------------------------------------------------------------------------------------


def _near_dup_state(tmp_path: Path, n: int = 400) -> tuple[HandlerContext, list[Any]]:
    """A faceset of `n` analysed faces (random embeddings, some qualities missing or equal), then 16 new faces:
    near-duplicates of old ones (better and worse), of each other, and unrelated."""
    log = EventLog(tmp_path / "events.sqlite3")
    rng = np.random.default_rng(11)
    old = [unit(rng.standard_normal(512).astype(np.float32)) for _ in range(n)]
    events: list[ev.Event] = [ev.FacesetCreated(faceset="faceset_001", reason="test")]

    def face(i: int, vec: np.ndarray, quality: float | None) -> None:
        path, sha = f"faceset_001/faces/{(i * 7919) % 10007:05d}.png", f"{i:064x}"
        events.append(ev.FaceAdded(path=path, sha256=sha, size=1, mtime_ns=i, source={}))
        events.append(ev.FaceAnalyzed(path=path, sha256=sha, face_count=1, det_score=0.9, quality=quality,
                                      model={"pack": "test"}, embedding=vec))

    qualities = [None if i % 17 == 0 else float(round(rng.uniform(0.2, 0.9), 1)) for i in range(n)]
    for i, vec in enumerate(old):
        face(i, vec, qualities[i])
    log.append(events)
    events = []

    def near(v: np.ndarray, eps: float) -> np.ndarray:
        return unit(v + np.float32(eps) * unit(rng.standard_normal(512).astype(np.float32)))  # cosine ~ 1/hypot(1, eps)

    new_vecs = [near(old[3], 0.2), near(old[3], 0.2), near(old[50], 0.32), near(old[51], 0.6),
                near(old[17], 0.2), near(old[100], 0.1), near(old[101], 0.33), unit(old[200] + old[201])]
    for k in range(8):
        new_vecs.append(near(new_vecs[k], 0.15))
    for k, vec in enumerate(new_vecs):
        q = [0.95, 0.1, None, 0.5, 0.5, qualities[100], 0.0, 0.7][k % 8]
        face(n + k, vec, q)
    log.append(events)
    state = CorpusState(log)
    state.catch_up()
    ctx = HandlerContext(config=HandlerConfig(corpus=tmp_path / "corpus", inbox=tmp_path / "inbox"), state=state)
    new = [se for se in log.read(0, None, kinds=[ev.FaceAnalyzed.KIND]) if se.position > 2 * n + 1]
    return ctx, new


def test_near_dup_gives_the_same_events_as_the_loop_per_pair(tmp_path: Path) -> None:
    ctx, new = _near_dup_state(tmp_path)
    for batch in (new, new[:8], new[8:], new[::-1], [new[0], new[0]]):
        ctx.begin_batch()
        expected = old_check_near_dup(ctx, batch)
        ctx.begin_batch()
        got = check_near_dup(ctx, batch)
        assert got == expected
    ctx.begin_batch()
    assert len(check_near_dup(ctx, new)) >= 6  # the case is not empty: both branches decide

