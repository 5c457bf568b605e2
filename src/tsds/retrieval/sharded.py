"""A sharded index: one FAISS index per contiguous range of pool rows, searched as one.

``ShardedIndex`` has the interface of ``SearchIndex`` (search, exact_search, reconstruct, exclude,
available, calibrate) plus ``densities``. Its shards are served by a *backend*: ``LocalShards`` holds
them in this process and visits them one after another; the Ray engine's backend holds them in actors
and fans the same calls out (tsds.engines.ray). Both run the per-shard code in ``ShardWorker``, so a
store's index gives the same lists and densities whichever engine serves it.

Exactness. Each shard returns its own top-k (k capped at what the shard holds) with shard-local ids;
they are shifted to global ids and merged by (distance, id), so with exact (flat) shards the merged
lists are the k nearest of the whole pool, ties broken by id. Densities are range searches per shard
(IVF lists pruned by the triangle inequality, as in tsds.retrieval.density), the kernel sums and
counts added over shards in shard order; when a point's total count exceeds the cap, its terms are
gathered from every shard and the ``cap`` largest kept, as the single-index path does.

Store layout (see tsds.store.pool)::

    index/<metric>/shard-0000.faiss       FAISS index of rows [start, start + rows), ids 0..rows-1
    index/<metric>/shard-0000.radius.npy  IVF list radii (IVF shards only)
    index/<metric>/shard-0000.json        shard metadata, written last (marks the shard finished)
    index/<metric>/index.json             the shard list; written when every shard is finished
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from tsds.retrieval.density import DEFAULT_CAP, DensityStats, batched_densities
from tsds.retrieval.index import EXACT_UP_TO, SearchIndex, build_index, calibrate

_RESULT_BUDGET = 1 << 25


@dataclass(frozen=True)
class ShardSpec:
    """Where one index shard lives and which pool rows it holds."""

    shard: int
    start: int
    rows: int
    kind: str
    path: str                 # .faiss file
    radius_path: str | None   # IVF list radii, or None for flat shards

    def to_json(self) -> dict:
        return {"shard": self.shard, "start": self.start, "rows": self.rows, "kind": self.kind,
                "path": Path(self.path).name, "radius_path": Path(self.radius_path).name if self.radius_path else None}

    @classmethod
    def from_json(cls, folder: Path, d: dict) -> ShardSpec:
        return cls(shard=int(d["shard"]), start=int(d["start"]), rows=int(d["rows"]), kind=d["kind"],
                   path=str(folder / d["path"]), radius_path=str(folder / d["radius_path"]) if d["radius_path"] else None)


def shard_kind(rows: int, kind: str) -> str:
    """The index kind of one shard: ``auto`` is exact up to 50,000 rows, IVF-Flat above."""
    if kind == "auto":
        return "flat" if rows <= EXACT_UP_TO else "ivf"
    return kind


def plan_shards(shard_rows: list[int], n_shards: int) -> list[tuple[int, int]]:
    """Group consecutive embedding shards into ``n_shards`` index shards of about equal rows.

    Returns (start row, rows) per index shard. Boundaries fall on embedding-shard boundaries, so an
    index shard is built from whole embedding files.
    """
    total = int(sum(shard_rows))
    n_shards = max(1, min(int(n_shards), len(shard_rows)))
    bounds = np.cumsum([0] + list(shard_rows))
    cuts = [0]
    for j in range(1, n_shards):
        target = total * j / n_shards
        c = int(np.searchsorted(bounds, target))
        c = min(max(c, cuts[-1] + 1), len(shard_rows) - (n_shards - j))
        cuts.append(c)
    cuts.append(len(shard_rows))
    return [(int(bounds[a]), int(bounds[b] - bounds[a])) for a, b in itertools.pairwise(cuts)]


def load_shard(spec: ShardSpec, metric: str) -> SearchIndex:
    index = faiss.read_index(spec.path)
    radius = None
    if spec.kind == "ivf":
        radius = np.load(spec.radius_path, allow_pickle=False)
        faiss.extract_index_ivf(index).make_direct_map()
    return SearchIndex(index=index, kind=spec.kind, metric=metric, list_radius=radius)


def build_shard(source, spec: ShardSpec, metric: str, seed: int = 0) -> dict:
    """Build one index shard from ``source`` (its rows only) and write it atomically; returns its json."""
    from tsds.store.pool import _atomic_json, _atomic_npy, atomic_write_index

    built = build_index(source, metric=metric, kind=spec.kind, seed=seed + spec.shard)
    atomic_write_index(Path(spec.path), built.index)
    if built.list_radius is not None:
        _atomic_npy(Path(spec.radius_path), built.list_radius)
    meta = {**spec.to_json(), "metric": metric}
    _atomic_json(Path(spec.path).with_suffix(".json"), meta)
    return meta


class ShardWorker:
    """The per-shard operations, run where the shards are held (this process or a Ray actor).

    Calls carry everything that can change between them (search breadth, excluded ids), so a worker
    restarted by Ray answers the same as the one it replaces.
    """

    def __init__(self, specs: list[ShardSpec], metric: str):
        self.specs = {s.shard: s for s in specs}
        self.metric = metric
        self.indexes: dict[int, SearchIndex] = {}
        self._excluded_token: dict[int, object] = {}

    def _get(self, s: int, excluded=None, nprobe: int | None = None) -> SearchIndex:
        idx = self.indexes.get(s)
        if idx is None:
            idx = self.indexes[s] = load_shard(self.specs[s], self.metric)
        token = None if excluded is None else (excluded.size, hash(excluded.tobytes()))
        if self._excluded_token.get(s) != token:
            idx.exclude(np.empty(0, np.int64) if excluded is None else excluded)
            self._excluded_token[s] = token
        if nprobe is not None and not idx.exact:
            faiss.extract_index_ivf(idx.index).nprobe = int(nprobe)
        return idx

    def nlist(self, shards) -> list[int]:
        return [1 if self._get(s).exact else int(faiss.extract_index_ivf(self._get(s).index).nlist) for s in shards]

    def search(self, shards, q, k, exact, nprobe, excluded):
        out = []
        for s in shards:
            idx = self._get(s, excluded.get(s), nprobe)
            kk = min(int(k), idx.available)
            if kk <= 0:
                out.append((np.empty((q.shape[0], 0)), np.empty((q.shape[0], 0), np.int64)))
                continue
            out.append(idx.exact_search(q, kk) if exact else idx.search(q, kk))
        return out

    def reconstruct(self, shards, local_ids):
        return [self._get(s).reconstruct(ids) for s, ids in zip(shards, local_ids)]

    def range_sums(self, shards, x, radius2, sigma, excluded):
        """Per shard: kernel sums (float64, no floor), counts, and the lists scanned by the range search."""
        out = []
        for s in shards:
            idx = self._get(s, excluded.get(s))
            lims, d2, scanned = _exact_range(idx, x, radius2, sigma)
            counts = np.diff(lims)
            kernel = np.maximum(0.0, 1.0 - d2 / radius2)
            owner = np.repeat(np.arange(counts.size), counts)
            out.append((np.bincount(owner, weights=kernel, minlength=counts.size), counts, scanned))
        return out

    def range_members(self, shards, x, radius2, sigma):
        """Per shard: (lims, local ids) of the points within the radius (exact, no exclusion)."""
        out = []
        for s in shards:
            idx = self._get(s)
            lims, _, labels = _exact_range(idx, x, radius2, sigma, with_labels=True)
            out.append((lims, labels))
        return out

    def range_terms(self, shards, x, radius2, sigma, excluded, cap):
        """Per shard: (lims, kernel terms), each point's ``cap`` largest terms (for the capped points)."""
        out = []
        for s in shards:
            idx = self._get(s, excluded.get(s))
            lims, d2, _ = _exact_range(idx, x, radius2, sigma)
            terms, new_lims = [], [0]
            for r in range(x.shape[0]):
                seg = np.maximum(0.0, 1.0 - d2[lims[r]:lims[r + 1]] / radius2)
                if seg.size > cap:
                    seg = seg[np.argpartition(-seg, cap - 1)[:cap]]
                terms.append(seg)
                new_lims.append(new_lims[-1] + seg.size)
            out.append((np.asarray(new_lims), np.concatenate(terms) if terms else np.empty(0)))
        return out


def _exact_range(idx: SearchIndex, x: np.ndarray, radius2: float, sigma: float, with_labels: bool = False):
    """Range search of one shard, the distances recomputed in float64 from the stored vectors.

    FAISS finds the members (IVF lists pruned by the triangle inequality, as in tsds.retrieval.density);
    their squared distances are then recomputed exactly, so a density does not depend on which float32
    kernel FAISS picked (BLAS or direct, which varies with batch size and threads): the same point gets
    the same density whichever engine, process or shard layout computes it.
    """
    if idx.list_radius is None:
        lims, _, labels = idx.index.range_search(x, radius2)
        scanned = 0.0
    else:
        ivf = faiss.extract_index_ivf(idx.index)
        centroid_d2, lists = ivf.quantizer.search(x, ivf.nlist)
        reach = np.sqrt(np.maximum(centroid_d2.astype(np.float64), 0)) - idx.list_radius[lists]
        keep = reach <= sigma * (1 + 1e-5) + 1e-6
        width = max(1, int(keep.sum(axis=1).max()))
        order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
        assign = np.take_along_axis(np.where(keep, lists, -1), order, 1)
        cdis = np.take_along_axis(centroid_d2, order, 1)
        scanned = float(keep.sum())
        saved = ivf.nprobe
        try:
            ivf.nprobe = width
            lims, _, labels = ivf.range_search_preassigned(x, radius2, np.ascontiguousarray(assign),
                                                           np.ascontiguousarray(cdis))
        finally:
            ivf.nprobe = saved
    lims = lims.astype(np.int64)
    labels = labels.astype(np.int64)
    if idx.excluded is not None and labels.size:
        keep = ~np.isin(labels, idx.excluded)
        owner = np.repeat(np.arange(lims.size - 1), np.diff(lims))
        lims = np.concatenate([[0], np.cumsum(np.bincount(owner[keep], minlength=lims.size - 1))])
        labels = labels[keep]
    owner = np.repeat(np.arange(lims.size - 1), np.diff(lims))
    d2 = np.empty(labels.size, dtype=np.float64)
    for a in range(0, labels.size, 1 << 16):
        y = idx.reconstruct(labels[a:a + (1 << 16)]).astype(np.float64)
        d2[a:a + y.shape[0]] = np.sum((y - x[owner[a:a + y.shape[0]]].astype(np.float64)) ** 2, axis=1)
    inside = d2 < radius2
    if not inside.all():
        lims = np.concatenate([[0], np.cumsum(np.bincount(owner[inside], minlength=lims.size - 1))])
        d2, labels = d2[inside], labels[inside]
    if with_labels:
        return lims, d2, labels
    return lims, d2, scanned


class LocalShards:
    """Backend holding every shard in this process; calls visit the shards one after another."""

    def __init__(self, specs: list[ShardSpec], metric: str):
        self.worker = ShardWorker(specs, metric)
        self.shards = [s.shard for s in specs]

    def call(self, method: str, per_shard_args=None, **kwargs) -> list:
        """Run ``method`` on every shard; results in shard order. ``per_shard_args``: one arg per shard."""
        fn = getattr(self.worker, method)
        if per_shard_args is None:
            return fn(self.shards, **kwargs)
        return fn(self.shards, per_shard_args, **kwargs)

    def close(self) -> None:
        pass


class ShardedIndex:
    """Several FAISS indexes over consecutive row ranges, used like one ``SearchIndex``."""

    def __init__(self, specs: list[ShardSpec], metric: str, backend=None):
        self.specs = sorted(specs, key=lambda s: s.shard)
        self.metric = metric
        self.backend = backend or LocalShards(self.specs, metric)
        self.starts = np.array([s.start for s in self.specs], dtype=np.int64)
        self.rows = np.array([s.rows for s in self.specs], dtype=np.int64)
        kinds = {s.kind for s in self.specs}
        self.kind = "flat" if kinds == {"flat"} else "ivf"
        self.recall: float | None = None
        self.calibration: dict = {}
        self.excluded: np.ndarray | None = None
        self._excluded_local: dict[int, np.ndarray] = {}
        self.nprobe: int = 1
        self.list_radius = None  # densities go through ShardedIndex.densities, not the single-index path
        self._dim: int | None = None

    # ---- SearchIndex interface ----------------------------------------------------------
    @property
    def n_shards(self) -> int:
        return len(self.specs)

    @property
    def ntotal(self) -> int:
        return int(self.rows.sum())

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    @property
    def available(self) -> int:
        return self.ntotal - (0 if self.excluded is None else int(self.excluded.size))

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.reconstruct(np.array([0])).shape[1])
        return self._dim

    def exclude(self, ids) -> None:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < self.ntotal)]
        self.excluded = ids if ids.size else None
        self._excluded_local = {}
        for spec in self.specs:
            local = ids[(ids >= spec.start) & (ids < spec.start + spec.rows)] - spec.start
            if local.size:
                self._excluded_local[spec.shard] = local

    def _shard_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, ids, side="right") - 1

    def reconstruct(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        which = self._shard_of(ids)
        per = [ids[which == j] - self.starts[j] for j in range(self.n_shards)]
        parts = self.backend.call("reconstruct", per)
        out = None
        for j, part in enumerate(parts):
            if out is None:
                out = np.empty((ids.size, part.shape[1]), dtype=np.float32)
            out[which == j] = part
        return out

    def search(self, queries: np.ndarray, k: int):
        return self._search(queries, k, exact=False)

    def exact_search(self, queries: np.ndarray, k: int):
        return self._search(queries, k, exact=True)

    def _search(self, queries, k, exact):
        k = min(int(k), self.available)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        parts = self.backend.call("search", q=q, k=k, exact=exact or self.exact, nprobe=self.nprobe,
                                  excluded=self._excluded_local)
        return merge_topk(parts, self.starts, k)

    @property
    def nlist(self) -> int:
        return max(self.backend.call("nlist"))

    def calibrate(self, queries: np.ndarray, k: int, *, target: float = 0.95, sample: int = 64, seed: int = 0) -> float:
        """Raise the search breadth (nprobe, shared by the IVF shards) until merged recall@k reaches target."""
        recall = calibrate(self, queries, k, target=target, sample=sample, seed=seed)
        if self.calibration:
            self.calibration["shards"] = self.n_shards
        return recall

    # ---- densities -----------------------------------------------------------------------
    def densities(self, ids, sigma: float, *, cap: int = DEFAULT_CAP, stats: DensityStats | None = None,
                  progress=None, return_counts: bool = False):
        """Density of candidates ``ids`` over every candidate of every shard (see tsds.retrieval.density)."""
        stats = stats if stats is not None else DensityStats()
        radius2 = float(sigma) ** 2

        def sums_and_counts(x):
            parts = self.backend.call("range_sums", x=x, radius2=radius2, sigma=sigma,
                                      excluded=self._excluded_local)
            total = np.zeros(x.shape[0])
            cnt = np.zeros(x.shape[0], dtype=np.int64)
            for sums, c, scanned in parts:      # shard order: the same sum on every engine
                total += sums
                cnt += c
                stats.lists_scanned += scanned
            stats.pairs += int(cnt.sum())
            return total, cnt

        def capped_sums(x_over):
            terms = self.backend.call("range_terms", x=x_over, radius2=radius2, sigma=sigma,
                                      excluded=self._excluded_local, cap=cap)
            out = np.empty(x_over.shape[0])
            for r in range(x_over.shape[0]):
                seg = np.concatenate([t[lims[r]:lims[r + 1]] for lims, t in terms])
                out[r] = np.partition(seg, seg.size - cap)[seg.size - cap:].sum()
            return out

        return batched_densities(
            ids, sigma, batch=max(64, min(4096, _RESULT_BUDGET // max(1, int(self.rows.max())))),
            reconstruct=self.reconstruct, sums_and_counts=sums_and_counts, capped_sums=capped_sums,
            cap=cap, stats=stats, progress=progress, return_counts=return_counts)

    def within_radius(self, vectors: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """(pool rows, the vector each is within ``radius`` of) over every shard, exact (decontamination).

        Same result as SearchIndex.within_radius on a single index.
        """
        from tsds.retrieval.index import prepare

        if radius <= 0 or len(vectors) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        x = prepare(vectors, self.metric)
        parts = self.backend.call("range_members", x=x, radius2=float(radius) ** 2, sigma=float(radius))
        rows, items = [], []
        for j, (lims, labels) in enumerate(parts):
            rows.append(labels + self.starts[j])
            items.append(np.repeat(np.arange(x.shape[0]), np.diff(lims)))
        return np.concatenate(rows), np.concatenate(items)

    def close(self) -> None:
        self.backend.close()


def merge_topk(parts, starts: np.ndarray, k: int):
    """Merge per-shard (distances, local ids) into the global k nearest per query, ordered by (distance, id)."""
    dists = [d for d, _ in parts if d.shape[1]]
    ids = [i + starts[j] for j, (d, i) in enumerate(parts) if d.shape[1]]
    D = np.concatenate(dists, axis=1)
    I = np.concatenate(ids, axis=1)
    order = np.lexsort((I, D), axis=1)[:, :k] if D.shape[0] else np.empty((0, k), np.int64)
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def read_manifest(folder: Path) -> dict | None:
    path = folder / "index.json"
    return json.loads(path.read_text()) if path.is_file() else None


def default_shards(n_rows: int, workers: int, max_rows: int = 2_000_000) -> int:
    """Index shards for a pool: at least one per worker, at most ``max_rows`` rows each."""
    return max(1, int(workers), math.ceil(n_rows / max_rows))
