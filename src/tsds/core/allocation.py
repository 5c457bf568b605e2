"""The result of the TSDS solver (an allocation over neighbour lists), its parameters' domain, and the
selection distribution p it defines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tsds.errors import ParameterError


@dataclass(frozen=True)
class Allocation:
    """The optimal transport plan restricted to the queries' neighbour lists.

    Attributes
    ----------
    weights : ndarray of shape (M, K)
        ``weights[j, k]``: the mass query j sends to its k-th neighbour; each row sums to 1/M.
    level : float
        The common level s of the closed form.
    support : ndarray of shape (M,)
        How many neighbours each query sends mass to.
    alignment : float
        Transport cost sum_jk weights * distances (distance units).
    diversity : float
        M x max over candidates of rho x mass.
    objective : float
        alpha / C x alignment + (1 - alpha) x diversity.
    truncated : bool
        The optimum needs longer lists than given.
    alpha, C : float
        The parameters solved with.
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
    """Raise a one-line ParameterError for values outside the method's domain.

    Parameters
    ----------
    alpha : float
        Must lie in [0, 1].
    C : float
        Must be positive (distance units).
    sigma : float, optional
        Must be >= 0 (distance units).

    Examples
    --------
    >>> from tsds.core.allocation import check_parameters
    >>> check_parameters(0.5, 1.0, 0.2)
    >>> check_parameters(1.5, 1.0)
    Traceback (most recent call last):
    ...
    tsds.errors.ParameterError: alpha must lie in [0, 1], got 1.5
    """
    if not np.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"alpha must lie in [0, 1], got {alpha}")
    if not np.isfinite(C) or C <= 0:
        raise ParameterError(f"C must be a positive number, got {C}")
    if sigma is not None and (not np.isfinite(sigma) or sigma < 0):
        raise ParameterError(f"sigma must be >= 0, got {sigma}")


def allocation_to_probabilities(neighbours, allocation: Allocation, n_candidates: int) -> np.ndarray:
    """Sum the plan over queries: p_i = sum_j gamma_{j,i}.

    Parameters
    ----------
    neighbours : ndarray of shape (M, K)
        The candidate ids of the lists the allocation was solved on.
    allocation : Allocation
        What ``solve`` returned on those lists.
    n_candidates : int
        N, the pool size.

    Returns
    -------
    ndarray of shape (N,)
        The selection distribution p (float64, sums to 1).

    Examples
    --------
    >>> import numpy as np
    >>> from tsds import solve
    >>> from tsds.core import allocation_to_probabilities
    >>> a = solve(np.array([[0.1, 0.2], [0.1, 0.3]]), alpha=0.5, C=1.0, complete=True)
    >>> allocation_to_probabilities(np.array([[0, 1], [2, 1]]), a, 4).round(3)
    array([0.25, 0.5 , 0.25, 0.  ])
    """
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
