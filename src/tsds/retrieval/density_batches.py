"""The batch loop every index kind shares for densities, and what it counts (tsds.retrieval.density)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class DensityStats:
    points: int = 0
    capped: int = 0
    pairs: int = 0
    lists_scanned: float = 0.0
    sieved: int = 0  # (point, member) pairs the sieve looked at (pruned chunks)
    multiplied: int = 0  # pairs multiplied in full (both paths)
    pruned_multiplied: int = 0  # of those, in pruned chunks
    pruned_pairs: int = 0  # pairs within sigma in pruned chunks
    brute_points: int = 0  # points whose sums came from a product with every stored vector (IVF)
    probed: int = 0  # pairs in the lists also tested by direction to measure it (tsds.retrieval.density_plan)
    probe_kept: int = 0
    probe_work: int = 0

    def add(self, other: "DensityStats") -> None:
        for name in ("points", "capped", "pairs", "lists_scanned", "sieved", "multiplied", "pruned_multiplied",
                     "pruned_pairs", "brute_points", "probed", "probe_kept", "probe_work"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class PointSums:
    """Where a batch of points gets its kernel sums: ``reconstruct(ids)`` their vectors,
    ``sums_and_counts(x)`` each point's kernel sum and count within sigma (recording pairs and lists scanned
    in the stats), ``capped_sums(x)`` the sum of each point's ``cap`` largest terms."""

    reconstruct: Callable
    sums_and_counts: Callable
    capped_sums: Callable
    cap: int


def batched_densities(ids, sigma: float, sums: PointSums, *, batch: int, stats: DensityStats, progress=None,
                      return_counts: bool = False, first_batch: int | None = None):
    """The loop every index kind shares: points in batches, kernel sums, the cap, the floor at 1.

    ``first_batch``: a smaller first batch (the density path chooser measures on it).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if sigma == 0 or ids.size == 0:
        ones = np.ones(ids.size, dtype=np.float64)
        return (ones, np.ones(ids.size, dtype=np.int64)) if return_counts else ones
    out = np.empty(ids.size, dtype=np.float64)
    counts = np.empty(ids.size, dtype=np.int64)
    starts = [0, *range(min(first_batch, ids.size), ids.size, batch)] if first_batch else range(0, ids.size, batch)
    starts = list(starts)
    for start, end in zip(starts, [*starts[1:], ids.size]):
        chunk = ids[start:end]
        x = sums.reconstruct(chunk)
        totals, cnt = sums.sums_and_counts(x)
        over = np.flatnonzero(cnt > sums.cap)
        if over.size:
            stats.capped += int(over.size)
            totals[over] = sums.capped_sums(x[over])
        out[start:start + chunk.size] = np.maximum(totals, 1.0)
        counts[start:start + chunk.size] = np.maximum(cnt, 1)
        if progress is not None:
            progress(chunk.size)
    stats.points += int(ids.size)
    return (out, counts) if return_counts else out
