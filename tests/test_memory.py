"""tsds.memory: the allocator settings the CLI makes, observed in a fresh process through glibc's own report."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tsds.retrieval.threads import cores

SRC = Path(__file__).resolve().parents[1] / "src"

# Twelve threads, alive together, each holding a block from the heap (below the mmap threshold); then
# glibc's malloc_info counts the arenas (one <heap> each).
PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, sys, tempfile, threading
    if sys.argv[1] == "set":
        from tsds.memory import release_large_blocks
        assert release_large_blocks()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    n = 12
    ready, done = threading.Barrier(n + 1), threading.Event()
    def work():
        block = libc.malloc(1 << 20)
        ready.wait()
        done.wait()
        libc.free(block)
    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        fp = libc.fopen(f.name.encode(), b"w")
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        report = open(f.name).read()
    done.set()
    for t in threads:
        t.join()
    print(report.count("<heap nr="))
""")


def _arenas(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    return int(out.stdout.split()[-1])


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
                           reason="glibc's allocator settings")


@glibc
def test_arenas_are_capped_at_one_per_core():
    """Threads share at most one arena per core: each arena keeps its own freed memory (up to the trim
    threshold at its top, and its holes), so the density threads' and FAISS's arenas added up to about 50 MB
    of the 200k x 384 selection's peak (docs/benchmarks.md)."""
    assert _arenas("none") > max(2, cores())  # glibc alone gives each of the twelve threads its own arena
    assert _arenas("set") <= max(2, cores())
