"""Recall of approximate neighbour lists against exact ones (the measure IVF calibration raises)."""

from __future__ import annotations

import faiss
import numpy as np

from tsds.retrieval.ivf import list_sizes

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
