"""IVF list helpers: a list's vectors and ids read in place, list sizes, every list's members laid end to end."""

from __future__ import annotations

import faiss
import numpy as np

from tsds.retrieval.mapped import PageWindow


def list_vectors(ivf, lst: int, pages: PageWindow | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 vectors, ids) of one IVF-Flat list, views of FAISS's storage (no copy); counted against
    ``pages`` when the storage is mapped."""
    size = int(ivf.invlists.list_size(int(lst)))
    if size == 0:
        return np.empty((0, ivf.d), np.float32), np.empty(0, np.int64)
    codes = faiss.rev_swig_ptr(ivf.invlists.get_codes(int(lst)), size * ivf.code_size)
    if pages is not None:
        pages.touched_range(codes.ctypes.data, size * (ivf.code_size + 8))
    return codes.view(np.float32).reshape(size, ivf.d), faiss.rev_swig_ptr(ivf.invlists.get_ids(int(lst)), size)


def list_sizes(ivf) -> np.ndarray:
    """The number of members of each IVF list (int64)."""
    return np.array([ivf.invlists.list_size(lst) for lst in range(ivf.nlist)], dtype=np.int64)


def list_members(ivf) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ids): every IVF list's member ids laid end to end (int64), list l's at ids[starts[l]:starts[l + 1]].
    Any IVF index (the codes are not read)."""
    sizes = list_sizes(ivf)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ids = np.empty(int(starts[-1]), dtype=np.int64)
    for lst in np.flatnonzero(sizes).tolist():
        ids[starts[lst]:starts[lst + 1]] = faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), int(sizes[lst]))
    return starts, ids
