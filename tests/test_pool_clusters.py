"""The incremental pool clustering (handlers/pool_clusters.py) gives exactly what scipy's average linkage over
the whole pool gives: the same clusters, and through cluster_pool the same promotions and faceset numbers.

The reference is the global path (one scipy average linkage over every pool face not matched, the rule of
issue 21; before it, complete linkage, compared the same way). Pools are real logs and state (EventLog + CorpusState in tmp_path), filled with
PoolFaceAdded events as the router records them; faces leave with FacesetPromoted as promotions record them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from handlers.centroids import unit
from handlers.context import HandlerConfig, HandlerContext
from handlers.pool import best_per_photo, claim_from_pool, cluster_pool, match_pool, next_faceset_number, pool_face_ids
from handlers.pool_clusters import PoolClusters, SearchPlan
from handlers.thresholds import IdentityThresholds
from state import events as ev
from state.corpus_state import CorpusState
from state.eventlog import EventLog
from state.events import encode_event
from state.layout import faceset_name

T = 0.55  # [identity] cluster_distance default


# --- Data --------------------------------------------------------------------------------------------------
def clustered(rng: np.random.Generator, n: int, people: int, spread: float = 0.9) -> np.ndarray:
    """n unit 512-d vectors: some people (5..40 faces near their own direction) and strangers for the rest.
    `spread` sets how far a face strays from its person's direction (0.9: same-person pairs at cosine
    ~0.4..0.75, across the 0.45 the clustering cuts at)."""
    out: list[np.ndarray] = []
    for _ in range(people):
        centre = rng.standard_normal(512)
        centre /= np.linalg.norm(centre)
        k = int(rng.integers(5, 41))
        noise = rng.standard_normal((k, 512)) * spread / np.sqrt(512) * rng.uniform(0.6, 1.4)
        out.extend(centre + noise)
        if len(out) >= n:
            break
    out = out[:n]
    out.extend(rng.standard_normal((n - len(out), 512)))
    vecs = np.asarray(out, dtype=np.float32)
    return vecs[rng.permutation(n)]


def face_id(i: int) -> str:
    return f"{i:07d}_{i % 3}"  # as the router names them: <photo prefix>_<face index>


class Pool:
    """A real log and state holding a pool, plus the corpus folder its crops live in."""

    def __init__(self, root: Path) -> None:
        self.log = EventLog(root / "log.sqlite")
        self.state = CorpusState(self.log)
        self.corpus = root / "corpus"
        (self.corpus / "_pool").mkdir(parents=True)
        self.count = 0

    def add(self, vecs: np.ndarray, photos_per: int = 1) -> list[str]:
        """Add faces (a new photo every `photos_per` faces); returns their ids."""
        events, ids = [], []
        for v in vecs:
            i = self.count
            self.count += 1
            fid = face_id(i)
            path = f"_pool/{fid}.png"
            (self.corpus / path).write_bytes(fid.encode())
            events.append(ev.PoolFaceAdded(
                path=path, face_id=fid, sha256=hashlib.sha256(fid.encode()).hexdigest(),
                photo_sha256=f"photo{i // photos_per}", quality=float(i % 7) / 7, source={"photo": f"p{i}"},
                embedding=np.asarray(v, dtype=np.float32)))
            ids.append(fid)
        self.log.append(events)
        self.state.catch_up()
        return ids

    def remove(self, ids: list[str]) -> None:
        """Take faces out of the pool as a promotion does."""
        self.log.append([ev.FacesetPromoted(faceset="faceset_900", face_ids=tuple(ids), check="identity",
                                            moves=tuple((f"_pool/{f}.png", f"faceset_900/faces/{f}.png")
                                                        for f in ids))])
        self.state.catch_up()

    def ctx(self, **identity: float) -> HandlerContext:
        config = HandlerConfig(corpus=self.corpus, inbox=self.corpus.parent / "inbox",
                               identity=IdentityThresholds(**identity))  # type: ignore[arg-type]
        return HandlerContext(config=config, state=self.state)


# --- The reference: today's global path ---------------------------------------------------------------------
def reference_clusters(state: CorpusState, t: float = T, exclude: set[str] = frozenset()) -> list[list[str]]:
    """Every cluster of scipy average linkage over the whole pool (less `exclude`), by first face id."""
    from scipy.cluster.hierarchy import fcluster, linkage

    rows = [r for r in state.pool_rows() if r.face_id not in exclude]
    if len(rows) == 1:
        return [[rows[0].face_id]]
    vecs = np.stack([unit(np.frombuffer(r.embedding, dtype="<f4")) for r in rows]).astype(np.float64)
    labels = fcluster(linkage(vecs, method="average", metric="cosine"), t=t, criterion="distance")
    out: dict[int, list[str]] = {}
    for label, r in zip(labels, rows):
        out.setdefault(int(label), []).append(r.face_id)
    return sorted(out.values(), key=lambda c: c[0])


def reference_cluster_pool(ctx: HandlerContext) -> list[ev.Event]:
    """cluster_pool as it was before issue 12: one scipy linkage over the whole pool after matching."""
    from scipy.cluster.hierarchy import fcluster, linkage

    ctx.state.catch_up()
    rows = list(ctx.state.pool_rows())
    if not rows:
        return []
    vecs = np.stack([unit(np.frombuffer(r[6], dtype="<f4")) for r in rows])
    out, taken = match_pool(ctx, rows, vecs)
    left = [i for i in range(len(rows)) if i not in taken]
    gate = max(1, ctx.config.identity.min_new_faceset)
    if len(left) < gate:
        return out
    if len(left) == 1:
        labels = np.array([1])
    else:
        z = linkage(vecs[left].astype(np.float64), method="average", metric="cosine")
        labels = fcluster(z, t=ctx.config.identity.cluster_distance, criterion="distance")
    clusters: dict[int, list[int]] = {}
    for i, label in zip(left, labels):
        clusters.setdefault(int(label), []).append(i)
    number = next_faceset_number(ctx)
    for members in sorted(clusters.values(), key=lambda m: rows[m[0]][0]):
        chosen = best_per_photo(rows, members)
        if len(chosen) < gate:
            continue
        name = faceset_name(number)
        moves, added = claim_from_pool(ctx, rows, chosen, name)
        if len(moves) < gate:
            continue
        number += 1
        sims = vecs[chosen] @ vecs[chosen].T
        pair = 1.0 - float(np.min(sims))
        pairs = len(chosen) * (len(chosen) - 1)  # (a gate of 1: no pair)
        mean = 1.0 - float((sims.sum() - np.trace(sims)) / pairs) if pairs else 0.0
        out.append(ev.FacesetPromoted(
            faceset=name, face_ids=pool_face_ids(moves), moves=tuple(moves), check="identity",
            reason=f"promoted from pool: {len(moves)} faces of distinct photos within cosine distance "
                   f"{ctx.config.identity.cluster_distance} of each other on average (average linkage)",
            inputs={"cluster_distance": ctx.config.identity.cluster_distance, "min_new_faceset": gate,
                    "max_pair_distance": round(pair, 4), "mean_pair_distance": round(mean, 4),
                    "pool_size": len(rows)},
        ))
        out.extend(added)
    return out


def encoded(events: list[ev.Event]) -> list[tuple[str, str, str, bytes | None]]:
    return [encode_event(e) for e in events]


def new_clusters(state: CorpusState, t: float = T, budget: float | None = None) -> PoolClusters:
    pc = PoolClusters(state, SearchPlan(cluster_distance=t))
    while not pc.advance(budget):
        pass
    return pc


# --- Tests ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "n", "people"), [(0, 300, 10), (1, 1200, 40), (2, 2500, 60), (3, 5000, 120)])
def test_same_clusters_as_global_scipy_on_random_pools(tmp_path: Path, seed: int, n: int, people: int) -> None:
    rng = np.random.default_rng(seed)
    pool = Pool(tmp_path)
    pool.add(clustered(rng, n, people))
    pc = new_clusters(pool.state)
    want = reference_clusters(pool.state)
    assert sum(len(c) > 1 for c in want) >= people // 2  # the data has real clusters to get right
    assert pc.clusters(min_size=1) == want


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_incremental_passes_match_a_fresh_global_run(tmp_path: Path, seed: int) -> None:
    """Faces arriving and leaving between passes: after each, the kept clusters equal scipy over the new pool,
    and a pass over an unchanged pool changes nothing."""
    rng = np.random.default_rng(seed)
    pool = Pool(tmp_path)
    data = clustered(rng, 2000, 50)
    ids = pool.add(data[:1200])
    pc = new_clusters(pool.state)
    assert pc.clusters(min_size=1) == reference_clusters(pool.state)
    for step in range(4):
        ids += pool.add(data[1200 + 200 * step : 1400 + 200 * step])
        gone = list(rng.choice(ids, size=60, replace=False))
        pool.remove(gone)
        ids = [f for f in ids if f not in set(gone)]
        assert pc.advance(None)
        assert pc.clusters(min_size=1) == reference_clusters(pool.state), f"step {step}"
    generation = pc.generation
    assert pc.advance(None) and pc.generation == generation


def test_sliced_first_pass_gives_the_same_clusters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first pass run in many tiny slices (as the daemon loop runs it: the load from SQLite a chunk at a time,
    then the search) ends with the same clusters, and faces recorded while it was under way (here: while the
    load's snapshot was being read) are taken in once it is done."""
    import handlers.pool_clusters

    monkeypatch.setattr(handlers.pool_clusters, "LOAD_ROWS", 500)  # 6 chunks of the first 2,800 faces
    monkeypatch.setattr(handlers.pool_clusters, "SEARCH_ROWS", 64)
    monkeypatch.setattr(handlers.pool_clusters, "BLOCK_ELEMENTS", 64 * 700)  # tiles of 64 rows x 700 columns
    rng = np.random.default_rng(7)
    pool = Pool(tmp_path)
    data = clustered(rng, 3000, 60)
    pool.add(data[:2800])
    pc = PoolClusters(pool.state, SearchPlan(cluster_distance=T))
    slices = 0
    while not pc.advance(0.0):
        slices += 1
        if slices == 3:
            assert pc.position < 0  # still loading
            pool.add(data[2800:])
    assert slices > 6
    assert pc.clusters(min_size=1) == reference_clusters(pool.state)


def test_excluded_faces_cluster_like_a_pool_without_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    pool = Pool(tmp_path)
    ids = pool.add(clustered(rng, 1500, 40))
    pc = new_clusters(pool.state)
    big = max(reference_clusters(pool.state), key=len)
    exclude = set(big[::3]) | set(rng.choice(ids, size=40, replace=False))
    assert pc.clusters(min_size=1, exclude=exclude) == reference_clusters(pool.state, exclude=exclude)
    assert pc.clusters(min_size=1) == reference_clusters(pool.state)  # nothing cached from the exclusion


@pytest.mark.parametrize(("gate", "photos_per"), [(6, 1), (3, 2), (1, 1)])
def test_cluster_pool_promotes_as_the_global_path(tmp_path: Path, gate: int, photos_per: int) -> None:
    """The events cluster_pool records (promotions, their faces, numbers, inputs) equal the old global path's."""
    rng = np.random.default_rng(10 + gate)
    pool = Pool(tmp_path)
    pool.add(clustered(rng, 300 if gate == 1 else 2000, 30), photos_per=photos_per)
    ctx = pool.ctx(min_new_faceset=gate)
    want = reference_cluster_pool(ctx)
    assert sum(isinstance(e, ev.FacesetPromoted) for e in want) >= 5
    got = cluster_pool(ctx, PoolClusters(pool.state, SearchPlan(cluster_distance=T)))
    assert encoded(got) == encoded(want)


def test_cluster_pool_matches_pool_faces_to_a_faceset_as_before(tmp_path: Path) -> None:
    """Pool faces near an active faceset's centroid join it (and stay out of the clusters) as before."""
    rng = np.random.default_rng(11)
    pool = Pool(tmp_path)
    data = clustered(rng, 1500, 30)
    ids = pool.add(data)
    pc = PoolClusters(pool.state, SearchPlan(cluster_distance=T))
    target = max(reference_clusters(pool.state), key=len)
    seed_vecs = data[[ids.index(f) for f in target[:3]]]
    events: list[ev.Event] = [ev.FacesetCreated(faceset="faceset_001", reason="seeded")]
    for k, v in enumerate(seed_vecs):
        path = f"faceset_001/faces/seed{k}.png"
        sha = hashlib.sha256(path.encode()).hexdigest()
        events += [ev.FaceAdded(path=path, sha256=sha, size=1, mtime_ns=1, source={"photo": f"s{k}"}),
                   ev.FaceRouted(path=path, sha256=sha, faceset="faceset_001", distance=None, quality=1.0,
                                 embedding=np.asarray(v, dtype=np.float32))]
    pool.log.append(events)
    pool.state.catch_up()
    ctx = pool.ctx(min_new_faceset=6)
    want = reference_cluster_pool(ctx)
    assert any(isinstance(e, ev.PoolFacesMatched) for e in want)
    assert encoded(cluster_pool(ctx, pc)) == encoded(want)


def test_real_embeddings_cluster_as_the_global_path(tmp_path: Path, face_engine, faces_dir: Path) -> None:
    """Every face the real model finds in ../shared/faces (people photographed several times, group photos,
    masks and sunglasses), each also slightly re-encoded as another photo would be: same clusters."""
    import cv2

    from gpu_agent.crop import decode_image

    vecs: list[np.ndarray] = []
    for path in sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        img = decode_image(path.read_bytes())
        if img is None:
            continue
        small = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
        for picture in (img, small):
            for face in face_engine.analyze_arrays([picture])[0]:
                vecs.append(np.asarray(face.embedding, dtype=np.float32))
    assert len(vecs) >= 40
    pool = Pool(tmp_path)
    pool.add(np.stack(vecs))
    want = reference_clusters(pool.state)
    assert sum(len(c) > 2 for c in want) >= 3  # the same people found together
    assert new_clusters(pool.state).clusters(min_size=1) == want
    ctx = pool.ctx(min_new_faceset=3)
    assert encoded(cluster_pool(ctx, None)) == encoded(reference_cluster_pool(ctx))


def test_pool_summary_counts_as_before(tmp_path: Path) -> None:
    """`facesetd status`'s pool figures come from the kept clusters: the same photo counts per cluster."""
    rng = np.random.default_rng(12)
    pool = Pool(tmp_path)
    pool.add(clustered(rng, 1000, 30), photos_per=2)
    rows = pool.state.pool_rows()
    photo = {r.face_id: r.photo_sha256 for r in rows}
    want = sorted(len({photo[f] for f in c}) for c in reference_clusters(pool.state) if len(c) > 1)
    assert sorted(new_clusters(pool.state).photo_counts()) == want


def test_source_json_untouched_by_the_new_query(tmp_path: Path) -> None:
    """pool_rows_of gives the rows pool_rows gives (same columns, face-id order)."""
    rng = np.random.default_rng(13)
    pool = Pool(tmp_path)
    ids = pool.add(clustered(rng, 1200, 5))
    some = sorted(rng.choice(ids, size=700, replace=False), reverse=True)
    want = [r for r in pool.state.pool_rows() if r.face_id in set(some)]
    assert pool.state.pool_rows_of(list(some)) == want
    assert json.loads(want[0].source)["photo"].startswith("p")


def test_the_daemon_step_runs_a_long_pass_in_slices_then_promotes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipeline.step (the daemon loop's turn) spends about [identity] pool_slice_s per call on a big first
    pass and reports work done until it is complete; only then is the promotion recorded, and it is the one
    the global path gives. settle() (reconcile) runs it to the end in one go."""
    import dataclasses

    import handlers.pool_clusters
    from daemon.config import load_config
    from daemon.pipeline import PROMOTER, Pipeline

    monkeypatch.setattr(handlers.pool_clusters, "SEARCH_ROWS", 64)
    monkeypatch.setattr(handlers.pool_clusters, "BLOCK_ELEMENTS", 64 * 500)
    config = load_config(None, data_dir=str(tmp_path / "data"), environ={})
    config = dataclasses.replace(config, identity=dataclasses.replace(config.identity, pool_slice_s=0.001))
    config.state_dir.mkdir(parents=True)
    log = EventLog(config.log_path)
    pool = Pool.__new__(Pool)  # the helper, on the pipeline's own log, state and corpus
    pool.log, pool.state, pool.corpus, pool.count = log, CorpusState(log), config.corpus_dir, 0
    (pool.corpus / "_pool").mkdir(parents=True)
    pool.add(clustered(np.random.default_rng(14), 1500, 30))
    log.append([ev.PhotoProcessed(path="p.jpg", sha256="0" * 64, dest="_processed/p.jpg")])
    pool.state.catch_up()
    want = reference_cluster_pool(pool.ctx(min_new_faceset=config.identity.min_new_faceset))
    assert sum(isinstance(e, ev.FacesetPromoted) for e in want) >= 5

    pipeline = Pipeline(config, log)
    runner = pipeline.runner()  # the one runner (daemon/runner.py), a turn at a time as the daemon drives it
    while pipeline.dispatcher.pending():  # the handlers' turn first (nothing for them to do here)
        runner.turn()
    slices = 0
    while pipeline.log.tracked(PROMOTER) == 0:
        done = runner.turn()
        assert done == 1 or pipeline.log.tracked(PROMOTER) > 0  # 1: a slice ran, the loop must come back
        slices += 1
    assert slices > 5
    recorded = [se.event for se in log.read(log.tracked(PROMOTER) - len(want))]
    assert encoded(recorded) == encoded(want)


def _seed(pool: Pool, faceset: str, vecs: np.ndarray) -> None:
    """An active faceset whose routed faces have these embeddings (its centroid is their mean)."""
    events: list[ev.Event] = [ev.FacesetCreated(faceset=faceset, reason="seeded")]
    for k, v in enumerate(vecs):
        path = f"{faceset}/faces/seed{k}.png"
        sha = hashlib.sha256(path.encode()).hexdigest()
        events += [ev.FaceAdded(path=path, sha256=sha, size=1, mtime_ns=1, source={"photo": f"{faceset}-s{k}"}),
                   ev.FaceRouted(path=path, sha256=sha, faceset=faceset, distance=None, quality=1.0,
                                 embedding=np.asarray(v, dtype=np.float32))]
    pool.log.append(events)
    pool.state.catch_up()


def test_incremental_matching_over_passes_equals_matching_the_whole_pool(tmp_path: Path) -> None:
    """Pass after pass, matching only the new faces and the faces near a centroid that appeared or moved records
    what matching every pool face against every centroid records (the path before issue 12)."""
    rng = np.random.default_rng(12)
    pool = Pool(tmp_path)
    data = clustered(rng, 1200, 30)
    ids = pool.add(data[:900], photos_per=2)
    pc = PoolClusters(pool.state, SearchPlan(cluster_distance=T))
    people = sorted(reference_clusters(pool.state), key=len, reverse=True)
    _seed(pool, "faceset_001", data[[ids.index(f) for f in people[0][:3]]])
    ctx = pool.ctx(min_new_faceset=6)

    def one_pass() -> list[ev.Event]:
        want = reference_cluster_pool(ctx)
        got = cluster_pool(ctx, pc)
        assert encoded(got) == encoded(want)
        pool.log.append(got)
        pool.state.catch_up()
        return got

    def until_quiet() -> list[ev.Event]:
        """Passes until one records nothing (a promotion's new facesets can take pool faces on the next pass)."""
        recorded: list[ev.Event] = []
        for _ in range(8):
            got = one_pass()
            if not got:
                return recorded
            recorded += got
        raise AssertionError("the pool never settled")

    first = until_quiet()
    assert any(isinstance(e, ev.PoolFacesMatched) for e in first)
    assert any(isinstance(e, ev.FacesetPromoted) for e in first)
    pool.add(data[900:], photos_per=2)  # new faces, some of them of people who have a faceset now
    assert any(isinstance(e, ev.PoolFacesMatched) for e in until_quiet())
    _seed(pool, "faceset_900", data[[ids.index(f) for f in people[-1][:3]]])  # a new centroid over old faces
    until_quiet()


def _fan(degrees: list[float], rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at these angles in one plane of 512-d space (cosine distance 1 - cos of the angle between two),
    each with a little noise off the plane so none is equal."""
    plane = np.linalg.qr(rng.standard_normal((512, 2)))[0].T
    out = [np.cos(np.radians(a)) * plane[0] + np.sin(np.radians(a)) * plane[1] + rng.standard_normal(512) * 1e-3
           for a in degrees]
    return np.asarray([v / np.linalg.norm(v) for v in out], dtype=np.float32)


def test_a_persons_two_halves_join_and_become_one_faceset(tmp_path: Path) -> None:
    """Issue 21: eight photos of one person spread over 65 degrees (the widest pair 0.58 apart, past 0.55): complete
    linkage split them into halves under the gate, never joined again; average linkage joins them, and one faceset
    of eight is born. A person 90 degrees away stays apart."""
    rng = np.random.default_rng(21)
    person = _fan([0, 5, 10, 15, 50, 55, 60, 65], rng)
    other = _fan([155, 160, 165], rng)
    pool = Pool(tmp_path)
    pool.add(np.concatenate([person, other]))
    complete = [sorted(c) for c in _complete(np.concatenate([person, other]), T)]
    assert max(len(c) for c in complete) < 5  # what the old rule made of them: no faceset
    ctx = pool.ctx(min_new_faceset=5)
    events = cluster_pool(ctx, PoolClusters(pool.state, SearchPlan(cluster_distance=T)))
    (born,) = [e for e in events if isinstance(e, ev.FacesetPromoted)]
    assert born.face_ids == tuple(face_id(i) for i in range(8)) and born.inputs["max_pair_distance"] > T
    assert born.inputs["mean_pair_distance"] < T


def _complete(vecs: np.ndarray, t: float) -> list[list[int]]:
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = fcluster(linkage(vecs.astype(np.float64), method="complete", metric="cosine"), t=t, criterion="distance")
    out: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(int(label), []).append(i)
    return list(out.values())
