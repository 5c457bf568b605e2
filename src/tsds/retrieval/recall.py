"""Recall of approximate neighbour lists against exact ones (the measure IVF calibration raises)."""

from __future__ import annotations

import numpy as np

_MARKER_MAX = 1 << 26


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours found, row by row (ids are distinct within a row; -1 is never a hit)."""
    if truth.size == 0:
        return 1.0
    top = int(max(found.max(initial=0), truth.max(initial=0))) + 1
    if top > _MARKER_MAX:
        return sum(np.intersect1d(f[f >= 0], t).size for f, t in zip(found, truth)) / truth.size
    marker = np.zeros(top, dtype=bool)  # a row's true ids marked in a table: no sort per row
    hits = 0
    for f, t in zip(found, truth):
        marker[t] = True
        hits += int(np.count_nonzero(marker[f[f >= 0]]))
        marker[t] = False
    return hits / truth.size
