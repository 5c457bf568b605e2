"""Kernel sums over a flat index (or every list of an IVF-Flat one) in cache-sized tiles, on every core.

The product of a tile of points with a tile of stored vectors runs at BLAS speed; what made the
straightforward version slow was what followed it: nine element-wise passes over a product of many MB
(scale, add both norms, divide, add one, clip, a float64 row sum, a compare, a count), single-threaded
and out of cache. Here each tile is small enough to stay in cache, the tiles of fixed chunks of points run
on one thread per core, and only two passes read a whole tile: a lower bound on the inner product that a
pair within sigma needs (a margin far above float32 rounding), and the selection of the few pairs above it.
Their kernel terms are then computed from the same float32 inner products with the same float32
operations in the same order as before, so each term is the same number; the sum over a point's terms is
taken in a different order (pair by pair instead of numpy's pairwise row sum), which can move the last bit
of a density.
"""

from __future__ import annotations

import faiss
import numpy as np

from tsds.retrieval.threads import Scratch, in_threads, stable_product

_POINTS = 256  # points per task (fixed: the sums do not depend on the number of threads)
_TILE = 2048  # stored vectors per product
_CENTRE_BLOCK = 65536  # long vectors are centred on the mean of their block of this many stored vectors


def flat_vectors(index) -> np.ndarray:
    """The stored float32 vectors of a flat FAISS index, in place (no copy)."""
    n, d = index.ntotal, index.dim
    return faiss.rev_swig_ptr(index.index.get_xb(), n * d).reshape(n, d)


def tiled_kernel_sums(y_all: np.ndarray, x: np.ndarray, sigma: float, excluded: np.ndarray | None = None,
                      workers: int | None = None):
    """Per point of ``x``: the kernel sum (float64, no floor) over every row of ``y_all`` not in ``excluded``,
    and the count of those within sigma (int64)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    chunks = [(a, x[a:a + _POINTS]) for a in range(0, x.shape[0], _POINTS)]
    long_vectors = bool(np.einsum("ij,ij->i", x, x).max(initial=0.0) > 4.0)
    keep = None
    if excluded is not None and excluded.size:
        keep = np.ones(y_all.shape[0], dtype=bool)
        keep[excluded[excluded < y_all.shape[0]]] = False
    blocks = []
    for a in range(0, y_all.shape[0], _CENTRE_BLOCK):
        block = y_all[a:a + _CENTRE_BLOCK]
        centre = block.mean(axis=0) if long_vectors else None
        if keep is not None and not keep[a:a + block.shape[0]].all():
            block = block[keep[a:a + block.shape[0]]]
        if block.shape[0]:
            yc = block - centre if long_vectors else block
            blocks.append((yc, np.einsum("ij,ij->i", yc, yc), centre))
    parts = in_threads(chunks, lambda job, scratch: _chunk_sums(job[1], blocks, sigma, scratch), workers)
    if not parts:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _chunk_sums(x: np.ndarray, blocks: list, sigma: float, scratch: Scratch):
    r2 = np.float32(sigma) ** 2
    sums = np.zeros(x.shape[0], dtype=np.float64)
    counts = np.zeros(x.shape[0], dtype=np.int64)
    for yc_block, yn_block, centre in blocks:
        xc = x - centre if centre is not None else x
        xn = np.einsum("ij,ij->i", xc, xc)
        for b in range(0, yc_block.shape[0], _TILE):
            s, c = block_sums(xc, xn, yc_block[b:b + _TILE], yn_block[b:b + _TILE], r2, scratch)
            sums += s
            counts += c
    return sums, counts


def block_sums(xc: np.ndarray, xn: np.ndarray, yc: np.ndarray, yn: np.ndarray, r2, scratch: Scratch):
    """Kernel sums (float64) and counts within sigma of the points ``xc`` over the vectors ``yc`` (one tile;
    ``xn``, ``yn``: their float32 squared norms; ``r2``: sigma squared, float32)."""
    xn64 = xn.astype(np.float64)
    # within sigma: xn + yn - 2 g < r2, i.e. g - yn / 2 > (xn - r2) / 2; the margin covers the rounding
    margin = 1e-5 * (xn64 + float(yn.max()) + float(r2)) + 1e-6
    floor = ((xn64 - float(r2)) / 2 - margin).astype(np.float32)
    g = stable_product(xc, yc, scratch)
    near = scratch.array("near", g.shape, np.bool_)
    low, high = float(yn.min()), float(yn.max())
    if high - low <= 0.05 * float(r2):  # (near-)equal norms, e.g. unit vectors: one compare per pair
        np.greater(g, (floor + np.float32(0.5 * low))[:, None], out=near)
    else:
        h = np.subtract(g, 0.5 * yn, out=scratch.array("shifted", g.shape, np.float32))
        np.greater(h, floor[:, None], out=near)
    i, j = np.nonzero(near)
    if i.size == 0:
        return 0.0, 0
    k = g[i, j]
    k *= -2.0
    k += xn[i]
    k += yn[j]
    k /= -r2
    k += 1.0
    np.clip(k, 0.0, 1.0, out=k)
    return (np.bincount(i, weights=k.astype(np.float64), minlength=xc.shape[0]),
            np.bincount(i[k > 0.0], minlength=xc.shape[0]))
