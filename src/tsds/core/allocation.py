"""The solver's result (the transport plan on the neighbour lists), its parameters' domain, and the
sampling probabilities it gives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tsds.errors import ParameterError


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


def allocation_to_probabilities(neighbours, allocation: Allocation, n_candidates: int) -> np.ndarray:
    """Sum the plan over queries: p_i = sum_j gamma_{j,i}, a length-N vector summing to 1."""
    ids = np.asarray(neighbours)
    if ids.shape != allocation.weights.shape:
        raise ParameterError(f"neighbour ids {ids.shape} do not match the allocation {allocation.weights.shape}")
    used = min(ids.shape[1], int(allocation.support.max()))  # no weight lies past the longest support
    w = allocation.weights[:, :used]
    nz = w > 0
    flat, w = ids[:, :used][nz], w[nz]  # row by row, whatever the layout: each p_i summed in query order
    if np.any(flat < 0) or np.any(flat >= n_candidates):
        raise ParameterError("an allocated neighbour id lies outside [0, N)")
    p = np.bincount(flat, weights=w, minlength=n_candidates).astype(np.float64)
    return p / p.sum()
