"""The pool's clusters as a projection beside the log (state/pool_projection.py): a restart reads them and searches
only the faces the log added since, `facesetd status` reads them and never clusters, `facesetd rebuild` writes the
same rows again from the log alone, and a kill -9 in the middle of a save leaves the projection behind, caught up
by the next run.

Real logs and state (EventLog + CorpusState), pools of synthetic embeddings recorded as the router records them
(tests/test_pool_clusters.py's helpers), the real pipeline, the real CLI in a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from daemon_proc import DaemonProcess
from helpers import REPO, cli, open_pipeline, rebuilt_from_log_alone
from test_crash import run_until_crash_point
from test_pool_clusters import Pool, T, clustered, encoded, reference_clusters

from daemon.config import load_config
from daemon.pipeline import Pipeline
from handlers.pool_clusters import PoolClusters, SearchPlan
from state import events as ev
from state.eventlog import EventLog
from state.pool_projection import PoolProjection


def stored(pool: Pool) -> PoolClusters:
    """A first load of the pool, as a (re)started daemon makes it: from the projection when there is one."""
    pc = PoolClusters(pool.state, SearchPlan(cluster_distance=T), persist=True)
    assert pc.advance(None)
    return pc


def hold(pool: Pool, face_ids: list[str]) -> None:
    """Faces a person held back, as the restore of a promotion records them."""
    pool.log.append([ev.PoolFacesHeld(face_ids=tuple(face_ids), faceset="faceset_900", promotion=1)])
    pool.state.catch_up()


def test_a_restart_reads_the_projection_and_searches_only_the_new_faces(tmp_path: Path) -> None:
    rng = np.random.default_rng(30)
    pool = Pool(tmp_path)
    data = clustered(rng, 2000, 50)
    ids = pool.add(data[:1500])
    first = stored(pool)
    projection = PoolProjection(pool.log, T)
    assert first.loaded_from == "state" and projection.position() == pool.log.head() and not projection.behind()

    # while it is down: faces arrive, some leave, some are held back
    ids += pool.add(data[1500:])
    gone = [str(f) for f in rng.choice(ids, size=80, replace=False)]
    pool.remove(gone)
    held = [f for f in ids if f not in set(gone)][::97]
    hold(pool, held)
    assert projection.behind() == 500 + 2

    restarted = stored(pool)
    assert restarted.loaded_from == "projection"
    # only the 500 new faces were compared (with everything): a pass from scratch compares every pair
    assert restarted.searched_pairs <= 500 * 2000 < 2000 * 1999 // 2
    assert restarted.clusters(min_size=1) == reference_clusters(pool.state, exclude=set(held))
    assert projection.position() == pool.log.head() and not projection.behind()
    # the rows it wrote are those of the pool clustered from scratch
    incremental = projection.dump()
    projection.reset()
    assert stored(pool).loaded_from == "state" and projection.dump() == incremental


def test_an_inconsistent_projection_is_detected_and_written_again(tmp_path: Path) -> None:
    """A stored cluster that names a face it does not hold in its component is not trusted: the pool is
    clustered from the state and the projection written whole."""
    rng = np.random.default_rng(31)
    pool = Pool(tmp_path)
    pool.add(clustered(rng, 800, 20))
    stored(pool)
    projection = PoolProjection(pool.log, T)
    good = projection.dump()
    with pool.log.transaction() as conn:  # (the test damages the table itself: no product path writes this)
        conn.execute("UPDATE pool_cluster SET cluster = face_id WHERE cluster IS NULL")
    again = stored(pool)
    assert again.loaded_from == "state" and projection.dump() == good


def _pipeline(data: Path, slice_s: float = 0.5) -> Pipeline:
    config = load_config(None, data_dir=str(data), environ={})
    config = dataclasses.replace(config, identity=dataclasses.replace(config.identity, pool_slice_s=slice_s))
    config.state_dir.mkdir(parents=True, exist_ok=True)
    return Pipeline(config, EventLog(config.log_path))


def _photos(pipeline: Pipeline, vecs: np.ndarray, start: int, processed: bool = True) -> None:
    """Faces of new photos waiting in the pool (their crops on disk), then the photo_processed that makes the
    promotion due, as the router records a photo (`processed`: else the faces alone)."""
    pool = Pool.__new__(Pool)
    pool.log, pool.state, pool.corpus, pool.count = pipeline.log, pipeline.state, pipeline.config.corpus_dir, start
    (pool.corpus / "_pool").mkdir(parents=True, exist_ok=True)
    pool.add(vecs)
    if processed:
        pipeline.log.append([ev.PhotoProcessed(path=f"p{start}.jpg", sha256=f"{start:064x}", dest=f"_processed/p{start}.jpg")])


def _run(data: Path, batches: list[np.ndarray], restart_after: int | None) -> tuple[list[tuple[str, str, str, bytes | None]], bytes, str]:
    """Record the batches one after the other, settling after each; restart (a new pipeline on the same folder)
    after `restart_after` batches. Returns the promotions recorded, the projection and where the restarted
    pipeline read the pool."""
    pipeline = _pipeline(data)
    loaded = ""
    start = 0
    for k, batch in enumerate(batches):
        if k == restart_after:
            pipeline.log.close()
            pipeline = _pipeline(data)
        _photos(pipeline, batch, start)
        start += len(batch)
        pipeline.settle(render=False)
        if k == restart_after:
            assert pipeline.pool is not None
            loaded = pipeline.pool.loaded_from
    decided = (ev.FacesetPromoted, ev.PoolFacesMatched)
    events = [se.event for se in pipeline.log.read(0) if isinstance(se.event, decided)]
    return encoded(events), PoolProjection(pipeline.log, T).dump(), loaded


def test_promotions_are_the_same_with_and_without_a_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(32)
    data = clustered(rng, 2400, 60)
    batches = [data[i : i + 400] for i in range(0, 2400, 400)]
    straight, projection, _ = _run(tmp_path / "straight", batches, None)
    restarted, projection_after, loaded = _run(tmp_path / "restarted", batches, 3)
    assert sum(e[0] == ev.FacesetPromoted.KIND for e in straight) >= 5  # the data makes people
    assert loaded == "projection"  # the restart read the clusters, it did not cluster the pool again
    assert restarted == straight and projection_after == projection


def _data_with_pool(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    rng = np.random.default_rng(33)
    vecs = clustered(rng, 1500, 40)
    pipeline = _pipeline(data)
    for k in range(3):
        _photos(pipeline, vecs[k * 500 : (k + 1) * 500], k * 500)
        pipeline.settle()
    pipeline.log.close()
    return data


def _dump(data: Path) -> bytes:
    log = EventLog(data / "state" / "events.sqlite3")
    try:
        return PoolProjection(log, T).dump()
    finally:
        log.close()


def test_rebuild_writes_the_same_projection(tmp_path: Path) -> None:
    data = _data_with_pool(tmp_path)
    live = _dump(data)
    assert b"pool_edges" in live and b"pool_cluster" in live
    cli(data, "rebuild")
    assert _dump(data) == live
    rebuilt_from_log_alone(data, tmp_path / "copy")
    assert _dump(tmp_path / "copy") == live


SETTLE = """
import sys
sys.path.insert(0, {tests!r})
from helpers import open_pipeline
open_pipeline({data!r}).settle()
"""


def test_kill_during_a_save_leaves_it_behind_then_the_next_run_catches_up(tmp_path: Path) -> None:
    data = _data_with_pool(tmp_path)
    before = _dump(data)
    status = json.loads(cli(data, "status", "--json").stdout)["pool"]
    assert status["projection"]["behind"] == 0 and status["projection"]["stored"]

    pipeline = open_pipeline(data)  # more faces of the pool's people, no photo_processed: only the projection follows
    rng = np.random.default_rng(34)
    _photos(pipeline, clustered(rng, 300, 10), 5000, processed=False)
    pipeline.log.close()
    run_until_crash_point(data, "pool_projection:mid_save", SETTLE.format(tests=str(REPO / "tests"), data=str(data)))
    assert _dump(data) == before  # the transaction never committed: the old rows, the old position

    # status says how far behind it is and shows the clusters as stored: it does not cluster the new faces itself
    after = json.loads(cli(data, "status", "--json").stdout)["pool"]
    assert after["projection"]["behind"] == 300 and after["projection"]["position"] == status["projection"]["position"]
    assert after["faces"] == status["faces"] + 300 and after["close_sizes"] == status["close_sizes"]
    assert "300 pool events behind: the daemon brings them up to date" in cli(data, "status").stdout

    open_pipeline(data).settle()  # the next run
    caught_up = json.loads(cli(data, "status", "--json").stdout)["pool"]
    assert caught_up["projection"]["behind"] == 0
    live = _dump(data)
    cli(data, "rebuild")
    assert _dump(data) == live


@pytest.mark.slow
def test_the_restarted_daemon_reads_the_pool_from_the_projection(tmp_path: Path, faces_dir: Path,
                                                                  models_root: Path) -> None:
    """The real daemon: its first pass over a pool of 5,000 faces clusters it from the state and writes the
    projection; after a restart the pool is read from the projection (only the next photo's face is searched), and
    `status` reads the clusters the daemon wrote."""
    data = tmp_path / "data"
    (data / "state").mkdir(parents=True)
    log = EventLog(data / "state" / "events.sqlite3")
    rng = np.random.default_rng(35)
    vecs = clustered(rng, 5000, 100).astype(np.float32)
    log.append([ev.PoolFaceAdded(path=f"_pool/{i:012x}_0.png", face_id=f"{i:012x}_0", sha256=f"{i:064x}",
                                 photo_sha256=f"{i:064x}", quality=0.5, source={}, embedding=v)
                for i, v in enumerate(vecs)])
    log.close()
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
           "FACESETD_IDENTITY_MIN_NEW_FACESET": "1000"}  # (the synthetic crops are not on disk: nothing to promote)
    d = DaemonProcess(data, env)
    for k, photo in enumerate(("lin_manuel_miranda/lin-manuel-miranda.jpg", "biden/biden.jpg")):
        d.start()
        shutil.copy(faces_dir / "identities" / photo, data / "inbox" / f"photo{k}.jpg")
        d.wait_for(lambda k=k: len(_loaded(d.output())) > k and _caught_up_after_routed(d.output(), k), "caught up",
                   timeout=180)
        assert d.terminate() == 0
    first, second = _loaded(d.output())
    assert first["source"] == "state" and first["faces"] >= 5000
    assert second["source"] == "projection" and second["faces"] == first["faces"] + 1  # the first photo's face
    status = json.loads(cli(data, "status", "--json", env=env).stdout)["pool"]
    assert status["projection"]["behind"] == 0 and status["faces"] == 5002
    assert status["close_to_gate"] > 0  # the people of the synthetic pool, as the daemon clustered them


def _loaded(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines()
            if line.startswith("{") and json.loads(line).get("event") == "pool loaded"]


def _caught_up_after_routed(output: str, k: int) -> bool:
    """Whether the daemon said "caught up" after routing photo k."""
    routed = False
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        routed = routed or (rec.get("event") == "photo routed" and f"photo{k}.jpg" in str(rec.get("path")))
        if routed and rec.get("event") == "caught up":
            return True
    return False
