"""Many small BLAS products on every core: fixed tasks, one thread per core, single-threaded BLAS, and
buffers each thread reuses from task to task (the densities and the IVF list scan)."""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Scratch:
    """Named buffers a thread reuses from task to task, grown when a larger one is asked for. A fresh
    array of a few MB per list block would be a new mapping to fault in each time (the CLI keeps arrays
    over 4 MiB in their own mappings, see tsds.memory): thousands per density pass."""

    def __init__(self):
        self._buffers: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self._buffers.get(name)
        if buf is None or buf.size < size:
            buf = self._buffers[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def in_threads(jobs: list, fn, workers: int | None = None) -> list:
    """``fn(job, scratch)`` for each job, one thread per core with single-threaded BLAS; results in job order.

    Each running job has a `Scratch` to itself, handed on to the next job of its thread, so buffers are
    allocated once per thread rather than once per job. Many small products: a multi-threaded BLAS would
    split each across cores and spend its time synchronising.
    """
    workers = min(cores() if workers is None else workers, len(jobs))
    free: queue.SimpleQueue[Scratch] = queue.SimpleQueue()

    def run(job):
        try:
            scratch = free.get_nowait()
        except queue.Empty:
            scratch = Scratch()
        try:
            return fn(job, scratch)
        finally:
            free.put(scratch)

    with threadpool_limits(limits=1, user_api="blas"):
        if workers <= 1:
            return [run(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(run, jobs))


# OpenBLAS computes a product of at most 1e6 multiply-adds (100^3), or with a single row or column, in
# kernels of their own (small-matrix kernels, gemv) whose sums run in another order than its blocked
# kernel: the same pair's inner product then differs in its last bits with the shape of the block it was
# computed in, so a density would depend on which other points were computed with it (measured: 1% of
# the demo rows' densities at sigma 0.3 over an IVF index, by up to 2e-5). Padding a small block with
# zero rows past this size keeps every product in the blocked kernel, whose result for a pair does not
# depend on the block (tests/test_density_determinism.py checks both on the BLAS in use).
_STABLE_MNK = 1_000_000


def stable_product(a: np.ndarray, b: np.ndarray, scratch: Scratch, name: str = "product") -> np.ndarray:
    """``a @ b.T`` (float32) with each entry the same whatever the shapes of ``a`` and ``b``: small blocks are
    padded with zero rows (see above). The result is a view of one of ``scratch``'s arrays."""
    m, n, d = a.shape[0], b.shape[0], a.shape[1]
    if m >= 2 and n >= 2 and m * n * max(d, 1) > _STABLE_MNK:
        return np.matmul(a, b.T, out=scratch.array(name, (m, n), np.float32))
    d = max(d, 1)
    side = int(np.sqrt(_STABLE_MNK / d)) + 1
    if n >= side:  # enough columns: pad the rows only
        mm, nn = max(m, 2, _STABLE_MNK // (n * d) + 1), n
    elif m >= side:
        mm, nn = m, max(n, 2, _STABLE_MNK // (m * d) + 1)
    else:
        mm, nn = side, side
    return np.matmul(_padded(a, mm, scratch, name + "-a"), _padded(b, nn, scratch, name + "-b").T,
                     out=scratch.array(name, (mm, nn), np.float32))[:m, :n]


def _padded(a: np.ndarray, rows: int, scratch: Scratch, name: str) -> np.ndarray:
    if rows == a.shape[0]:
        return a
    out = scratch.array(name, (rows, a.shape[1]), np.float32)
    out[:a.shape[0]] = a
    out[a.shape[0]:] = 0.0
    return out
