"""Exact closed-form TSDS solver over neighbour lists (see docs/method.md).

Each query j spreads its mass 1/M over its nearest candidates at the common level s:
its L_j nearest get 1 / (M s rho), the next one takes the remainder. The level is the
first breakpoint s = S_j(L) = sum_{k<=L} 1/rho_{j,k} (over all queries together) at which

    alpha * sum_j A_j(L_j) >= (1 - alpha) * C * M,   A_j(L) = sum_{k<=L} (d_{j,L+1} - d_{j,k}) / rho_{j,k},

because between breakpoints the objective is c - X/s with X proportional to that difference,
so it falls until the condition holds and rises after. The walk over breakpoints is a
sort plus a cumulative sum; it looks at a prefix of columns that doubles until the answer
is known to lie inside it, so its cost follows the answer's depth, not the list length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tsds.errors import ParameterError

_FIRST_PREFIX = 32


@dataclass(frozen=True)
class Allocation:
    """The optimal transport plan restricted to the queries' neighbour lists.

    weights[j, k] is the mass query j sends to its k-th neighbour; each row sums to 1/M.
    """

    weights: np.ndarray
    level: float
    support: np.ndarray
    alignment: float
    diversity: float
    objective: float
    truncated: bool
    alpha: float
    C: float

    @property
    def max_support(self) -> int:
        return int(self.support.max())


def check_parameters(alpha: float, C: float, sigma: float | None = None) -> None:
    """Raise a one-line ParameterError for values outside the method's domain."""
    if not np.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"alpha must lie in [0, 1], got {alpha}")
    if not np.isfinite(C) or C <= 0:
        raise ParameterError(f"C must be a positive number, got {C}")
    if sigma is not None and (not np.isfinite(sigma) or sigma < 0):
        raise ParameterError(f"sigma must be >= 0, got {sigma}")


def _validate(distances, densities) -> tuple[np.ndarray, np.ndarray | None]:
    D = np.asarray(distances, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] == 0 or D.shape[1] == 0:
        raise ParameterError(f"distances must be a non-empty M x K matrix, got shape {D.shape}")
    if not np.all(np.isfinite(D)) or np.any(D < 0):
        raise ParameterError("distances must be finite and non-negative")
    if D.shape[1] > 1 and np.any(np.diff(D, axis=1) < 0):
        raise ParameterError("distances must be sorted ascending within each row")
    if densities is None:
        return D, None
    R = np.asarray(densities, dtype=np.float64)
    if R.shape != D.shape:
        raise ParameterError(f"densities must have the shape of distances {D.shape}, got {R.shape}")
    if not np.all(np.isfinite(R)) or np.any(R <= 0):
        raise ParameterError("densities must be finite and positive")
    return D, R


def solve(distances, densities=None, *, alpha: float, C: float, complete: bool = False) -> Allocation:
    """Solve the TSDS problem on neighbour lists.

    distances: M x K, row j the ascending distances from query j to its K nearest candidates.
    densities: M x K, the density rho of each of those candidates (None: KNN-Uniform, all ones).
    complete: the lists hold every candidate (K = N), so reaching their end is the true optimum.

    When an allocation would need to go past the end of a list and ``complete`` is False,
    the result is the optimum of the truncated problem and ``truncated`` is True: fetch more
    neighbours and solve again.
    """
    check_parameters(alpha, C)
    D, R = _validate(distances, densities)
    M, K = D.shape
    inv = np.ones_like(D) if R is None else 1.0 / R
    S = np.cumsum(inv, axis=1)
    delta = np.zeros_like(D)
    delta[:, :-1] = S[:, :-1] * np.diff(D, axis=1)
    threshold = (1.0 - alpha) * C * M

    width = min(K, _FIRST_PREFIX)
    while True:
        bound = np.inf if width == K else float(S[:, width].min())
        found = _walk(S[:, :width], delta[:, :width], width == K, alpha, threshold, bound)
        if found is not None:
            level, condition_met = found
            break
        width = min(K, 2 * width)

    truncated = (not complete) and not condition_met
    in_prefix = S[:, :width] <= level
    L = in_prefix.sum(axis=1)
    weights = np.zeros_like(D)
    weights[:, :width] = np.where(in_prefix, inv[:, :width] / (M * level), 0.0)
    rows = np.flatnonzero(L < K)
    filled = np.where(L[rows] > 0, S[rows, np.maximum(L[rows] - 1, 0)], 0.0)
    remainder = np.maximum(1.0 / M - filled / (M * level), 0.0)
    weights[rows, L[rows]] = remainder
    support = L.copy()
    support[rows] += remainder > 0

    used = min(K, width + 1)
    alignment = float(np.sum(D[:, :used] * weights[:, :used]))
    rho_w = weights[:, :used] if R is None else R[:, :used] * weights[:, :used]
    diversity = float(M * rho_w.max())
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


def allocation_to_probabilities(neighbours, allocation: Allocation, n_candidates: int) -> np.ndarray:
    """Sum the plan over queries: p_i = sum_j gamma_{j,i}, a length-N vector summing to 1."""
    ids = np.asarray(neighbours)
    if ids.shape != allocation.weights.shape:
        raise ParameterError(f"neighbour ids {ids.shape} do not match the allocation {allocation.weights.shape}")
    w = allocation.weights.ravel()
    flat = ids.ravel()
    nz = w > 0
    if np.any(flat[nz] < 0) or np.any(flat[nz] >= n_candidates):
        raise ParameterError("an allocated neighbour id lies outside [0, N)")
    p = np.bincount(flat[nz], weights=w[nz], minlength=n_candidates).astype(np.float64)
    return p / p.sum()
