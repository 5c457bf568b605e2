"""Alpha auto without the wide trials: the bisection's answer, found from above.

The bisection of ``select_auto_alpha`` (the largest alpha on its grid whose support of p holds the target)
solved every trial alpha on the selection's neighbour lists. A trial below the answer has a wider support
than the answer, so it grew K and needed densities that the selection never reads (on a 200k pool three
times the points the final allocation reads). Here the answer is first predicted from the densities along
the lists, computed in increasing level order only as far as the target support needs; then the real
solver checks the predicted alpha (support >= target) and the grid point above it (support < target),
and the bisection runs with these results: where the prediction holds, it takes no other solve. The
support only grows as alpha falls (on fixed lists the solver's level is monotone in alpha), so the
bisection's answer is then the same as with every trial solved; a wrong prediction only costs solves.

The prediction: on lists with densities rho, entry c of row j carries mass iff the level s exceeds
e = S_j(c) = sum_{k<=c} 1/rho_{j,k} (the remainder entry included), so the support at level s is the
number of ids whose smallest e is below s. With e_t the target-th smallest, the support reaches the target
iff the walk does not stop at a breakpoint <= e_t, i.e. iff alpha * T(e_t) < (1 - alpha) C M, T the sum
of the walk's steps up to e_t: alpha < C M / (T(e_t) + C M). Every breakpoint of a row lies above its
last known S, so the prediction needs each row's densities only up to about e_t.
"""

from __future__ import annotations

import numpy as np

from tsds.core import allocation_to_probabilities, solve
from tsds.pipeline.select import _Run, _solve_with_lazy_densities
from tsds.retrieval import neighbour_round, prepare

_GOAL_MARGIN = 1.03  # the level aimed at when more densities are computed, over the extrapolated one
_MAX_ROUNDS = 64


class SharedLists:
    """The selection's neighbour lists, continued from a selection at a larger alpha and grown (K doubled,
    the search calibrated at each K, as ``select_on_index`` searches) only when a solve runs out of list;
    densities are computed only along the prefixes a solve or the prediction reads."""

    def __init__(self, index, queries, config, cache, stages, first, progress=None):
        self.index, self.config, self.cache, self.stages = index, config, cache, stages
        self.q = prepare(queries, config.metric)
        self.stats = first.density_stats
        self.D, self.ids = first.neighbour_distances, first.neighbour_ids
        self.k, self.history, self.recall = first.k_used, list(first.k_history), first.recall
        self.progress = progress
        self.solves = 0

    @property
    def complete(self) -> bool:
        return self.k >= self.index.available

    def grow(self) -> None:
        k = min(self.index.available, 2 * self.k)
        self.D = self.ids = None
        self.history.append(k)
        with self.stages.stage("neighbours", k=k) as info:
            D, ids, recall = neighbour_round(self.index, self.q, k, target=self.config.recall_target,
                                             seed=self.config.seed)
            if not self.index.exact:
                self.recall = info["recall"] = recall
        self.D, self.ids, self.k = D, ids, k  # int32 ids, column-major (search_ahead)

    def solve(self, alpha: float):
        """The allocation at ``alpha`` (K grown until it is exact) and the lists it was solved on:
        (allocation, distances, ids, support of p)."""
        config = self.config.model_copy(update={"alpha": alpha})
        while True:
            self.solves += 1
            if config.sigma > 0:
                run = _Run(self.index, config, self.cache, self.stats, self.stages, self.progress)
                alloc = _solve_with_lazy_densities(run, self.D, self.ids, complete=self.complete)
            else:
                with self.stages.stage("solve") as info:
                    alloc = solve(self.D, None, alpha=alpha, C=config.C, complete=self.complete)
                    info["truncated"] = alloc.truncated
            if not alloc.truncated:
                p = allocation_to_probabilities(self.ids, alloc, self.index.ntotal)
                return alloc, self.D, self.ids, int(np.count_nonzero(p))
            alloc = None
            self.grow()

    def fill(self, ids: np.ndarray) -> None:
        if self.config.sigma > 0:
            with self.stages.stage("density", sigma=self.config.sigma) as info:
                self.cache.fill(self.index, ids, self.config.sigma, self.config.density_cap, self.stats,
                                progress=self.progress)
                info["computed"] = self.cache.computed

    def densities(self) -> np.ndarray:
        """The lists' densities, NaN where not computed (all ones when sigma is 0)."""
        if self.config.sigma > 0:
            return self.cache.values[self.ids]
        return np.ones(self.ids.shape)


def level_bound(D: np.ndarray, ids: np.ndarray, R: np.ndarray, target: int, C: float):
    """What the densities known so far say about the target support (see the module docstring).

    ``R``: the lists' densities, NaN where unknown (each row's known ones a prefix is not required: a row
    is read up to its first unknown). Returns ("alpha", bound): the support reaches ``target`` iff alpha <
    bound; ("grow", None): a list ends below the level the target needs (K must grow); or ("more", goals):
    the densities known do not reach that level, with per row the number of entries to know next.
    """
    M, K = ids.shape
    unknown = np.isnan(R)
    P = np.where(unknown.any(axis=1), np.argmax(unknown, axis=1), K)  # known prefix of each row
    open_rows = P < K
    if np.unique(ids).size < target:
        return "grow", None
    W = min(K, int(P.max()) + 1)  # entry P_j is the last whose e is known
    cols = np.arange(W)
    known = cols[None, :] < P[:, None]
    inv = np.divide(1.0, R[:, :W], out=np.zeros((M, W)), where=known)
    S = np.cumsum(inv, axis=1)  # S[j, c] = S_j(c + 1) for c < P_j
    last = np.where(P > 0, S[np.arange(M), np.maximum(np.minimum(P, W) - 1, 0)], 0.0)
    m = float(last[open_rows].min()) if open_rows.any() else np.inf  # every unknown breakpoint lies above m
    E = np.full((M, W), np.inf)
    E[:, 0] = 0.0
    E[:, 1:] = np.where(cols[None, 1:] <= P[:, None], S[:, :-1], np.inf)
    flat_ids, flat_e = ids[:, :W].ravel(), E.ravel()
    order = np.argsort(flat_e, kind="stable")
    _, first = np.unique(flat_ids[order], return_index=True)
    e = np.sort(flat_e[order][first])
    reached = int(np.count_nonzero(e < m))
    if reached < target:
        if not open_rows.any():
            return "grow", None
        # the support grows about in proportion to the level: aim a little past the level the target needs
        goal = m * min(target / max(reached, 1), 4.0) * _GOAL_MARGIN
        rate = np.where(P > 0, last / np.maximum(P, 1), 1.0)  # the row's mean 1/rho so far
        extra = np.ceil(np.maximum(goal - last, 0.0) / np.maximum(rate, 1e-12)).astype(np.int64) + 1
        return "more", np.where(open_rows & (last < goal), np.minimum(K, P + extra), P)
    e_t = float(e[target - 1])
    if (~open_rows & (last <= e_t)).any():  # the walk would reach a list's end first
        return "grow", None
    Dw = D[:, :min(K, W + 1)]
    steps = np.zeros((M, W))
    n = Dw.shape[1] - 1
    steps[:, :n] = S[:, :n] * (Dw[:, 1:] - Dw[:, :-1])
    T = float(np.sum(steps, where=known & (S <= e_t)))
    return "alpha", C * M / (T + C * M)


def predict(lists: SharedLists, target: int) -> float | None:
    """The bound below which alpha reaches ``target`` (``level_bound``), computing densities and growing K
    as it needs; None when the lists cannot tell (alpha 0 then decides)."""
    for _ in range(_MAX_ROUNDS):
        with lists.stages.stage("alpha_auto"):  # the searches and densities it asks for count in their stages
            what, value = level_bound(lists.D, lists.ids, lists.densities(), target, lists.config.C)
        if what == "alpha":
            return value
        if what == "grow":
            if lists.complete:
                return None
            lists.grow()
            continue
        cols = np.arange(lists.ids.shape[1])
        lists.fill(lists.ids[cols[None, :] < value[:, None]])
    return None


def bisection(reaches, upper: float, steps: int) -> tuple[float, float]:
    """The bisection walk over [0, upper) shared by alpha auto's searches: ``steps`` halvings, keeping the
    lower half where ``reaches(mid)`` is false. Returns (the last alpha that reached, the grid point above
    it); (0, ...) when none did."""
    lo, hi = 0.0, upper
    for _ in range(steps):
        mid = (lo + hi) / 2
        if reaches(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def bisection_answer(upper: float, steps: int, bound: float) -> tuple[float, float]:
    """The bisection of ``tsds.pipeline.autoparams._bisect`` over [0, upper) when exactly the alphas below
    ``bound`` reach the target: (its answer, the grid point above it), by the same walk."""
    return bisection(lambda a: a < bound, upper, steps)
