"""The active facesets' centroids, kept in the process and updated incrementally.

A faceset's centroid is the mean of the unit embeddings of its kept faces (in path order), renormalised. An
embedding comes from routing (the face on its photo), else from FaceAnalyzed (the PNG), else it is computed from
the PNG and cached by sha256. Reading every face of every faceset for each photo routed costs one SQL row per
face; the `CentroidCache` reads them once, then only those of the facesets whose `members_changed` mark
(state/corpus_state.py) lies past the position it last saw. Recomputing a faceset runs the same arithmetic on the
same rows in the same order as a full computation, so its centroid is bit for bit the one a full computation
gives, and routing decisions and distances do not depend on the cache.

`nearest` is one matrix-vector product over the centroids (rows in name order), then today's exact per-centroid
arithmetic on the few rows within `_NEAR_TIE` of the best: BLAS sums a row differently depending on where it
sits in the matrix, so the product only picks candidates and the recorded distance is the 1-d dot product.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from state.queries import CentroidInput

if TYPE_CHECKING:
    from .context import HandlerContext

DIM = 512  # embedding size; an empty cache still has a (0, DIM) matrix
# Slack on the matrix product's distances (float32, 512 terms: its error is far below this); every row within
# it of the best is decided again with the exact dot product, so ties break as a loop in name order would.
_NEAR_TIE = 1e-4


def unit(v: np.ndarray) -> np.ndarray:
    """`v` as float32 scaled to length 1 (a zero vector stays zero)."""
    v = np.asarray(v, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def cached_embeddings(ctx: HandlerContext, missing: list[tuple[str, str]]) -> dict[str, np.ndarray | None]:
    """Embeddings of PNGs the log has none for (e.g. adopted facesets), computed once and cached by sha256."""
    if not missing:
        return {}
    shas = sorted({s for _p, s in missing})
    cached = ctx.state.cached_embeddings(shas)
    found: dict[str, np.ndarray | None] = {
        s: (np.frombuffer(b, dtype="<f4") if b is not None else None) for s, b in cached.items()}
    todo: list[tuple[str, str]] = []
    seen: set[str] = set()
    for p, s in missing:  # each unknown sha256 once
        if s not in found and s not in seen:
            seen.add(s)
            todo.append((p, s))
    engine = ctx.models.face_engine if todo else None
    for i in range(0, len(todo), 16):
        datas, keep = [], []
        for p, s in todo[i : i + 16]:
            try:
                datas.append((ctx.config.corpus / p).read_bytes())
                keep.append(s)
            except OSError:
                found[s] = None
        results = engine.analyze(datas, pad=True) if datas and engine is not None else []
        rows_out = []
        for s, faces in zip(keep, results):
            best = max(faces, key=lambda f: f.short_side, default=None)
            vec = None if best is None else unit(best.embedding)
            found[s] = vec
            rows_out.append((s, None if vec is None else vec.astype("<f4").tobytes()))
        ctx.state.cache_embeddings(rows_out)
    return found


def compute_centroids(ctx: HandlerContext, rows: Sequence[CentroidInput],
                      exclude_prefix: str = "") -> dict[str, np.ndarray]:
    """faceset -> unit centroid of the facesets in `rows` (centroid_inputs, by path) with at least one embedding.

    `exclude_prefix` leaves out faces whose file name starts with it. Per faceset, the embeddings the log holds
    come first (by path), then the computed ones (by path): the order the mean has always summed them in."""
    vectors: dict[str, list[np.ndarray]] = {}
    missing: list[tuple[str, str]] = []
    pending: list[tuple[str, str]] = []
    for faceset, path, sha, routed, analyzed in rows:
        if exclude_prefix and path.rsplit("/", 1)[-1].startswith(exclude_prefix):
            continue
        blob = routed if routed is not None else analyzed
        if blob is not None:
            vectors.setdefault(faceset, []).append(unit(np.frombuffer(blob, dtype="<f4")))
        else:
            missing.append((path, sha))
            pending.append((faceset, sha))
    computed = cached_embeddings(ctx, missing)
    for faceset, sha in pending:
        vec = computed.get(sha)
        if vec is not None:
            vectors.setdefault(faceset, []).append(unit(vec))
    return {name: unit(np.mean(vs, axis=0)) for name, vs in sorted(vectors.items()) if vs}


def _crop_key(name: str) -> str | None:
    """A router crop's name up to its first "_" (`<photo sha256[:12]>_`), the form of an `exclude_prefix`."""
    head, sep, _rest = name.partition("_")
    return head + sep if sep else None


def _keys_by_faceset(rows: Sequence[CentroidInput]) -> dict[str, Counter[str]]:
    keys: dict[str, Counter[str]] = {}
    for faceset, path, *_r in rows:
        key = _crop_key(path.rsplit("/", 1)[-1])
        if key is not None:
            keys.setdefault(faceset, Counter())[key] += 1
    return keys


class Centroids(dict[str, np.ndarray]):
    """faceset -> unit centroid, in name order: what `CentroidCache.snapshot` hands out. Read-only by contract;
    `nearest` uses the cache's matrix while the cache has not changed since (and stacks the values otherwise)."""

    def __init__(self, values: Mapping[str, np.ndarray], cache: CentroidCache | None = None) -> None:
        super().__init__(values)
        self.cache = cache
        self.version = cache.version if cache is not None else -1

    def table(self) -> tuple[Sequence[str], np.ndarray]:
        """(names, matrix with one row per name) for the matrix-vector product."""
        cache = self.cache
        if cache is not None and cache.version == self.version and len(cache.names) == len(self):
            return cache.names, cache.matrix
        return stack(self)


def stack(cents: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """(names, matrix) of a mapping, rows in its order."""
    names = list(cents)
    if not names:
        return names, np.zeros((0, DIM), dtype=np.float32)
    return names, np.stack([cents[n] for n in names])


def nearest_row(names: Sequence[str], matrix: np.ndarray, vec: np.ndarray, exclude: str = "") -> tuple[str, float]:
    """(name, cosine distance) of the nearest row of `matrix` to `vec`, `exclude` left out; ("", 2.0) without any.

    Decides as the loop `d < best` over the rows in order, with d = 1 - dot(row, vec), would: same result, same
    distance, the first of equal ones."""
    if not len(names):
        return "", 2.0
    approx = 1.0 - (matrix @ vec)
    approx = np.where(np.isnan(approx), np.inf, approx)
    if exclude:
        skip = _index_of(names, exclude)
        if skip is not None:
            approx[skip] = np.inf
    low = float(approx.min())
    if not np.isfinite(low):
        return "", 2.0
    best, dist = "", 2.0
    for i in np.flatnonzero(approx <= low + _NEAR_TIE).tolist():  # ascending: the order of the loop
        d = 1.0 - float(np.dot(matrix[i], vec))
        if d < dist:
            best, dist = names[i], d
    return best, dist


def centroids(ctx: HandlerContext, exclude_prefix: str = "") -> Centroids:
    """faceset -> unit centroid (mean of unit embeddings, renormalised) of every active faceset with faces.

    An embedding comes from routing (the face on its photo), else from FaceAnalyzed (the PNG), else it is
    computed from the PNG and cached. `exclude_prefix` leaves out crops of the photo being routed (written
    before a crash, then found by a scan). Served by the process's centroid cache (CentroidCache):
    a read-only snapshot, in name order.
    """
    return ctx.centroid_cache.snapshot(ctx, exclude_prefix)


def nearest(cents: dict[str, np.ndarray], vec: np.ndarray, exclude: str = "") -> tuple[str, float]:
    """(faceset, cosine distance) of the nearest centroid other than `exclude`; ("", 2.0) without any.
    The first of equal ones in the mapping's order; one matrix-vector product for a snapshot of `centroids`."""
    names, matrix = cents.table() if isinstance(cents, Centroids) else stack(cents)
    return nearest_row(names, matrix, vec, exclude)


def _index_of(names: Sequence[str], name: str) -> int | None:
    if isinstance(names, _SortedNames):
        return names.index_of(name)
    try:
        return list(names).index(name)
    except ValueError:
        return None


class _SortedNames(list[str]):
    """The cache's faceset names (sorted), with an index for `nearest_row`'s exclusion."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(names)
        self.positions = {n: i for i, n in enumerate(self)}

    def index_of(self, name: str) -> int | None:
        return self.positions.get(name)


class CentroidCache:
    """The active facesets' centroids as one float32 matrix (rows in name order) plus their names, brought up to
    date on each use: only the facesets marked changed after `position` are read again and recomputed."""

    def __init__(self) -> None:
        self.position = -1  # state position the centroids reflect; -1: not built
        self.version = 0  # bumped on every change (a Centroids snapshot knows whether the matrix still matches)
        self.names = _SortedNames([])
        self.matrix = np.zeros((0, DIM), dtype=np.float32)
        self.vectors: dict[str, np.ndarray] = {}  # name -> centroid (own arrays: snapshots keep them unchanged)
        self._keys: dict[str, Counter[str]] = {}  # faceset -> crop-name keys of its kept faces (_crop_key)
        self._key_count: Counter[str] = Counter()  # the same over all active facesets

    def refresh(self, ctx: HandlerContext) -> None:
        """Bring the centroids up to the state's position: all of them the first time (or after the state went
        back, a rebuild), else those of the facesets changed since. Unchanged when a computation raises."""
        at = ctx.state.applied_position()  # read first: a change applied meanwhile is seen again next time
        if self.position < 0 or at < self.position:
            rows = ctx.state.centroid_inputs()
            self._replace_all(compute_centroids(ctx, rows), _keys_by_faceset(rows))
        elif at > self.position:
            changed = [c.name for c in ctx.state.facesets_changed_after(self.position)]
            if changed:
                rows = ctx.state.centroid_inputs_of(changed)
                self._update(changed, compute_centroids(ctx, rows), _keys_by_faceset(rows))
        self.position = at

    def snapshot(self, ctx: HandlerContext, exclude_prefix: str = "") -> Centroids:
        """The current centroids (refreshed). With `exclude_prefix` (crops of the photo being routed, found on
        disk after a crash) and such crops among the faces, they are computed from scratch without them."""
        self.refresh(ctx)
        if exclude_prefix and self.holds_crops(exclude_prefix):
            return Centroids(compute_centroids(ctx, ctx.state.centroid_inputs(), exclude_prefix))
        return Centroids(self.vectors, self)

    def holds_crops(self, prefix: str) -> bool:
        """Whether a kept face of an active faceset may have a file name starting with `prefix` (True when the
        prefix is not of the crop-name form: the caller then takes the slow, exact path)."""
        return _crop_key(prefix) != prefix or self._key_count[prefix] > 0

    def _replace_all(self, cents: dict[str, np.ndarray], keys: dict[str, Counter[str]]) -> None:
        self.vectors = dict(cents)
        self._keys = keys
        self._key_count = Counter()
        for k in keys.values():
            self._key_count.update(k)
        self._restack()

    def _update(self, changed: list[str], cents: dict[str, np.ndarray], keys: dict[str, Counter[str]]) -> None:
        """Replace the centroids of `changed` (those absent from `cents` left the active facesets or their faces)."""
        reshape = False
        for name in changed:
            self._forget_keys(name)
            if name in keys:
                self._keys[name] = keys[name]
                self._key_count.update(keys[name])
            if name in cents:
                reshape |= name not in self.vectors
                self.vectors[name] = cents[name]
            elif self.vectors.pop(name, None) is not None:
                reshape = True
        if reshape:  # a faceset came or went: the rows move
            self._restack()
            return
        for name in changed:
            i = self.names.index_of(name)
            if i is not None:
                self.matrix[i] = self.vectors[name]
        self.version += 1

    def _forget_keys(self, name: str) -> None:
        for key, n in self._keys.pop(name, Counter()).items():
            left = self._key_count[key] - n
            if left > 0:
                self._key_count[key] = left
            else:
                del self._key_count[key]

    def _restack(self) -> None:
        self.vectors = dict(sorted(self.vectors.items()))
        names, matrix = stack(self.vectors)
        self.names = _SortedNames(names)
        self.matrix = matrix
        self.version += 1
