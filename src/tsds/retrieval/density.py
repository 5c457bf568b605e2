"""Kernel densities over the whole pool by FAISS range search.

rho_i = sum over all candidates x' with ||x_i - x'|| < sigma of (1 - ||x_i - x'||^2 / sigma^2).
With an IVF index, lists whose centroid lies farther than sigma + (the list's radius) from
x_i cannot hold a point within sigma (triangle inequality), so only the other lists are
scanned: the sum is still exact. A cap on the neighbours counted per point guards against
pathological pools; when it binds, the densest points keep their ``cap`` nearest terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from tsds.retrieval.index import SearchIndex

DEFAULT_CAP = 100_000
_RESULT_BUDGET = 1 << 25


@dataclass
class DensityStats:
    points: int = 0
    capped: int = 0
    pairs: int = 0
    lists_scanned: float = 0.0


def densities(
    index: SearchIndex,
    ids: np.ndarray,
    sigma: float,
    *,
    cap: int = DEFAULT_CAP,
    stats: DensityStats | None = None,
    progress=None,
    return_counts: bool = False,
):
    """Density (float64, >= 1) of the candidates ``ids`` over every candidate in ``index``.

    With ``return_counts``, also the number of candidates within sigma of each (itself included):
    the size of its near-duplicate cluster.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if sigma == 0 or ids.size == 0:
        ones = np.ones(ids.size, dtype=np.float64)
        return (ones, np.ones(ids.size, dtype=np.int64)) if return_counts else ones
    stats = stats if stats is not None else DensityStats()
    out = np.empty(ids.size, dtype=np.float64)
    counts = np.empty(ids.size, dtype=np.int64)
    radius2 = float(sigma) ** 2
    batch = max(1, min(4096, _RESULT_BUDGET // max(1, index.ntotal)))
    batch = max(batch, 64)
    for start in range(0, ids.size, batch):
        chunk = ids[start:start + batch]
        x = index.reconstruct(chunk)
        lims, d2 = _range_search(index, x, radius2, sigma, stats)
        out[start:start + chunk.size] = _kernel_sums(lims, d2, radius2, cap, stats)
        counts[start:start + chunk.size] = np.maximum(np.diff(lims.astype(np.int64)), 1)
        if progress is not None:
            progress(chunk.size)
    stats.points += int(ids.size)
    return (out, counts) if return_counts else out


def _range_search(index: SearchIndex, x: np.ndarray, radius2: float, sigma: float, stats: DensityStats):
    if index.list_radius is None:
        lims, d2, labels = index.index.range_search(x, radius2)
        return _drop_excluded(index, lims, d2, labels)
    ivf = faiss.extract_index_ivf(index.index)
    centroid_d2, lists = ivf.quantizer.search(x, ivf.nlist)
    reach = np.sqrt(np.maximum(centroid_d2.astype(np.float64), 0)) - index.list_radius[lists]
    keep = reach <= sigma * (1 + 1e-5) + 1e-6
    width = max(1, int(keep.sum(axis=1).max()))
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    assign = np.take_along_axis(np.where(keep, lists, -1), order, 1)
    cdis = np.take_along_axis(centroid_d2, order, 1)
    stats.lists_scanned += float(keep.sum())
    saved = ivf.nprobe
    try:
        ivf.nprobe = width
        lims, d2, labels = ivf.range_search_preassigned(x, radius2, np.ascontiguousarray(assign),
                                                        np.ascontiguousarray(cdis))
    finally:
        ivf.nprobe = saved
    return _drop_excluded(index, lims, d2, labels)


def _drop_excluded(index: SearchIndex, lims, d2, labels):
    """Candidates removed from the pool (decontamination) do not count in anyone's density."""
    if index.excluded is None:
        return lims, d2
    keep = ~np.isin(labels, index.excluded)
    sizes = np.diff(lims.astype(np.int64))
    owner = np.repeat(np.arange(sizes.size), sizes)
    counts = np.bincount(owner[keep], minlength=sizes.size)
    return np.concatenate([[0], np.cumsum(counts)]), d2[keep]


def _kernel_sums(lims: np.ndarray, d2: np.ndarray, radius2: float, cap: int, stats: DensityStats) -> np.ndarray:
    lims = lims.astype(np.int64)
    counts = np.diff(lims)
    kernel = np.maximum(0.0, 1.0 - d2.astype(np.float64) / radius2)
    stats.pairs += int(counts.sum())
    over = np.flatnonzero(counts > cap)
    if over.size:
        stats.capped += int(over.size)
        for row in over:
            seg = kernel[lims[row]:lims[row + 1]]
            keep = np.argpartition(-seg, cap - 1)[:cap]
            trimmed = np.zeros_like(seg)
            trimmed[keep] = seg[keep]
            kernel[lims[row]:lims[row + 1]] = trimmed
    owner = np.repeat(np.arange(counts.size), counts)
    rho = np.bincount(owner, weights=kernel, minlength=counts.size)
    return np.maximum(rho, 1.0)
