"""FAISS indexes over candidate embeddings: exact for small pools, IVF with measured recall for large ones.

All distances are Euclidean (not squared) in float64. The cosine metric is Euclidean
distance between unit-normalised vectors (sqrt(2 - 2 cos)), so one code path serves both.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from tsds.errors import ParameterError
from tsds.memory import return_freed_memory
from tsds.retrieval.ivf import list_members, list_vectors
from tsds.retrieval.mapped import MAPS_PAGES, ListFile, PageWindow, install, local_or_none, work_folder
from tsds.retrieval.recall import calibrate
from tsds.retrieval.scan import _SCAN_FROM_K, exact_top, finish, flat_top, scan_lists

METRICS = ("euclidean", "cosine")
INDEX_KINDS = ("auto", "flat", "ivf")
STORAGES = ("auto", "memory", "disk")
_ADD_ROWS = 4096  # rows per chunk while the lists are filled: the build's peak holds the lists and one chunk
_STAGE_BYTES = 512 << 20  # vectors a mapped build stages at once, up to _STAGE_GROUPS passes over the source
_STAGE_GROUPS = 8
EXACT_UP_TO = 50_000
PARTITION_FROM, PARTITION_POINTS = 20_000, 1_000  # flat indexes from this size compute densities over a
# partition once this many were asked, this call's included. A first call of m points, flat tiles against
# partition build + shells + its pruned sums: 50k x 256, m 1,000: 0.55-0.68 vs 0.55-0.57 s, m 1,333: 0.59-0.88
# vs 0.53-0.61 s; 20k: m 1,000 0.24-0.27 vs 0.30-0.35 s, m 1,333 0.34-0.35 vs 0.32-0.34 s; every later call
# then costs a third to a half. A selection's first call is its rows' first 64 neighbours (1,333 points on
# the 50k benchmark): at 2,000 those went through the tiles and the partition was built at the next call.


def partition_lists(n: int) -> int:
    """Lists of a flat index's density partition: sqrt(n) / 2, half a searched IVF index's. Only the speed of
    the densities depends on it (they are exact over any partition): fewer, longer lists let more pairs
    through the bounds but make fewer small products."""
    return max(1, int(math.sqrt(n) / 2))


TRAIN_POINTS_PER_LIST = 32
# 4 rounds, not 8: on the 1M-text benchmark pool recall at every nprobe was the same within noise, and
# training is a third of the index's build time there (benchmarks/bench_build.py)
KMEANS_ITERATIONS = 4


def prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    """C-contiguous float32 copy-free view where possible; unit rows for the cosine metric.

    An all-zero row stays zero under the cosine metric (at distance 1 from every unit vector, as under the
    euclidean metric for unit-norm embeddings): a pool store keeps such rows out of selections itself
    (tsds.pipeline.eligibility), and `select_embeddings` refuses them in .npy inputs, naming the row.
    """
    if metric not in METRICS:
        raise ParameterError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        x = np.ascontiguousarray(x / norms, dtype=np.float32)
    return x


@dataclass
class SearchIndex:
    """A FAISS index plus what is needed to search it exactly or report how approximate it is.

    The index holds the only copy of the vectors: in memory, or for an IVF-Flat index in a file mapping
    whose resident pages ``pages`` keeps to a window (tsds.retrieval.mapped); a flat index from
    ``PARTITION_FROM`` vectors adds a mapped one for its densities (``density_partition``). For IVF indexes,
    ``list_radius`` holds each inverted list's largest member-to-centroid distance, which lets range search
    skip lists that cannot hold a point within the radius.
    """

    index: faiss.Index
    kind: str
    metric: str
    recall: float | None = None
    list_radius: np.ndarray | None = None
    calibration: dict = field(default_factory=dict)
    excluded: np.ndarray | None = None
    pages: PageWindow | None = None
    _selector: object = field(default=None, repr=False)
    _members: tuple | None = field(default=None, repr=False)
    _position: np.ndarray | None = field(default=None, repr=False)
    # caches kept with the index: the list norms of `scan_lists`, a flat index's norms of `flat_top`, the exact
    # lists of `calibrate`, the density shells and path plans of `tsds.retrieval.density`
    _list_norms: object = field(default=None, repr=False)
    _flat_norms: np.ndarray | None = field(default=None, repr=False)
    _truth_cache: tuple | None = field(default=None, repr=False)
    _density_shells: object = field(default=None, repr=False)
    _density_plans: dict = field(default_factory=dict, repr=False)  # tsds.retrieval.density_plan, per sigma
    _prefix: tuple | None = field(default=None, repr=False)  # a longer flat search, tsds.retrieval.prefix
    _density_partition: object = field(default=None, repr=False)  # see density_partition
    _density_points: int = field(default=0, repr=False)
    _scratch: tuple = field(default=("auto", None), repr=False)  # a flat index's (storage, work_dir) for it

    def exclude(self, ids) -> None:
        """Remove candidates from every later search and range search (decontamination)."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        self.excluded = ids if ids.size else None
        self._selector = (faiss.IDSelectorNot(faiss.IDSelectorBatch(ids)) if ids.size else None)

    @property
    def nlist(self) -> int:
        return 1 if self.exact else int(faiss.extract_index_ivf(self.index).nlist)

    @property
    def nprobe(self) -> int:
        return 1 if self.exact else int(faiss.extract_index_ivf(self.index).nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if not self.exact:
            faiss.extract_index_ivf(self.index).nprobe = int(value)

    @property
    def available(self) -> int:
        """Candidates that searches can return."""
        return self.ntotal - (0 if self.excluded is None else int(self.excluded.size))

    def params(self, nprobe: int | None = None):
        """FAISS search parameters carrying the exclusion selector (None when there is nothing to set)."""
        if self.exact:
            return faiss.SearchParameters(sel=self._selector) if self._selector is not None else None
        ivf = faiss.extract_index_ivf(self.index)
        return faiss.SearchParametersIVF(sel=self._selector, nprobe=int(nprobe or ivf.nprobe))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    def calibrate(self, queries: np.ndarray, k: int, *, target: float = 0.95, sample: int = 64, seed: int = 0) -> float:
        """See ``calibrate``: the search breadth that reaches ``target`` recall@k."""
        return calibrate(self, queries, k, target=target, sample=sample, seed=seed)

    def densities(self, ids, sigma: float, **kwargs):
        """See ``tsds.retrieval.density.densities``: kernel densities over the whole pool."""
        from tsds.retrieval.density import densities

        return densities(self, ids, sigma, **kwargs)

    def density_partition(self, points: int = 0):
        """A flat index of ``PARTITION_FROM`` vectors or more, once ``PARTITION_POINTS`` densities were asked
        of it (these ``points`` included): an IVF-Flat index of the same vectors (same ids and exclusions;
        lists in a mapped temporary file where one can be written), built once, over which its densities
        can prune (docs/method.md, Densities). None before and for other indexes."""
        if not self.exact or self.ntotal < PARTITION_FROM:
            return None
        if self._density_partition is None:
            self._density_points += int(points)
            if self._density_points < PARTITION_POINTS:
                return None
            xb = faiss.rev_swig_ptr(self.index.get_xb(), self.ntotal * self.dim).reshape(self.ntotal, self.dim)
            storage, folder = self._scratch
            if storage == "auto":  # mapped where a file can be written (the index's --work-dir, else TMPDIR)
                place = Path(folder) if folder is not None else Path(tempfile.gettempdir())
                storage = "disk" if MAPS_PAGES and local_or_none(place) is not None else "memory"
            self._density_partition = build_index(xb, kind="ivf", nlist=partition_lists(self.ntotal), storage=storage,
                                                  work_dir=folder)
        part = self._density_partition
        if part.excluded is not self.excluded:
            part.exclude(self.excluded if self.excluded is not None else [])
            part.excluded = self.excluded
        return part

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored (prepared) vectors of candidates ``ids``."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.pages is None:
            return self.index.reconstruct_batch(ids)
        # a mapped index has no FAISS direct map (building one reads every list's ids, which maps the
        # whole file): each id's list and position come from the members, and rows are read list by list
        ivf = faiss.extract_index_ivf(self.index)
        lists, offsets = self._locate(ids)
        out = np.empty((ids.size, ivf.d), dtype=np.float32)
        order = np.argsort(lists, kind="stable")
        cuts = np.flatnonzero(np.diff(lists[order])) + 1
        for group in np.split(order, cuts) if ids.size else []:
            y, _ = list_vectors(ivf, int(lists[group[0]]), self.pages)
            out[group] = y[offsets[group]]
        return out

    def lists_of(self, ids: np.ndarray) -> np.ndarray | None:
        """The IVF list of each candidate in ``ids``; None for flat indexes and IVF ones without a direct map."""
        if self.list_radius is None:
            return None
        ids = np.asarray(ids, dtype=np.int64)
        if self.pages is not None:
            return self._locate(ids)[0]
        ivf = faiss.extract_index_ivf(self.index)
        if ivf.direct_map.type != faiss.DirectMap.Array:
            return None
        return faiss.rev_swig_ptr(ivf.direct_map.array.data(), self.ntotal)[ids] >> 32

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(list, offset in it) of each of ``ids``, from the members laid end to end: a mapped index's
        direct map."""
        starts, members = self.members()
        if self._position is None:
            self._position = np.empty(members.size, dtype=np.int64)
            self._position[members] = np.arange(members.size)
        if ids.size and (ids.min() < 0 or ids.max() >= members.size):
            raise IndexError(f"candidate ids outside 0..{members.size - 1}")
        pos = self._position[ids]
        lists = np.searchsorted(starts, pos, side="right") - 1
        return lists, pos - starts[lists]

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ids) of the IVF lists' members (see ``list_members``), computed once."""
        if self._members is None:
            self._members = list_members(faiss.extract_index_ivf(self.index))
            self.release()
        return self._members

    def release(self) -> None:
        """Drop the resident pages of a mapped index's vectors (after a FAISS call that read any of its lists)."""
        if self.pages is not None:
            self.pages.release()

    def search(self, queries: np.ndarray, k: int, order: str = "C") -> tuple[np.ndarray, np.ndarray]:
        """k nearest candidates per query: (distances float64 ascending, ids int64).

        Rows where an approximate index returns fewer than k results (FAISS's -1 labels)
        are searched again exactly, so every row holds k valid neighbours. ``order``: the distances'
        memory layout ("F": column-major, as the solver reads them).
        """
        k = min(int(k), self.available)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.exact:
            d2, ids = flat_top(self, q, k)
        elif self._scans_lists and k >= _SCAN_FROM_K:
            d2, ids = scan_lists(self, q, k, self.nprobe)
        else:
            d2, ids = self.index.search(q, k, params=self.params())
            self.release()
        return self.complete(q, d2, ids, order)

    def complete(self, q: np.ndarray, d2: np.ndarray, ids: np.ndarray, order: str = "C") -> tuple[np.ndarray, np.ndarray]:
        """``search``'s answer from a search's raw (squared distances, ids) of every query in ``q``: rows with
        missing (-1) neighbours searched again exactly (into copies: the arrays may be saved lists), then
        ``finish`` (distances in ``order``)."""
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:
            d2, ids = d2.copy(order="K"), ids.copy(order="K")
            d2[short], ids[short] = self._search_all(q[short], ids.shape[1])
        return finish(d2, ids, order)

    def complete_finished(self, q: np.ndarray, dist: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``complete`` for lists already finished (a prefix of a longer search's, tsds.retrieval.prefix): the
        same arrays, or copies where rows with missing neighbours are searched again exactly and finished."""
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:
            dist, ids = dist.copy(order="K"), ids.copy(order="K")
            dist[short], ids[short] = finish(*self._search_all(q[short], ids.shape[1]))
        return dist, ids

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(int(k), self.available)
        return finish(*self._search_all(np.ascontiguousarray(queries, dtype=np.float32), k))

    def within_radius(self, vectors: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """(pool rows, the vector each is within ``radius`` of), exact: every IVF list is probed."""
        if radius <= 0 or len(vectors) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        x = prepare(vectors, self.metric)
        r2 = float(radius) ** 2
        if self.exact:
            lims, _, labels = self.index.range_search(x, r2)
        else:
            ivf = faiss.extract_index_ivf(self.index)
            lims, _, labels = ivf.range_search(x, r2, params=faiss.SearchParametersIVF(nprobe=ivf.nlist))
            self.release()
        item = np.repeat(np.arange(x.shape[0]), np.diff(lims.astype(np.int64)))
        keep = labels >= 0
        return labels[keep].astype(np.int64), item[keep]

    def _search_all(self, q: np.ndarray, k: int):
        if self.exact:
            return flat_top(self, q, k)
        if self._scans_lists and k >= _SCAN_FROM_K:
            return scan_lists(self, q, k, self.nlist)
        ivf = faiss.extract_index_ivf(self.index)
        found = ivf.search(q, k, params=self.params(nprobe=ivf.nlist))
        self.release()
        return found

    @property
    def _scans_lists(self) -> bool:
        """IVF-Flat indexes are searched by `scan_lists` (vectors read in place) instead of FAISS's search
        for k from ``_SCAN_FROM_K`` on."""
        return isinstance(self.index, faiss.IndexIVFFlat) and self.index.code_size == 4 * self.index.d


def build_index(
    source,
    *,
    metric: str = "euclidean",
    kind: str = "auto",
    nlist: int | None = None,
    seed: int = 0,
    progress=None,
    storage: str = "auto",
    work_dir=None,
) -> SearchIndex:
    """Index the vectors of ``source`` (a VectorSource or an array), streamed in chunks.

    ``auto``: exact (flat) up to 50,000 candidates, IVF-Flat above with sqrt(N) lists (2 sqrt(N) cost twice
    the assignment, and selections were no faster: 200k and 1M measured in docs/benchmarks.md),
    trained by ``KMEANS_ITERATIONS`` k-means rounds on a uniform sample of ``TRAIN_POINTS_PER_LIST``
    points per list drawn from the whole source (recall is then set by the calibrated search breadth).
    Vectors are prepared for ``metric`` chunk by chunk and copied into storage sized once up
    front, so the index holds the only full copy and never grows by reallocation.

    ``storage``: where that copy lives. ``disk`` (what ``auto`` picks for IVF on Linux): the lists are
    written to a temporary file in ``work_dir`` and mapped (tsds.retrieval.mapped), so that the process
    holds a window of the vectors instead of all of them, and the build a group of lists at a time (see
    ``_build_mapped``); ``memory``: kept in memory (what a pool store writes to its file). Exact (flat)
    indexes are always kept in memory; ``storage`` and ``work_dir`` then place their density partition
    (``SearchIndex.density_partition``). Searches and densities give the same numbers either way.
    """
    from tsds.io.arrays import as_source

    if kind not in INDEX_KINDS:
        raise ParameterError(f"index must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if storage not in STORAGES:
        raise ParameterError(f"index storage (--index-storage) must be one of {', '.join(STORAGES)}, got {storage!r}")
    if work_dir is not None:
        work_folder(work_dir)
    src = as_source(source)
    n, d = src.n, src.dim
    if kind == "auto":
        kind = "flat" if n <= EXACT_UP_TO else "ivf"
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
        index.codes.resize(n * d * 4)
        vectors = faiss.rev_swig_ptr(index.codes.data(), n * d * 4).view(np.float32).reshape(n, d)
        for start, chunk in src.chunks():
            vectors[start:start + chunk.shape[0]] = prepare(chunk, metric)
            if progress is not None:
                progress(chunk.shape[0])
        index.ntotal = n
        return SearchIndex(index=index, kind="flat", metric=metric, _scratch=(storage, work_dir))
    if storage == "auto":  # the mapping's pages are only dropped on Linux (tsds.retrieval.mapped)
        storage = "disk" if MAPS_PAGES else "memory"
    if storage == "disk":
        work_folder(work_dir)  # before the build, not after it
    nlist = min(nlist or max(1, int(math.sqrt(n))), n)
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = seed
    index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
    index.cp.min_points_per_centroid = 1  # the sample is sized on purpose; FAISS would print a warning
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, TRAIN_POINTS_PER_LIST * nlist), replace=False))
    index.train(prepare(src.take(sample), metric))
    radius = np.zeros(nlist, dtype=np.float64)
    assign = np.empty(n, dtype=np.int64)
    for start, chunk in src.chunks():
        d2c, a = quantizer.search(prepare(chunk, metric), 1)
        assign[start:start + chunk.shape[0]] = a[:, 0]
        np.maximum.at(radius, a[:, 0], np.sqrt(np.maximum(d2c[:, 0].astype(np.float64), 0)))
    sizes = np.bincount(assign, minlength=nlist)
    return_freed_memory()  # the training sample and the chunks' buffers, before the lists take their place
    if storage == "disk":
        return _build_mapped(index, src, metric, assign, sizes, radius, work_dir, progress)
    _fill_lists(index, src, metric, assign, sizes, 0, nlist, progress)
    index.make_direct_map()
    return SearchIndex(index=index, kind="ivf", metric=metric, list_radius=radius)


def _build_mapped(index, src, metric, assign, sizes, radius, work_dir, progress) -> SearchIndex:
    """The lists written into a mapped file (tsds.retrieval.mapped.ListFile) in list order, staged in memory
    one group of lists at a time: one group (one pass over the source) up to ``_STAGE_BYTES`` of vectors,
    more groups, each a further pass, for larger pools, so that the build holds at most an eighth of the
    vectors from 8 x ``_STAGE_BYTES`` on. Each list holds its rows in row order: the same bytes as the
    in-memory build."""
    file = ListFile(sizes, index.code_size, work_dir)
    try:
        for lo, hi in _list_groups(sizes, index.code_size):
            lists = _fill_lists(index, src, metric, assign, sizes, lo, hi, progress)
            for lst in range(lo, hi):
                if sizes[lst]:
                    file.put(lst, faiss.rev_swig_ptr(lists.get_codes(lst), int(sizes[lst]) * index.code_size),
                             faiss.rev_swig_ptr(lists.get_ids(lst), int(sizes[lst])))
            file.detach()  # the queued bytes outlive the group's lists
        file.finish()
    except BaseException:
        file.close()
        raise
    pages, members = install(index, file)
    return SearchIndex(index=index, kind="ivf", metric=metric, list_radius=radius, pages=pages, _members=members)


def _list_groups(sizes: np.ndarray, code_size: int) -> list[tuple[int, int]]:
    """Consecutive ranges [lo, hi) of lists with about equal bytes, each at most ``_STAGE_BYTES`` unless
    that would take more than ``_STAGE_GROUPS`` passes."""
    total = int(sizes.sum()) * code_size
    groups = min(_STAGE_GROUPS, max(1, -(-total // _STAGE_BYTES)))
    rows = np.cumsum(sizes)
    cuts = np.searchsorted(rows, rows[-1] * np.arange(1, groups) / groups, side="right") if rows.size else []
    bounds = sorted({0, sizes.size, *map(int, cuts)})
    return list(zip(bounds[:-1], bounds[1:]))


def _fill_lists(index, src, metric, assign, sizes, lo, hi, progress):
    """Fresh in-memory lists for ``index`` (its previous ones freed first) holding the rows of lists [lo, hi)
    in row order, from one pass over ``src``; returns them.

    Each list is sized once to its final length and emptied again (its capacity stays), then FAISS's
    add_core appends the chunks' rows with their known lists in C++ (rows of other lists get list -1,
    which it skips): the same bytes as writing each list's slice from Python, without a call per list
    and chunk, and no list ever grows by reallocation.
    """
    lists = faiss.ArrayInvertedLists(index.nlist, index.code_size)
    index.replace_invlists(lists, True)  # frees the previous lists before these are sized
    lists.this.disown()
    return_freed_memory()
    for lst in range(lo, hi):
        if sizes[lst]:
            lists.resize(lst, int(sizes[lst]))
            lists.resize(lst, 0)
    every = lo == 0 and hi == index.nlist
    for start, chunk in src.chunks(_ADD_ROWS):
        x = prepare(chunk, metric)
        a = assign[start:start + x.shape[0]]
        inside = None if every else (a >= lo) & (a < hi)
        a = np.ascontiguousarray(a) if every else np.where(inside, a, -1)
        ids = np.arange(start, start + x.shape[0], dtype=np.int64)
        index.add_core(x.shape[0], faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(a))
        if progress is not None:
            progress(x.shape[0] if every else int(inside.sum()))
    for lst in range(lo, hi):
        if lists.list_size(lst) != sizes[lst]:
            raise RuntimeError(f"IVF list {lst} holds {lists.list_size(lst)} vectors, expected {sizes[lst]}")
    return lists
