"""Many small BLAS products on every core: fixed tasks, one thread per core, single-threaded BLAS, and
buffers each thread reuses from task to task (the densities and the IVF list scan)."""

from __future__ import annotations

import math
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
        size = math.prod(shape)  # (np.prod and np.dtype cost 6-9 us a call: tens of thousands per density pass)
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
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
