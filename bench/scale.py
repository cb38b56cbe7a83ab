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
    p.add_argument("--role", choices=["make", "measure", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        n = args.sizes[0]
        if args.role == "make":
            result = make(args.db, n)
        elif args.role == "measure":
            result = measure(args.db, n, args.recall_sample)
        else:
            result = baseline(args.db)
        print(json.dumps(result))
        return
    for n in args.sizes:
        print(report(n, run_size(n, args.recall_sample)), flush=True)


if __name__ == "__main__":
    configure_logging("warning", "console", stream=sys.stderr)  # stdout carries the children's JSON
    main()
