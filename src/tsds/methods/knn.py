"""Top-k nearest neighbours of the queries, round-robin so that each query gets its share (RDS-style)."""

from __future__ import annotations

import numpy as np


def round_robin(ids: np.ndarray, n: int) -> tuple[np.ndarray | None, bool]:
    """Walk the queries' ranked lists in turns: query 0 takes its nearest not yet taken, then query 1, ...

    Returns (chosen ids in order, exhausted); chosen is None when some list ran out before n were taken
    (the caller then searches deeper). Padding ids (-1) are skipped.
    """
    m, k = ids.shape
    pointer = np.zeros(m, dtype=np.int64)
    taken: set[int] = set()
    chosen: list[int] = []
    while len(chosen) < n:
        progressed = False
        for j in range(m):
            while pointer[j] < k and (ids[j, pointer[j]] < 0 or int(ids[j, pointer[j]]) in taken):
                pointer[j] += 1
            if pointer[j] >= k:
                return None, True
            c = int(ids[j, pointer[j]])
            taken.add(c)
            chosen.append(c)
            pointer[j] += 1
            progressed = True
            if len(chosen) == n:
                break
        if not progressed:  # pragma: no cover
            return None, True
    return np.asarray(chosen, dtype=np.int64), False


def knn_round_robin(index, q: np.ndarray, n: int) -> np.ndarray:
    """0/1 counts over the pool: n distinct candidates, about n/M nearest (cosine) for each of the M queries."""
    m = q.shape[0]
    available = index.available
    n = min(n, available)
    k = min(available, 2 * (-(-n // m)) + 16)
    while True:
        _, ids = index.search(q, k)
        chosen, short = round_robin(ids, n)
        if chosen is not None:
            break
        if k >= available:  # every list is complete: take what there is
            chosen = np.unique(ids[ids >= 0])[:n]
            break
        k = min(available, 2 * k)
    counts = np.zeros(index.ntotal, dtype=np.int64)
    counts[chosen] = 1
    return counts
