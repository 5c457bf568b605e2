"""Recall of approximate neighbour lists against exact ones, and the calibration of an IVF search's breadth
that raises it."""

from __future__ import annotations

import hashlib

import faiss
import numpy as np

from tsds.retrieval.ivf import list_sizes
from tsds.retrieval.prefix import narrow_ids
from tsds.retrieval.scan import _SCAN_FROM_K, exact_top

_MARKER_MAX = 1 << 26


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours found, row by row (ids are distinct within a row; -1 is never a hit)."""
    if truth.size == 0:
        return 1.0
    top = int(max(found.max(initial=0), truth.max(initial=0))) + 1
    if top > _MARKER_MAX:
        return sum(np.intersect1d(f[f >= 0], t).size for f, t in zip(found, truth)) / truth.size
    marker = np.zeros(top, dtype=bool)  # a row's true ids marked in a table: no sort per row
    hits = 0
    for f, t in zip(found, truth):
        marker[t] = True
        hits += int(np.count_nonzero(marker[f[f >= 0]]))
        marker[t] = False
    return hits / truth.size


def recall_by_lists(index, queries: np.ndarray, truth: np.ndarray):
    """recall@k of an IVF-Flat search as a function of its breadth, read off the lists that hold the exact
    neighbours ``truth`` (queries x k), or None where that does not apply (flat, PQ or sharded indexes).

    A search of ``nprobe`` lists returns the k nearest (by distance, then id) of their members, exact
    float32 distances: every true neighbour in those lists is among them, and no other candidate is one. So
    its recall is the share of true neighbours whose list is one of the query's ``nprobe`` nearest by
    centroid; a row whose lists hold fewer than k candidates is searched again exactly (recall 1), as
    ``SearchIndex.search`` does. One ranking of the lists per query instead of a search per breadth.
    """
    if not getattr(index, "_scans_lists", False) or truth.size == 0:
        return None
    lists = index.lists_of(truth.ravel())
    if lists is None:
        return None
    ivf = faiss.extract_index_ivf(index.index)
    m, nlist = truth.shape[0], ivf.nlist
    _, order = ivf.quantizer.search(np.ascontiguousarray(queries, dtype=np.float32), nlist)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(nlist), order.shape), axis=1)
    truth_rank = np.take_along_axis(rank, lists.reshape(truth.shape).astype(np.int64), axis=1)
    sizes = list_sizes(ivf)
    if index.excluded is not None and index.excluded.size:
        sizes = sizes - np.bincount(index.lists_of(index.excluded), minlength=nlist)
    reach = np.cumsum(sizes[order], axis=1)  # candidates in each query's r + 1 nearest lists
    k = truth.shape[1]

    def recall(nprobe: int) -> float:
        p = max(1, min(int(nprobe), nlist))
        found = np.where(reach[:, p - 1] < k, k, np.count_nonzero(truth_rank < p, axis=1))
        return float(found.sum()) / truth.size

    def short(nprobe: int) -> float:
        """Share of the queries whose ``nprobe`` lists hold fewer than k candidates: searched again over
        every list, they count as found, but each costs a pass over the whole pool."""
        p = max(1, min(int(nprobe), nlist))
        return float(np.count_nonzero(reach[:, p - 1] < k)) / m

    recall.short = short
    return recall


SHORT_ROWS = 0.1  # calibration also widens the search until at most this share of the sample's queries
# run out of candidates in their lists: such a row is searched again over every list (exact, so it counts as
# found), and at a large first k (--initial-k 8,192 at 200k x 384) one list per query made every row one


def calibrate(index, queries: np.ndarray, k: int, *, target: float = 0.95, sample: int = 64,
              seed: int = 0) -> float:
    """Raise the IVF search breadth until recall@k against exact search on a query sample reaches target
    (and, on an IVF-Flat index, until at most ``SHORT_ROWS`` of the sample runs out of candidates).

    Works for any index with ``exact``, ``available``, ``nlist``, a settable ``nprobe``, ``search`` and
    ``exact_search`` (a SearchIndex, or a ShardedIndex whose shards share one nprobe). Returns the
    measured recall (1.0 for exact indexes) and records it on the index. On an IVF-Flat index the recall
    at each breadth is read off the lists holding the exact neighbours (``recall_by_lists``: the number a
    search would measure) instead of searching.
    """
    if index.exact:
        index.recall = 1.0
        return 1.0
    nlist = index.nlist
    k = min(int(k), index.available)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.shape[0] > sample:
        q = q[np.random.default_rng(seed).choice(q.shape[0], sample, replace=False)]
    truth = _truth(index, q, k)
    by_lists = recall_by_lists(index, q, truth)
    nprobe = max(1, index.nprobe)
    while True:
        index.nprobe = nprobe
        recall = by_lists(nprobe) if by_lists is not None else _recall(index.search(q, k)[1], truth)
        short = by_lists.short(nprobe) if by_lists is not None else 0.0
        if (recall >= target and short <= SHORT_ROWS) or nprobe >= nlist:
            break
        nprobe = min(nlist, nprobe * 2)
    index.recall = recall
    index.calibration = {"nprobe": int(nprobe), "nlist": int(nlist), "k": int(k), "sample": int(q.shape[0]),
                         "recall": float(recall), "target": float(target), "short": float(short)}
    return recall


# The exact lists are computed at least this long, so that the next rounds of a growing K read prefixes of
# them: the cost is the scan of every list, which hardly depends on k (64 queries at 200k: 0.19 s for
# k = 512, 0.21 s for k = 16,384; in the seventh session at 200k 0.31-0.34 s for 16,384, 0.36-0.37 s for
# 32,768; at 1M 2.29-2.36 s, 2.34-2.39 s, and 2.52 s for 65,536). At 1M K grows to 32,768, so 16,384 made
# the scan twice (4.8 s of its neighbours stage); once K passes the lists, they are remade 2x ahead.
_TRUTH_AHEAD = 32_768
_TRUTH_GROWTH = 2  # not more: the scan holds 64 x (this x K) distances and ids, 100 MB at K 65,536


def _truth(index, q: np.ndarray, k: int) -> np.ndarray:
    """The exact k nearest of each sample query, as the first k of longer exact lists kept on the index.

    K grows by doubling and calibration runs at every K, always on the same query sample: computing the
    exact lists once for several rounds ahead saves a pass over the whole pool per round. The cache is keyed
    by the sample and the excluded candidates. Ties at the k-th distance are broken by id, which can only
    lower the measured recall."""
    key = (hashlib.sha256(q.tobytes()).hexdigest(), q.shape,
           None if index.excluded is None else hashlib.sha256(index.excluded.tobytes()).hexdigest())
    cached = index._truth_cache
    if cached is not None and cached[0] == key and cached[1].shape[1] >= k:
        return cached[1][:, :k]
    again = cached is not None and cached[0] == key  # K passed the lists kept for this sample
    ahead = min(index.available, max(k, _TRUTH_AHEAD, _TRUTH_GROWTH * k if again else 0))
    if hasattr(index, "_search_all"):  # a SearchIndex scans its own lists; a sharded one merges its shards'
        d2, ids = exact_top(index, q, ahead)
        if not (index._scans_lists and ahead >= _SCAN_FROM_K):  # the scan's rows are in this order already
            ids = np.take_along_axis(ids, np.lexsort((ids, d2), axis=1), 1)  # by distance, ties by id
    else:
        ids = index.exact_search(q, ahead)[1]
    ids = narrow_ids(ids, index.ntotal)  # kept through every round: half the memory
    index._truth_cache = (key, ids)
    return ids[:, :k]
