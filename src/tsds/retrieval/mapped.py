"""IVF-Flat indexes whose vectors are read from a file mapping instead of held in the process's memory.

An IVF-Flat index holds every candidate vector: N x d float32, the size of the embedding matrix, and on a
selection the largest thing in memory by far. Built with ``storage="disk"`` (tsds.retrieval.index), its
lists are written to a temporary file (``ListFile``) and mapped read-only as FAISS on-disk inverted lists,
which every FAISS search and every scan of tsds reads unchanged. Pages of a mapping stay resident once read,
though, so a `PageWindow` drops the mapping's pages each time a window of list bytes has been handed out:
the process holds a window of the vectors, and the OS page cache (shared, reclaimable) holds the rest.
Dropped pages come back from the page cache on the next read at little more than the cost of reading memory
(a pass over 300 MB: 18-20 ms mapped and dropped after every pass, 16 ms in memory, on this project's 2-core
machine).

A mapped index cannot grow (FAISS refuses adds to read-only lists).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

import faiss
import numpy as np

from tsds.errors import InputError
from tsds.memory import return_freed_memory

WINDOW_BYTES = 32 << 20
_MADV_DONTNEED = 4
_PAGE = 4096
_FOLIO = 1 << 20  # the largest page-cache folio of the file (ListFile.write writes aligned 1 MB at a time)


def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    fn = ctypes.CDLL(None, use_errno=True).madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()
MAPS_PAGES = _MADVISE is not None  # where a mapping's pages can be dropped (Linux); elsewhere indexes stay in memory


class PageWindow:
    """Drops a mapped index's resident pages after every ``limit`` bytes of lists handed out.

    Thread-safe; a release while another thread reads a list only makes that thread read it again from the
    page cache (the mapping is read-only, so nothing is lost). Outside Linux releases do nothing.
    """

    def __init__(self, start: int, length: int, limit: int = WINDOW_BYTES):
        self.start = start - start % _PAGE
        self.length = start + length - self.start
        self.limit = int(limit)
        self.pending = 0
        self.releases = 0
        self._lock = threading.Lock()

    def touched_range(self, address: int, nbytes: int) -> None:
        """Count a read of ``nbytes`` from ``address`` as every 1 MB block (the file's folio size) it overlaps:
        the OS may map a large page-cache folio whole on its first touch, so a list of 0.7 MB can map 2 MB."""
        first = address // _FOLIO
        self.touched(((address + max(1, nbytes) - 1) // _FOLIO - first + 1) * _FOLIO)

    def touched(self, nbytes: int) -> None:
        with self._lock:
            self.pending += int(nbytes)
            if self.pending < self.limit:
                return
            self.pending = 0
        self.release()

    def release(self) -> None:
        """Drop the mapping's resident pages now (they stay in the page cache)."""
        if _MADVISE is not None and _MADVISE(self.start, self.length, _MADV_DONTNEED) != 0:
            raise OSError(ctypes.get_errno(), "madvise(MADV_DONTNEED) failed on the mapped index")
        with self._lock:
            self.releases += 1


def work_folder(work_dir=None) -> Path:
    """The folder for a mapped index's file: ``work_dir``, or the system's temporary folder (TMPDIR)."""
    folder = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"work directory {folder} {what} (it holds the index's temporary file; "
                         "set --work-dir or use --index-storage memory)")
    return folder


_NETWORK_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
                         "9p", "afs")


def local_or_none(folder: Path) -> Path | None:
    """``folder`` if this process may create files in it and it is not on a network file system, else None
    (the system's temporary folder): a pool store on a cluster's shared file system would otherwise get a
    copy of each shard written over the network on every load."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return None
    kind = filesystem(folder) or ""
    return None if kind in _NETWORK_FILE_SYSTEMS or kind.startswith("fuse") else folder


def filesystem(folder: Path) -> str | None:
    """The type of the file system that holds ``folder`` (from /proc/self/mounts), None where unknown."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    path, best, kind = str(Path(folder).resolve()), "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def _unnamed_file(folder: Path) -> int | None:
    """A file with no name in ``folder`` (Linux's O_TMPFILE): nothing is left behind even if the process is
    killed. None where the system or the file system does not offer it."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        return os.open(folder, flag | os.O_RDWR, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None
        raise


class ListFile:
    """IVF-Flat lists copied into a temporary file, then mapped read-only as FAISS on-disk inverted lists.

    Each list's codes start on a 64-byte boundary and its ids on an 8-byte one (FAISS's own index files
    put them at odd offsets, where numpy can only multiply through its slow unaligned loops). The file is
    written front to back (lists ``put`` in order) in aligned 1 MB writes: the page cache then holds it in
    large folios, which are mapped and dropped far faster than the small pages that many small writes
    leave (a pass over 300 MB read and dropped: 18-20 ms against 43 ms after 55 KB writes, measured on this
    project's machine). The file has no name on Linux (O_TMPFILE), elsewhere its name is removed as soon as
    it is mapped: the mapping keeps the data until the index is freed, and nothing is left in the folder,
    also after an error or a kill.
    """

    _IOV = 1000  # pieces per writev at most (the system's IOV_MAX is 1024)

    def __init__(self, sizes: np.ndarray, code_size: int, work_dir=None):
        self.folder = work_folder(work_dir)
        self.code_size = int(code_size)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        # one spare row where needed puts the ids that follow the codes on an 8-byte boundary
        self.capacity = np.where((self.sizes * self.code_size) % 8, self.sizes + 1, self.sizes)
        span = self.capacity * (self.code_size + 8)
        self.offsets = np.zeros(self.sizes.size, dtype=np.int64)
        end = 0
        for lst in range(self.sizes.size):
            self.offsets[lst] = -(-end // 64) * 64
            end = int(self.offsets[lst] + span[lst])
        self.total = max(1, end)
        if filesystem(self.folder) in ("tmpfs", "ramfs"):
            logging.getLogger("tsds").warning(
                "note: %s is in memory (%s): the index's file there takes as much memory as the index; "
                "set --work-dir or TMPDIR to a folder on disk", self.folder, filesystem(self.folder))
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.ids = np.empty(int(self.starts[-1]), dtype=np.int64)
        self._zeros = memoryview(bytes(64 + 8 * self.code_size))
        self._batch, self._room, self._at, self._next = [], _FOLIO, 0, 0
        self.fd = self.name = None
        try:
            self.fd = _unnamed_file(self.folder)
            if self.fd is None:
                self.fd, self.name = tempfile.mkstemp(prefix=".tsds-index-", suffix=".lists", dir=self.folder)
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> InputError:
        return InputError(f"cannot write the index's temporary file in {self.folder} ({exc.strerror or exc}); "
                          "set --work-dir or use --index-storage memory")

    def put(self, lst: int, codes: np.ndarray, ids: np.ndarray) -> None:
        """Append list ``lst``'s rows (``codes`` the float32 vectors or their bytes, ``ids`` int64). Lists
        come in ascending order, each once; a list left out stays empty only if its size is 0. The bytes are
        written when a 1 MB stretch is complete, so they are copied now only if still pending at the end of
        the caller's buffer's life (``detach``)."""
        size = int(self.sizes[lst])
        if lst < self._next or len(ids) != size:
            raise RuntimeError(f"list {lst} put out of order or with {len(ids)} rows, expected {size}")
        for skipped in range(self._next, lst):
            if self.sizes[skipped]:
                raise RuntimeError(f"list {skipped} was not put")
        self._next = lst + 1
        zeros = self._zeros
        self._push(zeros[:int(self.offsets[lst]) - self._at])
        if size:
            spare = int(self.capacity[lst]) - size
            self._push(memoryview(np.ascontiguousarray(codes)).cast("B"))
            self._push(zeros[:spare * self.code_size])
            self._push(memoryview(np.ascontiguousarray(ids, dtype=np.int64)).cast("B"))
            self._push(zeros[:spare * 8])
            self.ids[self.starts[lst]:self.starts[lst] + size] = ids
        self._at = int(self.offsets[lst] + self.capacity[lst] * (self.code_size + 8))

    def _push(self, piece: memoryview) -> None:
        """Queue bytes for writing; write whenever an aligned 1 MB stretch is complete.

        Each write call covers one aligned 1 MB stretch, no more: the page cache then keeps the file in
        1 MB folios. Longer calls got 2 MB folios, whose allocation sometimes waited for memory compaction
        (a 300 MB write took 0.7 s instead of 0.07 s on this project's machine), and much shorter ones
        small folios (see the class docstring)."""
        try:
            while len(piece):
                part, piece = piece[:self._room], piece[self._room:]
                self._batch.append(part)
                self._room -= len(part)
                if self._room == 0 or len(self._batch) >= self._IOV:
                    self._writev(self._batch)
                    self._batch = []
                    self._room = self._room or _FOLIO
        except OSError as exc:
            self.close()
            raise self._error(exc) from None

    def detach(self) -> None:
        """Copy the queued bytes that still point into the caller's buffers (before those are freed)."""
        self._batch = [memoryview(bytes(p)) for p in self._batch]

    def finish(self) -> np.ndarray:
        """Write what is queued and size the file; returns the members' ids laid end to end (see
        ``list_members``)."""
        for skipped in range(self._next, self.sizes.size):
            if self.sizes[skipped]:
                raise RuntimeError(f"list {skipped} was not put")
        try:
            self._writev(self._batch)
            self._batch = []
            os.ftruncate(self.fd, self.total)
        except OSError as exc:
            self.close()
            raise self._error(exc) from None
        return self.ids

    def write(self, invlists, source: PageWindow | None = None) -> np.ndarray:
        """Copy every list of ``invlists`` (same sizes; in memory, or mapped with ``source`` its window) into
        the file; returns the members' ids laid end to end."""
        for lst in range(self.sizes.size):
            size = int(invlists.list_size(lst))
            if size:
                if source is not None:
                    source.touched(size * (self.code_size + 8))
                self.put(lst, faiss.rev_swig_ptr(invlists.get_codes(lst), size * self.code_size),
                         faiss.rev_swig_ptr(invlists.get_ids(lst), size))
            elif self.sizes[lst]:
                raise RuntimeError(f"list {lst} holds no rows, expected {self.sizes[lst]}")
        return self.finish()

    def _writev(self, pieces) -> None:
        pieces = [p for p in pieces if len(p)]
        while pieces:
            done = os.writev(self.fd, pieces)
            while done:  # a short write: drop what was written, go on from there
                if done >= len(pieces[0]):
                    done -= len(pieces.pop(0))
                else:
                    pieces[0] = pieces[0][done:]
                    done = 0

    def mapped(self) -> faiss.InvertedLists:
        """The lists, mapped read-only (FAISS ``OnDiskInvertedLists``); closes and removes the file."""
        try:
            lists = faiss.OnDiskInvertedLists(int(self.sizes.size), self.code_size, "")
            lists.lists.clear()
            for lst in range(self.sizes.size):
                one = faiss.OnDiskOneList()
                one.size, one.capacity, one.offset = int(self.sizes[lst]), int(self.capacity[lst]), int(self.offsets[lst])
                lists.lists.push_back(one)
            lists.filename = self.name or f"/proc/self/fd/{self.fd}"  # FAISS opens the file by name to map it
            lists.totsize = self.total
            lists.read_only = True
            lists.prefetch_nthread = 0  # FAISS would start threads to read lists ahead on every search
            lists.do_mmap()
        finally:
            self.close()
        return lists

    def close(self) -> None:
        fd, self.fd = getattr(self, "fd", None), None
        if fd is not None:
            os.close(fd)
        name = getattr(self, "name", None)
        if name is not None:
            Path(name).unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def window(lists, limit: int = WINDOW_BYTES) -> PageWindow:
    """The window over mapped on-disk inverted ``lists`` (see ``ListFile``)."""
    return PageWindow(int(faiss.rev_swig_ptr(lists.ptr, 1).ctypes.data), int(lists.totsize), limit)


def _span(invlists, nlist: int, code_size: int) -> PageWindow | None:
    """A window over the memory that ``invlists``' codes and ids occupy (for lists mapped from an index file)."""
    lo, hi = None, 0
    for lst in range(nlist):
        size = int(invlists.list_size(lst))
        if size:
            for ptr, width in ((invlists.get_codes(lst), code_size), (invlists.get_ids(lst), 8)):
                address = int(faiss.rev_swig_ptr(ptr, 1).ctypes.data)
                lo = address if lo is None else min(lo, address)
                hi = max(hi, address + size * width)
    return None if lo is None else PageWindow(lo, hi - lo)


def to_mapped(index: faiss.Index, work_dir=None, *, source_mapped: bool = False):
    """Replace an IVF-Flat ``index``'s lists by a ``ListFile`` copy mapped from ``work_dir``; returns the
    window over the new mapping and the members (starts, ids) read on the way (so that nothing needs to read
    every list's ids from the mapping later, which would map all of it).

    ``source_mapped``: the lists are themselves a mapping of an index file (``map_file``), whose pages are
    dropped as they are copied. The in-memory or mapped source lists are freed."""
    ivf = faiss.extract_index_ivf(index)
    sizes = np.array([ivf.invlists.list_size(lst) for lst in range(ivf.nlist)], dtype=np.int64)
    source = _span(ivf.invlists, ivf.nlist, ivf.code_size) if source_mapped else None
    file = ListFile(sizes, ivf.code_size, work_dir)
    try:
        file.write(ivf.invlists, source)
    except BaseException:
        file.close()
        raise
    if source is not None:
        source.release()
    return install(index, file)


def install(index: faiss.Index, file: ListFile):
    """Map a finished ``file`` in place of ``index``'s lists (which are freed); returns the window over the
    mapping and the members (starts, ids)."""
    try:
        lists = file.mapped()
    finally:
        file.close()
    pages = window(lists)
    ivf = faiss.extract_index_ivf(index)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index frees (and unmaps) them, once
    ivf.ntotal = int(file.starts[-1])
    return_freed_memory()
    return pages, (file.starts, file.ids)


def map_file(path) -> faiss.Index:
    """An index file read with its lists mapped instead of copied into memory (FAISS's IO_FLAG_MMAP_IFC; their
    offsets in the file are unaligned, so ``to_mapped`` copies them before they are searched)."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)


def resident_bytes(pages: PageWindow) -> int:
    """Bytes of the window's mapping resident in this process now (Linux: /proc/self/smaps), for tests and
    benchmarks."""
    if not sys.platform.startswith("linux") or pages.length == 0:
        return 0
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= pages.start < hi
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    return 0
