"""ShardedIndex: several shards searched as one index, lists merged by (distance, id), densities summed over shards."""

from __future__ import annotations

import numpy as np

from tsds.retrieval.density import DEFAULT_CAP, DensityStats, PointSums, batched_densities
from tsds.retrieval.index import calibrate, prepare
from tsds.retrieval.sharded.specs import ShardSpec
from tsds.retrieval.sharded.worker import LocalShards


_RESULT_BUDGET = 1 << 25


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
        self._truth_cache: tuple | None = None  # the exact lists of `calibrate` (tsds.retrieval.recall._truth)

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
            ids, sigma, PointSums(self.reconstruct, sums_and_counts, capped_sums, cap),
            batch=max(64, min(4096, _RESULT_BUDGET // max(1, int(self.rows.max())))),
            stats=stats, progress=progress, return_counts=return_counts)

    def within_radius(self, vectors: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """(pool rows, the vector each is within ``radius`` of) over every shard, exact (decontamination).

        Same result as SearchIndex.within_radius on a single index.
        """
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
