"""Bounds that let an IVF-Flat index's densities skip work without changing them (tsds.retrieval.density).

Per index: each list's shells (where its members lie around the centroid, along and across the main
directions between centroids) and every member's projection on those directions. Per chunk of points:
a lower bound on the distance to any member of each list, and a sieve of (point, member) pairs by their
projected distance. Both only rule out pairs that cannot lie within sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from tsds.retrieval.base import SearchIndexProtocol as SearchIndex
from tsds.retrieval.ivf import list_sizes, list_vectors
import tsds.retrieval.exact as exact
from tsds.retrieval.threads import Scratch, in_threads

_SHELL_ROWS = 4096  # stored vectors per task when the shells are computed


def _nearest(shells: _Shells, x: np.ndarray, count: int, scratch: Scratch) -> np.ndarray:
    """(points x lists) mask of each point's ``count`` lists nearest by centroid, ties to the lower list.

    Ranked by |c|^2 - 2 x.c from exact products (tsds.retrieval.exact): a point's lists, hence its
    approximate density, do not depend on the other points.
    """
    c = shells.centroids_rounded
    score = exact.product(exact.rounded(x), c, out=scratch.array("nearest", (x.shape[0], c.shape[0]), np.float64))
    score *= -2.0
    score += shells.centroid_norms[None, :]
    order = np.argsort(score, axis=1, kind="stable")[:, :count]
    mask = np.zeros(score.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


# Directions of the shells' basis (at most; fewer for few lists or dimensions). The sieve costs p + 1
# multiply-adds per pair it looks at, the exact products d (in float64) per pair it leaves, and more directions
# leave fewer, so the best p depends on how many pairs the sieve leaves. 128 instead of 64 (densities of 6,000
# points of a 24k-row store of MiniLM embeddings of the demo texts, d = 384): sigma 0.3 0.55-0.59 -> 0.69-0.71 s,
# 0.5 0.64 -> 0.73 s (the sieve leaves 0.2-0.4% of its pairs), 0.8 2.08 -> 0.87 s (it leaves 77%); on the
# benchmark generator at sigma 0.75 (it leaves 8%): 200k x 384 5.2 -> 4.4 s, 50k x 384 2.2 -> 2.0 s, 50k x 256
# 1.2 -> 1.25 s. The default setting on real text is the first case: 64.
BASIS = 64


@dataclass
class _Shells:
    """Where each IVF list's members lie around its centroid, split into two orthogonal parts.

    ``basis`` (p x d, orthonormal) spans the main directions between the lists' centroids. For a member
    y of list l with centroid c, a = |B(y - c)| is its offset along those directions and b its offset
    across them (|y - c|^2 = a^2 + b^2); ``along`` and ``across`` hold each list's [min, max] of a and b.
    For any point x with offsets a_x, b_x from c, |x - y|^2 >= gap(a_x; along)^2 + gap(b_x; across)^2,
    where gap is the distance from a number to an interval: a list whose members sit in a thin shell
    away from the directions towards x is skipped although its radius alone could not rule it out.
    """

    basis: np.ndarray
    centroids: np.ndarray  # float32, as FAISS holds them
    centroids64: np.ndarray
    centroids_projected: np.ndarray  # float64, B c for each centroid c
    along: np.ndarray
    across: np.ndarray
    projected: np.ndarray  # per member, in list order: [2 B y, -|B y|^2] (float32), for _Sieve
    starts: np.ndarray  # list l's members are projected[starts[l]:starts[l + 1]]
    projected_norm_max: float
    centroids_rounded: np.ndarray  # the centroids as exact.rounded makes them, for _nearest
    centroid_norms: np.ndarray  # their exact squared norms
    member_shifts: np.ndarray  # per member, in list order: exact.shifts of its stored vector
    member_norms: np.ndarray  # and the exact squared norm of its rounded vector


def _shells(index: SearchIndex) -> _Shells:
    """Computed once per IVF-Flat index (one pass over the stored vectors) and kept on it."""
    cached = getattr(index, "_density_shells", None)
    if cached is not None:
        return cached
    ivf = faiss.extract_index_ivf(index.index)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    c64 = centroids.astype(np.float64)
    p = max(1, min(BASIS, ivf.nlist - 1, ivf.d))
    centred = c64 - c64.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    basis = np.ascontiguousarray(vectors[:, ::-1][:, :p].T)
    basis32 = basis.astype(np.float32)
    along = np.array([[np.inf, -np.inf]] * ivf.nlist)
    across = along.copy()
    sizes = list_sizes(ivf)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    projected = np.empty((int(starts[-1]), p + 1), dtype=np.float32)
    member_shifts = np.empty(int(starts[-1]), dtype=np.float32)
    member_norms = np.empty(int(starts[-1]), dtype=np.float64)
    centroid_proj = (centroids @ basis32.T).astype(np.float32)
    groups, group, rows = [], [], 0
    for lst in np.flatnonzero(sizes).tolist():
        group.append(lst)
        rows += int(sizes[lst])
        if rows >= _SHELL_ROWS:
            groups.append(np.array(group))
            group, rows = [], 0
    if group:
        groups.append(np.array(group))

    def offsets(lists, scratch):
        """Offsets of the members of ``lists`` (consecutive in list order) along and across the basis."""
        counts = sizes[lists]
        off = scratch.array("offsets", (int(counts.sum()), ivf.d), np.float32)
        np.concatenate([list_vectors(ivf, lst, index.pages)[0] for lst in lists], out=off)
        at = int(starts[lists[0]])
        shift = member_shifts[at:at + off.shape[0]]
        shift[:] = exact.shifts(off)
        r = exact.rounded(off, out=scratch.array("rounded", off.shape, np.float64), shift=shift)
        member_norms[at:at + off.shape[0]] = exact.squared_norms(r)
        off -= np.repeat(centroids[lists], counts, axis=0)
        a = np.matmul(off, basis32.T, out=scratch.array("along", (off.shape[0], p), np.float32))
        yb = projected[at:at + off.shape[0], :p]
        np.add(a, np.repeat(centroid_proj[lists], counts, axis=0), out=yb)
        projected[at:at + off.shape[0], p] = -np.einsum("ij,ij->i", yb, yb)
        yb *= 2.0
        a2 = np.einsum("ij,ij->i", a, a, dtype=np.float64)
        b = np.sqrt(np.maximum(np.einsum("ij,ij->i", off, off, dtype=np.float64) - a2, 0.0))
        a = np.sqrt(a2)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        along[lists, 0], along[lists, 1] = np.minimum.reduceat(a, first), np.maximum.reduceat(a, first)
        across[lists, 0], across[lists, 1] = np.minimum.reduceat(b, first), np.maximum.reduceat(b, first)

    in_threads(groups, offsets)
    # float32 offsets and projections: widen every interval by far more than their rounding
    slack = 1e-4 * (1.0 + float(np.nanmax(np.where(np.isfinite(across), across, 0.0), initial=0.0)))
    along += [-slack, slack]
    across += [-slack, slack]
    rounded = exact.rounded(centroids)
    shells = _Shells(basis=basis, centroids=centroids, centroids64=c64, centroids_projected=c64 @ basis.T,
                     along=along, across=across, projected=projected, starts=starts,
                     projected_norm_max=float(-projected[:, p].min(initial=0.0)),
                     centroids_rounded=rounded,
                     centroid_norms=exact.squared_norms(rounded),
                     member_shifts=member_shifts, member_norms=member_norms)
    index._density_shells = shells
    return shells


class _Sieve:
    """Which (point, member) pairs of a list can lie within sigma, from their offsets along the basis.

    |B(x - y)| <= |x - y| for the orthonormal basis B, so a pair whose projected distance exceeds sigma
    cannot count. One small product (p + 1 columns instead of d) per list finds the points with any
    candidate member and the members with any candidate point; only that block is multiplied in full.
    Thresholds carry a margin far above float32 rounding, so no pair within sigma is ever dropped.
    """

    def __init__(self, shells: _Shells, x: np.ndarray, sigma: float, scratch: Scratch):
        self.shells = shells
        self.scratch = scratch
        p = self.shells.basis.shape[0]
        xb = x @ self.shells.basis.astype(np.float32).T
        self.points = np.empty((x.shape[0], p + 1), dtype=np.float32)
        self.points[:, :p] = xb
        self.points[:, p] = 1.0
        xn = np.einsum("ij,ij->i", xb, xb, dtype=np.float64)
        r2 = float(sigma) ** 2
        self.threshold = (xn - r2 - 1e-4 * (xn + self.shells.projected_norm_max + r2) - 1e-6).astype(np.float32)

    def pairs(self, lst: int, pts: np.ndarray, members: np.ndarray | None = None, mask: np.ndarray | None = None):
        """(points of ``pts`` with a possible member, that list's members with a possible point or None for
        all), among ``members`` (places in the list; None: all) and the pairs ``mask`` allows (None: all)."""
        ys = self.shells.projected[self.shells.starts[lst]:self.shells.starts[lst + 1]]
        if members is not None:
            ys = np.take(ys, members, axis=0, out=self.scratch.array("sieved", (members.size, ys.shape[1]), ys.dtype))
        h = np.matmul(self.points[pts], ys.T, out=self.scratch.array("sieve", (pts.size, ys.shape[0]), np.float32))
        possible = np.greater_equal(h, self.threshold[pts, None],
                                    out=self.scratch.array("possible", h.shape, np.bool_))
        if mask is not None:
            possible &= mask
        rows = possible.any(axis=1)
        if not rows.any():
            return pts[:0], None
        cols = possible.any(axis=0)  # rows without a candidate add nothing
        if members is not None:
            return pts[rows], members[cols]
        return pts[rows], (None if cols.all() else np.flatnonzero(cols))


class _Directions:
    """Which members of a list can lie within sigma of a chunk's points, one direction per group of points.

    For a unit vector u, |x - y| >= |u.x - u.y|. The points are grouped by their nearest centroid; for a
    list l and a group nearest to another centroid c, u points from l's centroid to c. Where the two
    lists' members sit in separate clusters, their projections on u lie apart by about the clusters'
    distance while each cluster's spread along one direction is small, however wide it is in all of them
    (a (p + 1)-dimensional projection sees only its share of that spread: on isotropic clusters, 38% of
    the pairs passed the list bounds at 200k x 384, 3.3% the sieve and 2.0% this test). A member is kept
    for the group when its projection lies within sigma (with a margin far above float32 rounding) of
    the interval of the group's points' projections; per list, one small product of the groups'
    directions with its members. Any direction gives a valid bound, so which group a point falls in
    never changes a density.
    """

    def __init__(self, shells: _Shells, x: np.ndarray, full2: np.ndarray, need: np.ndarray, sigma: float,
                 scratch: Scratch):
        self.shells = shells
        self.scratch = scratch
        own = np.argmin(full2, axis=1)
        self.groups, self.group = np.unique(own, return_inverse=True)
        c = shells.centroids64
        gap = np.sqrt(_squared_distances(c[self.groups], c, scratch.array("gaps", (self.groups.size, c.shape[0]),
                                                                           np.float64)))
        # u.x for u from centroid l to the point's own centroid c: (x.c - x.l) / |c - l|, x.l from |x - l|^2
        xn = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        cn = np.einsum("ij,ij->i", c, c)
        dot = np.add(xn[:, None], cn[None, :], out=scratch.array("a2", full2.shape, np.float64))  # _shell_bound's, done
        dot -= full2
        dot *= 0.5
        along = np.subtract(dot[np.arange(x.shape[0]), own][:, None], dot, out=dot)
        # x.c from |x - c|^2 errs by about 1e-16 (|x|^2 + |c|^2): divided by a gap above 1e-4 of the scale,
        # far below the margin
        scale = 1.0 + float(np.sqrt(max(xn.max(initial=0.0), cn.max(initial=0.0))))
        far = gap > 1e-4 * scale
        np.divide(along, gap[self.group], out=along, where=far[self.group])
        order = np.argsort(self.group, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(self.group[order]) != 0])
        lo = np.where(need, along, np.inf)[order]
        hi = np.where(need, along, -np.inf)[order]
        self.lo = np.minimum.reduceat(lo, starts, axis=0)
        self.hi = np.maximum.reduceat(hi, starts, axis=0)
        alike = ~far & (self.lo <= self.hi)  # a group nearest to the list's own centroid (no direction): every member
        self.lo[alike] = -np.inf
        self.hi[alike] = np.inf
        self.gap = gap
        self.work = 0  # multiply-adds of the direction products so far
        top = float(np.sqrt(shells.member_norms.max(initial=0.0)))
        reach = float(np.sqrt(xn.max(initial=0.0)))
        # float32 products of length d err by at most d 2^-24 |y| |u| each, and the float64 side far less
        self.sigma = float(sigma) * (1 + 1e-6) + 4.0 * x.shape[1] * 2.0 ** -24 * (top + reach + 1.0) + 1e-6

    def members(self, lst: int, y: np.ndarray, pts: np.ndarray):
        """(points of ``pts`` with a possible member of list ``lst``, whose vectors are ``y``; those members'
        places in the list or None for all; which of those (point, member) pairs are possible, or None for
        all), or None when no pair is."""
        lo, hi = self.lo[:, lst], self.hi[:, lst]
        groups = np.flatnonzero(lo <= hi)
        if groups.size * y.shape[1] > pts.size * self.shells.projected.shape[1] or np.isinf(lo[groups]).any():
            return pts, None, None  # a group per point or so: the sieve costs less than one product per group
        c = self.shells.centroids64
        u = ((c[self.groups[groups]] - c[lst]) / self.gap[groups, lst, None]).astype(np.float32)
        py = np.matmul(y, u.T, out=self.scratch.array("directions", (y.shape[0], groups.size), np.float32))
        self.work += py.size * y.shape[1]
        keep = np.greater_equal(py, lo[groups] - self.sigma, out=self.scratch.array("keep", py.shape, np.bool_))
        keep &= py <= hi[groups] + self.sigma
        hit = keep.any(axis=0)
        if not hit.any():
            return None
        slot = np.full(self.groups.size, -1)
        slot[groups[hit]] = np.arange(int(hit.sum()))
        rows = pts[slot[self.group[pts]] >= 0]
        keep = keep[:, hit]
        cols = np.flatnonzero(keep.any(axis=1))
        mask = None if keep.shape[1] == 1 else keep[cols][:, slot[self.group[rows]]].T
        return rows, (None if cols.size == y.shape[0] else cols), mask


def _squared_distances(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """|a_i - b_j|^2 (float64, clipped at 0) written into ``out``: these (points x lists) matrices are made
    for every chunk of points, and each temporary of their size would be a fresh mapping to fault in."""
    np.matmul(a, b.T, out=out)
    out *= -2.0
    out += np.einsum("ij,ij->i", a, a)[:, None]
    out += np.einsum("ij,ij->i", b, b)[None, :]
    return np.maximum(out, 0.0, out=out)


def _shell_bound(shells: _Shells, x64: np.ndarray, full2: np.ndarray, need: np.ndarray,
                 scratch: Scratch) -> np.ndarray:
    """Lower bound on the distance from each point to any member of each list (inf where not needed).

    ``x64``: the points in float64; ``full2``: their squared distances to the centroids. The result is
    one of ``scratch``'s arrays, "reach" (the caller's radius bound, read before this is called): a chunk's
    (points x lists) arrays are its threads' largest buffers after the members' (3.5 MB each at 200k x 384).
    """
    a2 = _squared_distances(x64 @ shells.basis.T, shells.centroids_projected,
                            scratch.array("a2", full2.shape, np.float64))
    b = np.subtract(full2, a2, out=scratch.array("reach", full2.shape, np.float64))
    np.maximum(b, 0.0, out=b)
    np.sqrt(b, out=b)
    a = np.sqrt(a2, out=a2)

    def gap2(v, interval):
        """Squared distance from v to the interval, written over v."""
        below = np.subtract(interval[None, :, 0], v, out=scratch.array("below", v.shape, np.float64))
        v -= interval[None, :, 1]
        np.maximum(v, below, out=v)
        np.maximum(v, 0.0, out=v)
        return np.square(v, out=v)

    bound = gap2(b, shells.across)
    bound += gap2(a, shells.along)
    np.sqrt(bound, out=bound)
    bound[~need] = np.inf
    return bound
