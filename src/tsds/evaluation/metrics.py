"""Cheap distribution figures of a selection, and loss helpers.

All distances are Euclidean between unit-norm embeddings (sqrt(2 - 2 cos)), in one embedding space for
every method (the evaluation store's), so figures are comparable across methods.
"""

from __future__ import annotations

import math

import numpy as np

from tsds.core.sampling import near_duplicate_clusters  # noqa: F401  (the figures' clusters)

NEAR_DUPLICATE_DISTANCE = 0.2  # cos >= 0.98: copies and light edits, not distinct texts on one topic


def perplexity(nll: float) -> float:
    return math.exp(nll) if np.isfinite(nll) else float("nan")


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ot_distance(selected: np.ndarray, weights: np.ndarray, target: np.ndarray, *, max_points: int = 2000,
                seed: int = 0) -> float:
    """Exact optimal-transport (earth mover's) distance between the selection (rows weighted by times drawn)
    and the target set (uniform), cost = Euclidean distance of unit vectors. Selections larger than
    ``max_points`` distinct rows are subsampled (seeded, in proportion to weight) to keep it cheap."""
    try:
        import ot
    except ImportError:  # pragma: no cover
        raise ImportError("the OT distance needs POT: pip install pot") from None
    w = np.asarray(weights, dtype=np.float64)
    x = _unit(selected)
    if x.shape[0] == 0:
        return float("nan")
    if x.shape[0] > max_points:
        keep = np.random.default_rng(seed).choice(x.shape[0], size=max_points, replace=False, p=w / w.sum())
        x, w = x[keep], np.ones(max_points)
    y = _unit(target)
    cost = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (x.astype(np.float64) @ y.T.astype(np.float64))))
    a = w / w.sum()
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    return float(ot.emd2(a, b, cost, numItermax=1_000_000))


def near_duplicate_share(vectors: np.ndarray, counts: np.ndarray,
                         threshold: float = NEAR_DUPLICATE_DISTANCE) -> float:
    """Share of the draws that repeat an earlier draw: a second draw of the same row, or a distinct row
    within `threshold` (Euclidean, unit vectors) of an earlier distinct row (in row order).

    `vectors` are the distinct drawn rows' embeddings, `counts` their times drawn (same order).
    """
    import faiss

    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    repeats = int((counts - 1).clip(min=0).sum())
    x = _unit(vectors)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    min_cos = 1.0 - threshold ** 2 / 2.0
    lims, _, ids = index.range_search(x, float(min_cos) - 1e-6)
    dup = 0
    for i in range(x.shape[0]):
        nb = ids[lims[i]:lims[i + 1]]
        if np.any(nb < i):
            dup += 1
    return (repeats + dup) / total


def label_share(labels: list, counts: np.ndarray, target_labels: set) -> float:
    """Share of the draws whose label is one of the target task's labels."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    hit = np.array([lab in target_labels for lab in labels], dtype=bool)
    return float(counts[hit].sum() / total)


def distinct_share(counts: np.ndarray) -> float:
    counts = np.asarray(counts)
    return float(np.count_nonzero(counts) / max(int(counts.sum()), 1))
