"""The pool's average-linkage clusters, kept incrementally: the same clusters as scipy over the whole pool.

Average linkage (UPGMA) cut at distance t merges two clusters only when the mean distance of their cross pairs is
at most t, so at least one cross pair lies within t: each of its clusters lies inside one connected component of
the graph whose edges are the pairs within t. As the merges inside one component never look at faces outside it,
running scipy's exact average linkage inside each component alone gives the same clusters as running it over the
whole pool (up to exact ties of distances, which the same face-id order inside a component resolves as the global
run does).

Why average and not complete linkage (issue 21): complete linkage splits a person whose photos vary (hair, age,
light) as soon as one pair of them is past t, and the halves never join again; average linkage joins the halves
when they are close on the whole, and still keeps two people apart when their faces are apart on the whole
(bench/clustering.py: every person of bench/people found, none mixed; docs/benchmarks.md).

So this keeps, process-local and rebuilt lazily after a restart:
- every pool face's unit embedding (float32, N x 512: memory linear in the pool; never an N x N matrix),
- the sparse graph of pairs within t (found by an exact blocked search: float32 matrix products in tiles),
- its connected components and, per component, the clusters scipy gives it (recomputed only when the
  component changes).

It follows the log: faces enter the pool with PoolFaceAdded and leave it with the decisions that move them
(FacesetPromoted, PoolFacesMatched, PoolFacesSeeded, FaceMoved); a face a person held back (PoolFacesHeld) stays
out of every cluster, so the clusters are those of the pool less the held faces, the ones the promotion and
`forming` use. `advance()` applies the events past its position and searches the new faces' neighbours, within a
time budget: a first pass over a big pool runs in slices, resumed by the next call; an unchanged pool costs one
indexed read of the state's log position.

With `persist` (the daemon's and reconcile's pool, handlers/pool.py), every completed advance writes what changed
into the projection beside the log (state/pool_projection.py: the faces, their clusters, the pairs within t, the
held faces, and the log position they reflect), and a first load reads that projection instead of searching the
whole pool again: only the faces the log added since are searched. A projection that is missing, behind the
state, or inconsistent is ignored, and the pool is clustered from the state and written whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import structlog

from state import events as ev
from state.corpus_state import PROCESSOR, CorpusState
from state.pool_projection import POOL_EVENT_KINDS, PoolChange, PoolProjection, ProjectionSnapshot, StoredFace
from state.queries import PoolSnapshot

from .centroids import unit

F32 = npt.NDArray[np.float32]
Pairs = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]

# Pairs are searched with float32 inner products (BLAS: the summation order differs from scipy's
# float64 cosine by ~1e-5 at most); the search keeps pairs this much beyond t, so no pair within t is missed.
# Extra pairs only join components whose faces average linkage keeps apart anyway.
EDGE_SLACK = 1e-3
# A pair is kept when its float64 inner product (exact products, one summation order) is at least
# 1 - t - EDGE_SLACK: the same pairs whatever tiles found them, so an incremental run, a restart and a rebuild store
# the same graph. The float32 search finds them with this margin (its rounding is ~1e-5 on unit vectors).
SEARCH_MARGIN = 1e-4
# Candidate pairs confirmed in float64 per chunk (two float64 rows of 512 each: 64 MB at this size).
CONFIRM_ROWS = 8192
# Similarity matrix elements per search tile (float32: 64 MB; ~0.1 s of sgemm on 2 cores, the slicing's grain).
BLOCK_ELEMENTS = 1 << 24
# Pending rows per search tile: tall enough for sgemm to run near its peak (64 rows: ~25% slower).
SEARCH_ROWS = 512
# Pool faces read from SQLite per chunk of a first load (~0.1 s each: the slicing's grain while loading).
LOAD_ROWS = 8192
POOL_KINDS = POOL_EVENT_KINDS  # faces in, faces out (a person's FaceMoved too), faces held back

log = structlog.get_logger("facesetd.pool")


@dataclass(frozen=True)
class SearchPlan:
    """How neighbour pairs are searched (from [identity]; see handlers/thresholds.py)."""

    cluster_distance: float = 0.55


class _Graph:
    """Undirected edges between slots, and the connected components of the slots that have any."""

    def __init__(self) -> None:
        self.adj: dict[int, set[int]] = {}
        self.comp_of: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}
        self._next = 0
        self.touched: list[int] = []  # slots whose component changed (drained by PoolClusters._note)

    def _new(self, slots: list[int]) -> None:
        cid = self._next
        self._next += 1
        self.members[cid] = slots
        self.touched.extend(slots)
        for s in slots:
            self.comp_of[s] = cid

    def restore(self, members: list[list[int]]) -> list[int]:
        """Components as stored (slot lists) with the edges already in `adj`; returns their ids, in order."""
        cids = []
        for slots in members:
            cids.append(self._next)
            self._new(slots)
        self.touched = []
        return cids

    def _key(self, slot: int) -> int:
        """A slot's component id, or (a slot in none yet) a negative stand-in for the slot itself."""
        cid = self.comp_of.get(slot)
        return -1 - slot if cid is None else cid

    def add_edges(self, left: Sequence[int], right: Sequence[int]) -> None:
        """Add edges; the components they join become one (a new id: its clusters are computed again)."""
        parent: dict[int, int] = {}  # union-find over the components and new slots the edges touch

        def find(x: int) -> int:
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b in zip(left, right):
            if a != b:
                self.adj.setdefault(a, set()).add(b)
                self.adj.setdefault(b, set()).add(a)
                parent[find(self._key(a))] = find(self._key(b))
        groups: dict[int, list[int]] = {}
        for k in list(parent):
            groups.setdefault(find(k), []).append(k)
        for keys in groups.values():
            slots: list[int] = []
            for k in keys:
                slots.extend(self.members.pop(k) if k >= 0 else [-1 - k])
            self._new(slots)

    def remove(self, slot: int) -> None:
        """Take a slot out; what is left of its component is split along the remaining edges."""
        cid = self.comp_of.pop(slot, None)
        for other in self.adj.pop(slot, set()):
            self.adj[other].discard(slot)
        if cid is None:
            return
        rest = [s for s in self.members.pop(cid) if s != slot]
        self.touched.append(slot)
        for part in components_of(rest, self.adj):
            if len(part) == 1 and not self.adj.get(part[0]):
                self.comp_of.pop(part[0], None)
                self.adj.pop(part[0], None)
                self.touched.append(part[0])
            else:
                self._new(part)

    def remap(self, new_of: npt.NDArray[np.int64]) -> None:
        """Renumber every slot (after the dead slots were dropped from the arrays)."""
        self.adj = {int(new_of[s]): {int(new_of[o]) for o in os} for s, os in self.adj.items()}
        self.comp_of = {int(new_of[s]): c for s, c in self.comp_of.items()}
        self.members = {c: [int(new_of[s]) for s in ss] for c, ss in self.members.items()}
        self.touched = [int(new_of[s]) for s in self.touched]


def components_of(slots: Sequence[int], adj: dict[int, set[int]]) -> Iterator[list[int]]:
    """The connected components of the subgraph induced by `slots` (edges of `adj` between them only)."""
    inside = set(slots)
    seen: set[int] = set()
    for start in slots:
        if start in seen:
            continue
        seen.add(start)
        part, todo = [start], [start]
        while todo:
            for nb in adj.get(todo.pop(), ()):
                if nb in inside and nb not in seen:
                    seen.add(nb)
                    part.append(nb)
                    todo.append(nb)
        yield part


def average_linkage(vecs: F32, t: float) -> list[list[int]]:
    """The pool's clustering, exactly: scipy average linkage (UPGMA, cosine, float64) cut at t; clusters as row
    lists."""
    if len(vecs) == 1:
        return [[0]]
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = fcluster(linkage(vecs.astype(np.float64), method="average", metric="cosine"), t=t,
                      criterion="distance")
    out: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(int(label), []).append(i)
    return list(out.values())


class PoolClusters:
    """The pool's faces, the graph of pairs within cluster_distance, and its clusters; follows the log."""

    def __init__(self, state: CorpusState, plan: SearchPlan, *, persist: bool = False) -> None:
        self.state = state
        self.plan = plan
        # The projection beside the log this pool is read from at its first load and written to (persist).
        self.projection = PoolProjection(state.log, plan.cluster_distance) if persist else None
        self.position = -1  # log position the faces and the graph reflect; -1: not loaded yet
        self.generation = 0  # bumped whenever the pool changes (callers cache on it)
        self.ids: list[str] = []
        self.photos: list[str] = []
        self.slot_of: dict[str, int] = {}
        self.vecs: F32 = np.zeros((0, 512), dtype=np.float32)
        self.alive: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self.held: set[str] = set()  # faces a person held back (PoolFacesHeld): in no cluster, matched all the same
        self.hold: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)  # per slot: its face is held
        self.graph = _Graph()
        self._cached: dict[int, list[list[int]]] = {}  # component id -> its clusters (slot lists)
        # The last answer of clusters(), for (generation, min_size, excluded faces).
        self._answer: tuple[tuple[int, int, frozenset[str]], list[list[str]]] | None = None
        self._pending = 0  # first slot whose neighbours are not searched yet (== len(ids): none)
        self._from = 0  # first pending slot of the search under way (pairs with [._from, cursor) are done)
        self._col = 0  # within the pending block: columns searched so far (see _exact_block)
        self._tile: F32 | None = None  # the exact search's similarity buffer, while a search runs
        self._snapshot: PoolSnapshot | None = None  # the pool being loaded, a chunk per call (see _load)
        self._new: set[str] = set()  # faces added since take_new() last ran
        # The centroids the pool was last matched against (handlers/pool.py): only faces new since then, or near a
        # centroid that moved or appeared, can match now. None: not matched yet.
        self.matched: dict[str, F32] | None = None
        self.near_last: set[str] = set()  # the faces near some centroid at that match
        self.searched_pairs = 0  # comparisons made (for the bench)
        self.loaded_from = ""  # "projection" or "state": where the first load read the pool
        # What the projection lacks (persist): faces whose row may differ, faces whose pairs go, pairs and held
        # faces to add; `_saved` is the projection position the stored rows match (-1: write everything).
        self._saved = -1
        self._changed: set[str] = set()
        self._unpaired: set[str] = set()
        self._edges_new: set[tuple[str, str]] = set()
        self._held_new: set[str] = set()
        self._stored: ProjectionSnapshot | None = None  # the projection being loaded, a chunk per call
        self._keys: list[str | None] = []  # while loading it: each slot's stored cluster

    @property
    def size(self) -> int:
        """Faces in the pool."""
        return len(self.slot_of)

    @property
    def searching(self) -> bool:
        """A pass is under way (its load, from the projection or the state, or its neighbour search): it stopped at
        its time budget and resumes on the next advance."""
        return self._stored is not None or self._snapshot is not None or (
            self.position >= 0 and self._pending < len(self.ids))

    # Following the log -------------------------------------------------------------------------------
    def advance(self, budget_s: float | None = None) -> bool:
        """Catch up with the state's log position and search the new faces' neighbours, for about `budget_s`
        seconds (None: to the end). True when done (the clusters are those of the pool at `position`); with
        `persist`, what changed is then written to the projection."""
        done = self._advance(budget_s)
        if done and self.projection is not None:
            self.save()
        return done

    def _advance(self, budget_s: float | None) -> bool:
        deadline = None if budget_s is None else time.monotonic() + budget_s
        if self.position < 0 and not self._load(deadline):
            return False
        while True:
            if self._pending < len(self.ids):
                if not self._search(deadline):
                    return False
                continue
            head = self.state.log.tracked(PROCESSOR)
            if head <= self.position:  # (behind: the state is being rebuilt; the log up to here is unchanged)
                return True
            self._apply(head)
            if deadline is not None and time.monotonic() >= deadline and self._pending < len(self.ids):
                return False

    def _load(self, deadline: float | None) -> bool:
        """Every pool face from the state as of one position (PoolSnapshot), LOAD_ROWS at a time until done
        (True) or past the deadline (False: resumed by the next call, on the same snapshot). With `persist`, the
        stored projection instead when it can be (`_restore`)."""
        if self.projection is not None and self._snapshot is None:
            restored = self._restore(deadline)
            if restored is not None:
                return restored
        if self._snapshot is None:
            self._snapshot = PoolSnapshot(self.state.log, PROCESSOR)
            self.ids, self.photos = [], []
            self.vecs = np.zeros((1024, 512), dtype=np.float32)
        while True:
            rows = self._snapshot.fetch(LOAD_ROWS)
            self._grow(len(self.ids) + len(rows))
            for row in rows:
                self.vecs[len(self.ids)] = unit(np.frombuffer(row.embedding, dtype="<f4"))
                self.ids.append(row.face_id)
                self.photos.append(row.photo_sha256)
            if len(rows) < LOAD_ROWS:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
        position = self._snapshot.position
        self.held = self._snapshot.held()
        self._snapshot.close()
        self._snapshot = None
        self.slot_of = {f: i for i, f in enumerate(self.ids)}
        self._new = set(self.ids)
        self.matched = None
        self.alive = np.arange(len(self.vecs)) < len(self.ids)
        self.hold = np.zeros(len(self.vecs), dtype=bool)
        self.hold[[self.slot_of[f] for f in self.held if f in self.slot_of]] = True
        self.position, self._pending, self._from = position, 0, 0
        self.generation += 1
        self.loaded_from, self._saved = "state", -1  # the projection is written whole once the search is done
        if self.projection is not None:
            log.info("pool loaded", source="state", faces=self.size, position=position)
        return True

    def _restore(self, deadline: float | None) -> bool | None:
        """The pool as the projection stored it (its faces, pairs, clusters and held faces at its position), read
        LOAD_ROWS faces at a time: True when loaded (the events past its position are applied by advance, the
        faces they add searched as any new face), False past the deadline, None when it cannot be used (then the
        pool is loaded from the state)."""
        if self._stored is None:
            stored = ProjectionSnapshot(self.state.log, self.plan.cluster_distance)
            if not stored.usable:
                stored.close()
                return None
            self._stored = stored
            self.ids, self.photos, self._keys = [], [], []
            self.vecs = np.zeros((max(1024, stored.faces + stored.faces // 4), 512), dtype=np.float32)
        while True:
            rows = self._stored.fetch(LOAD_ROWS)
            self._grow(len(self.ids) + len(rows))
            for row in rows:
                self._take_stored(row)
            if len(rows) < LOAD_ROWS:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
        stored, self._stored = self._stored, None
        try:
            edges, held, position = stored.edges(), stored.held(), stored.position
        finally:
            stored.close()
        if not self._stored_graph(edges, held):
            log.warning("pool projection inconsistent: the pool is clustered from the state", position=position)
            self.ids, self.photos, self._keys = [], [], []
            self.graph, self._cached = _Graph(), {}
            return None
        self._keys = []
        self._new = set(self.ids)
        self.matched = None
        self.position = position
        self._pending = self._from = len(self.ids)
        self.generation += 1
        self.loaded_from, self._saved = "projection", position
        log.info("pool loaded", source="projection", faces=self.size, position=position,
                 pairs=sum(len(a) for a in self.graph.adj.values()) // 2)
        return True

    def _take_stored(self, row: StoredFace) -> None:
        """One stored face into the next slot (a face that left the pool since: a zero vector, dropped again when
        advance applies the event that took it out)."""
        if row.embedding is not None:
            self.vecs[len(self.ids)] = unit(np.frombuffer(row.embedding, dtype="<f4"))
        self.ids.append(row.face_id)
        self.photos.append(row.photo_sha256)
        self._keys.append(row.cluster)

    def _stored_graph(self, edges: list[tuple[str, str]], held: set[str]) -> bool:
        """The graph and the clusters of the stored projection over the loaded slots; False when they disagree
        (a pair naming a face it does not hold, a cluster across two components, a held face in a cluster)."""
        n = len(self.ids)
        self.slot_of = {f: i for i, f in enumerate(self.ids)}
        self.alive = np.arange(len(self.vecs)) < n
        self.held = held
        self.hold = np.zeros(len(self.vecs), dtype=bool)
        self.hold[[self.slot_of[f] for f in held if f in self.slot_of]] = True
        try:
            left = np.fromiter((self.slot_of[a] for a, _b in edges), dtype=np.int64, count=len(edges))
            right = np.fromiter((self.slot_of[b] for _a, b in edges), dtype=np.int64, count=len(edges))
        except KeyError:
            return False
        if len(edges) and (self.hold[left].any() or self.hold[right].any()):
            return False
        adj: dict[int, set[int]] = {}
        for a, b in zip(left.tolist(), right.tolist()):
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
        graph = _Graph()
        graph.adj = adj
        cids = graph.restore(list(components_of(sorted(adj), adj)))
        cached: dict[int, list[list[int]]] = {}
        for cid in cids:
            by_key: dict[str, list[int]] = {}
            parts: list[list[int]] = []
            for slot in graph.members[cid]:
                key = self._keys[slot]
                if key is None:
                    parts.append([slot])
                else:
                    by_key.setdefault(key, []).append(slot)
            for key, slots in by_key.items():
                if len(slots) < 2 or min(self.ids[s] for s in slots) != key:
                    return False
            cached[cid] = parts + list(by_key.values())
        keyed = sum(k is not None for k in self._keys)
        if keyed != sum(len(c) for cl in cached.values() for c in cl if len(c) > 1):
            return False  # a face in a cluster that is in no component
        self.graph, self._cached = graph, cached
        return True

    def _apply(self, head: int) -> None:
        """The pool events in (position, head]: new faces become pending, faces that left are removed."""
        self._compact()  # before any new slot: renumbering keeps no pending search
        self._from = len(self.ids)
        for se in self.state.log.read(self.position, kinds=POOL_KINDS):
            if se.position > head:
                break
            e = se.event
            if isinstance(e, ev.PoolFaceAdded):
                self._drop(e.face_id)  # INSERT OR REPLACE: a face id added again replaces the first
                self._add(e.face_id, e.photo_sha256, unit(np.asarray(e.embedding, dtype="<f4")))
            elif isinstance(e, (ev.FacesetPromoted, ev.PoolFacesMatched, ev.PoolFacesSeeded, ev.FaceMoved)):
                for face_id in e.face_ids:
                    self._drop(face_id)
            elif isinstance(e, ev.PoolFacesHeld):
                for face_id in e.face_ids:
                    self._hold_face(face_id)
        self.position = head
        self._pending = self._from

    def _grow(self, rows: int) -> None:
        """Room for `rows` faces; grows by a quarter (amortised O(1) per face, RSS stays near the pool's size)."""
        slot = len(self.ids)
        if rows > len(self.vecs):
            grown = np.zeros((max(1024, rows, slot + slot // 4), 512), dtype=np.float32)
            grown[:slot] = self.vecs[:slot]
            self.vecs = grown
            self.alive = np.concatenate([self.alive, np.zeros(len(grown) - len(self.alive), dtype=bool)])
            self.hold = np.concatenate([self.hold, np.zeros(len(grown) - len(self.hold), dtype=bool)])

    def _add(self, face_id: str, photo: str, vec: F32) -> None:
        slot = len(self.ids)
        self._grow(slot + 1)
        self.vecs[slot] = vec
        self.alive[slot] = True
        self.hold[slot] = face_id in self.held
        self.ids.append(face_id)
        self.photos.append(photo)
        self.slot_of[face_id] = slot
        self._new.add(face_id)
        self._changed.add(face_id)
        self.generation += 1

    def _drop(self, face_id: str) -> None:
        slot = self.slot_of.pop(face_id, None)
        if slot is None:
            return
        self._unlink(slot)
        self.alive[slot] = False
        self._changed.add(face_id)
        self.generation += 1

    def _hold_face(self, face_id: str) -> None:
        """A face a person held back: out of every cluster from now on (it may still match a faceset)."""
        if face_id in self.held:
            return
        self.held.add(face_id)
        self._held_new.add(face_id)
        slot = self.slot_of.get(face_id)
        if slot is not None:
            self._unlink(slot)
            self.hold[slot] = True
            self._changed.add(face_id)
            self.generation += 1

    def _unlink(self, slot: int) -> None:
        """Take a slot out of the graph: its pairs go, what is left of its component is split."""
        cid = self.graph.comp_of.get(slot)
        if cid is not None:
            self._cached.pop(cid, None)
        if slot in self.graph.adj:
            self._unpaired.add(self.ids[slot])
        self.graph.remove(slot)
        self._note()

    def _note(self) -> None:
        """The faces whose component changed: their stored cluster is written again at the next save."""
        if self.graph.touched:
            self._changed.update(self.ids[s] for s in self.graph.touched)
            self.graph.touched = []

    def _compact(self) -> None:
        """Drop dead slots once they are most of the arrays (only between searches: slots are renumbered)."""
        n = len(self.ids)
        live = self.alive[:n]
        if n - self.size <= max(1024, self.size):
            return
        new_of = np.cumsum(live, dtype=np.int64) - 1
        keep = np.flatnonzero(live)
        self.vecs = np.ascontiguousarray(self.vecs[keep])
        self.alive = np.ones(len(keep), dtype=bool)
        self.hold = np.ascontiguousarray(self.hold[keep])
        self.ids = [self.ids[i] for i in keep]
        self.photos = [self.photos[i] for i in keep]
        self.slot_of = {f: i for i, f in enumerate(self.ids)}
        self.graph.remap(new_of)
        self._cached = {c: [[int(new_of[s]) for s in cl] for cl in cls] for c, cls in self._cached.items()}
        self._pending = self._from = len(self.ids)

    # Searching neighbours ----------------------------------------------------------------------------
    def _search(self, deadline: float | None) -> bool:
        """Search the pending slots' neighbours block by block until done (True) or past the deadline."""
        n = len(self.ids)
        while self._pending < n:
            self._add_pairs(self._exact_block(n))
            if deadline is not None and time.monotonic() >= deadline and self._pending < n:
                return False
        self._tile = None
        return True

    def _threshold(self) -> float:
        return 1.0 - self.plan.cluster_distance - EDGE_SLACK

    def _exact_block(self, n: int) -> Pairs:
        """Exact: one tile of the next SEARCH_ROWS pending rows against the columns they still need: the rows
        searched before (< `_from`) and the pending rows from the block on (each pair once: earlier pending
        rows were searched against this block already). `_col` walks those columns tile by tile."""
        a = self._pending
        b = min(n, a + SEARCH_ROWS)
        spans = [(0, self._from), (a, n)]
        total = self._from + n - a
        c0, c1 = self._col, min(total, self._col + BLOCK_ELEMENTS // SEARCH_ROWS)
        q = self.vecs[a:b]
        s = self._threshold()
        found: list[Pairs] = []
        offset = 0
        for lo, hi in spans:  # the part of [c0, c1) that falls in each span, as real rows
            first, last = lo + max(0, c0 - offset), lo + min(hi - lo, c1 - offset)
            offset += hi - lo
            if first < last:
                if self._tile is None or len(self._tile) < len(q) * (c1 - c0):
                    self._tile = np.empty(len(q) * (c1 - c0), dtype=np.float32)
                i, j = _at_least(q, self.vecs[first:last], s - SEARCH_MARGIN, self._tile)
                rows, cols = i + a, j + first
                keep = (cols < self._from) | (cols > rows)
                found.append(_confirmed(self.vecs, rows[keep], cols[keep], s))
        self.searched_pairs += (b - a) * (c1 - c0)
        self._col = c1
        if c1 >= total:
            self._pending, self._col = b, 0
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])

    def _add_pairs(self, pairs: Pairs) -> None:
        left, right = pairs
        ok = self.alive[left] & self.alive[right] & ~self.hold[left] & ~self.hold[right]
        left, right = left[ok], right[ok]
        if not len(left):
            return
        for s in np.unique(np.concatenate([left, right])):
            cid = self.graph.comp_of.get(int(s))
            if cid is not None:
                self._cached.pop(cid, None)
        self.graph.add_edges(left.tolist(), right.tolist())
        if self.projection is not None:
            ids = self.ids
            self._edges_new.update((ids[a], ids[b]) if ids[a] < ids[b] else (ids[b], ids[a])
                                   for a, b in zip(left.tolist(), right.tolist()))
        self._note()
        self.generation += 1

    # Answers -----------------------------------------------------------------------------------------
    def vectors(self, face_ids: Sequence[str]) -> F32:
        """The unit embeddings of these pool faces (rows in the order given)."""
        return self.vecs[[self.slot_of[f] for f in face_ids]]

    def near(self, targets: F32, max_distance: float, among: Iterable[str] | None = None) -> list[str]:
        """Face ids (in face-id order) within `max_distance` (cosine) of any of `targets` (unit rows); only those
        of `among` when given."""
        if not len(targets) or not self.size:
            return []
        if among is not None:
            slots = np.array(sorted(self.slot_of[f] for f in among if f in self.slot_of), dtype=np.int64)
            if not len(slots):
                return []
            sims = self.vecs[slots] @ targets.T
            return sorted(self.ids[s] for s in slots[sims.max(axis=1) >= 1.0 - max_distance].tolist())
        n = len(self.ids)
        hits: list[int] = []
        rows = max(1, BLOCK_ELEMENTS // max(1, len(targets)))
        for a in range(0, n, rows):
            sims = self.vecs[a : min(n, a + rows)] @ targets.T
            close = np.flatnonzero((sims.max(axis=1) >= 1.0 - max_distance) & self.alive[a : a + len(sims)])
            hits.extend((close + a).tolist())
        return sorted(self.ids[s] for s in hits)

    def take_new(self) -> set[str]:
        """The faces that entered the pool since the last call (all of them after a load), still in it."""
        new, self._new = self._new, set()
        return {f for f in new if f in self.slot_of}

    def clusters(self, min_size: int = 2, exclude: Iterable[str] = ()) -> list[list[str]]:
        """The average-linkage clusters of the pool less `exclude` with at least `min_size` faces: each a
        list of face ids in face-id order, the list ordered by first face id (as the global run gives them)."""
        key = (self.generation, min_size, frozenset(exclude))
        if self._answer is not None and self._answer[0] == key:
            return self._answer[1]  # an unchanged pool: no work
        out: list[list[str]] = []
        gone = {self.slot_of[f] for f in key[2] if f in self.slot_of}
        touched = {self.graph.comp_of[s] for s in gone if s in self.graph.comp_of}
        for cid, members in self.graph.members.items():
            if len(members) < min_size:
                continue
            if cid in touched:
                rest = [s for s in members if s not in gone]
                for part in components_of(rest, self.graph.adj):
                    if len(part) >= min_size:
                        out.extend(self._named(c) for c in self._linkage(part))
                continue
            if cid not in self._cached:
                self._cached[cid] = self._linkage(members)
            out.extend(self._named(c) for c in self._cached[cid])
        if min_size <= 1:  # faces with no neighbour are clusters of one (held faces are in none)
            out.extend([self.ids[s]] for s in self.slot_of.values()
                       if s not in self.graph.comp_of and s not in gone and not self.hold[s])
        out = sorted((c for c in out if len(c) >= min_size), key=lambda c: c[0])
        self._answer = (key, out)
        return out

    def photo_counts(self) -> list[int]:
        """For every cluster of two faces or more: how many distinct photos it holds."""
        return [len({self.photos[self.slot_of[f]] for f in c}) for c in self.clusters(min_size=2)]

    def _component_clusters(self, cid: int) -> list[list[int]]:
        if cid not in self._cached:
            self._cached[cid] = self._linkage(self.graph.members[cid])
        return self._cached[cid]

    # The projection ----------------------------------------------------------------------------------
    def save(self) -> bool:
        """Write what changed since the last save (everything, the first time after a load from the state) to
        the projection, with the position of the last pool event it reflects; True when it is current."""
        assert self.projection is not None
        upto = self.projection.last_pool_event(self.position)
        full = self._saved < 0
        if not full and upto == self._saved and not self._changed and not self._held_new:
            return True
        change = self._full_change() if full else self._change()
        after = self.projection.position() if full else self._saved
        if not self.projection.save(after, upto, change):
            log.warning("pool projection moved by another process: written whole next time")
            self._saved = -1
            return False
        self._saved = upto
        self._changed, self._unpaired, self._edges_new, self._held_new = set(), set(), set(), set()
        return True

    def _cluster_keys(self, slots: Iterable[int]) -> dict[int, str | None]:
        """Each slot's stored cluster: the first face id of its cluster of two or more (None: in none)."""
        keys: dict[int, str | None] = {}
        for slot in slots:
            if slot in keys:
                continue
            cid = self.graph.comp_of.get(slot)
            if cid is None:
                keys[slot] = None
                continue
            for cluster in self._component_clusters(cid):
                key = min(self.ids[s] for s in cluster) if len(cluster) > 1 else None
                keys.update((s, key) for s in cluster)
        return keys

    def _change(self) -> PoolChange:
        present = sorted(f for f in self._changed if f in self.slot_of)
        keys = self._cluster_keys(self.slot_of[f] for f in present)
        adj, slot_of = self.graph.adj, self.slot_of
        edges = sorted((a, b) for a, b in self._edges_new
                       if a in slot_of and b in slot_of and slot_of[b] in adj.get(slot_of[a], ()))
        return PoolChange(faces=[(f, keys[slot_of[f]], self.photos[slot_of[f]]) for f in present],
                          gone=sorted(f for f in self._changed if f not in slot_of),
                          unpaired=sorted(self._unpaired), edges=edges, held=sorted(self._held_new))

    def _full_change(self) -> PoolChange:
        slots = sorted(self.slot_of.values(), key=lambda s: self.ids[s])
        keys = self._cluster_keys(slots)
        ids = self.ids
        edges = sorted((ids[a], ids[b]) if ids[a] < ids[b] else (ids[b], ids[a])
                       for a, nbs in self.graph.adj.items() for b in nbs if a < b)
        return PoolChange(full=True, faces=[(ids[s], keys[s], self.photos[s]) for s in slots], edges=edges,
                          held=sorted(self.held))

    def _linkage(self, slots: list[int]) -> list[list[int]]:
        ordered = sorted(slots, key=lambda s: self.ids[s])  # the global run's order: by face id
        found = average_linkage(self.vecs[ordered], self.plan.cluster_distance)
        return [[ordered[i] for i in c] for c in found]

    def _named(self, slots: list[int]) -> list[str]:
        return sorted(self.ids[s] for s in slots)


def _confirmed(vecs: F32, rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64], s: float) -> Pairs:
    """The candidate pairs whose float64 inner product is at least `s`: float32 products are exact in float64,
    and each row is summed in the same order wherever the pair was found (see SEARCH_MARGIN)."""
    keep = np.zeros(len(rows), dtype=bool)
    for a in range(0, len(rows), CONFIRM_ROWS):
        r, c = rows[a : a + CONFIRM_ROWS], cols[a : a + CONFIRM_ROWS]
        keep[a : a + len(r)] = (vecs[r].astype(np.float64) * vecs[c].astype(np.float64)).sum(axis=1) >= s
    return rows[keep], cols[keep]


def _at_least(q: F32, cols: F32, s: float, buf: F32) -> Pairs:
    """(row, column) of the entries of q @ cols.T at least `s`, computed into `buf` (reused: no fresh 64 MB
    per tile) and found with one flatnonzero over the raveled mask (2-D nonzero costs a third of the sgemm)."""
    sims = buf[: len(q) * len(cols)].reshape(len(q), len(cols))
    np.matmul(q, cols.T, out=sims)
    flat = np.flatnonzero(sims >= s)
    return flat // len(cols), flat % len(cols)
