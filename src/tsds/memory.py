"""Give freed memory back to the operating system as soon as large arrays are released.

glibc serves an allocation above its mmap threshold with its own mapping, returned on free. But the
threshold grows each time such a block is freed (up to 32 MB), after which the many temporary arrays of
a selection (search results, neighbour lists, solver matrices) come from the heap and stay in the
process's resident memory after they are freed, so the peak of one stage carries over into the next.
Fixing the threshold keeps every large array in its own mapping. No effect outside glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 20


def release_large_blocks() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for this process; True when it was set."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
    except (OSError, AttributeError):
        return False
