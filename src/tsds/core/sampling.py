"""Drawing the selection from the distribution p, seeded and reproducible."""

from __future__ import annotations

import numpy as np

from tsds.errors import ParameterError


def _check(p, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ParameterError(f"probabilities must be a non-empty vector, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ParameterError("probabilities must be finite and non-negative")
    if int(n) != n or n < 1:
        raise ParameterError(f"size must be a positive integer, got {n}")
    total = p.sum()
    if total <= 0:
        raise ParameterError("probabilities sum to zero")
    return p / total


def draw_with_replacement(p, n: int, seed: int) -> np.ndarray:
    """The paper's draw: n independent draws from p.

    Parameters
    ----------
    p : array_like of shape (N,)
        Non-negative weights (normalised here).
    n : int
        Number of draws.
    seed : int
        Seed of numpy's default generator: the same seed gives the same draw.

    Returns
    -------
    ndarray of shape (N,)
        The count drawn per candidate (int64, sums to n).

    Examples
    --------
    >>> from tsds.core import draw_with_replacement
    >>> c = draw_with_replacement([0.5, 0.5, 0.0], 10, seed=0)
    >>> int(c.sum()), int(c[2])
    (10, 0)
    """
    p = _check(p, n)
    return np.random.default_rng(seed).multinomial(int(n), p)


def draw_without_replacement(p, n: int, seed: int) -> np.ndarray:
    """n distinct candidates, drawn one after another in proportion to p (Gumbel top-k).

    Parameters
    ----------
    p : array_like of shape (N,)
        Non-negative weights (normalised here); at least n must be positive.
    n : int
        Number of distinct candidates.
    seed : int
        Seed of numpy's default generator.

    Returns
    -------
    ndarray of shape (N,)
        A 0/1 count per candidate (int64, sums to n). Raises ParameterError when fewer than n candidates
        have p > 0.

    Examples
    --------
    >>> from tsds.core import draw_without_replacement
    >>> draw_without_replacement([0.2, 0.3, 0.5, 0.0], 3, seed=0).tolist()
    [1, 1, 1, 0]
    """
    p = _check(p, n)
    positive = np.flatnonzero(p > 0)
    if positive.size < n:
        raise ParameterError(
            f"size {n} is larger than the {positive.size} candidates with positive probability; "
            "lower --size, draw with replacement, or widen the support (smaller alpha)"
        )
    gumbel = np.random.default_rng(seed).gumbel(size=positive.size)
    keys = np.log(p[positive]) + gumbel
    chosen = positive[np.argpartition(-keys, n - 1)[:n]]
    counts = np.zeros(p.size, dtype=np.int64)
    counts[chosen] = 1
    return counts


def counts_to_indices(counts) -> np.ndarray:
    """Expand per-candidate counts into the sorted list of drawn indices (repeats kept).

    Parameters
    ----------
    counts : array_like of shape (N,)
        Draws per candidate.

    Returns
    -------
    ndarray of shape (sum(counts),)
        Candidate indices, int64, ascending.

    Examples
    --------
    >>> from tsds.core.sampling import counts_to_indices
    >>> counts_to_indices([0, 2, 1]).tolist()
    [1, 1, 2]
    """
    counts = np.asarray(counts)
    return np.repeat(np.arange(counts.size, dtype=np.int64), counts)


def inclusion_probabilities(p, n: int) -> np.ndarray:
    """The inclusion probabilities of n distinct draws in proportion to p: pi = n p, where a candidate whose
    pi would exceed 1 is taken for sure (pi = 1) and the rest of the budget is spread over the others in
    proportion to p again, until no pi exceeds 1. Sums to n. Raises ParameterError when fewer than n
    candidates have p > 0."""
    p = _check(p, n)
    positive = p > 0
    if np.count_nonzero(positive) < n:
        raise ParameterError(
            f"size {n} is larger than the {np.count_nonzero(positive)} candidates with positive probability; "
            "lower --size, draw with replacement, or widen the support (smaller alpha)"
        )
    certain = np.zeros(p.size, dtype=bool)
    while True:
        rest = positive & ~certain
        budget = n - np.count_nonzero(certain)
        pi = np.zeros(p.size)
        pi[certain] = 1.0
        if budget > 0:
            pi[rest] = budget * p[rest] / p[rest].sum()
        over = rest & (pi >= 1.0 - 1e-12)
        if not over.any():
            return pi
        certain |= over


def draw_systematic(p, n: int, seed: int, order=None) -> np.ndarray:
    """n distinct candidates by systematic (dependent) rounding of the inclusion probabilities n p.

    Every candidate is included with probability exactly ``inclusion_probabilities(p, n)`` (n p where that
    is at most 1): those with n p >= 1 always, the others by one uniform offset u laid over their
    probabilities placed end to end (in ``order``, default index order), so that exactly one candidate is
    taken per unit of mass. Unlike n independent draws, a support of about 2n candidates with nearly flat p
    then yields a spread-out selection instead of a random half of it.

    Parameters
    ----------
    p : array_like of shape (N,)
        Non-negative weights (normalised here); at least n must be positive.
    n : int
        Number of distinct candidates.
    seed : int
        Seed of numpy's default generator (the offset u).
    order : array_like of int, optional
        A permutation of range(N): the order in which candidates are laid end to end.

    Returns
    -------
    ndarray of shape (N,)
        A 0/1 count per candidate (int64, sums to n).

    Examples
    --------
    >>> from tsds.core.sampling import draw_systematic
    >>> draw_systematic([0.5, 0.25, 0.25, 0.0], 2, seed=0).tolist()[0]
    1
    """
    pi = inclusion_probabilities(p, n)
    counts = np.zeros(pi.size, dtype=np.int64)
    certain = pi >= 1.0
    counts[certain] = 1
    m = int(n - np.count_nonzero(certain))
    if m == 0:
        return counts
    order = np.arange(pi.size) if order is None else np.asarray(order, dtype=np.int64)
    if order.shape != (pi.size,) or not np.array_equal(np.sort(order), np.arange(pi.size)):
        raise ParameterError("order must be a permutation of the candidates")
    rest = order[(pi[order] > 0) & ~certain[order]]
    w = pi[rest]
    edges = np.concatenate([[0.0], np.cumsum(w)])
    edges *= m / edges[-1]  # exactly m units of mass (rounding of the sum)
    u = np.random.default_rng(seed).uniform()
    # candidate k is taken when a point u + j (j = 0..m-1) falls in [edges[k], edges[k+1])
    hits = np.floor(edges[1:] - u) - np.floor(edges[:-1] - u)
    taken = rest[hits > 0]
    counts[taken] = 1
    return counts


def draw_one_per_cluster(p, n: int, seed: int, clusters) -> np.ndarray:
    """n distinct candidates drawn in proportion to p (Gumbel top-k order), at most one per near-duplicate
    cluster while distinct clusters last; then the remaining candidates in the same order (never fewer than
    n). ``clusters``: a cluster label per candidate (equal labels = near-duplicates)."""
    p = _check(p, n)
    clusters = np.asarray(clusters)
    if clusters.shape != p.shape:
        raise ParameterError("clusters must give one label per candidate")
    positive = np.flatnonzero(p > 0)
    if positive.size < n:
        raise ParameterError(
            f"size {n} is larger than the {positive.size} candidates with positive probability; "
            "lower --size, draw with replacement, or widen the support (smaller alpha)"
        )
    keys = np.log(p[positive]) + np.random.default_rng(seed).gumbel(size=positive.size)
    ranked = positive[np.argsort(-keys, kind="stable")]
    _, first = np.unique(clusters[ranked], return_index=True)
    lead = np.zeros(ranked.size, dtype=bool)
    lead[first] = True
    chosen = np.concatenate([ranked[lead], ranked[~lead]])[:n]
    counts = np.zeros(p.size, dtype=np.int64)
    counts[chosen] = 1
    return counts


def near_duplicate_clusters(vectors, radius: float, block: int = 1024) -> np.ndarray:
    """Cluster label per row (the index of its first row): connected components of the graph joining rows
    within ``radius`` (Euclidean) of each other, so a text, its copies and light edits share a label."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    x = np.asarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sq = (x * x).sum(axis=1)
    rows, cols = [], []
    for s in range(0, n, block):
        d2 = sq[s:s + block, None] + sq[None, :] - 2.0 * (x[s:s + block] @ x.T)
        i, j = np.nonzero(d2 < radius * radius)
        rows.append(i + s), cols.append(j)
    r, c = np.concatenate(rows), np.concatenate(cols)
    _, comp = connected_components(coo_matrix((np.ones(r.size), (r, c)), shape=(n, n)), directed=False)
    first = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n))
    return first[comp]


def draw_query_turns(ids, weights, n: int, seed: int, *, n_candidates: int, clusters=None) -> np.ndarray:
    """n distinct candidates taken in turns over the queries of a transport plan: at each turn a query
    takes its nearest candidate of the plan (``weights[j, k] > 0``, lists ordered by distance) not taken
    yet, so every query gets an equal share of distinct rows however many of its rows other queries hold
    too. ``clusters`` (a label per candidate): a cluster already taken is skipped while untaken clusters
    remain in any list; then the skipped rows, in the same turns. The seed only orders the queries within
    a turn. ``ids``, ``weights``: the M x K lists and plan; returns 0/1 counts over ``n_candidates``."""
    ids, weights = np.asarray(ids), np.asarray(weights)
    if ids.shape != weights.shape or ids.ndim != 2:
        raise ParameterError(f"neighbour ids {ids.shape} do not match the plan {weights.shape}")
    lists = [row[(w > 0) & (row >= 0)] for row, w in zip(ids, weights)]
    size = int(n_candidates)
    if any(x.size and int(x.max()) >= size for x in lists):
        raise ParameterError(f"a neighbour id lies outside [0, {size})")
    support = np.unique(np.concatenate(lists)) if lists else np.zeros(0, dtype=np.int64)
    if int(n) != n or n < 1:
        raise ParameterError(f"size must be a positive integer, got {n}")
    if support.size < n:
        raise ParameterError(f"size {n} is larger than the {support.size} candidates with positive probability; "
                             "lower --size, draw with replacement, or widen the support (smaller alpha)")
    rows = [x.tolist() for x in lists]  # plain lists: the turns are a Python loop over single rows
    label = None if clusters is None else dict(zip(support.tolist(), np.asarray(clusters)[support].tolist()))
    order = np.random.default_rng(seed).permutation(len(rows)).tolist()
    taken = bytearray(size)
    chosen: list[int] = []
    for skip_clusters in ((True, False) if label is not None else (False,)):
        seen = {label[c] for c in chosen} if skip_clusters else set()
        pointer = [0] * len(rows)
        live = order
        while live and len(chosen) < n:
            still = []
            for j in live:
                row, k = rows[j], pointer[j]
                while k < len(row) and (taken[row[k]] or (skip_clusters and label[row[k]] in seen)):
                    k += 1
                if k == len(row):
                    continue
                c = row[k]
                taken[c] = 1
                chosen.append(c)
                if skip_clusters:
                    seen.add(label[c])
                pointer[j] = k + 1
                still.append(j)
                if len(chosen) == n:
                    break
            live = still
    counts = np.zeros(size, dtype=np.int64)
    counts[chosen] = 1
    return counts
