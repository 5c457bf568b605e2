"""IVF-PQ shards: candidates from the PQ codes, every distance exact from the stored float32 rows."""

from __future__ import annotations

import math

import faiss
import numpy as np

from tsds.retrieval.index import SearchIndex, prepare
from tsds.retrieval.ivf import list_members


RERANK = 4               # an IVF-PQ search fetches RERANK x k candidates, re-ranked with exact distances


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
    lists only to prune (`members`), so densities stay exact.
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
        lims, _, labels, _ = self.members(x, float(radius) ** 2, float(radius))
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
