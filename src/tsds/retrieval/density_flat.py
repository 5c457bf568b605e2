"""Kernel sums over a flat index (or every list of an IVF-Flat one) in cache-sized tiles, on every core.

The product of a tile of points with a tile of stored vectors runs at float32 BLAS speed; what made the
straightforward version slow was what followed it: nine element-wise passes over a product of many MB
(scale, add both norms, divide, add one, clip, a float64 row sum, a compare, a count), single-threaded
and out of cache. Here each tile is small enough to stay in cache, the tiles of fixed chunks of points run
on one thread per core, and only two passes read a whole tile: a lower bound on the inner product that a
pair within sigma needs, and the selection of the few pairs above it. Those few pairs' products are then
computed exactly (tsds.retrieval.exact), so each pair's kernel term is one number wherever and with
whatever other points it is computed (the float32 product's last bits depend on the BLAS kernel and the
pair's place in the block), and the float64 sum of a point's terms (multiples of 2^-24) is exact in any
order.
"""

from __future__ import annotations

import faiss
import numpy as np

import tsds.retrieval.exact as exact
from tsds.retrieval.threads import Scratch, in_threads

_POINTS = 256  # points per task (fixed: the sums do not depend on the number of threads)
_TILE = 2048  # stored vectors per product
_GROUP = 32  # points per exact product of the candidate pairs
_BLOCK = 65536  # stored vectors per block when excluded rows are left out
_PIVOTS = 64  # groups of the points' order (16: 0.97 s, 64: 0.87 s, 256: 0.98 s, one thread, as below)


def flat_vectors(index) -> np.ndarray:
    """The stored float32 vectors of a flat FAISS index, in place (no copy)."""
    n, d = index.ntotal, index.dim
    return faiss.rev_swig_ptr(index.index.get_xb(), n * d).reshape(n, d)


def tiled_kernel_sums(y_all: np.ndarray, x: np.ndarray, sigma: float, excluded: np.ndarray | None = None,
                      workers: int | None = None):
    """Per point of ``x``: the kernel sum (float64, no floor) over every row of ``y_all`` not in ``excluded``,
    and the count of those within sigma (int64)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    order = _coherent_order(x)
    x = x[order]
    chunks = [(a, x[a:a + _POINTS]) for a in range(0, x.shape[0], _POINTS)]
    keep = None
    if excluded is not None and excluded.size:
        keep = np.ones(y_all.shape[0], dtype=bool)
        keep[excluded[excluded < y_all.shape[0]]] = False
    blocks = []
    for a in range(0, y_all.shape[0], _BLOCK):  # copies of the kept rows, one block at a time
        block = y_all[a:a + _BLOCK]
        if keep is not None and not keep[a:a + block.shape[0]].all():
            block = block[keep[a:a + block.shape[0]]]
        if block.shape[0]:
            blocks.append((block, np.einsum("ij,ij->i", block, block).astype(np.float64)))
    parts = in_threads(chunks, lambda job, scratch: _chunk_sums(job[1], blocks, sigma, scratch), workers)
    if not parts:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    back = np.empty_like(order)
    back[order] = np.arange(order.size)
    return np.concatenate([p[0] for p in parts])[back], np.concatenate([p[1] for p in parts])[back]


def _coherent_order(x: np.ndarray) -> np.ndarray:
    """An order of the points that puts near ones together: each goes with the most similar of up to
    ``_PIVOTS`` points spread over ``x``. A group of near points reaches few stored vectors, so its exact
    products cover fewer of them (50k x 256, 1,333 random points: the tiles 0.78-1.07 -> 0.53-0.60 s). Only
    the speed depends on it: every point's sum is exact."""
    if x.shape[0] <= _GROUP:
        return np.arange(x.shape[0])
    pivots = x[np.linspace(0, x.shape[0] - 1, min(_PIVOTS, x.shape[0])).astype(np.int64)]
    return np.argsort(np.argmax(x @ pivots.T, axis=1), kind="stable")


def _chunk_sums(x: np.ndarray, blocks: list, sigma: float, scratch: Scratch):
    r2 = float(sigma) ** 2
    sums = np.zeros(x.shape[0], dtype=np.float64)
    counts = np.zeros(x.shape[0], dtype=np.int64)
    xr = exact.rounded(x)
    xn = exact.squared_norms(xr)
    for block, norms in blocks:
        for b in range(0, block.shape[0], _TILE):
            s, c = block_sums(x, xr, xn, block[b:b + _TILE], r2, scratch, norms[b:b + _TILE])
            sums += s
            counts += c
    return sums, counts


def float32_margin(d: int) -> float:
    """How far, relative to |x|^2 + max |y|^2 + sigma^2, a float32 product of d-dimensional float32 vectors may
    put a pair on the wrong side of sigma: its rounding on any BLAS and that of the vectors against their
    ``exact.rounded`` forms. A float32 test with this margin keeps every pair within sigma."""
    return d * 2.0 ** -23 + 4 * np.sqrt(d) * 2.0 ** -22


def block_sums(x: np.ndarray, xr: np.ndarray, xn: np.ndarray, y: np.ndarray, r2: float, scratch: Scratch,
               yn: np.ndarray | None = None):
    """Kernel sums (float64) and counts within sigma of the float32 points ``x`` over the float32 vectors
    ``y`` (one tile). ``xr``, ``xn``: the points as ``exact.rounded`` makes them and their squared norms;
    ``yn``: the float32 squared norms of ``y`` (as float64), if known.

    A float32 product finds the pairs that may lie within sigma (its margin covers the product's rounding
    on any BLAS and the rounding of the vectors); only those pairs' products are then computed exactly.
    """
    g = np.matmul(x, y.T, out=scratch.array("product", (x.shape[0], y.shape[0]), np.float32))
    yn = np.einsum("ij,ij->i", y, y).astype(np.float64) if yn is None else yn
    low, high = float(yn.min()), float(yn.max())
    d = x.shape[1]
    margin = float32_margin(d) * (xn + high + r2)
    floor = ((xn - r2) / 2 - margin).astype(np.float32)  # within sigma: g > (xn + yn - r2) / 2
    near = scratch.array("near", g.shape, np.bool_)
    if high - low <= 0.05 * r2:  # (near-)equal norms, e.g. unit vectors: one compare per pair
        np.greater(g, (floor + np.float32(0.5 * low))[:, None], out=near)
    else:
        h = np.subtract(g, (0.5 * yn).astype(np.float32), out=scratch.array("shifted", g.shape, np.float32))
        np.greater(h, floor[:, None], out=near)
    # the exact products of the points and members of each candidate pair, by groups of points (one small
    # float64 product per group over the members any of its points may reach: a gather per pair would move
    # d numbers per pair, one product over the whole tile would multiply most pairs twice)
    sums = np.zeros(x.shape[0], dtype=np.float64)
    counts = np.zeros(x.shape[0], dtype=np.int64)
    for a in range(0, x.shape[0], _GROUP):
        block = near[a:a + _GROUP]
        members = np.flatnonzero(block.any(axis=0))
        if members.size == 0:
            continue
        yr = exact.rounded(y[members])
        ge = exact.product(xr[a:a + _GROUP], yr, out=scratch.array("exact", (block.shape[0], members.size), np.float64))
        i, j = np.nonzero(block[:, members])
        k = exact.kernel_terms(ge[i, j], xn[a + i], exact.squared_norms(yr)[j], r2)
        sums[a:a + block.shape[0]] += np.bincount(i, weights=k.astype(np.float64), minlength=block.shape[0])
        counts[a:a + block.shape[0]] += np.bincount(i[k > 0.0], minlength=block.shape[0])
    return sums, counts
