"""The selection stages over an index: neighbours, densities, solve (growing K until exact), sample."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tsds.config import SelectionConfig
from tsds.core import (
    allocation_to_probabilities,
    draw_with_replacement,
    draw_without_replacement,
    solve,
)
from tsds.core.sampling import counts_to_indices
from tsds.core.solver import Allocation
from tsds.errors import ParameterError
from tsds.memory import return_freed_memory
from tsds.retrieval import DensityStats, Nearest, SearchIndex, neighbour_round, prepare


@dataclass
class Selection:
    """Everything one selection produced, for writing, reporting and provenance.

    The neighbour lists (ids, distances, densities) are the ones the allocation was solved on, and read-only
    (``.copy()`` to edit): a round served from a search ahead hands out views of the saved search."""

    probabilities: np.ndarray
    counts: np.ndarray
    allocation: Allocation | None  # None for a method that solves no TSDS problem (a baseline)
    neighbour_ids: np.ndarray  # int32 for pools under 2^31 rows
    neighbour_distances: np.ndarray
    neighbour_densities: np.ndarray
    k_used: int
    k_history: list[int]
    recall: float | None
    density_stats: DensityStats
    config: SelectionConfig
    timings: dict = field(default_factory=dict)
    density_cache: DensityCache | None = None
    info: dict = field(default_factory=dict)  # what the method reports beside the arrays (method, warnings, ...)

    def __post_init__(self):
        for lists in (self.neighbour_ids, self.neighbour_distances, self.neighbour_densities):
            if isinstance(lists, np.ndarray):
                lists.flags.writeable = False

    def transport_weights(self) -> np.ndarray:
        """The transport plan over the neighbour lists (M x K); zeros for a method without one."""
        if self.allocation is None:
            return np.zeros(self.neighbour_ids.shape)
        return self.allocation.weights

    def density_of(self, candidates) -> tuple[np.ndarray, np.ndarray]:
        """(density, near-duplicate cluster size) of the given candidates; (1, 1) when sigma = 0."""
        cand = np.asarray(candidates, dtype=np.int64)
        if self.config.sigma == 0 or self.density_cache is None:
            return np.ones(cand.size), np.ones(cand.size, dtype=np.int64)
        return self.density_cache.values[cand], self.density_cache.counts[cand]

    @property
    def selected_indices(self) -> np.ndarray:
        """Drawn candidate indices, sorted; a candidate drawn twice appears twice."""
        return counts_to_indices(self.counts)

    @property
    def distinct_selected(self) -> int:
        return int(np.count_nonzero(self.counts))

    def nearest_query(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each given candidate: the nearest query whose neighbour list holds it, and the distance.

        (-1, inf) for candidates in no list.
        """
        cand = np.asarray(candidates, dtype=np.int64)
        ids = self.neighbour_ids.ravel()
        dist = self.neighbour_distances.ravel()
        query = np.repeat(np.arange(self.neighbour_ids.shape[0]), self.neighbour_ids.shape[1])
        order = np.lexsort((dist, ids))
        ids_s, first = np.unique(ids[order], return_index=True)
        pos = np.searchsorted(ids_s, cand)
        pos = np.minimum(pos, ids_s.size - 1)
        hit = ids_s[pos] == cand
        q = np.where(hit, query[order][first][pos], -1)
        d = np.where(hit, dist[order][first][pos], np.inf)
        return q, d


_DENSITY_GROWTH = 1.1  # a row's density prefix is grown past the solver's current need by this factor
_DENSITY_SLACK = 8
_DENSITY_START = 64  # the first density prefix of each row, whatever K the lists start at: with the first
# K's (--initial-k, the authors' max_K) every list's densities were computed (200k x 384, K 8,192: 82,701
# points and 20.7 s instead of 23,870 and 9.6 s), although the optimum reads about 1,500 of each list


@dataclass
class _Run:
    """What the rounds of one selection share: the index, the config, the density cache and its statistics,
    the stage log and the progress callback."""

    index: object
    config: SelectionConfig
    cache: DensityCache
    stats: DensityStats
    stages: object
    progress: object = None


def _solve_with_lazy_densities(run, D, ids, *parts, complete):
    """Solve with densities computed only along the prefix of each list that the optimum reads.

    The closed form reads row j's densities up to its last supported neighbour plus one (the breakpoint
    that stops it); everything further out only enters through breakpoints above the optimal level.
    So: fill densities for a prefix of each row, put 1 (the smallest density) in the unknown entries, solve,
    and if some row's support + 1 reaches past its known prefix, compute that row's prefix further and solve
    again. (With the smallest density the supports start short and grow: the estimate of the row's farthest
    known neighbour's density made the first solve at a new K ask for much longer prefixes than the
    optimum reads, a fifth of all points on the 200k benchmark.) When every row's support + 1 lies inside
    its known prefix, the walk up to the level touched only true densities, so the answer is the answer
    with every density known (the estimates only steer how far to compute). The solver reads the densities
    per candidate through the lists' ids where the pool is no larger than the lists (see
    ``DensityCache.estimates``). ``run``: a ``_Run``, or the index followed in ``parts`` by the config, the
    cache, the statistics, the stage log and the progress callback. Returns the allocation.
    """
    run = _Run(run, *parts) if parts else run  # (index, D, ids, config, cache, stats, stages, progress) spelled out
    index, config, cache, stats, stages, progress = run.index, run.config, run.cache, run.stats, run.stages, run.progress
    M, K = ids.shape
    screened = None
    if not complete and cache.unknown(ids).any():  # with every density known, the loop's one solve is this one
        # First a solve with 1, the smallest density, in every unknown entry: the largest steps the walk can
        # take. When even that runs out of list before the condition holds, K grows without computing any
        # density at this K (on the 200k benchmark every round below the last). This is a screen, not a
        # bound: the walk stops at the first list's end, which moves with the densities, so in rare cases a
        # K reported truncated here would not have been. That only costs a larger K: the optimum is the
        # same at every K that is not truncated, and the last round is solved with exact densities.
        with stages.stage("solve") as info:
            rho, nb = cache.estimates(ids)
            alloc = solve(D, rho, neighbours=nb, alpha=config.alpha, C=config.C, complete=False)
            info["truncated"] = alloc.truncated
        if alloc.truncated:
            return alloc
        if not cache.unknown(ids[:, :min(K, _DENSITY_START)]).any():
            screened = alloc  # the loop's first fill computes nothing, so its first solve would be this one
    want = np.full(M, min(K, _DENSITY_START), dtype=np.int64)
    asked = np.zeros(M, dtype=np.int64)  # each row's columns before this are known (a fill computed them)
    by_column = ids.T  # K x M, contiguous for the column-major lists search_ahead gives: read in memory order
    alloc = None
    while True:
        with stages.stage("density", sigma=config.sigma) as info:
            # only the columns not asked before: those before are known, so the same densities are computed
            added = cache.fill(index, _spans(by_column, asked, want), config.sigma, config.density_cap, stats,
                               progress=progress)  # (fill sorts the ids)
            asked = want
            info["computed"] = cache.computed
        if screened is not None and added == 0:  # the same inputs as the screen (complete is False here too)
            alloc = screened
        else:
            with stages.stage("solve") as info:
                rho, nb = cache.estimates(ids)
                alloc = solve(D, rho, neighbours=nb, alpha=config.alpha, C=config.C, complete=complete)
                info["truncated"] = alloc.truncated
                rho = nb = None
        screened = None
        if alloc.truncated:  # as the screen: more true densities only lengthen the walk; K grows
            return alloc
        need = np.minimum(K, alloc.support + 1)
        short = _unknown_in(cache, by_column, want, need)  # the walk read an estimate (columns before want are known)
        if not short.any():
            return alloc
        alloc = None  # its M x K weights are not needed while the next densities are computed
        grown = np.minimum(K, np.ceil(need * _DENSITY_GROWTH).astype(np.int64) + _DENSITY_SLACK)
        want = np.where(short, np.maximum(grown, want), want)


def _spans(by_column: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """The ids in columns [start_j, stop_j) of each list j (``by_column``: the lists, K x M), list by list: only
    those entries, not a mask over all M x K (at 50k x 256 the masks and the whole-list density look-ups of
    11 fills took 0.1 s). One slice per list: 1.4 ms for 770k entries of 500 lists, 9 ms by fancy indexing."""
    spans = [by_column[a:b, j] for j, (a, b) in enumerate(zip(start.tolist(), stop.tolist())) if b > a]
    return np.concatenate(spans) if spans else by_column[:0, 0]


def _unknown_in(cache: DensityCache, by_column: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Per list: whether a density in columns [start_j, stop_j) is not computed yet."""
    lengths = np.maximum(stop - start, 0)
    unknown = np.isnan(cache.values[_spans(by_column, start, stop)])
    return np.bincount(np.repeat(np.arange(lengths.size), lengths)[unknown], minlength=lengths.size) > 0


APPROX_LOCAL_ONLY = ("--density approx needs the pool's single index on the local engine (it probes that index's "
                     "lists); a sharded index or --engine ray computes exact densities: use --density exact")


def density_rule(config: SelectionConfig) -> str | Nearest:
    """How the densities of a selection with ``config`` are computed: "auto" (exact) or ``Nearest(lists)``."""
    return Nearest(config.density_lists) if config.density == "approx" else "auto"


class DensityCache:
    """Densities computed so far, keyed by candidate id (a pool store can persist it), all computed one way:
    ``rule`` is "auto" (exact) or ``Nearest(lists)`` (approximate, see tsds.retrieval.density)."""

    def __init__(self, n: int, values: np.ndarray | None = None, counts: np.ndarray | None = None,
                 rule: str | Nearest = "auto"):
        self.values = np.full(n, np.nan) if values is None else values
        self.counts = np.full(n, -1, dtype=np.int64) if counts is None else counts
        self.computed = 0
        self.rule = rule

    def estimates(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(densities, neighbours) for the solver, 1 (the smallest density) where not computed yet: one per
        candidate with the lists' ids while the pool is no larger than the lists (no M x K array), else the
        lists' own M x K array (no copy of a pool larger than the lists)."""
        if self.values.size <= ids.size:
            return np.where(np.isnan(self.values), 1.0, self.values), ids
        R = self.values[ids]
        R[np.isnan(R)] = 1.0
        return R, None

    def unknown(self, ids: np.ndarray) -> np.ndarray:
        """Where the lists' densities are not computed yet (M x K booleans)."""
        return np.isnan(self.values)[ids] if self.values.size <= ids.size else np.isnan(self.values[ids])

    def fill(self, index: SearchIndex, ids: np.ndarray, sigma: float, cap: int, stats: DensityStats, progress=None):
        """Compute the densities of ``ids`` not known yet (in increasing id order); returns how many."""
        if self.values.size <= ids.size:  # marks over the pool cost less than sorting the lists' entries
            asked = np.zeros(self.values.size, dtype=bool)  # (50k x 256: 0.11 s of np.unique in 11 fills)
            asked[ids] = True
            missing = np.flatnonzero(asked & np.isnan(self.values))
        else:  # a pool larger than the lists: no pass over it
            ids = np.unique(ids)
            missing = ids[np.isnan(self.values[ids])]
        if missing.size:
            return_freed_memory()  # what the search, the solver and the last densities left in the heap, before
            # this stage's peak: 200k x 384 402-415 MiB against 427-466 (1.37-1.41x the matrix against 1.46-1.59x),
            # 50k x 256 298-302 against 326-331 MiB
            add_total = getattr(progress, "add_total", None)  # a bar whose total grows with each round's work
            if add_total is not None:
                add_total(int(missing.size))
            # a ShardedIndex sums range searches over its shards (wherever the engine holds them)
            extra = {}
            if self.rule != "auto":
                if not isinstance(index, SearchIndex):
                    raise ParameterError(APPROX_LOCAL_ONLY)
                extra["path"] = self.rule
            self.values[missing], self.counts[missing] = index.densities(
                missing, sigma, cap=cap, stats=stats, progress=progress, return_counts=True, **extra)
            self.computed += int(missing.size)
            return_freed_memory()  # and the density threads' buffers, before the solve that follows
        return missing.size


def draw_counts(p: np.ndarray, config: SelectionConfig) -> np.ndarray:
    """``config.size`` draws from p, with or without replacement as configured, seeded by ``config.seed``."""
    if config.sampling == "with-replacement":
        return draw_with_replacement(p, config.size, config.seed)
    return draw_without_replacement(p, config.size, config.seed)


def select_on_index(
    index,
    queries: np.ndarray,
    config: SelectionConfig,
    *,
    stages=None,
    density_cache: DensityCache | None = None,
    progress=None,
    draw: bool = True,
) -> Selection:
    """Run neighbours -> densities -> solve, doubling K while any query's allocation reaches the end of its list.

    ``draw``: sample ``config.size`` draws from p (False: counts of zeros, for a caller that looks at the
    support of p before drawing; see ``draw_counts``).

    ``index``: a ``SearchIndex`` or a ``ShardedIndex`` (tsds.retrieval.sharded), whose searches and range
    searches are fanned out by the engine that serves its shards (local: one after another; Ray: actors)
    and merged; the solver and the sampling run here, on M x K numbers.
    """
    from tsds.pipeline.stages import StageLog

    stages = stages or StageLog()
    q = prepare(queries, config.metric)
    n = index.ntotal
    available = index.available
    cache = density_cache or DensityCache(n, rule=density_rule(config))
    if cache.rule != density_rule(config):
        raise ValueError(f"the density cache holds densities computed as {cache.rule!r}, the selection asks for "
                         f"{density_rule(config)!r}")
    stats = DensityStats()
    k = min(available, config.initial_k)
    history = []
    recall = None
    while True:
        history.append(k)
        with stages.stage("neighbours", k=k) as info:
            # searched ahead where the index allows, the next rounds served from the prefix; int32 ids, column-major
            D, ids, recall = neighbour_round(index, q, k, target=config.recall_target, seed=config.seed)
            if not index.exact:
                info["recall"] = recall
        if config.sigma > 0:
            alloc = _solve_with_lazy_densities(_Run(index, config, cache, stats, stages, progress), D, ids,
                                               complete=(k >= available))
        else:
            with stages.stage("solve") as info:
                alloc = solve(D, None, alpha=config.alpha, C=config.C, complete=(k >= available))
                info["truncated"] = alloc.truncated
        if not alloc.truncated:
            break
        D = ids = alloc = None  # the longer lists replace these; free them before searching
        k = min(available, 2 * k)
    with stages.stage("sample"):
        p = allocation_to_probabilities(ids, alloc, n)
        counts = draw_counts(p, config) if draw else np.zeros(n, dtype=np.int64)
    return Selection(
        probabilities=p,
        counts=counts,
        allocation=alloc,
        neighbour_ids=ids,
        neighbour_distances=D,
        neighbour_densities=cache.values[ids] if config.sigma > 0 else np.ones_like(D),
        k_used=k,
        k_history=history,
        recall=recall,
        density_stats=stats,
        config=config,
        timings=stages.stages,
        density_cache=cache,
    )
