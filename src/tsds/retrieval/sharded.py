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
import math
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from tsds.errors import ParameterError
from tsds.retrieval.density import DEFAULT_CAP, DensityStats, batched_densities, candidates_within
from tsds.retrieval.index import EXACT_UP_TO, SearchIndex, build_index, calibrate, list_members, prepare
from tsds.retrieval.mapped import MAPS_PAGES, local_or_none, map_file, to_mapped

_RESULT_BUDGET = 1 << 25
PQ_ABOVE = 1_000_000     # shards with more rows get IVF-PQ (64-byte codes) instead of IVF-Flat under "auto"
RERANK = 4               # an IVF-PQ search fetches RERANK x k candidates, re-ranked with exact distances


@dataclass(frozen=True)
class ShardSpec:
    """Where one index shard lives and which pool rows it holds."""

    shard: int
    start: int
    rows: int
    kind: str
    path: str                 # .faiss file
    radius_path: str | None   # IVF list radii, or None for flat shards
    vectors: tuple = ()       # IVF-PQ: the .npy files holding this shard's rows as float32 (the store's shards)

    def to_json(self) -> dict:
        d = {"shard": self.shard, "start": self.start, "rows": self.rows, "kind": self.kind,
             "path": Path(self.path).name, "radius_path": Path(self.radius_path).name if self.radius_path else None}
        if self.vectors:
            folder = Path(self.path).parent
            d["vectors"] = [os.path.relpath(v, folder) for v in self.vectors]
        return d

    @classmethod
    def from_json(cls, folder: Path, d: dict) -> ShardSpec:
        return cls(shard=int(d["shard"]), start=int(d["start"]), rows=int(d["rows"]), kind=d["kind"],
                   path=str(folder / d["path"]), radius_path=str(folder / d["radius_path"]) if d["radius_path"] else None,
                   vectors=tuple(os.path.normpath(folder / v) for v in d.get("vectors", ())))


SHARD_KINDS = ("auto", "flat", "ivf", "ivfpq")


def shard_kind(rows: int, kind: str, pq_above: int = PQ_ABOVE) -> str:
    """The index kind of one shard: ``auto`` is exact up to 50,000 rows, IVF-Flat up to ``pq_above``
    rows, IVF-PQ above (its codes are 1/16 of the float32 vectors at d = 256; exact distances come from
    the store's shards on disk)."""
    if kind not in SHARD_KINDS:
        raise ParameterError(f"index must be one of {', '.join(SHARD_KINDS)}, got {kind!r}")
    if kind == "auto":
        return "flat" if rows <= EXACT_UP_TO else ("ivf" if rows <= pq_above else "ivfpq")
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
    """A stored index shard. IVF-Flat lists are copied from the file into a mapped one (in the store's folder
    when it is writable and local, else in TMPDIR) instead of read into memory, as ``build_index`` does with
    ``storage="disk"``."""
    if spec.kind == "ivf" and MAPS_PAGES:
        radius = np.load(spec.radius_path, allow_pickle=False)
        index = map_file(spec.path)
        pages, members = to_mapped(index, local_or_none(Path(spec.path).parent), source_mapped=True)
        return SearchIndex(index=index, kind="ivf", metric=metric, list_radius=radius, pages=pages,
                           _members=members)
    index = faiss.read_index(spec.path)
    radius = None
    if spec.kind == "ivfpq":
        return PQShard(index=index, kind="ivfpq", metric=metric, list_radius=np.load(spec.radius_path),
                       stored=StoredRows(spec.vectors))
    if spec.kind == "ivf":
        radius = np.load(spec.radius_path, allow_pickle=False)
        faiss.extract_index_ivf(index).make_direct_map()
    return SearchIndex(index=index, kind=spec.kind, metric=metric, list_radius=radius)


def build_shard(source, spec: ShardSpec, metric: str, seed: int = 0) -> dict:
    """Build one index shard from ``source`` (its rows only) and write it atomically; returns its json."""
    from tsds.store.pool import _atomic_json, _atomic_npy, atomic_write_index
    from tsds.store.verify import file_record, seal

    if spec.kind == "ivfpq":
        built = build_ivfpq(source, metric=metric, seed=seed + spec.shard)
    else:
        built = build_index(source, metric=metric, kind=spec.kind, seed=seed + spec.shard, storage="memory")
    atomic_write_index(Path(spec.path), built.index)
    files = {"faiss": file_record(Path(spec.path)), "radius": None}
    if built.list_radius is not None:
        _atomic_npy(Path(spec.radius_path), built.list_radius)
        files["radius"] = file_record(Path(spec.radius_path))
    meta = seal({**spec.to_json(), "metric": metric, "files": files})
    _atomic_json(Path(spec.path).with_suffix(".json"), meta)
    return meta


def _pq_shape(d: int, n: int) -> tuple[int, int]:
    """(sub-quantizers, bits each) for IVF-PQ codes: up to 64 bytes a row, 8 bits when there is data to train."""
    m = max(k for k in range(1, max(1, min(64, d // 2)) + 1) if d % k == 0)
    return m, int(min(8, max(1, math.floor(math.log2(max(2, n / 39))))))   # FAISS wants 39 points a centroid


def build_ivfpq(source, *, metric: str = "euclidean", nlist: int | None = None, seed: int = 0) -> SearchIndex:
    """IVF-PQ over ``source`` (2 sqrt(N) lists, the count its recall was measured with; IVF-Flat has sqrt(N)),
    with each list's radius measured on the exact vectors, so range searches can prune lists exactly; the codes
    only propose search candidates."""
    from tsds.io.arrays import as_source

    src = as_source(source)
    n, d = src.n, src.dim
    nlist = min(nlist or max(1, int(2 * math.sqrt(n))), n)
    m, nbits = _pq_shape(d, n)
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits)
    index.cp.niter = 8
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # the sample is sized on purpose; FAISS would print a warning
    index.pq.cp.min_points_per_centroid = 1
    index.pq.cp.seed = seed
    index.pq.cp.niter = 10           # the codes only propose candidates: a rough codebook is enough
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max(32 * nlist, 40 << nbits)), replace=False))
    index.train(prepare(src.take(sample), metric))
    radius = np.zeros(nlist, dtype=np.float64)
    for start, chunk in src.chunks():
        x = prepare(chunk, metric)
        d2c, a = quantizer.search(x, 1)
        np.maximum.at(radius, a[:, 0], np.sqrt(np.maximum(d2c[:, 0].astype(np.float64), 0)))
        ids = np.arange(start, start + x.shape[0], dtype=np.int64)
        assign = np.ascontiguousarray(a[:, 0], dtype=np.int64)
        # the lists the radii were measured on, not a second assignment that could differ at a tie
        index.add_core(x.shape[0], faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
    return SearchIndex(index=index, kind="ivfpq", metric=metric, list_radius=radius)


class StoredRows:
    """A shard's float32 rows from .npy files (memory-mapped, read on demand): the exact vectors behind IVF-PQ."""

    def __init__(self, paths):
        self.paths = [str(p) for p in paths]
        self._maps = [np.load(p, mmap_mode="r", allow_pickle=False) for p in self.paths]
        self.starts = np.cumsum([0] + [mm.shape[0] for mm in self._maps])
        self.n = int(self.starts[-1])

    def take(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((ids.size, self._maps[0].shape[1]), dtype=np.float32)
        order = np.argsort(ids, kind="stable")
        which = np.searchsorted(self.starts, ids[order], side="right") - 1
        for f in np.unique(which):
            sel = order[which == f]
            out[sel] = self._maps[f][ids[sel] - self.starts[f]]
        return out

    def chunks(self):
        for start, mm in zip(self.starts, self._maps):
            yield int(start), np.asarray(mm, dtype=np.float32)


class PQShard(SearchIndex):
    """An IVF-PQ shard whose answers carry exact distances.

    Search takes candidates from the PQ codes and re-ranks them with float64 distances to the stored
    float32 vectors; ``exact_search`` scans the stored vectors. Its breadth ``nprobe`` runs past the
    IVF's list count: up to ``nlist`` it is the lists probed (with ``RERANK x k`` candidates), beyond it
    every list is probed and the candidates grow to ``RERANK x k x nprobe / nlist``, so that recall
    calibration (which doubles the breadth up to ``self.nlist``) can always reach its target, at worst
    by re-ranking the whole shard, even where the codes misorder close neighbours.
    ``reconstruct`` returns the stored vectors (not the PQ approximation), and range searches use the IVF
    lists only to prune (tsds.retrieval.sharded._exact_range), so densities stay exact.
    """

    def __init__(self, *, stored: StoredRows, **kw):
        super().__init__(**kw)
        self.stored = stored
        self._breadth = 1
        self.list_starts, self.list_ids = list_members(faiss.extract_index_ivf(self.index))

    @property
    def lists(self) -> int:
        return int(faiss.extract_index_ivf(self.index).nlist)

    @property
    def nlist(self) -> int:
        """The largest useful breadth: every list probed and every row a candidate."""
        return self.lists * max(1, math.ceil(self.ntotal / RERANK))

    @property
    def nprobe(self) -> int:
        return self._breadth

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._breadth = max(1, int(value))
        faiss.extract_index_ivf(self.index).nprobe = min(self._breadth, self.lists)

    def reconstruct(self, ids) -> np.ndarray:
        return prepare(self.stored.take(ids), self.metric)

    def search(self, queries, k):
        k = min(int(k), self.available)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        widen = max(1, self._breadth // self.lists)
        kk = min(self.available, max(RERANK * k * widen, k + 16))
        _, cand = self.index.search(q, kk, params=self.params())
        d2, ids = self._rerank(q, cand, k)
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:
            d2[short], ids[short] = self._scan(q[short], k)
        return np.sqrt(np.maximum(d2, 0.0)), ids

    def exact_search(self, queries, k):
        k = min(int(k), self.available)
        d2, ids = self._scan(np.ascontiguousarray(queries, dtype=np.float32), k)
        return np.sqrt(np.maximum(d2, 0.0)), ids

    def within_radius(self, vectors, radius):
        if radius <= 0 or len(vectors) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        x = prepare(vectors, self.metric)
        lims, _, labels = _exact_range(self, x, float(radius) ** 2, float(radius), with_labels=True)
        return labels, np.repeat(np.arange(x.shape[0]), np.diff(lims))

    def _rerank(self, q, cand, k):
        """Exact float64 squared distances of each query's candidates; the k nearest by (distance, id)
        (-1 where fewer than k candidates came back)."""
        out_d = np.full((q.shape[0], k), np.inf)
        out_i = np.full((q.shape[0], k), -1, dtype=np.int64)
        step = max(1, (1 << 22) // max(1, cand.shape[1] * q.shape[1]))
        for a in range(0, q.shape[0], step):
            c = cand[a:a + step]
            valid = c >= 0
            uniq, inv = np.unique(np.where(valid, c, 0), return_inverse=True)
            y = self.reconstruct(uniq).astype(np.float64)
            diff = y[inv.reshape(c.shape)] - q[a:a + step, None, :].astype(np.float64)
            d2 = np.where(valid, np.einsum("ijk,ijk->ij", diff, diff), np.inf)
            ids = np.where(valid, c, np.iinfo(np.int64).max)
            order = np.lexsort((ids, d2), axis=1)[:, :k]
            out_d[a:a + step, :order.shape[1]] = np.take_along_axis(d2, order, 1)
            got = np.take_along_axis(ids, order, 1)
            out_i[a:a + step, :order.shape[1]] = np.where(np.isfinite(out_d[a:a + step, :order.shape[1]]), got, -1)
        return out_d, out_i

    def _scan(self, q, k):
        """Exact k nearest over the stored vectors: float64 products find k + 8 per chunk, then the
        survivors' distances are recomputed as sums of squares (the same numbers as a re-ranked search)."""
        want = min(self.ntotal, k + 8)
        qd = q.astype(np.float64)
        qq = np.einsum("ij,ij->i", qd, qd)[:, None]
        best_d = np.full((q.shape[0], 0), np.inf)
        best_i = np.empty((q.shape[0], 0), np.int64)
        for start, chunk in self.stored.chunks():
            for a in range(0, chunk.shape[0], 1 << 15):
                y = prepare(chunk[a:a + (1 << 15)], self.metric).astype(np.float64)
                d2 = qq + np.einsum("ij,ij->i", y, y)[None, :] - 2.0 * qd @ y.T
                ids = np.arange(start + a, start + a + y.shape[0], dtype=np.int64)
                if self.excluded is not None:
                    d2[:, np.isin(ids, self.excluded)] = np.inf
                take = min(want, y.shape[0])
                part = np.argpartition(d2, take - 1, axis=1)[:, :take]
                best_d = np.concatenate([best_d, np.take_along_axis(d2, part, 1)], axis=1)
                best_i = np.concatenate([best_i, ids[part]], axis=1)
                if best_d.shape[1] > 4 * want:
                    keep = np.argpartition(best_d, want - 1, axis=1)[:, :want]
                    best_d, best_i = np.take_along_axis(best_d, keep, 1), np.take_along_axis(best_i, keep, 1)
        best_i = np.where(np.isfinite(best_d), best_i, -1)
        return self._rerank(q, best_i, k)

    def members(self, x, radius2, sigma):
        """(lims, exact squared distances, labels, lists scanned) of the rows within the radius of each
        point of ``x``: lists pruned by the triangle inequality on their exact radii, members' distances
        computed from the stored vectors (float64 products to find them, then sums of squares)."""
        ivf = faiss.extract_index_ivf(self.index)
        centroid_d2, lists = ivf.quantizer.search(x, ivf.nlist)
        reach = np.sqrt(np.maximum(centroid_d2.astype(np.float64), 0)) - self.list_radius[lists]
        keep = reach <= sigma * (1 + 1e-5) + 1e-6
        pts, cols = np.nonzero(keep)
        lst = lists[pts, cols]
        order = np.argsort(lst, kind="stable")
        pts, lst = pts[order], lst[order]
        bounds = np.flatnonzero(np.diff(lst)) + 1
        xd = x.astype(np.float64)
        found_p, found_i, found_d = [], [], []
        for group in np.split(np.arange(lst.size), bounds) if lst.size else []:
            j = int(lst[group[0]])
            ids = self.list_ids[self.list_starts[j]:self.list_starts[j + 1]]
            if ids.size == 0:
                continue
            p = pts[group]
            y = self.reconstruct(ids).astype(np.float64)
            d2 = np.einsum("ij,ij->i", xd[p], xd[p])[:, None] + np.einsum("ij,ij->i", y, y)[None, :] \
                - 2.0 * xd[p] @ y.T
            r, c = np.nonzero(d2 < radius2 * (1 + 1e-9) + 1e-12)
            exact = np.sum((y[c] - xd[p[r]]) ** 2, axis=1)
            inside = exact < radius2
            found_p.append(p[r[inside]])
            found_i.append(ids[c[inside]])
            found_d.append(exact[inside])
        p = np.concatenate(found_p) if found_p else np.empty(0, np.int64)
        ids = np.concatenate(found_i) if found_i else np.empty(0, np.int64)
        d2 = np.concatenate(found_d) if found_d else np.empty(0)
        if self.excluded is not None and ids.size:
            ok = ~np.isin(ids, self.excluded)
            p, ids, d2 = p[ok], ids[ok], d2[ok]
        order = np.lexsort((ids, p))
        lims = np.concatenate([[0], np.cumsum(np.bincount(p, minlength=x.shape[0]))]).astype(np.int64)
        return lims, d2[order], ids[order], float(keep.sum())


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
            idx.nprobe = int(nprobe)
        return idx

    def nlist(self, shards) -> list[int]:
        return [self._get(s).nlist for s in shards]

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

    The members are found by FAISS (flat shards) or by the bounds and sieve of tsds.retrieval.density
    (IVF-Flat shards: a superset of the pairs within sigma); their squared distances are then recomputed
    exactly, so a density does not depend on which float32 kernel found them (BLAS or direct, which varies
    with batch size and threads): the same point gets the same density whichever engine, process or shard
    layout computes it.
    """
    if isinstance(idx, PQShard):        # members and distances from the stored vectors, already exact
        lims, d2, labels, scanned = idx.members(x, radius2, sigma)
        return (lims, d2, labels) if with_labels else (lims, d2, scanned)
    if idx.list_radius is None:
        lims, _, labels = idx.index.range_search(x, radius2)
        scanned = 0.0
    else:  # IVF-Flat: the lists and pairs that can hold a member within sigma, as for single indexes
        lims, labels, scanned = candidates_within(idx, x, sigma)
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
        self.kind = "flat" if kinds == {"flat"} else ("ivfpq" if "ivfpq" in kinds else "ivf")
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
    from tsds.store.verify import read_sealed

    path = folder / "index.json"
    return read_sealed(path) if path.is_file() else None


def default_shards(n_rows: int, workers: int, max_rows: int = 2_000_000) -> int:
    """Index shards for a pool: at least one per worker, at most ``max_rows`` rows each."""
    return max(1, int(workers), math.ceil(n_rows / max_rows))
