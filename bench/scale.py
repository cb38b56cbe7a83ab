"""Pool clustering at library scale: the incremental clusters (handlers/pool_clusters.py) beside today's path.

    python bench/scale.py [--sizes 2000 10000] [--recall-sample 2000]

For each size, a synthetic pool shaped like a real library's is written to a real log and state (PoolFaceAdded
events, as the router records them): people with 5..50 faces each at cosine 0.5..0.8 to their person's mean,
and one-off strangers making up 70% of the pool (unit 512-d float32). Then, each in a fresh subprocess (so
peak RSS, `ru_maxrss`, is that of one measurement, reading the pool from SQLite as after a restart):

- "first": a first full clustering (load, neighbour search, components, linkage) and the clusters past the gate,
- "unchanged": the same again with nothing new in the log,
- "+100": a pass after 100 new faces were recorded (half of them new faces of existing people),
- "scipy": today's global path (read every pool row, one scipy average linkage) where it fits (<= 12k faces),
  and the ratios of the three to it, measured in the same run.

The search is exact; `--recall-sample` checks it on random faces: their neighbours found by a brute force search
against the whole pool, against the edges the graph holds (1.0000 when nothing is missed).
Targets (issue 12, 2 cores): 200k faces from scratch <= 60 s and <= 2 GB RSS; unchanged pass <= 50 ms;
+100 faces <= 1 s.

    python bench/scale.py --restart --sizes 20000 [--no-daemon-baseline]

After a restart (issue 22, item 4), with the pool's clusters stored beside the log (state/pool_projection.py),
each in a fresh subprocess, against the baseline of the same run (the old path: the pool clustered from scratch):
- "from scratch": the first pass over the pool as the daemon ran it after every restart, which also writes the
  projection (its write timed apart),
- "restart": the same pool loaded from the projection, then a pass after 100 new faces,
- "status": `facesetd status --json` (the whole CLI process, and its summarize() in process) read from it,
- "daemon": the real daemon (`facesetd run`, buffalo_sc) started on the pool: from its READY line to its first new
  photo routed, and to "caught up" (that photo's pool faces searched, the promotion evaluated, the projection
  written); the same with the projection removed (the old path) unless --no-daemon-baseline.
Targets (issue 22): first photo routed within 2 s of READY, status under 0.5 s, at 200k faces.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.logs import configure_logging
from handlers.centroids import unit
from handlers.pool_clusters import EDGE_SLACK, PoolClusters, SearchPlan
from handlers.thresholds import IdentityThresholds
from state import events as ev
from state.corpus_state import CorpusState
from state.eventlog import EventLog

STRANGERS = 0.7  # share of the pool that is one-off strangers
BASELINE_MAX = 12_000  # today's scipy path beyond this takes minutes and gigabytes (N x N condensed matrix)


def library(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors (people then strangers, shuffled) and each person's mean (for later faces of them)."""
    people_faces = int(n * (1 - STRANGERS))
    sizes: list[int] = []
    while sum(sizes) < people_faces:
        sizes.append(int(rng.integers(5, 51)))
    sizes[-1] -= sum(sizes) - people_faces
    means = rng.standard_normal((len(sizes), 512)).astype(np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    vecs = np.concatenate([faces_of(rng, means[owner]), strangers(rng, n - people_faces)])
    return vecs[rng.permutation(n)], means


def faces_of(rng: np.random.Generator, means: np.ndarray) -> np.ndarray:
    """One face per row of `means`, at cosine 0.5..0.8 to it."""
    cos = rng.uniform(0.5, 0.8, size=(len(means), 1)).astype(np.float32)
    off = strangers(rng, len(means))
    off -= np.sum(off * means, axis=1, keepdims=True) * means  # orthogonal to the mean
    off /= np.linalg.norm(off, axis=1, keepdims=True)
    return (cos * means + np.sqrt(1 - cos**2) * off).astype(np.float32)


def strangers(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 512)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pool_events(vecs: np.ndarray, start: int) -> list[ev.Event]:
    return [ev.PoolFaceAdded(path=f"_pool/{start + i:08d}_0.png", face_id=f"{start + i:08d}_0", sha256=f"{start + i:064x}",
                             photo_sha256=f"p{start + i:063x}", quality=0.5, source={"photo": f"p{start + i}"},
                             embedding=v) for i, v in enumerate(vecs)]


# --- Subprocess roles ------------------------------------------------------------------------------------
def make(db: Path, n: int) -> dict[str, Any]:
    """Write the pool's log and state; keep the person means for the "+100" pass."""
    rng = np.random.default_rng(n)
    vecs, means = library(rng, n)
    log = EventLog(db)
    state = CorpusState(log)
    for a in range(0, n, 5000):
        log.append(pool_events(vecs[a : a + 5000], a))
        state.catch_up()
    np.save(db.with_suffix(".means.npy"), means)
    return {}


def measure(db: Path, n: int, recall_sample: int) -> dict[str, Any]:
    log = EventLog(db)
    state = CorpusState(log)
    gate = IdentityThresholds().min_new_faceset
    t0 = time.perf_counter()
    pc = PoolClusters(state, SearchPlan(cluster_distance=IdentityThresholds().cluster_distance))
    pc.advance(None)
    promotable = len(pc.clusters(min_size=gate))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    pc.advance(None)
    pc.clusters(min_size=gate)
    unchanged = time.perf_counter() - t0
    rng = np.random.default_rng(n + 1)
    means = np.load(db.with_suffix(".means.npy"))
    new = np.concatenate([faces_of(rng, means[rng.integers(0, len(means), 50)]), strangers(rng, 50)])
    log.append(pool_events(new, 10 * n))
    state.catch_up()
    t0 = time.perf_counter()
    pc.advance(None)
    pc.clusters(min_size=gate)
    added = time.perf_counter() - t0
    out = {"first_s": first, "unchanged_s": unchanged, "added_s": added, "promotable": promotable,
           "edges": sum(len(a) for a in pc.graph.adj.values()) // 2, "components": len(pc.graph.members),
           "largest_component": max((len(m) for m in pc.graph.members.values()), default=0),
           "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if recall_sample:
        out.update(recall(pc, recall_sample))
    out["floor_s"] = sgemm_floor(pc.vecs[:n], n)
    return out


def sgemm_floor(vecs: np.ndarray, n: int) -> float:
    """The baseline beyond scipy's reach, timed in the same process: the seconds that the sgemm of an exact
    search (n^2 / 2 pairs x 512 multiply-adds) alone would take at the rate measured here on 512 x 32768 tiles."""
    q, cols = vecs[:512], vecs[: min(n, 32768)]
    q @ cols.T  # warm up
    t0 = time.perf_counter()
    for _ in range(5):
        q @ cols.T
    rate = 5 * len(q) * len(cols) / (time.perf_counter() - t0)  # pairs per second
    return n * n / 2 / rate


def recall(pc: PoolClusters, sample: int) -> dict[str, Any]:
    """Pairs within cluster_distance of `sample` random faces: found by brute force vs present in the graph."""
    rng = np.random.default_rng(1)
    n = len(pc.ids)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    s = 1.0 - pc.plan.cluster_distance
    exact, found = 0, 0
    for a in range(0, len(rows), 256):
        block = rows[a : a + 256]
        i, j = np.nonzero(pc.vecs[block] @ pc.vecs[:n].T >= s)  # true edges (no slack: within t)
        for r, c in zip(block[i], j):
            if r != c:
                exact += 1
                found += int(c in pc.graph.adj.get(int(r), ()))
    return {"recall_edges": exact, "recall_found": found}


def baseline(db: Path) -> dict[str, Any]:
    """Today's path: every pool row, unit vectors, one global scipy average linkage, the clusters past the gate."""
    from scipy.cluster.hierarchy import fcluster, linkage

    log = EventLog(db)
    state = CorpusState(log)
    ident = IdentityThresholds()
    t0 = time.perf_counter()
    rows = list(state.pool_rows())
    vecs = np.stack([unit(np.frombuffer(r[6], dtype="<f4")) for r in rows])
    labels = fcluster(linkage(vecs.astype(np.float64), method="average", metric="cosine"),
                      t=ident.cluster_distance, criterion="distance")
    sizes = np.bincount(labels)
    promotable = int(np.sum(sizes >= ident.min_new_faceset))
    return {"scipy_s": time.perf_counter() - t0, "scipy_promotable": promotable,
            "scipy_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --- After a restart: the projection beside the log (issue 22) ------------------------------------------
def project(db: Path, n: int) -> dict[str, Any]:
    """The baseline, the old path after every restart: the pool clustered from scratch (load, search, every
    cluster), as the daemon's first pass; it writes the projection (timed apart: its last step)."""
    from daemon.config import load_config
    from daemon.pipeline import Pipeline

    log = EventLog(db)
    state = CorpusState(log)
    # The checks' position past the pool's events, as the daemon that recorded them leaves it (nobody consumes
    # them: without this the daemon measured below would first read 200,000 events to find that out).
    Pipeline(load_config(None, data_dir=str(db.parents[1]), environ={}), log).dispatcher.run_pending()
    t0 = time.perf_counter()
    pc = PoolClusters(state, SearchPlan(cluster_distance=IdentityThresholds().cluster_distance), persist=True)
    pc._advance(None)  # the pass without its write, to time the write apart
    pc.clusters(min_size=2)
    scratch = time.perf_counter() - t0
    t0 = time.perf_counter()
    pc.save()
    saved = time.perf_counter() - t0
    return {"scratch_s": scratch, "save_s": saved, "loaded_from": pc.loaded_from,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def restart(db: Path, n: int) -> dict[str, Any]:
    """A restarted process: the pool read from the projection, then a pass after 100 new faces (written back)."""
    log = EventLog(db)
    state = CorpusState(log)
    gate = IdentityThresholds().min_new_faceset
    t0 = time.perf_counter()
    pc = PoolClusters(state, SearchPlan(cluster_distance=IdentityThresholds().cluster_distance), persist=True)
    pc.advance(None)
    pc.clusters(min_size=gate)
    loaded = time.perf_counter() - t0
    rng = np.random.default_rng(n + 2)
    means = np.load(db.with_suffix(".means.npy"))
    log.append(pool_events(np.concatenate([faces_of(rng, means[rng.integers(0, len(means), 50)]),
                                           strangers(rng, 50)]), 20 * n))
    state.catch_up()
    t0 = time.perf_counter()
    pc.advance(None)
    pc.clusters(min_size=gate)
    added = time.perf_counter() - t0
    return {"restart_s": loaded, "restart_added_s": added, "loaded_from": pc.loaded_from,
            "restart_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def status_in_process(db: Path, n: int) -> dict[str, Any]:
    """`facesetd status`'s summarize() on the data folder, in process (imports and the pipeline made first)."""
    from daemon.config import load_config
    from daemon.pipeline import Pipeline, summarize

    data = db.parents[1]
    config = load_config(None, data_dir=str(data), environ={})
    pipeline = Pipeline(config, EventLog(db))
    t0 = time.perf_counter()
    s = summarize(pipeline)
    return {"summarize_s": time.perf_counter() - t0, "pool": {k: s["pool"][k] for k in ("faces", "close_to_gate")},
            "projection": s["pool"]["projection"]}


def status_cli(data: Path) -> dict[str, Any]:
    """The whole `facesetd status --json` process, as a user runs it."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "status", "--json"],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    return {"status_cli_s": wall, "status_behind": json.loads(done.stdout)["pool"]["projection"]["behind"]}


# Strangers to the synthetic pool, one per daemon run (the same bytes twice would be "already processed").
PHOTOS = {"projection": Path("identities") / "lin_manuel_miranda" / "lin-manuel-miranda.jpg",
          "scratch": Path("identities") / "biden" / "biden.jpg"}


def daemon_restart(data: Path, faces: Path, models: Path, tag: str) -> dict[str, Any]:
    """The real daemon started on `data`: seconds from its READY line to the first new photo routed, and to
    "caught up" (the photo's pool faces searched with the pool, the promotion evaluated, the projection written).
    The log lines are timed as this process sees them appear (polled every 10 ms)."""
    import os
    import shutil

    env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", "FACESETD_MODELS_FACE_PACK": "buffalo_sc",
           "FACESETD_MODELS_ROOT": str(models), "FACESETD_REVIEW_ENABLED": "false", "PYTHONPATH": str(ROOT),
           # the distance the projection was made with (the pack's own would be another projection), and a pool at
           # rest: no cluster at the gate, as after the promotions that made it (the synthetic crops are not on disk)
           "FACESETD_IDENTITY_CLUSTER_DISTANCE": str(IdentityThresholds().cluster_distance),
           "FACESETD_IDENTITY_MIN_NEW_FACESET": "100000"}
    out_path = data.parent / f"daemon-{tag}.log"
    seen: dict[str, float] = {}
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "run"], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.perf_counter() + 1800
        dropped = False
        while "caught up after photo" not in seen:
            assert proc.poll() is None and time.perf_counter() < deadline, out_path.read_text()[-3000:]
            now = time.perf_counter()
            routed = False  # (in this reading of the log: a "caught up" before the photo does not count)
            for line in out_path.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                rec = json.loads(line)
                if rec.get("event") == "facesetd running":
                    seen.setdefault("ready", now)
                elif rec.get("event") == "photo routed":
                    seen.setdefault("routed", now)
                    routed = True
                elif rec.get("event") == "pool loaded":
                    seen.setdefault("pool loaded", now)
                elif rec.get("event") == "caught up" and routed:
                    seen.setdefault("caught up after photo", now)
            if "ready" in seen and not dropped:
                (data / "inbox").mkdir(parents=True, exist_ok=True)
                shutil.copy(faces / PHOTOS[tag], data / "inbox" / f"{tag}.jpg.part")
                (data / "inbox" / f"{tag}.jpg.part").rename(data / "inbox" / f"{tag}.jpg")
                dropped = True
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(60)
    ready = seen["ready"]
    return {"routed_s": seen["routed"] - ready, "caught_up_s": seen["caught up after photo"] - ready,
            "pool_loaded_s": seen.get("pool loaded", ready) - ready}


def drop_projection(db: Path) -> None:
    """The data folder as before the projection: its tables emptied and its position forgotten."""
    from state.pool_projection import PoolProjection

    PoolProjection(EventLog(db), IdentityThresholds().cluster_distance).reset()


def run_restart(n: int, daemon_baseline: bool) -> dict[str, Any]:
    faces = ROOT.parent / "shared" / "faces"
    models = ROOT / ".models"
    if not models.is_dir():
        models = Path("/work/main/.models")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        db = data / "state" / "events.sqlite3"
        db.parent.mkdir(parents=True)
        child("make", db, n)
        out = child("project", db, n)
        out.update(child("restart", db, n))
        out.update(child("status", db, n))
        out.update(status_cli(data))
        out.update({f"daemon_{k}": v for k, v in daemon_restart(data, faces, models, "projection").items()})
        if daemon_baseline:
            drop_projection(db)
            out.update({f"baseline_daemon_{k}": v for k, v in daemon_restart(data, faces, models, "scratch").items()})
    return out


def report_restart(n: int, r: dict[str, Any]) -> str:
    base = r["scratch_s"]
    lines = [f"{n:,} faces, after a restart (baseline: the pool clustered from scratch, {base:.2f} s here):",
             f"  from scratch (old path)    {base:8.3f} s   1.000 x; the projection's first write {r['save_s']:.3f} s",
             f"  restart: read projection   {r['restart_s']:8.3f} s   {r['restart_s'] / base:.4f} x  ({r['loaded_from']})",
             f"  restart: +100 faces        {r['restart_added_s']:8.3f} s   {r['restart_added_s'] / base:.4f} x",
             f"  status summarize()         {r['summarize_s']:8.3f} s   {r['summarize_s'] / base:.4f} x",
             f"  status CLI (whole process) {r['status_cli_s']:8.3f} s   {r['status_cli_s'] / base:.4f} x"
             f"  (projection behind by {r['status_behind']})",
             f"  daemon: READY -> first photo routed  {r['daemon_routed_s']:8.3f} s",
             f"  daemon: READY -> pool loaded         {r['daemon_pool_loaded_s']:8.3f} s",
             f"  daemon: READY -> caught up           {r['daemon_caught_up_s']:8.3f} s"
             f"   {r['daemon_caught_up_s'] / base:.4f} x the from-scratch pass"]
    if "baseline_daemon_routed_s" in r:
        b = r["baseline_daemon_caught_up_s"]
        lines += [f"  daemon without projection (old path): routed {r['baseline_daemon_routed_s']:.3f} s,"
                  f" caught up {b:.3f} s; with it: {r['daemon_caught_up_s'] / b:.4f} x"]
    return "\n".join(lines)


def child(role: str, db: Path, n: int, sample: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--role", role, "--db", str(db), "--sizes", str(n), "--recall-sample",
           str(sample)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_size(n: int, sample: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "log.sqlite"
        child("make", db, n)
        out = child("baseline", db, n) if n <= BASELINE_MAX else {}  # first: "measure" adds 100 faces
        out.update(child("measure", db, n, sample))
    return out


def report(n: int, r: dict[str, Any]) -> str:
    base = r.get("scipy_s")
    ratio = (lambda s: f" ({s / base:.3f} x scipy)") if base else (lambda s: "")
    lines = [f"{n:,} faces:",
             f"  first full clustering  {r['first_s']:8.3f} s{ratio(r['first_s'])}",
             f"  unchanged pass         {r['unchanged_s'] * 1000:8.2f} ms{ratio(r['unchanged_s'])}",
             f"  pass after 100 faces   {r['added_s']:8.3f} s{ratio(r['added_s'])}",
             f"  peak RSS               {r['rss_mb']:8.0f} MB",
             f"  graph: {r['edges']:,} pairs within t (+slack {EDGE_SLACK}), {r['components']:,} components "
             f"(largest {r['largest_component']:,}), {r['promotable']:,} clusters past the gate"]
    lines.append(f"  sgemm floor of an exact search {r['floor_s']:8.3f} s (first pass = {r['first_s'] / r['floor_s']:.2f} x it)")
    if base:
        lines.append(f"  scipy (today)          {base:8.3f} s, peak RSS {r['scipy_rss_mb']:.0f} MB, "
                     f"{r['scipy_promotable']:,} clusters past the gate")
    if "recall_edges" in r:
        e, f = r["recall_edges"], r["recall_found"]
        lines.append(f"  edge recall (sample)   {f:,} / {e:,} = {f / max(1, e):.4f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    p.add_argument("--recall-sample", type=int, default=2000, help="faces whose edges are checked (0: none)")
    p.add_argument("--restart", action="store_true", help="measure a restart on the projection (issue 22)")
    p.add_argument("--no-daemon-baseline", action="store_true",
                   help="with --restart: skip the daemon without the projection (minutes at 200k)")
    p.add_argument("--role", choices=["make", "measure", "baseline", "project", "restart", "status"],
                   help=argparse.SUPPRESS)
    p.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        n = args.sizes[0]
        if args.role == "make":
            result = make(args.db, n)
        elif args.role == "measure":
            result = measure(args.db, n, args.recall_sample)
        elif args.role == "project":
            result = project(args.db, n)
        elif args.role == "restart":
            result = restart(args.db, n)
        elif args.role == "status":
            result = status_in_process(args.db, n)
        else:
            result = baseline(args.db)
        print(json.dumps(result))
        return
    for n in args.sizes:
        if args.restart:
            print(report_restart(n, run_restart(n, not args.no_daemon_baseline)), flush=True)
        else:
            print(report(n, run_size(n, args.recall_sample)), flush=True)


if __name__ == "__main__":
    configure_logging("warning", "console", stream=sys.stderr)  # stdout carries the children's JSON
    main()
