"""Searches served from one longer search, for a caller that grows k: exact (flat) indexes, and IVF-Flat
indexes where their list scan searches (k from 256 on).

A selection doubles its neighbour lists' length until no query's allocation reaches the end of its list.
On a flat index each search costs a pass over every stored vector plus the selection of the k nearest,
so the doubling rounds repeat the pass. A flat search (tsds.retrieval.scan.flat_top) orders each list by
(distance, id), ties broken by id, and a pair's distance does not depend on k: the k nearest are then
exactly the first k of any longer list, bit for bit. So a search ``ahead`` of what is needed now serves the
next rounds from its prefix. The order is checked on the result (FAISS's search, which serves fewer than 20
queries, is not reused where a list is not in that order), and the saved lists are dropped when the queries
or the excluded candidates change.

An IVF index's list scan (tsds.retrieval.scan) has the same property at one search breadth: each list's
distances do not depend on k, and each row is the k nearest of the probed lists by (distance, id), (inf,
-1) where they run out; a prefix's rows that run out are searched again exactly, as ``search`` does. The
breadth is saved with the lists (calibration may raise it from one round to the next). At 200k x 384
(nprobe 32) the rounds 256 .. 2,048 then cost one search of 2,048 instead of four: the rounds 64 .. 8,192
took 1.95-2.26 s instead of 2.38-3.40 s (in one process, alternating, four each), at 1M (rounds up to
32,768) 17.8-20.5 s instead of 20.0-24.6 s.
"""

from __future__ import annotations

import numpy as np

from tsds.retrieval.scan import _SCAN_FROM_K, finish, flat_top, scan_lists

AHEAD = 8  # an IVF index's list scan searches this many times the k asked for, once a selection has grown
# k. A search costs about a + b k (a: the pass over the probed lists, b k: the selection of the k nearest).
# Measured on 50k x 256, M = 500 with FAISS's flat search (docs/benchmarks.md): against twice ahead, 8x cut
# the neighbours stage from 0.9-1.1 to 0.65-0.70 s where K grew to 8,192, from 0.26-0.28 to 0.20 s where it
# stopped at 1,024, and cost 0.03 s more (0.16 -> 0.19 s) where it stopped at 128.
FLAT_AHEAD = 1 << 40  # a flat search goes as far ahead as the memory bound below allows: its cost is the
# pass over every stored vector at any k (tsds.retrieval.scan.flat_top, 50k x 256, M = 500: k = 512 0.37 s,
# k = 8,192 0.41-0.55 s), so one search from the first round serves every round up to the bound (at 50k,
# 8,533: the rounds 64 .. 8,192; neighbours stage 1.19-1.27 -> 0.61-0.69 s, against two searches, 512 then
# 8,192). A selection that stops at a small K pays the pass's difference (0.37 s at k 512 against 0.45 s).
_MAX_BYTES = 512 << 20  # the longer search's lists (float32 distances, int64 ids) never exceed this, nor the size of
# the stored vectors (below _MIN_BYTES, no bound): a search ahead must not become the selection's peak
# memory (50k x 256, M = 500: the last round's 16,384-long lists were 98 MB next to a 51 MB matrix)
_MIN_BYTES = 16 << 20
_SCAN_BYTES = 16 << 20  # an IVF index's longer lists: they would sit next to the rounds they serve, and the
# pool's vectors are mapped, so any larger bound decides the peak (200k x 384, M = 500: 64 MB let rounds
# 4,096 and 8,192 share 11,184-long lists and raised the peak from 404-418 to 447-482 MiB); this one serves
# the rounds up to 2,048 from one search and leaves the long ones to their own


def _ordered(d2: np.ndarray, ids: np.ndarray) -> bool:
    """Whether every row is in increasing (distance, id) order, with no missing (-1) entry."""
    if ids.size and int(ids.min()) < 0:
        return False
    if d2.shape[1] < 2:
        return True
    a, b = d2[:, :-1], d2[:, 1:]
    return bool(((b > a) | ((b == a) & (ids[:, 1:] > ids[:, :-1]))).all())


def search_ahead(index, queries: np.ndarray, k: int, grow: bool = False):
    """``index.search(queries, k)`` in the solver's layout: (distances float64, ids narrowed as
    ``narrow_ids`` does), both column-major, so that the first k columns are one block (the solver reads
    the lists column by column; a row-major M x K read that way cost a third of the solve stage at 50k x 256).
    With ``grow``, on an exact index or an IVF-Flat index searched by its list scan, the search is made for
    ``FLAT_AHEAD`` or ``AHEAD`` x k neighbours (within memory bounds) and later calls with the same queries,
    breadth and k up to that are answered from its prefix, a view of the saved lists."""
    k = min(int(k), index.available)
    n = index.ntotal
    if not hasattr(index, "_prefix"):  # a sharded index: its merged lists, laid out again
        D, ids = index.search(queries, k)
        return np.asfortranarray(D), column_ids(ids, n)
    if not _saves(index, k):
        return _searched(index, queries, k)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    wide = search_width(index, q, k, grow)
    if wide == 0:
        saved = index._prefix
        if 2 * k > saved[0].shape[1]:  # the next doubling cannot be served: free them for the caller's round
            index._prefix = None
        # the saved lists' prefix: read-only views (no copy), unless rows that ran out are searched again
        return index.complete_finished(q, saved[0][:, :k], saved[1][:, :k])
    index._prefix = None
    if wide == k:
        return _searched(index, q, k)
    if index.exact:
        d2, ids = flat_top(index, q, wide)  # rows in (distance, id) order (FAISS's search for few queries: checked)
        if not _ordered(d2, ids):
            return _searched(index, q, k)
    else:
        d2, ids = scan_lists(index, q, wide, index.nprobe)  # rows in (distance, id) order, (inf, -1) where lists end
    # distances finished once (Euclidean, float64, column-major: every round's prefix is a block of columns),
    # not again for each round it serves (at 50k x 256 the rounds 64 .. 8,192 made 16,320 columns of copies)
    dist, ids = finish(d2, column_ids(ids, n), order="F")
    d2 = None
    for lists in (dist, ids):
        lists.flags.writeable = False  # served as views: a caller's write must not reach the next round's lists
    index._prefix = (dist, ids, index.excluded, q.copy(), None if index.exact else index.nprobe)
    return index.complete_finished(q, dist[:, :k], ids[:, :k])


def search_width(index, queries: np.ndarray, k: int, grow: bool = False) -> int:
    """How many neighbours ``search_ahead(index, queries, k, grow)`` would search for at the index's present
    breadth: 0 when it serves them from its saved lists, k for a direct search, more for a search ahead."""
    k = min(int(k), index.available)
    if not hasattr(index, "_prefix") or not _saves(index, k):
        return k
    exact = index.exact
    q = np.ascontiguousarray(queries, dtype=np.float32)
    saved = index._prefix
    if saved is not None and saved[2] is index.excluded and saved[4] == (None if exact else index.nprobe) \
            and saved[0].shape[1] >= k and saved[3].shape == q.shape and np.array_equal(saved[3], q):
        return 0
    wide = min(index.available, max(k, int((FLAT_AHEAD if exact else AHEAD) * k if grow else k)))
    cap = min(_MAX_BYTES, max(_MIN_BYTES, 4 * index.ntotal * index.dim)) if exact else _SCAN_BYTES
    if wide > k and q.shape[0] * wide * 12 > cap:
        wide = max(k, cap // (12 * max(1, q.shape[0])))
    return wide


def _saves(index, k: int) -> bool:
    """Whether a search of ``index`` for k neighbours can be saved and served from: an exact index, or an
    IVF-Flat one searched by its list scan."""
    return bool(getattr(index, "exact", False) or (index._scans_lists and k >= _SCAN_FROM_K))


def neighbour_round(index, queries: np.ndarray, k: int, *, target: float, seed: int = 0):
    """One round of a selection that grows k: (distances, ids) as ``search_ahead(..., grow=True)`` gives them,
    and the recall@k of the breadth searched (1.0 on an exact index).

    On an IVF index the breadth is first calibrated for recall@k (tsds.retrieval.recall.calibrate). When the
    round then starts a search ahead, whose saved lists are to serve the next rounds too, it is calibrated for
    the longest of them as well: calibrating round by round raised it on the way (200k x 384: nprobe 2, 8, 16,
    32 at k 256, 512, 1,024, 2,048), and a saved search serves only its own breadth, so each of those rounds
    searched again. The rounds it serves then read lists searched wider than their own k needs.
    """
    if index.exact:
        return (*search_ahead(index, queries, k, grow=True), 1.0)
    recall = index.calibrate(queries, k, target=target, seed=seed)
    wide = search_width(index, queries, k, grow=True)
    if wide > k:
        index.calibrate(queries, wide, target=target, seed=seed)
        recall = index.calibrate(queries, k, target=target, seed=seed)  # the round's own k, at the breadth searched
    return (*search_ahead(index, queries, k, grow=True), recall)


def _searched(index, q: np.ndarray, k: int):
    """A direct search in ``search_ahead``'s layout."""
    D, ids = index.search(q, k, order="F")
    return D, column_ids(ids, index.ntotal)


def narrow_ids(ids: np.ndarray, n: int) -> np.ndarray:
    """Neighbour ids as int32 when the pool has fewer than 2^31 rows: M x K lists kept through a selection's
    rounds are its largest arrays after the index (500 x 8,192 on the 200k benchmark), and this halves the
    ids' (a search ahead's saved lists too: 33 MB of int64 ids at 50k x 256, 8,192 long)."""
    return ids.astype(np.int32) if n < 2**31 else ids


def column_ids(ids: np.ndarray, n: int) -> np.ndarray:
    """``narrow_ids`` laid out column-major (one pass; no copy when they already are)."""
    return np.asarray(ids, dtype=np.int32 if n < 2**31 else ids.dtype, order="F")
