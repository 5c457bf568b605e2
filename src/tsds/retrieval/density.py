"""Kernel densities over the whole pool.

rho_i = sum over all candidates x' with ||x_i - x'|| < sigma of (1 - ||x_i - x'||^2 / sigma^2).
The sums are matrix products (BLAS) of the points against the vectors stored in the FAISS
index, read in place. With an IVF index, lists whose centroid lies farther than sigma + (the
list's radius) from x_i cannot hold a point within sigma (triangle inequality), so only the
other lists are multiplied: the sum is still exact. A cap on the neighbours counted per
point guards against pathological pools; for points over it, a FAISS range search keeps
their ``cap`` nearest terms.
"""

from __future__ import annotations

import faiss
import numpy as np

from tsds.retrieval.base import SearchIndexProtocol as SearchIndex
from tsds.retrieval.density_batches import DensityStats, PointSums, batched_densities
from tsds.retrieval.density_bounds import _Directions, _nearest, _shell_bound, _shells, _Sieve, _squared_distances
from tsds.retrieval.density_flat import block_sums, flat_vectors, float32_margin, tiled_kernel_sums
from tsds.retrieval.density_plan import PROBE_EVERY, DensityPlan, Nearest, bounded_pairs, plan_for
from tsds.retrieval.ivf import list_vectors
import tsds.retrieval.exact as exact
from tsds.retrieval.threads import Scratch, cores, in_threads

DEFAULT_CAP = 100_000
__all__ = ["DEFAULT_CAP", "DensityStats", "Nearest", "PointSums", "batched_densities", "densities"]


def densities(
    index: SearchIndex,
    ids: np.ndarray,
    sigma: float,
    *,
    cap: int = DEFAULT_CAP,
    stats: DensityStats | None = None,
    progress=None,
    return_counts: bool = False,
    path: str | Nearest = "auto",
):
    """Density (float64, >= 1) of the candidates ``ids`` over every candidate in ``index``.

    With ``return_counts``, also the number of candidates within sigma of each (itself included):
    the size of its near-duplicate cluster. ``path`` (IVF-Flat indexes): "pruned", "brute" (every list
    against every point) or "auto", the cheaper by counted work (tsds.retrieval.density_plan); or
    ``Nearest(P)``, approximate densities: the sum over the members of each point's P IVF lists nearest
    by centroid only. Every term left out is >= 0, so an approximate density is never above the exact one;
    it depends only on the point and the index, not on the other points. A flat index (exact search, up to
    50,000 rows) has no lists to probe, and its exact densities cost less than building some: they stay exact.
    """
    stats = stats if stats is not None else DensityStats()
    ids = np.asarray(ids, dtype=np.int64)
    if isinstance(path, Nearest) and index.list_radius is None:
        path = "auto"
    nearest_lists = path.lists if isinstance(path, Nearest) else None
    partition = index.density_partition(ids.size) if path == "auto" and hasattr(index, "density_partition") else None
    if partition is not None:  # a flat index's partition: the same numbers, bit for bit, with pruning
        return densities(partition, ids, sigma, cap=cap, stats=stats, progress=progress,
                         return_counts=return_counts, path=path)
    radius2 = float(sigma) ** 2

    def capped_sums(x_over):
        lims, d2 = _range_search(index, x_over, radius2, sigma, DensityStats())
        return _kernel_sums(lims, d2, radius2, cap, DensityStats())

    order = _by_list(index, ids)
    task = _task_size(index, None) if index.list_radius is not None else _CHUNK
    plan = plan_for(index, sigma, path) if index.list_radius is not None else None

    def sums_and_counts(x):
        if plan is None:
            return parallel_kernel_sums(index, x, sigma, stats)
        batch = DensityStats()
        out = parallel_kernel_sums(index, x, sigma, batch, plan=plan, nearest_lists=nearest_lists)
        # between batches: the next batch's chunks see it
        plan.learn(batch.sieved, batch.pruned_multiplied, (batch.probed, batch.probe_kept, batch.probe_work),
                   index.dim, _shells(index).basis.shape[0], batch.pruned_pairs)
        stats.add(batch)
        return out

    out = batched_densities(
        ids[order], sigma, PointSums(index.reconstruct, sums_and_counts, capped_sums, cap),
        batch=max(4096, 2 * cores() * task),
        first_batch=min(2 * task, _FIRST_BATCH) if plan is not None and plan.keep is None else None,
        stats=stats, progress=progress, return_counts=return_counts)
    back = np.empty_like(order)
    back[order] = np.arange(order.size)
    return (out[0][back], out[1][back]) if return_counts else out[back]


def _by_list(index: SearchIndex, ids: np.ndarray) -> np.ndarray:
    """An order of ``ids`` that puts members of one IVF list together (identity for flat indexes).

    A chunk of points from few lists needs few lists' products, each over more of its points: fewer,
    larger products for the same pairs.
    """
    lists = index.lists_of(ids) if ids.size else None
    if lists is None:
        return np.arange(ids.size)
    return np.lexsort((ids, lists))


_BLOCK = 1 << 20  # entries of one float64 product block (8 MB)
_FIRST_BATCH = 512  # points of the first batch of an undecided plan, which the plan measures (tsds.retrieval.
# density_plan): until it has decided, its chunks sieve without the direction test. 200k x 384 (test on): 2,048 points
# 4.39-4.48 s for the selection's densities, 512 4.20-4.21 (5.7M pairs probed, over the 1M it needs), 256 4.46-4.48
_MEMBERS = 1024  # members rounded and multiplied at a time: a thread's float64 copy of them is then at most 3 MB
# at d = 384 (the longest of 447 lists at 200k held 3,860: 11 MB, and 6 more of float32 work, in each thread)
_BRUTE_TILE = 2048
_CHUNK = 1024  # points per task, at most. Each task makes a few small numpy calls per list it scans, and the
# threads contend for the interpreter between them: on 2 cores, 512-point tasks ran no faster on two threads
# than on one (50k x 256, 12,451 points: 0.89 s either way); 1024 took 0.71 s, 2048 0.62 s (200k x 384:
# 2.32 -> 1.82 -> 1.67 s; 1M: 6.6 -> 5.9 -> 6.4 s). Results do not depend on it: every kernel term is a
# float32 multiple of 2^-24 in [0, 1], so their float64 sums are exact in any grouping.
_CHUNK_MIN = 128
_SCRATCH_BYTES = 256 << 20  # every thread holds about 41 bytes per (point of its task, list) in buffers
# (tsds.retrieval.density_bounds); tasks are made smaller where all threads' together would pass this


def chunk_size(nlist: int, workers: int) -> int:
    """Points per task for an index of ``nlist`` lists on ``workers`` threads."""
    fit = _SCRATCH_BYTES // (41 * max(1, nlist) * max(1, workers))
    return int(max(_CHUNK_MIN, min(_CHUNK, fit)))


def balanced_size(points: int, size: int, workers: int | None = None) -> int:
    """Points per task for ``points`` in tasks of at most ``size``: as many tasks as a multiple of the
    threads, of equal size. 1,053 points in tasks of 1,024 and 29 kept one core idle (200k x 384: 0.84 s
    for them). Sums do not depend on it (their terms are exact)."""
    workers = cores() if workers is None else max(1, workers)
    tasks = -(-max(1, points) // max(1, size))
    tasks = -(-tasks // workers) * workers
    return max(1, min(size, -(-points // tasks)))


def _task_size(index: SearchIndex, workers: int | None) -> int:
    return chunk_size(index.nlist, cores() if workers is None else workers)


def parallel_kernel_sums(index: SearchIndex, x: np.ndarray, sigma: float, stats: DensityStats | None = None,
                         workers: int | None = None, plan: DensityPlan | None = None,
                         nearest_lists: int | None = None):
    """``kernel_sums`` over fixed chunks of points, run by one thread per core with single-threaded BLAS (IVF).

    The per-list products are small; a multi-threaded BLAS splits each one across cores and spends its
    time synchronising (several times slower on a busy machine). Independent chunks keep every core on
    its own products, and since the chunks are fixed, the sums are the same for any number of threads.
    """
    stats = stats if stats is not None else DensityStats()
    if index.list_radius is None:  # a flat index: cache-sized tiles, one thread per core (tsds.retrieval.density_flat)
        sums, counts = tiled_kernel_sums(flat_vectors(index), x, sigma, index.excluded, workers)
        stats.pairs += int(counts.sum())
        stats.multiplied += int(x.shape[0]) * index.available
        return sums, counts
    parts = _over_chunks(index, x, lambda chunk, st, scratch: kernel_sums(index, chunk, sigma, st, scratch, plan,
                                                                            nearest_lists), stats, workers)
    if not parts:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _over_chunks(index: SearchIndex, x: np.ndarray, fn, stats: DensityStats, workers: int | None = None,
                 size: int | None = None) -> list:
    """``fn(chunk, stats, scratch)`` on fixed chunks of ``size`` points of ``x`` (IVF index; by default
    ``_task_size``), one thread per core, single-threaded BLAS; results in chunk order."""
    size = size or balanced_size(x.shape[0], _task_size(index, workers), workers)
    chunks = [x[a:a + size] for a in range(0, x.shape[0], size)]
    _shells(index)  # once, before the threads start
    parts_stats = [DensityStats() for _ in chunks]
    parts = in_threads(list(zip(chunks, parts_stats)), lambda job, scratch: fn(*job, scratch), workers)
    for st in parts_stats:
        stats.add(st)
    return parts


def candidates_within(index: SearchIndex, x: np.ndarray, sigma: float, workers: int | None = None):
    """Every (point, member) pair of an IVF-Flat index that may lie within sigma: a superset, found with the
    same bounds and sieve as ``kernel_sums`` and float32 distances with a margin far above their rounding,
    for callers that recompute the distances exactly. Returns (lims, member ids, lists scanned) in the
    layout of a FAISS range search, members in increasing id order per point."""
    stats = DensityStats()
    x = np.ascontiguousarray(x, dtype=np.float32)
    size = balanced_size(x.shape[0], _task_size(index, workers), workers)
    parts = _over_chunks(index, x, _candidate_pairs_in(index, sigma), stats, workers, size)
    owner = np.concatenate([p[0] + a * size for a, p in enumerate(parts)] or [np.zeros(0, np.int64)])
    labels = np.concatenate([p[1] for p in parts] or [np.zeros(0, np.int64)])
    order = np.lexsort((labels, owner))
    owner, labels = owner[order], labels[order]
    lims = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=x.shape[0]))]).astype(np.int64)
    return lims, labels, stats.lists_scanned


def _candidate_pairs_in(index: SearchIndex, sigma: float):
    return lambda x, stats, scratch: _candidate_pairs(index, x, sigma, stats, scratch)


def _candidate_pairs(index: SearchIndex, x: np.ndarray, sigma: float, stats: DensityStats, scratch: Scratch):
    r2 = float(sigma) ** 2
    long_vectors = bool(np.einsum("ij,ij->i", x, x).max(initial=0.0) > 4.0)
    owners, members = [], []
    for y, member_ids, pts, centre, _ in _blocks(index, x, sigma, stats, scratch):
        yc = y - centre if long_vectors else y
        xc = x[pts] - centre if long_vectors else x[pts]
        yn = np.einsum("ij,ij->i", yc, yc)
        xn = np.einsum("ij,ij->i", xc, xc)
        d2 = xn[:, None] + yn[None, :] - 2.0 * (xc @ yc.T)
        limit = r2 + 1e-4 * (r2 + xn[:, None] + yn.max()) + 1e-6
        i, j = np.nonzero(d2 <= limit)
        owners.append(pts[i])
        members.append(member_ids[j])
    if not owners:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(owners).astype(np.int64), np.concatenate(members).astype(np.int64)


def kernel_sums(index: SearchIndex, x: np.ndarray, sigma: float, stats: DensityStats | None = None,
                scratch: Scratch | None = None, plan: DensityPlan | None = None, nearest_lists: int | None = None):
    """Per point of ``x``: the kernel sum over every (not excluded) candidate, and the count within sigma.

    Float64 sums (no floor at 1), int64 counts. Used by every engine, shard by shard. With a ``plan``
    (IVF-Flat), the chunk is pruned or multiplied against every list, as the plan chooses; with
    ``nearest_lists``, only the members of each point's nearest lists count (see ``densities``).
    """
    stats = stats if stats is not None else DensityStats()
    x = np.ascontiguousarray(x, dtype=np.float32)
    r2 = float(sigma) ** 2
    sums = np.zeros(x.shape[0], dtype=np.float64)
    counts = np.zeros(x.shape[0], dtype=np.int64)
    excluded = index.excluded
    scratch = scratch or Scratch()
    xr = exact.rounded(x)  # exact products: a pair's term does not depend on the block it is computed in
    xn = exact.squared_norms(xr)
    brute_before, multiplied = stats.brute_points, 0
    shells = _shells(index) if index.list_radius is not None else None
    narrow = plan.narrows if plan is not None else True
    for y, member_ids, pts, _, at in _blocks(index, x, sigma, stats, scratch, plan, nearest_lists):
        if excluded is not None:
            keep = ~np.isin(member_ids, excluded)
            if not keep.all():
                y, at = y[keep], (at[keep] if at is not None else None)
        if y.shape[0] == 0:
            continue
        multiplied += pts.size * y.shape[0]
        if stats.brute_points != brute_before:  # every list against the whole chunk: one compare per pair
            for b in range(0, y.shape[0], _BRUTE_TILE):
                s, c = block_sums(x, xr, xn, y[b:b + _BRUTE_TILE], r2, scratch)
                sums += s
                counts += c
            continue
        kept = at is not None  # an IVF list's members: their shifts and norms are kept with the shells
        if kept and narrow:
            _narrowed_sums((x, xr, xn), y, at, pts, shells, r2, scratch, (sums, counts))
            continue
        for b in range(0, y.shape[0], _MEMBERS):  # long lists in parts: each part's float64 copy stays small
            yb = y[b:b + _MEMBERS]
            yr = exact.rounded(yb, out=scratch.array("members64", yb.shape, np.float64),
                               shift=shells.member_shifts[at[b:b + _MEMBERS]] if kept else None,
                               work=scratch.array("shifted", yb.shape, np.float32))
            yn = shells.member_norms[at[b:b + _MEMBERS]] if kept else exact.squared_norms(yr)
            step = max(1, _BLOCK // yb.shape[0])
            for a in range(0, pts.size, step):
                p = pts[a:a + step]
                g = exact.product(xr[p], yr, out=scratch.array("product", (p.size, yr.shape[0]), np.float64))
                k = exact.kernel_terms(g, xn[p, None], yn[None, :], r2, overwrite=True)
                sums[p] += k.sum(axis=1, dtype=np.float64)
                counts[p] += np.greater(k, 0.0, out=scratch.array("within", k.shape, np.bool_)).sum(axis=1)
    stats.pairs += int(counts.sum())
    stats.multiplied += multiplied
    if stats.brute_points == brute_before:
        stats.pruned_multiplied += multiplied
        stats.pruned_pairs += int(counts.sum())
    return sums, counts


def _narrowed_sums(points, y, at, pts, shells, r2: float, scratch: Scratch, out) -> None:
    """Add the kernel terms of the points ``pts`` of ``points`` = (x, x rounded, their exact squared norms) with
    the members ``y`` of one IVF list (places ``at`` in the shells' order) to ``out`` = (sums, counts): a
    float32 product first finds the pairs that may lie within sigma, with the flat tiles' margin
    (tsds.retrieval.density_flat.float32_margin), and only the points and members of those pairs are multiplied
    exactly. Every pair left out lies beyond sigma, where its term is 0: the sums are those of the whole block."""
    (x, xr, xn), (sums, counts) = points, out
    d = x.shape[1]
    relative = float32_margin(d)
    for b in range(0, y.shape[0], _MEMBERS):
        yb, where = y[b:b + _MEMBERS], at[b:b + _MEMBERS]
        yn = shells.member_norms[where]
        half = (0.5 * yn).astype(np.float32)
        high = float(yn.max())
        step = max(1, _BLOCK // yb.shape[0])
        for a in range(0, pts.size, step):
            p = pts[a:a + step]
            g = np.matmul(x[p], yb.T, out=scratch.array("near32", (p.size, yb.shape[0]), np.float32))
            g -= half[None, :]  # within sigma: x.y - |y|^2 / 2 > (|x|^2 - sigma^2) / 2
            floor = ((xn[p] - r2) / 2 - relative * (xn[p] + high + r2)).astype(np.float32)
            near = np.greater(g, floor[:, None], out=scratch.array("near", g.shape, np.bool_))
            rows = near.any(axis=1)
            if not rows.any():
                continue
            cols = np.flatnonzero(near.any(axis=0))
            p = p[rows]
            ys = np.take(yb, cols, axis=0, out=scratch.array("near_members", (cols.size, d), np.float32))
            yr = exact.rounded(ys, out=scratch.array("members64", ys.shape, np.float64),
                               shift=shells.member_shifts[where[cols]],
                               work=scratch.array("shifted", ys.shape, np.float32))
            g = exact.product(xr[p], yr, out=scratch.array("product", (p.size, cols.size), np.float64))
            k = exact.kernel_terms(g, xn[p, None], yn[cols][None, :], r2, overwrite=True)
            sums[p] += k.sum(axis=1, dtype=np.float64)
            counts[p] += np.greater(k, 0.0, out=scratch.array("within", k.shape, np.bool_)).sum(axis=1)


def _blocks(index: SearchIndex, x: np.ndarray, sigma: float, stats: DensityStats, scratch: Scratch,
            plan: DensityPlan | None = None, nearest_lists: int | None = None):
    """(stored vectors, their ids, rows of x that need them, a centre, the members' places in the shells'
    list order or None for whole lists of a brute-force chunk), read from the index without copying.

    With an IVF index only the lists that no bound rules out, and in each only the points and members
    that the projected sieve keeps (see _Shells and _Sieve). The centre (the IVF list's centroid, or the
    block's mean) lets ``_candidate_pairs`` keep float32 cancellation small for long vectors (squared norm
    above 4); the kernel sums need none, their products being exact.
    """
    if index.list_radius is None:
        n, d = index.ntotal, index.dim
        xb = faiss.rev_swig_ptr(index.index.get_xb(), n * d).reshape(n, d)
        every = np.arange(x.shape[0])
        for a in range(0, n, 65536):
            block = xb[a:a + 65536]
            yield block, np.arange(a, min(n, a + 65536), dtype=np.int64), every, block.mean(axis=0), None
        return
    ivf = faiss.extract_index_ivf(index.index)
    if ivf.code_size != 4 * ivf.d:
        raise ValueError("in-place densities need the float32 vectors in the index (flat or IVF-Flat); "
                         "an IVF-PQ shard computes them from the store's vectors (tsds.retrieval.sharded)")
    shells = _shells(index)
    x64 = x.astype(np.float64)
    shape = (x.shape[0], shells.centroids.shape[0])
    full2 = _squared_distances(x64, shells.centroids64, scratch.array("full2", shape, np.float64))
    tolerance = sigma * (1 + 1e-4) + 1e-5
    reach = np.sqrt(full2, out=scratch.array("reach", shape, np.float64))
    reach -= index.list_radius[None, :]
    need = reach <= tolerance
    need &= _shell_bound(shells, x64, full2, need, scratch) <= tolerance  # (writes over reach)
    if nearest_lists is not None and nearest_lists < need.shape[1]:
        need &= _nearest(shells, x, nearest_lists, scratch)
    sizes = np.diff(shells.starts)
    bounded = bounded_pairs(need, sizes)
    if plan is not None and plan.brute(bounded, x.shape[0], index.ntotal, ivf.d, shells.basis.shape[0]):
        # every list against every point: the same lists in the same order, full blocks instead of sieved ones
        stats.brute_points += x.shape[0]
        stats.lists_scanned += float(x.shape[0] * np.count_nonzero(sizes))
        every = np.arange(x.shape[0])
        for lst in np.flatnonzero(sizes):
            y, member_ids = list_vectors(ivf, lst, index.pages)
            yield y, member_ids, every, shells.centroids[lst], None
        return
    stats.sieved += bounded
    stats.lists_scanned += float(need.sum())
    sieve = _Sieve(shells, x, sigma, scratch)
    use = plan.directions if plan is not None else False  # None: probe (count only), then decide
    directions = _Directions(shells, x, full2, need, sigma, scratch) if use is not False else None
    for lst in np.flatnonzero(need.any(axis=0)):
        y, member_ids = list_vectors(ivf, lst, index.pages)
        if y.shape[0] == 0:
            continue
        pts, cols, mask = np.flatnonzero(need[:, lst]), None, None
        if use or (use is None and lst % PROBE_EVERY == 0):
            work = directions.work
            tested = directions.members(lst, y, pts)
            if use is None:
                stats.probed += pts.size * y.shape[0]
                if tested is not None:  # the block the sieve would then take
                    stats.probe_kept += tested[0].size * (y.shape[0] if tested[1] is None else tested[1].size)
                stats.probe_work += directions.work - work
            elif tested is None:
                continue
            else:
                pts, cols, mask = tested
        pts, cols = sieve.pairs(lst, pts, cols, mask)
        if pts.size == 0:
            continue
        at = shells.starts[lst] + (np.arange(y.shape[0]) if cols is None else cols)
        if cols is not None:
            y = np.take(y, cols, axis=0, out=scratch.array("members", (cols.size, y.shape[1]), y.dtype))
            member_ids = member_ids[cols]
        yield y, member_ids, pts, shells.centroids[lst], at


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
        index.release()
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
