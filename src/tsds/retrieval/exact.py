"""Inner products that do not depend on the BLAS, the block shape or the other points.

A float32 BLAS product rounds each entry in an order its kernel chooses, and on some kernels that order
depends on the entry's place in the block and on the block's size (measured with OpenBLAS's Haswell
kernels on an AMD EPYC: a pair's inner product changed in its last bits with the number of points
multiplied with it). A density would then depend on which other points were computed with it, and a
selection on the state of the density cache. So the kernel terms come from exact products instead:

each vector is rounded to ``bits(d)`` bits relative to a power of two above its largest component (an
error of at most 2^-(bits+1) times that power: 2^-23 for unit vectors of d <= 512, a few float32 ulps), so
that every product of two components is an integer multiple of one power of two per pair of vectors and
every partial sum of d of them fits in float64's 53 bits. A float64 matrix product of rounded vectors is
then exact, whatever order the BLAS adds in, and so are the squared norms.
"""

from __future__ import annotations

import numpy as np


def bits(d: int) -> int:
    """Bits kept per component for d-dimensional vectors: d products of two such integers sum below 2^53
    (at most 22, which float32 holds with room for the rounding below)."""
    return max(1, min(22, (53 - int(np.ceil(np.log2(max(int(d), 1))))) // 2))


def shifts(v: np.ndarray) -> np.ndarray:
    """Per float32 row of ``v``: the float32 number whose addition and subtraction round the row as
    ``rounded`` does (1.5 * 2^(e - bits(d) + 23), where 2^e is the power of two above its largest
    component). Kept per stored vector, it spares ``rounded`` two passes over the rows."""
    top = np.maximum(v.max(axis=1), -v.min(axis=1)) if v.size else np.zeros(v.shape[0], np.float32)
    e = np.frexp(top)[1]  # top < 2^e
    return np.ldexp(np.float32(1.5), e - bits(v.shape[1]) + 23).astype(np.float32)


def rounded(v: np.ndarray, out: np.ndarray | None = None, shift: np.ndarray | None = None,
            work: np.ndarray | None = None) -> np.ndarray:
    """The float32 rows of ``v`` as float64, each rounded (to nearest, ties to even) to a multiple of
    2^(e - bits(d)), where 2^e is the power of two above its largest component (zero rows stay zero).
    Products and squared norms of the result are exact in float64. ``shift``: the rows' ``shifts``, if
    known; ``work``: a float32 buffer of ``v``'s shape to use."""
    v = np.ascontiguousarray(v, dtype=np.float32)
    out = np.empty(v.shape, dtype=np.float64) if out is None else out
    if v.size == 0:
        return out
    shift = (shifts(v) if shift is None else shift)[:, None]
    # adding the shift makes float32 round |v| < 2^e to that grid; subtracting it is exact
    np.subtract(np.add(v, shift, out=work), shift, out=out, dtype=np.float32, casting="same_kind")
    return out


def squared_norms(r: np.ndarray) -> np.ndarray:
    """Exact squared norms (float64) of rows from ``rounded``."""
    return np.einsum("ij,ij->i", r, r)


def product(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b.T`` for rows from ``rounded``: exact, so the same numbers on every BLAS and block shape."""
    return np.matmul(a, b.T, out=out)


def kernel_terms(g: np.ndarray, xn, yn, r2: float, overwrite: bool = False) -> np.ndarray:
    """Kernel terms 1 - |x - y|^2 / sigma^2 in [0, 1] (float32, multiples of 2^-24) from exact inner
    products ``g`` and squared norms (arrays that broadcast together; ``overwrite``: ``g`` may be used as
    scratch). The same operations in the same order for any shape, so a pair's term is one number, and
    float64 sums of terms are exact in any order."""
    d2 = np.multiply(g, -2.0, out=g if overwrite else None)
    d2 += xn
    d2 += yn
    d2 /= r2
    t = d2.astype(np.float32)
    np.subtract(np.float32(1.0), t, out=t)
    return np.clip(t, 0.0, 1.0, out=t)
