"""Exact closed-form TSDS solver over neighbour lists (see docs/method.md).

Each query j spreads its mass 1/M over its nearest candidates at the common level s:
its L_j nearest get 1 / (M s rho), the next one takes the remainder. The level is the
first breakpoint s = S_j(L) = sum_{k<=L} 1/rho_{j,k} (over all queries together) at which

    alpha * sum_j A_j(L_j) >= (1 - alpha) * C * M,   A_j(L) = sum_{k<=L} (d_{j,L+1} - d_{j,k}) / rho_{j,k},

because between breakpoints the objective is c - X/s with X proportional to that difference,
so it falls until the condition holds and rises after.

"The first breakpoint" is defined by the straightforward walk (``tsds.core.reference.solve_heap``):
breakpoints in increasing order, ties by query, the steps S_j(L) * (d_{j,L+1} - d_{j,L}) added one
at a time, the condition tested after each group of equal values, stopping also at the first group
that exhausts a list. The result here is bit-identical to that walk, but much faster:

* KNN-Uniform (rho = 1): every row has the breakpoints 1, 2, 3, ..., so the walk's order is column
  by column and one running sum in that order is the walk itself; no sort.
* KNN-KDE: S and the row-wise running totals of the steps are built for a prefix of columns that
  grows (extended in place, never recomputed) until the answer is known to lie inside it. The crossing
  is then located by a search over the level value (each probe is a vectorised binary search per row)
  and only the few breakpoints around it are sorted. Sums taken in another order than the walk's
  differ from the walk's by at most a rounding bound; a decision is accepted only if it is farther
  from the threshold than that bound, otherwise the exact sorted walk decides (``_walk``).

So the cost follows the answer's depth, not the list length.
"""

from __future__ import annotations

import numpy as np

import tsds.core.lists as lists
from tsds.core.allocation import Allocation, allocation_to_probabilities, check_parameters
from tsds.errors import ParameterError

__all__ = ["Allocation", "allocation_to_probabilities", "check_parameters", "solve"]

_FIRST_PREFIX = 32  # columns examined first
_GROWTH_MIN, _GROWTH_MAX = 1.1, 2.0  # bounds on the factor by which the prefix grows while the answer lies beyond it
_BLOCK = 16  # columns per block of the steps' running totals
_BRACKET = 4096  # breakpoints around the crossing that are sorted and walked exactly
_SPARSE = 4  # at most 1/_SPARSE of the columns used: the arithmetic runs on those columns only
_ROUNDING = 2.3e-16  # > 2 unit round-offs per addition: the slack of the certified comparisons


def _checked_steps(steps: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Raise unless the differences d_{k+1} - d_k of a block of columns are all >= 0 and the block's last
    column is finite: with the first column finite and >= 0 (checked up front) every column read so far
    is then finite, non-negative and sorted (NaN fails every comparison)."""
    if not (steps >= 0).all() or not np.isfinite(last).all():
        if not np.isfinite(steps).all() or not np.isfinite(last).all():
            raise ParameterError("distances must be finite and non-negative")
        raise ParameterError("distances must be sorted ascending within each row")
    return steps


def solve(distances, densities=None, *, alpha: float, C: float, complete: bool = False,
          neighbours=None) -> Allocation:
    """Solve the TSDS problem exactly on neighbour lists.

    Parameters
    ----------
    distances : ndarray of shape (M, K)
        Row j: the ascending distances from query j to its K nearest candidates (embedding distance units).
        Either layout; the solver reads the lists column by column, so column-major (Fortran-order) lists and
        ids are read fastest (a selection's are: tsds.retrieval.search_ahead), and the weights come back in
        the lists' layout. Only the alignment's last bits may depend on the layout (a sum in memory order).
    densities : ndarray of shape (M, K) or (N,), optional
        The kernel density rho >= 1 of each of those candidates (None: KNN-Uniform, all ones). Only the
        columns the answer depends on are read, and checked (finite, positive) as they are read.
    alpha : float in [0, 1]
        Weight of alignment (1) against diversity (0).
    C : float > 0
        Scale of the distances in the objective (distance units).
    complete : bool
        The lists hold every candidate (K = N), so reaching their end is the true optimum.
    neighbours : ndarray of shape (M, K), optional
        Candidate ids; given, ``densities`` holds one density per candidate (length N) and each list's are
        looked up as read: the same answer without an M x K array of densities.

    Returns
    -------
    Allocation
        ``weights`` (M, K), each row summing to 1/M, the level s, the support per query and the objective
        terms. When an allocation would need to go past the end of a list and ``complete`` is False, it is
        the optimum of the truncated problem and ``truncated`` is True: fetch more neighbours and solve again.

    Examples
    --------
    >>> import numpy as np
    >>> from tsds import solve
    >>> D = np.array([[0.1, 0.2, 0.9], [0.3, 0.4, 0.5]])
    >>> a = solve(D, alpha=0.5, C=1.0, complete=True)
    >>> a.weights.sum(axis=1)
    array([0.5, 0.5])
    >>> a.support.tolist(), a.truncated
    ([3, 3], False)
    """
    check_parameters(alpha, C)
    D, R = lists.validate(distances, densities, neighbours)
    M, K = D.shape
    threshold = (1.0 - alpha) * C * M
    if R is None:
        level, condition_met = _walk_uniform(D, alpha, threshold)
        L = np.full(M, min(int(level), K))
        prefix = None
    else:
        prefix = _Prefix(D, R)
        level, condition_met = _find_level(prefix, alpha, threshold)
        L = prefix.counts(level, strict=False)
    used = int(L.max())
    cols = min(K, used + 1)  # the support's columns, and the one a row's remainder may take
    order = "F" if D.flags.f_contiguous and not D.flags.c_contiguous else "C"  # the lists' own layout
    weights = np.zeros((M, cols if _SPARSE * cols <= K else K), order=order)
    if R is None:
        weights[:, :used] = 1.0 / (M * level)
        filled = L.astype(np.float64)  # S_j(L) = L
    else:
        filled = prefix.S[np.maximum(L - 1, 0), np.arange(M)]
        # the prefix sums are no longer needed: their memory takes the support's densities, gathered once for
        # the weights and the diversity (no second M x K buffer at the peak)
        buf = prefix.S.reshape(-1)[:M * cols]
        buf = buf.reshape(cols, M).T if order == "F" else buf.reshape(M, cols)
        rho = R.columns(0, cols, buf)
        w = np.divide(1.0, rho[:, :used], out=weights[:, :used])
        w /= M * level
        first = int(L.min())  # columns before it are inside every row's support
        past = w[:, first:].T if order == "F" else w[:, first:]  # the weights' own layout: one pass
        past *= (np.arange(first, used)[:, None] < L) if order == "F" else (np.arange(first, used) < L[:, None])
        # x * 1 = x exactly; past L_j: 0
    rows = np.flatnonzero(L < K)
    filled = np.where(L[rows] > 0, filled[rows], 0.0)
    remainder = np.maximum(1.0 / M - filled / (M * level), 0.0)
    weights[rows, L[rows]] = remainder
    support = L.copy()
    support[rows] += remainder > 0

    truncated = (not complete) and not condition_met
    alignment = float(np.einsum("jk,jk->", D[:, :cols], weights[:, :cols]))
    if R is None:
        rho_w = weights[:, :cols]
    else:
        rho_w = np.multiply(rho, weights[:, :cols], out=buf)
    diversity = float(M * rho_w.max())
    if weights.shape[1] < K:
        # the support is a small part of the lists: the M x K result is column-major, so that the support's
        # columns are one block and only its pages are touched (row-major, each row's first columns would touch
        # pages all over the matrix: whole huge pages where the OS uses them)
        full = np.zeros((M, K), order="F")
        full[:, :cols] = weights
        weights = full
    objective = alpha / C * alignment + (1.0 - alpha) * diversity
    return Allocation(
        weights=weights,
        level=float(level),
        support=support,
        alignment=alignment,
        diversity=diversity,
        objective=objective,
        truncated=bool(truncated),
        alpha=float(alpha),
        C=float(C),
    )


# ---- KNN-Uniform ---------------------------------------------------------------------------


def _walk_uniform(D, alpha, threshold):
    """The walk when every rho is 1: breakpoint k + 1 of every row is S = k + 1 exactly.

    The walk's order is then column k for all rows (in row order), column k + 1, ...; its running
    sum of the steps (k + 1) * (d_{j,k+1} - d_{j,k}) in that order is one cumsum of the transposed
    steps, continued from the previous prefix. Returns (level, condition_met).
    """
    M, K = D.shape
    total = np.zeros(1)
    start, width = 0, min(K, _FIRST_PREFIX)
    while True:
        steps = np.zeros((width - start, M))  # steps of columns start..width-1, column-major
        stop = min(width, K - 1)  # the last column has no step
        steps[: stop - start] = _checked_steps((D[:, start + 1:stop + 1] - D[:, start:stop]).T, D[:, stop])
        steps[: stop - start] *= np.arange(start + 1, stop + 1, dtype=np.float64)[:, None]
        running = np.cumsum(np.concatenate((total, steps.ravel())))[1:]
        met = alpha * running[M - 1::M] >= threshold  # the condition after each column
        if met.any():
            return float(start + int(np.argmax(met)) + 1), True
        if width == K:
            return float(K), False  # every list ends at breakpoint K
        total = running[-1:]
        start, width = width, min(K, 2 * width)


# ---- KNN-KDE -------------------------------------------------------------------------------


class _Prefix:
    """S and the totals of the steps, for the first columns of the lists, grown on demand.

    Stored column by column (index [k, j]: breakpoint k + 1 of row j), so that the first columns
    are one contiguous block: growing writes only new memory, with no copy and no page of the later
    columns touched. S[k, j] = S_j(k + 1) is the cumulative sum of 1/rho along row j. The walk's step
    at that breakpoint, S[k, j] * (d_{j,k+1} - d_{j,k}) (0 in the last column), is not stored: it is
    recomputed where it is read (``steps``, ``total``), by the same two operations, so with the same
    value; a second K x M array would double the prefix's memory (30 MB each on the 200k benchmark).
    blocks[i, j] is the sum of row j's steps before column i * _BLOCK, so the total of any row prefixes
    costs the steps of at most _BLOCK columns (a cumsum of every step costs more).
    Extending continues S from its last column, so S holds exactly the values one cumsum over the
    whole row gives (those the walk uses). ``width`` is the prefix that ``counts`` and ``total``
    look at; S has one column more computed (its minimum bounds the prefix).
    """

    def __init__(self, D, R):
        self.D, self.R = D, R
        M, K = D.shape
        self.S = np.empty((K, M))  # the OS maps pages on first touch
        self.blocks = np.empty((K // _BLOCK + 2, M))
        self.blocks[0] = 0.0
        # columns of steps computed at a time: whole blocks, no more than the padded lists hold
        span = min(max(1, lists.SCRATCH // (_BLOCK * M)), K // _BLOCK + 1) * _BLOCK
        self.distances_buf = np.empty((span + 1, M))  # distances, column by column
        self.steps_buf = np.empty((span, M))
        # distances read by flat index where the layout allows (a take is faster than D[rows, k]): entry (j, k)
        # at j * K + k (row-major) or k * M + j (column-major)
        self.flat = D.reshape(-1) if D.flags.c_contiguous else D.T.reshape(-1) if D.flags.f_contiguous else None
        self.width = self.done = 0

    def extend(self, width):
        """Look at the first ``width`` columns, computing S for one more."""
        K = self.D.shape[1]
        a, b = self.done, min(K, width + 1)
        self.width = width
        if b <= a:
            return
        with np.errstate(divide="ignore"):
            S = np.divide(1.0, self.R.columns(a, b, self.S[a:b], transposed=True), out=self.S[a:b])
        if not (S > 0).all():  # 1/rho > 0 is False for rho < 0, rho = inf and NaN
            raise ParameterError("densities must be finite and positive")
        if a:
            S[0] += self.S[a - 1]  # the next term of the row's running sum, as cumsum adds it
        np.cumsum(S, axis=0, out=S)
        if not np.isfinite(S[-1]).all():  # rho = 0 gives 1/rho = inf, which the running sum carries to the end
            raise ParameterError("densities must be finite and positive")
        c = min(b, K - 1)  # the last column has no step
        first, stop = a // _BLOCK, b // _BLOCK + 1  # blocks whose sums change; room for a whole one
        # the changed blocks' steps (those before a again: the same values), a few whole blocks at a time in
        # cache-sized buffers; each block summed by the same reshape and sum as before, so the same additions
        span = len(self.steps_buf)
        for s0 in range(first * _BLOCK, stop * _BLOCK, span):
            s1 = min(s0 + span, stop * _BLOCK)
            n = max(0, min(s1, c) - s0)  # columns s0 .. s0 + n - 1 have a step
            step = self.steps_buf[:s1 - s0]
            if n:
                d = self.distances_buf[:n + 1]
                d[...] = self.D[:, s0:s0 + n + 1].T  # one transposing read instead of two
                np.subtract(d[1:], d[:-1], out=step[:n])
                if not (step[:n] >= 0).all():
                    _checked_steps(self._gaps(a, c), self.D[:, c])  # raises what the whole new block gives
                step[:n] *= self.S[s0:s0 + n]
            step[n:] = 0.0
            g = (s1 - s0) // _BLOCK
            step.reshape(g, _BLOCK, -1).sum(axis=1, out=self.blocks[s0 // _BLOCK + 1:][:g])
        if not np.isfinite(self.D[:, c]).all():  # with every step >= 0: all columns read are finite
            _checked_steps(self._gaps(a, c), self.D[:, c])
        sums = self.blocks[first + 1:stop + 1]
        np.cumsum(sums, axis=0, out=sums)
        sums += self.blocks[first]
        self.done = b

    def _gaps(self, a, c):
        """d_{k+1} - d_k at columns a .. c - 1, column by column (for the error message: already warned of)."""
        with np.errstate(invalid="ignore"):
            return np.diff(self.D[:, a:c + 1], axis=1).T

    def counts(self, value, strict=False):
        """Per row, how many breakpoints of the prefix are < value (strict) or <= value.

        A binary search on all rows at once (each row's S is non-decreasing).
        """
        W, flat = self.width, self.S.ravel()
        rows = np.arange(self.S.shape[1])
        M = len(rows)
        L = np.zeros(M, dtype=np.intp)
        step = 1 << (W.bit_length() - 1)
        while step:
            cand = L + step
            v = flat[(np.minimum(cand, W) - 1) * M + rows]
            L = np.where((cand <= W) & ((v < value) if strict else (v <= value)), cand, L)
            step >>= 1
        return L

    def steps(self, k, j):
        """The walk's steps S[k, j] * (d_{j,k+1} - d_{j,k}) at columns k (< done) of rows j, 0 in the last
        column: the two operations extend performs, so the same values."""
        nxt = np.minimum(k + 1, self.D.shape[1] - 1)
        return (self.D[j, nxt] - self.D[j, k]) * self.S[k, j]

    def total(self, L):
        """The steps of every row's first L_j breakpoints, summed (row by row, block by block)."""
        M, K = self.D.shape
        rows = np.arange(M)
        block = L // _BLOCK
        # columns block * _BLOCK + i, held at min(L_j, K - 1) from L_j on: past L_j (and in the last column)
        # the difference of the distances is then 0, so is the term, and every value read is one extend checked
        k = np.minimum(block * _BLOCK + np.arange(_BLOCK + 1)[:, None], np.minimum(L, K - 1))
        if self.flat is None:
            d = self.D[rows, k]
        else:
            d = self.flat.take(k + rows * K if self.D.flags.c_contiguous else k * M + rows)
        part = d[1:] - d[:-1]
        part *= self.S.ravel().take(k[:-1] * M + rows)
        return float((self.blocks.ravel().take(block * M + rows) + part.sum(axis=0)).sum())


def _certify(totals, n_terms, alpha, threshold):
    """Decide alpha * T >= threshold for the walk's own running sums T, given ``totals``: the same
    terms (non-negative) summed in another order, n_terms additions in the two orders together.

    Each order is off the exact sum by at most (its additions) x u x T, u = 2^-53. Returns two boolean
    arrays, (surely met, surely not met); where both are False, only the exact walk can tell.
    """
    totals = np.asarray(totals, dtype=np.float64)
    margin = totals * (n_terms * _ROUNDING)
    met = alpha * np.maximum(totals - margin, 0.0) >= threshold
    not_met = alpha * (totals + margin) < threshold
    return met, not_met


def _find_level(prefix: _Prefix, alpha, threshold):
    """The walk's stopping level and whether the condition held there (KNN-KDE)."""
    M, K = prefix.D.shape
    width = min(K, _FIRST_PREFIX)
    previous = None
    while True:
        prefix.extend(width)
        if width < K:  # every breakpoint < min_j S[j, width] lies in the prefix
            top = float(np.nextafter(prefix.S[width].min(), -np.inf))
        else:  # the walk stops at the first group that ends a list
            top = float(prefix.S[K - 1].min())
        L_top = prefix.counts(top)
        n_terms = int(L_top.sum()) + width + M + 2 * _BLOCK
        total = prefix.total(L_top)
        met, not_met = _certify(total, n_terms, alpha, threshold)
        if met:
            level = _search(prefix, alpha, threshold, top, L_top, n_terms)
            return (level, True) if level is not None else _exact_walk(prefix, alpha, threshold, width)
        if not not_met:
            return _exact_walk(prefix, alpha, threshold, width)
        if width == K:
            return top, False
        factor = _growth(previous, (width, total), threshold / alpha if alpha > 0 else np.inf)
        previous = (width, total)
        width = min(K, max(width + 1, int(width * factor)))


def _growth(previous, current, target: float) -> float:
    """How much wider the prefix is made while its steps total less than ``target``.

    The total grows about as a power of the width; the power is read off the last two prefixes
    ((width, total) pairs), and the factor that would reach the target is taken, a little more so that
    one step usually suffices, kept between _GROWTH_MIN and _GROWTH_MAX. Only the cost depends on it.
    """
    (w1, t1), (w2, t2) = previous or (None, None), current
    if previous is None or t1 <= 0 or t2 <= t1 or w2 <= w1:
        return _GROWTH_MAX
    power = np.log(t2 / t1) / np.log(w2 / w1)
    return min(_GROWTH_MAX, max(_GROWTH_MIN, 1.05 * float((target / t2) ** (1.0 / power))))


def _search(prefix: _Prefix, alpha, threshold, hi, L_hi, n_terms):
    """The first breakpoint group <= hi at which the condition holds (it surely holds at hi),
    or None if a decision is too close to call.

    Narrows (lo, hi] by probing level values (regula falsi on the totals, Illinois variant so that it
    cannot stall) until at most _BRACKET breakpoints are left, then sorts those and walks them.
    """
    M = len(L_hi)
    lo = float(prefix.S[0].min())  # the first group: the walk may stop right there
    L_lo = prefix.counts(lo)
    t_lo = prefix.total(L_lo)
    met, not_met = _certify(t_lo, n_terms, alpha, threshold)
    if met or not not_met:
        return lo if met else None
    t_hi = prefix.total(L_hi)
    target = threshold / alpha  # alpha > 0 here: the condition holds at hi
    keep_hi = keep_lo = 1.0  # Illinois weights: halve the side that is kept twice in a row
    for _ in range(64):
        if int(L_hi.sum() - L_lo.sum()) <= _BRACKET:
            break
        f_lo, f_hi = (t_lo - target) * keep_lo, (t_hi - target) * keep_hi
        share = -f_lo / (f_hi - f_lo) if f_hi > f_lo else 0.5
        mid = lo + (hi - lo) * min(max(share, 0.01), 0.99)
        if not lo < mid < hi:
            break
        L_mid = prefix.counts(mid)
        t_mid = prefix.total(L_mid)
        met, not_met = _certify(t_mid, n_terms, alpha, threshold)
        if met:
            hi, L_hi, t_hi = mid, L_mid, t_mid
            keep_hi, keep_lo = 1.0, keep_lo * 0.5
        elif not_met:
            lo, L_lo, t_lo = mid, L_mid, t_mid
            keep_lo, keep_hi = 1.0, keep_hi * 0.5
        else:
            return None

    # the breakpoints in (lo, hi] in the walk's order: by value, ties by row (np.repeat keeps row order)
    count = L_hi - L_lo
    rows = np.repeat(np.arange(M), count)
    cols = np.arange(rows.size) - np.repeat(np.cumsum(count) - count - L_lo, count)
    values = prefix.S[cols, rows]
    order = np.argsort(values, kind="stable")
    v = values[order]
    running = np.cumsum(np.concatenate(([t_lo], prefix.steps(cols[order], rows[order]))))[1:]
    ends = np.flatnonzero(np.append(v[1:] != v[:-1], True))
    met, not_met = _certify(running[ends], n_terms + rows.size, alpha, threshold)
    first = int(np.argmax(~not_met)) if not not_met.all() else None
    if first is None or not met[first]:
        return None
    return float(v[ends[first]])


def _exact_walk(prefix: _Prefix, alpha, threshold, width):
    """The walk's own order, literally: sort the prefix's breakpoints and add their steps in turn."""
    M, K = prefix.D.shape
    while True:
        prefix.extend(width)
        bound = np.inf if width == K else float(prefix.S[width].min())
        steps = prefix.steps(np.arange(width)[:, None], np.arange(M)).T
        found = _walk(prefix.S[:width].T, steps, width == K, alpha, threshold, bound)
        if found is not None:
            return found
        width = min(K, 2 * width)


def _walk(S, delta, holds_last, alpha, threshold, bound):
    """Walk the breakpoints below ``bound`` in order; return (level, condition_met) or None."""
    values = S.ravel()
    steps = delta.ravel()
    keep = values < bound
    if holds_last:
        last = np.zeros(S.shape, dtype=bool)
        last[:, -1] = True
        last = last.ravel()[keep]
    values, steps = values[keep], steps[keep]
    if values.size == 0:
        return None
    order = np.argsort(values, kind="stable")
    v = values[order]
    cum = np.cumsum(steps[order])
    ends = np.flatnonzero(np.append(v[1:] != v[:-1], True))
    met = alpha * cum[ends] >= threshold
    stop = met.copy()
    if holds_last:
        stop |= np.cumsum(last[order])[ends] > 0
    if not stop.any():
        return None
    first = int(np.argmax(stop))
    return v[ends[first]], bool(met[first])
