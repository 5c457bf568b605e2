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
