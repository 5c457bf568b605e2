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
    """The paper's draw: n independent draws from p. Returns the count drawn per candidate."""
    p = _check(p, n)
    return np.random.default_rng(seed).multinomial(int(n), p)


def draw_without_replacement(p, n: int, seed: int) -> np.ndarray:
    """n distinct candidates, drawn one after another in proportion to p (Gumbel top-k).

    Returns a 0/1 count per candidate. Raises when fewer than n candidates have p > 0.
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
    """Expand per-candidate counts into the sorted list of drawn indices (repeats kept)."""
    counts = np.asarray(counts)
    return np.repeat(np.arange(counts.size, dtype=np.int64), counts)
