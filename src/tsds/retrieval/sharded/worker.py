"""The per-shard work, run where the shards are held: loading a stored shard, search, exact range searches."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from tsds.retrieval.density import candidates_within
from tsds.retrieval.index import SearchIndex
from tsds.retrieval.mapped import MAPS_PAGES, local_or_none, map_file, to_mapped
from tsds.retrieval.sharded.pq import PQShard, StoredRows
from tsds.retrieval.sharded.specs import ShardSpec


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
