"""Give freed memory back to the operating system as soon as large arrays are released.

glibc serves an allocation above its mmap threshold with its own mapping, returned on free. But the
threshold grows each time such a block is freed (up to 32 MB), after which the many temporary arrays of
a selection (search results, neighbour lists, solver matrices) come from the heap and stay in the
process's resident memory after they are freed, so the peak of one stage carries over into the next.
Fixing the threshold keeps every large array in its own mapping.

Where to fix it is a trade between memory and time: every fresh mapping is faulted in and zeroed page by
page. At 1 MiB the 200k x 384 benchmark selection (benchmarks/bench_select.py) spent about 2.4 s of
system time on it; at 4 MiB (numpy asks for transparent huge pages for arrays from 4 MiB, so those
fault in 2 MB at a time), with the heap keeping up to 8 MiB free at its top instead of trimming at
128 KiB, it took 8.2 s instead of 8.7 s for a peak of 694-719 MB instead of 661 MB (three runs each,
alternating). No effect outside glibc.

Arenas are capped at one per core (at least two). glibc gives each new thread an arena of its own, up to
eight per core, and each keeps its freed memory (its holes, and up to the trim threshold at its top): the
density threads, FAISS's threads and the main thread together held about 50 MB more at the 200k x 384
benchmark's peak (450-492 MiB with the default, 403-418 MiB capped in fourteen runs of fifteen, in the
same time; docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 4 << 20
_TRIM_THRESHOLD = 8 << 20


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_large_blocks() -> bool:
    """Fix glibc's mmap threshold at 4 MiB, its trim threshold at 8 MiB and its arenas at one per core for
    this process; True when set."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(libc.mallopt(_M_ARENA_MAX, _arenas()))
    except AttributeError:
        return False


def _arenas() -> int:
    """One per core this process may run on (as tsds.retrieval.threads counts them), at least two."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(2, cores)


def return_freed_memory() -> None:
    """Give the heap's free memory back to the OS now (glibc's malloc_trim). Blocks under the mmap threshold
    come from the heap, FAISS's IVF lists among them (0.7 MB each at 200k x 384): freeing them after they
    are written to a mapped file would otherwise leave the process's resident memory as large as before."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


_LIBC = _libc()
