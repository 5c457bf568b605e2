"""Exact k-nearest search by BLAS products and partial sorts, over an IVF-Flat index's probed lists or a flat
index's vectors (for the large k of a selection, where FAISS's per-query heap or reservoir is slow)."""

from __future__ import annotations

import faiss
import numpy as np

from tsds.retrieval.base import SearchIndexProtocol
from tsds.retrieval.density_flat import flat_vectors
from tsds.retrieval.ivf import list_sizes, list_vectors
from tsds.retrieval.mapped import PageWindow
from tsds.retrieval.threads import cores, in_threads


_SCAN_FROM_K = 256  # below this FAISS's heap of k is cheap, and its search of few lists faster than a scan
_SCAN_BUDGET = 1 << 23  # candidate distances `scan_lists` holds at once (32 MB); more queries go in turns
_SCAN_LISTS = 8  # lists per distance task of `scan_lists`
_SCAN_QUERIES = 64  # queries per selection task of `scan_lists`


def scan_lists(index: SearchIndexProtocol, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances float32, ids int64) of each query's k nearest members of its ``nprobe`` nearest
    IVF-Flat lists, rows ascending by distance then id; (inf, -1) fills rows whose lists hold fewer.

    FAISS's IVF search keeps a heap of k per query, and with k in the thousands maintaining it costs
    far more than the distances (its issue #4570). Here each probed list is read once and multiplied
    against all the queries that probe it (BLAS, the vectors read in place; tasks of a few lists), then
    each query's k nearest are picked by a partial sort (tasks of a few queries). Reading each list once
    for all queries, rather than once per block of 64 queries, made the scan faster at 200k x 384, 500
    queries, 32 lists each: k = 512 0.19 -> 0.12 s, k = 8192 0.25-0.35 -> 0.17-0.24 s (each product has
    about 36 rows instead of 5, and a mapped index's pages are read back less often). A list's product
    does not depend on which task runs it, so the result does not depend on the thread count; queries go
    in turns only when their distances would exceed ``_SCAN_BUDGET``.
    """
    ivf = faiss.extract_index_ivf(index.index)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    m = q.shape[0]
    nprobe = max(1, min(int(nprobe), ivf.nlist))
    _, probes = ivf.quantizer.search(q, nprobe)
    sizes = list_sizes(ivf)
    out_d = np.full((m, k), np.inf, dtype=np.float32)
    out_i = np.full((m, k), -1, dtype=np.int64)
    if m == 0 or k == 0:
        return out_d, out_i
    lists = _ListNorms.of(index, ivf)
    qn = np.einsum("ij,ij->i", q, q)
    per_query = np.cumsum(sizes[probes].sum(axis=1))
    first = 0
    while first < m:
        before = per_query[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(per_query, before + _SCAN_BUDGET, side="right")))
        _scan_turn(lists, q[first:last], qn[first:last], probes[first:last], sizes, k, index.excluded,
                   (out_d[first:last], out_i[first:last]))
        first = last
    return out_d, out_i


def _scan_turn(lists: _ListNorms, q, qn, probes, sizes, k, excluded, out) -> None:
    """`scan_lists` for the queries of one turn: every probed (query, list) block of distances laid end to
    end per query in one buffer, list by list; then each query's k smallest, whose ids alone are looked up
    into ``out`` = (distances, ids)."""
    out_d, out_i = out
    m, nprobe = probes.shape
    block = sizes[probes]
    ends = np.cumsum(block.ravel()).reshape(m, nprobe)
    starts = ends - block
    d2 = np.empty(int(ends[-1, -1]), dtype=np.float32)
    flat = probes.ravel()
    order = np.argsort(flat, kind="stable")
    groups = [g for g in np.split(order, np.flatnonzero(np.diff(flat[order])) + 1)
              if flat[g[0]] >= 0 and sizes[flat[g[0]]] > 0]

    def distances(task, scratch):
        for group in task:
            y, member, yn = lists.get(int(flat[group[0]]))
            rows, cols = np.divmod(group, nprobe)
            part = np.matmul(q[rows], y.T, out=scratch.array("product", (rows.size, y.shape[0]), np.float32))
            part *= -2.0
            part += qn[rows, None]
            part += yn[None, :]
            np.maximum(part, 0.0, out=part)
            if excluded is not None:
                part[:, np.isin(member, excluded)] = np.inf
            d2[starts[rows, cols][:, None] + np.arange(y.shape[0])] = part

    def select(rows, scratch):
        for r in rows:
            _select(d2, starts[r], ends[r], probes[r], lists, k, out_d[r], out_i[r])

    in_threads([groups[a:a + _SCAN_LISTS] for a in range(0, len(groups), _SCAN_LISTS)], distances)
    # a few queries (calibration's sample of 64) in a task per core: each query's selection is long there
    # (200k x 384, k 32,768: 4 ms), and one task of 64 left a core idle for 0.25 s
    size = max(1, min(_SCAN_QUERIES, -(-m // cores())))
    in_threads([np.arange(a, min(m, a + size)) for a in range(0, m, size)], select)


def _select(d2, starts, ends, probes, lists: _ListNorms, k, out_d, out_i) -> None:
    """One query's k smallest of its distances ``d2[starts[0]:ends[-1]]`` (one block per probed list), by
    distance then id, into ``out_d`` and ``out_i``.

    Query by query: each is one partial sort over thousands of candidates, so the loop's own cost is small,
    while a padded (queries x longest row) matrix partitioned at once measured 20-30% slower (rows differ
    in length by up to 50%, and the argpartition indices are as large as the matrix).
    """
    a, b = starts[0], ends[-1]

    def ids_of(at):
        c = np.searchsorted(ends, a + at, side="right")  # which probed list each position came from
        return lists.ids(probes[c], a + at - starts[c])

    dist, ids = _k_smallest(d2[a:b], k, ids_of)
    out_d[:dist.size] = dist
    out_i[:ids.size] = ids


def _k_smallest(seg: np.ndarray, k: int, ids_of) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest finite values of ``seg`` by value then id (``ids_of(positions)``: the candidates' ids),
    ascending: (values, ids). Ties at the k-th value keep the smallest ids, as exact search does."""
    pick = np.argpartition(seg, k - 1)[:k] if seg.size > k else np.arange(seg.size)
    pick = pick[np.isfinite(seg[pick])]
    ids = ids_of(pick)
    if pick.size and seg.size > k:
        kth = seg[pick].max()
        ties = np.flatnonzero(seg == kth)
        less = pick.size - np.count_nonzero(seg[pick] == kth)
        if less + ties.size > k:  # ties straddle the cut: the smallest ids among them
            tie_ids = ids_of(ties)
            keep = np.argsort(tie_ids, kind="stable")[:k - less]
            below = seg[pick] < kth
            pick = np.concatenate([pick[below], ties[keep]])
            ids = np.concatenate([ids[below], tie_ids[keep]])
    return sorted_by_distance_then_id(seg[pick], ids)


_FLAT_BYTES = 8 << 20  # distances one task of `flat_top` holds (32 queries x 50,000 vectors: 6.4 MB)
_FLAT_QUERIES = 32
_FLAT_FAISS_BELOW = 20  # queries; see flat_top


def flat_top(index: SearchIndexProtocol, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances float32, ids int64) of each query's k nearest stored vectors of a flat index, by
    distance then id, excluded candidates left out; k at most ``index.available``.

    FAISS's flat search keeps a reservoir of about 2k per query and sorts it: on 50k x 256 with 500 queries,
    k = 8,192 took 0.8-1.0 s and about 130 MB of reservoirs. Here each task of 32 queries makes one BLAS
    product with every stored vector and a partial sort per query: 0.41-0.55 s, 6.4 MB per thread (k = 512:
    0.36-0.38 s against FAISS's 0.21-0.22 s). The tasks are fixed blocks of the queries, so a query's
    distances do not depend on k or on the thread count: the k nearest are the first k of any longer list.
    The distances come
    from the product formula |q|^2 + |y|^2 - 2 q.y in float32, as in `scan_lists` (an error of about 1e-7
    (|q|^2 + |y|^2) in a squared distance). Fewer than ``_FLAT_FAISS_BELOW`` queries go to FAISS's search,
    which sums squared differences directly (no cancellation between near vectors): at 50k x 256, 5 queries
    take 0.02-0.03 s either way, while 20 queries take 0.034-0.043 s here and 0.066-0.103 s there, 64 queries
    0.066-0.076 against 0.24-0.33 s (k 64 to 8,192). So do indexes of more than ``_FLAT_BYTES`` / (4 x 32)
    vectors (65,536; a flat index is built up to 50,000 unless asked for): a task of fewer queries reads the
    whole matrix for too few products (200k x 384, 500 queries: 3.2-3.6 s here, 0.9-1.8 s there).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    n, rows = index.ntotal, _FLAT_QUERIES
    if q.shape[0] < _FLAT_FAISS_BELOW or 4 * rows * n > _FLAT_BYTES:
        return index.index.search(q, k, params=index.params())
    y = flat_vectors(index)
    norms = index._flat_norms
    if norms is None or norms.size != n:
        norms = index._flat_norms = np.einsum("ij,ij->i", y, y)
    m = q.shape[0]
    out_d = np.empty((m, k), dtype=np.float32)  # every row filled below: (inf, -1) past a short row's end
    out_i = np.empty((m, k), dtype=np.int64)
    if m == 0 or k == 0:
        return out_d, out_i
    qn = np.einsum("ij,ij->i", q, q)
    excluded = index.excluded[index.excluded < n] if index.excluded is not None else None

    def task(a, scratch):
        g = np.matmul(q[a:a + rows], y.T, out=scratch.array("product", (min(rows, m - a), n), np.float32))
        g *= -2.0
        g += qn[a:a + rows, None]
        g += norms[None, :]
        np.maximum(g, 0.0, out=g)
        if excluded is not None:
            g[:, excluded] = np.inf
        for r in range(g.shape[0]):
            dist, ids = _k_smallest(g[r], k, lambda at: at.astype(np.int64))
            out_d[a + r, :dist.size], out_i[a + r, :ids.size] = dist, ids
            out_d[a + r, dist.size:], out_i[a + r, ids.size:] = np.inf, -1

    in_threads(list(range(0, m, rows)), task)
    return out_d, out_i


class _ListNorms:
    """Squared norms of each IVF list's members (computed once per index, kept on it)."""

    def __init__(self, ivf, members, pages: PageWindow | None = None):
        self.ivf = ivf
        self.members = members
        self.pages = pages
        self.norms: dict[int, np.ndarray] = {}

    @staticmethod
    def of(index: SearchIndexProtocol, ivf) -> _ListNorms:
        cached = index._list_norms
        if cached is None or cached.ivf is not ivf:
            cached = index._list_norms = _ListNorms(ivf, index.members, index.pages)
        return cached

    def ids(self, lst: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Ids of the members at ``position`` in lists ``lst`` (arrays of one shape)."""
        starts, ids = self.members()
        return ids[starts[lst] + position]

    def get(self, lst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y, ids = list_vectors(self.ivf, lst, self.pages)
        norms = self.norms.get(lst)
        if norms is None:
            norms = self.norms[lst] = np.einsum("ij,ij->i", y, y)
        return y, ids, norms


def by_distance_then_id(dist: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The order of non-negative float32 ``dist`` ascending, equal distances by id: one sort of 64-bit
    keys (the distance's bits, then the id, or its rank for ids from 2^32). Equal float32 distances are
    common among thousands of neighbours, and np.lexsort on two keys is several times slower."""
    if ids.size and 0 <= int(ids.min()) and int(ids.max()) < 2**32:
        low = ids.astype(np.uint64)
    else:
        low = np.empty(ids.size, dtype=np.uint64)
        low[np.argsort(ids)] = np.arange(ids.size, dtype=np.uint64)
    return np.argsort(_keys(dist, low))


def _keys(dist: np.ndarray, low: np.ndarray) -> np.ndarray:
    """64-bit keys: the bits of the non-negative float32 ``dist`` (which order as the numbers do), then ``low``."""
    key = dist.astype(np.float32, copy=False).view(np.uint32).astype(np.uint64) << np.uint64(32)
    key |= low
    return key


def exact_top(index: SearchIndexProtocol, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances, ids) of each query's k nearest (not excluded) candidates: the truth that recall
    is measured against (an IVF-Flat index scans every list, see `scan_lists`)."""
    k = min(int(k), index.available)
    return index._search_all(np.ascontiguousarray(queries, dtype=np.float32), k)


def finish(d2: np.ndarray, ids: np.ndarray, order: str = "C") -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances in float64 laid out in ``order``, rows ascending (FAISS's already are; only rows that
    are not get sorted)."""
    dist = np.array(d2, dtype=np.float64, order=order)
    np.sqrt(np.maximum(dist, 0.0, out=dist), out=dist)
    unsorted = np.flatnonzero((dist[:, 1:] < dist[:, :-1]).any(axis=1)) if dist.shape[1] > 1 else []
    if len(unsorted):
        perm = np.argsort(dist[unsorted], axis=1, kind="stable")
        dist[unsorted] = np.take_along_axis(dist[unsorted], perm, 1)
        ids = ids.copy(order="K")
        ids[unsorted] = np.take_along_axis(ids[unsorted], perm, 1)
    return dist, ids


def sorted_by_distance_then_id(dist: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dist, ids) in the order of ``by_distance_then_id``. Where the ids lie in [0, 2^32), the 64-bit keys
    hold both numbers, and sorting the keys themselves is twice as fast as arg-sorting them (8,192 pairs:
    0.19 against 0.38 ms)."""
    if not ids.size or int(ids.min()) < 0 or int(ids.max()) >= 2**32:
        first = by_distance_then_id(dist, ids)
        return dist[first], ids[first]
    key = _keys(dist, ids.astype(np.uint64))
    key.sort()
    low = (key & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return (key >> np.uint64(32)).astype(np.uint32).view(np.float32), low
