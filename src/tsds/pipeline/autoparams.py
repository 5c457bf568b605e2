"""Automatic parameters: choosing sigma, C and alpha from the data, and sweeping alpha cheaply.

(Not to be confused with the recall tuning of an approximate index, tsds.retrieval's ``calibrate``. The
manifest keeps the section name ``calibration`` for the choices made here.)

Rules (documented in docs/report.md and reported in the manifest's ``calibration`` section):

- ``sigma auto``: sigma = median(nearest-neighbour distance) / 3 over a seeded sample of pool rows, where
  the nearest neighbour is the closest *other* row and exact copies (distance 0) are left out of the median.
  The median is the distance from an ordinary text to its closest distinct text, so ordinary neighbours lie
  about 3 sigma away and get no kernel weight, while copies and light edits, much closer than a typical
  neighbour, fall inside sigma. Being a median, the rule holds as long as fewer than half the rows are near-duplicates.
- ``recommend_C``: C = median distance between random pairs of pool rows (the embedding's scale), so the
  alignment term alpha/C x transport cost is of order alpha.
- ``alpha auto``: the largest alpha up to ``alpha_auto_max`` (to 1/1024 of it) for which the support of p
  holds at least ``multiple`` x n candidates, found by bisection (the support only grows as alpha falls), so
  that n distinct examples can be drawn without scraping the tail of p. The supports are measured on the
  neighbour lists the selection itself uses (searched at the nprobe calibrated for each K, as the selection
  searches), and the selection is solved on those very lists (``select_auto_alpha``). There the answer is
  predicted from the densities along the lists and the bisection solves only what the prediction does not
  settle (tsds.pipeline.alpha_search): no trial below the answer widens K or computes densities the
  selection never reads. The default setting is this rule with multiple 2 and alpha at most 0.5; alpha 0
  spreads p over every eligible row, so any budget up to the eligible rows is reached.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from tsds.core import allocation_to_probabilities, solve
from tsds.core.solver import Allocation
from tsds.config import SelectionConfig
from tsds.errors import ParameterError
from tsds.pipeline.alpha_search import SharedLists, bisection, bisection_answer, predict
from tsds.pipeline.select import DensityCache, Selection, draw_counts, select_on_index
from tsds.retrieval import DensityStats, SearchIndex, prepare

# The pool-scale sample (sigma auto, the C recommendation, the typical distance of the query checks) is
# drawn with this seed, never the draw's: the same pool gives the same calibration for every --seed.
CALIBRATION_SEED = 0
SIGMA_RULE = "sigma = median distance from a sampled pool row to its nearest other row (exact copies left out) / 3"
C_RULE = "C = median distance between random pairs of pool rows"
ALPHA_STEPS = 10  # bisection steps of alpha auto: 1/1024
ALPHA_RULE = "largest alpha (bisection to 1/1024) with support of p >= multiple x size"
ALPHA_RULE_CAPPED = ("largest alpha <= alpha_max (bisection to alpha_max/1024) with support of p >= multiple x size, "
                     "on the selection's own neighbour lists")


def _sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}") if x > 0 else 0.0


@dataclass
class PoolScale:
    """Distances that describe the pool: nearest-neighbour distances of a sample, and random-pair distances."""

    nn: np.ndarray
    pairs: np.ndarray
    sample: int
    seed: int = CALIBRATION_SEED

    def typical(self, q: float = 95) -> float:
        """A distance within which most rows have their nearest neighbour (the q-th percentile)."""
        return float(np.percentile(self.nn, q))

    def summary(self) -> dict:
        pct = np.percentile(self.nn, [1, 5, 25, 50, 75, 95, 99])
        return {"sample": self.sample, "seed": self.seed, "nearest_neighbour_percentiles":
                dict(zip(["p1", "p5", "p25", "p50", "p75", "p95", "p99"], [round(float(v), 4) for v in pct])),
                "exact_copies_in_sample": int(np.count_nonzero(self.nn <= 1e-6)),
                "random_pair_median": round(float(np.median(self.pairs)), 4)}


def pool_scale(index: SearchIndex, sample: int = 1000, seed: int = CALIBRATION_SEED) -> PoolScale:
    """Nearest-other-row distances for a seeded sample of available rows, and distances of random pairs
    (the seed is the calibration's own, ``CALIBRATION_SEED``, not the draw's)."""
    rng = np.random.default_rng(seed)
    n = index.ntotal
    avail = np.arange(n)
    if index.excluded is not None:
        avail = np.setdiff1d(avail, index.excluded)
    ids = np.sort(rng.choice(avail, size=min(sample, avail.size), replace=False))
    x = index.reconstruct(ids)
    D, I = index.search(x, min(2, index.available))
    if D.shape[1] < 2:
        nn = np.zeros(ids.size)
    else:
        # the row itself is normally first; if a copy at distance 0 came first, take the other column
        nn = np.where(I[:, 0] == ids, D[:, 1], D[:, 0])
    pa = rng.choice(avail, size=min(2000, 2 * (avail.size // 2)), replace=True)
    half = pa.size // 2
    pairs = np.linalg.norm(index.reconstruct(pa[:half]).astype(np.float64)
                           - index.reconstruct(pa[half:2 * half]), axis=1)
    return PoolScale(nn=nn.astype(np.float64), pairs=pairs, sample=int(ids.size), seed=int(seed))


def stored_pool_scale(store, index: SearchIndex, *, save: bool = True, sample: int = 1000,
                      seed: int = CALIBRATION_SEED) -> PoolScale:
    """``pool_scale(index)``, read from the store where it was measured before on the same content, index
    layout, metric and rows left out (tsds.store.scale), else measured and, with ``save``, kept there.

    Only exact indexes: their nearest neighbours depend on nothing else, and their search is what costs
    (1,000 rows against every stored vector: 0.27 s on the demo store's 35,894 rows, against 0.08 s for an
    IVF index at 200k, whose result would also depend on its lists and search breadth)."""
    if not index.exact:
        return pool_scale(index, sample, seed)
    excluded = index.excluded
    key = {"metric": index.metric, "index": index.kind, "layout": type(index).__name__,
           "shards": len(getattr(index, "specs", ()) or ()), "rows": int(index.ntotal), "sample": int(sample),
           "seed": int(seed), "excluded": None if excluded is None else hashlib.sha256(
               np.sort(np.asarray(excluded, dtype=np.int64)).tobytes()).hexdigest()}
    found = store.load_pool_scale(key)
    if found is not None:
        return PoolScale(nn=found[0], pairs=found[1], sample=int(found[0].size), seed=int(seed))
    scale = pool_scale(index, sample, seed)
    if save:
        store.save_pool_scale(key, scale.nn, scale.pairs)
    return scale


def auto_sigma(scale: PoolScale) -> tuple[float, dict]:
    """sigma from the nearest-neighbour distances (see the module docstring), and a report of the choice."""
    d = scale.nn[scale.nn > 1e-6]
    med = float(np.median(d)) if d.size else 0.0
    sigma = _sig(med / 3.0)
    inside = float(np.mean(scale.nn < sigma)) if scale.nn.size else 0.0
    return sigma, {"sigma": sigma, "rule": SIGMA_RULE, "median_nearest_neighbour": round(med, 4),
                   "sample_rows_with_a_neighbour_within_sigma": round(inside, 4), **scale.summary()}


def recommend_C(scale: PoolScale) -> tuple[float, dict]:
    c = _sig(float(np.median(scale.pairs)), 2) or 1.0
    return c, {"C": c, "rule": C_RULE}


class Neighbours:
    """Neighbour lists and densities fetched once and grown (K doubled) only when a solve needs more.

    An approximate index is searched as a selection searches it: at each K, the search breadth is first
    calibrated to ``recall`` = (recall target, seed) (tsds.retrieval's ``calibrate``)."""

    def __init__(self, index: SearchIndex, queries: np.ndarray, *, metric: str, sigma: float,
                 initial_k: int = 64, cache: DensityCache | None = None, cap: int = 100_000,
                 recall: tuple[float, int] = (0.95, 0)):
        self.index, self.sigma, self.cap = index, sigma, cap
        self.recall_target, self.seed = recall
        self.q = prepare(queries, metric)
        self.cache = cache or DensityCache(index.ntotal)
        self.stats = DensityStats()
        self.fetches = 0
        self.k = 0
        self.history: list[int] = []
        self.recall = 1.0
        self._fetch(min(index.available, initial_k))

    def _fetch(self, k: int) -> None:
        if not self.index.exact:
            self.recall = self.index.calibrate(self.q, k, target=self.recall_target, seed=self.seed)
        self.D, self.ids = self.index.search(self.q, k)
        self.history.append(k)
        self.k = k
        self.fetches += 1
        if self.sigma > 0:
            self.cache.fill(self.index, self.ids, self.sigma, self.cap, self.stats)
            self.R = self.cache.values[self.ids]
        else:
            self.R = None

    def solve(self, alpha: float, C: float) -> Allocation:
        while True:
            complete = self.k >= self.index.available
            alloc = solve(self.D, self.R, alpha=alpha, C=C, complete=complete)
            if not alloc.truncated or complete:
                return alloc
            self._fetch(min(self.index.available, 2 * self.k))

    def probabilities(self, alloc: Allocation) -> np.ndarray:
        return allocation_to_probabilities(self.ids, alloc, self.index.ntotal)


def ot_distance(index: SearchIndex, queries: np.ndarray, p: np.ndarray, metric: str) -> float:
    """Exact 1-Wasserstein distance between the uniform distribution on the queries and p (POT's network simplex)."""
    from tsds.embed.extras import require

    ot = require("ot", feature="the OT distance of a sweep (leave it out: --no-ot, with_ot=False)", extra="eval")

    support = np.flatnonzero(p)
    q = prepare(queries, metric).astype(np.float64)
    x = index.reconstruct(support).astype(np.float64)
    cost = np.sqrt(np.maximum(ot.dist(q, x, metric="sqeuclidean"), 0))
    a = np.full(q.shape[0], 1.0 / q.shape[0])
    b = p[support] / p[support].sum()
    return float(ot.emd2(a, b, cost, numItermax=10_000_000))


@dataclass
class SweepRow:
    alpha: float
    support: int
    neighbours_mean: float
    alignment_term: float
    diversity_term: float
    objective: float
    level: float
    ot_distance: float | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Sweep:
    rows: list[SweepRow]
    C: float
    sigma: float
    k_used: int
    fetches: int
    notes: dict = field(default_factory=dict)


def sweep(index: SearchIndex, queries: np.ndarray, alphas, *, C: float, sigma: float, metric: str = "euclidean",
          neighbours: Neighbours | None = None, with_ot: bool = True) -> Sweep:
    """Solve for every alpha on one set of neighbour lists: K is grown for the smallest alpha (the widest
    support), and every other alpha reuses those lists and densities. ``neighbours``: lists fetched already
    (with the first K and the density cache of the caller's choice); default from K = 64."""
    alphas = sorted({float(a) for a in alphas})
    nb = neighbours or Neighbours(index, queries, metric=metric, sigma=sigma)
    nb.solve(alphas[0], C)  # grows K once, to what the widest support needs
    rows = []
    for a in alphas:
        alloc = nb.solve(a, C)
        p = nb.probabilities(alloc)
        rows.append(SweepRow(
            alpha=a, support=int(np.count_nonzero(p)), neighbours_mean=float(alloc.support.mean()),
            alignment_term=a / C * alloc.alignment, diversity_term=(1 - a) * alloc.diversity,
            objective=alloc.objective, level=alloc.level,
            ot_distance=ot_distance(index, queries, p, metric) if with_ot else None))
    return Sweep(rows=rows, C=C, sigma=sigma, k_used=nb.k, fetches=nb.fetches)


def auto_alpha(index: SearchIndex, queries: np.ndarray, *, size: int, C: float, sigma: float,
               multiple: float = 2.0, metric: str = "euclidean",
               neighbours: Neighbours | None = None) -> tuple[float, dict]:
    """The largest alpha whose support of p holds at least ``multiple`` x ``size`` candidates.
    ``neighbours``: lists fetched already (see ``sweep``)."""
    target = int(np.ceil(multiple * size))
    note = None
    if target > index.available:
        note = f"target support {target} exceeds the {index.available} available candidates; aiming for all of them"
        target = index.available
    nb = neighbours or Neighbours(index, queries, metric=metric, sigma=sigma)

    def support(a: float) -> int:
        return int(np.count_nonzero(nb.probabilities(nb.solve(a, C))))

    tried = [(1.0, support(1.0))]
    if tried[0][1] >= target:
        best, best_support = tried[0]
    else:
        best, best_support = _bisect(support, target, 1.0, tried)
        if best_support < target:
            note = (note or "") + f"; even alpha=0 reaches only {best_support} candidates"
    info = {"alpha": best, "rule": ALPHA_RULE, "multiple": multiple, "size": size, "target_support": target,
            "support": best_support, "C": C, "sigma": sigma, "k_used": nb.k,
            "evaluations": [{"alpha": round(a, 6), "support": s} for a, s in tried]}
    if note:
        info["note"] = note.lstrip("; ")
    return best, info


def _bisect(support, target: int, upper: float, tried: list) -> tuple[float, int]:
    """The largest alpha in [0, upper) (to upper / 2^ALPHA_STEPS) whose support reaches ``target``, and its
    support; alpha 0 when none of the bisection's does. ``tried`` collects (alpha, support)."""
    supports = {}

    def reaches(mid: float) -> bool:
        supports[mid] = s = support(mid)
        tried.append((mid, s))
        return s >= target

    lo, _ = bisection(reaches, upper, ALPHA_STEPS)
    lo_support = supports.get(lo)  # None when no mid reached (lo stays 0, never a mid)
    if lo_support is None:
        lo, lo_support = 0.0, support(0.0)
        tried.append((0.0, lo_support))
    return lo, lo_support


def _search_from_above(lists: SharedLists, upper: float, target: int, tried: list):
    """The bisection's answer (``_bisect`` over [0, upper)), with the solves it needs checked against a
    prediction first (tsds.pipeline.alpha_search): a trial alpha at or below one that reached the target
    reaches it too, one at or above one that missed misses too, so they are not solved again.
    Returns (alpha, support, (allocation, distances, ids) of the solve at alpha)."""
    known = {"ok": None, "fail": upper}
    supports: dict = {}
    kept: dict = {}  # the solve at the largest alpha that reached the target

    def evaluate(a: float) -> bool:
        alloc, D, ids, s = lists.solve(a)
        tried.append((a, s))
        supports[a] = s
        if s < target:
            known["fail"] = min(known["fail"], a)
        elif known["ok"] is None or a > known["ok"]:
            known["ok"] = a
            kept.clear()
            kept[a] = (alloc, D, ids)
        return s >= target

    def reaches(a: float) -> bool:
        if known["ok"] is not None and a <= known["ok"]:
            return True
        return False if a >= known["fail"] else evaluate(a)

    bound = predict(lists, target)
    if bound is not None:
        lo, hi = bisection_answer(upper, ALPHA_STEPS, bound)
        if hi < upper:
            reaches(hi)
        if lo > 0.0:
            reaches(lo)
    lo, _ = bisection(reaches, upper, ALPHA_STEPS)
    if lo not in kept:  # no trial reached the target (alpha 0), or lo was settled by the order alone
        alloc, D, ids, supports[lo] = lists.solve(lo)
        tried.append((lo, supports[lo]))
        kept = {lo: (alloc, D, ids)}
    with lists.stages.stage("alpha_auto") as info:
        info.update(alpha=lo, support=supports[lo], k=lists.k, solves=lists.solves, trials=len(tried),
                    predicted_below=bound)
    return lo, supports[lo], kept[lo]


def _selection_from(lists: SharedLists, config: SelectionConfig, alloc, D, ids) -> Selection:
    """The selection of ``alloc`` (solved at ``config.alpha`` on the lists D, ids), and its draw."""
    with lists.stages.stage("sample"):
        p = allocation_to_probabilities(ids, alloc, lists.index.ntotal)
        counts = draw_counts(p, config)
    R = lists.cache.values[ids] if config.sigma > 0 else np.ones_like(D)
    return Selection(probabilities=p, counts=counts, allocation=alloc, neighbour_ids=ids, neighbour_distances=D,
                     neighbour_densities=R, k_used=ids.shape[1], k_history=list(lists.history), recall=lists.recall,
                     density_stats=lists.stats, config=config, timings=lists.stages.stages, density_cache=lists.cache)


def select_auto_alpha(index, queries: np.ndarray, config: SelectionConfig, *, cache: DensityCache, stages,
                      progress=None) -> tuple[Selection, dict]:
    """Select with the largest alpha <= ``config.alpha_auto_max`` whose support of p holds
    ``config.alpha_auto`` x size candidates (every eligible row at most). First the selection at the largest
    alpha (what an explicit alpha would give); only when its support is too small, the bisection, on
    neighbour lists searched as the selection searches them, and the selection solved on those same lists,
    so that its support is the one measured. The bisection's trials are checked against a prediction from
    the densities first (``_search_from_above``): usually two solves, at the answer and one grid step above,
    and K and the densities only as far as the answer needs, so the selection is the one that alpha given
    explicitly makes. Never fails on a budget up to the eligible rows: alpha 0
    spreads p over all of them. Returns (selection, the report of the choice)."""
    upper, size = float(config.alpha_auto_max), config.size
    wanted = int(np.ceil(config.alpha_auto * size))
    target = min(wanted, index.available)
    if config.sampling == "without-replacement" and size > index.available:
        raise ParameterError(f"size {size} is larger than the {index.available} eligible pool rows; "
                             "cannot draw that many distinct examples")
    first = select_on_index(index, queries, config.model_copy(update={"alpha": upper}), stages=stages,
                            density_cache=cache, progress=progress, draw=False)
    tried = [(upper, int(np.count_nonzero(first.probabilities)))]
    notes = []
    if wanted > target:
        notes.append(f"target support {wanted} exceeds the {index.available} eligible candidates; aiming for all of them")
    if tried[0][1] >= target:
        alpha, support = tried[0]
        selection = first
        selection.counts = draw_counts(first.probabilities, selection.config)
    else:
        lists = SharedLists(index, queries, config, cache, stages, first, progress)
        first = None
        alpha, support, found = _search_from_above(lists, upper, target, tried)
        if alpha == 0.0:
            notes.append("no alpha above 0 reached the target: alpha 0, the widest support (every eligible row "
                         "the lists reach)" + ("" if support >= target else f", only {support} candidates"))
        alloc, D, ids = found
        selection = _selection_from(lists, config.model_copy(update={"alpha": alpha}), alloc, D, ids)
    info = {"alpha": alpha, "rule": ALPHA_RULE if upper == 1.0 else ALPHA_RULE_CAPPED, "alpha_max": upper,
            "multiple": config.alpha_auto, "size": size, "target_support": target, "support": support,
            "widened": alpha < upper, "C": config.C, "sigma": config.sigma, "k_used": selection.k_used,
            "evaluations": [{"alpha": round(a, 6), "support": s} for a, s in tried]}
    if alpha < upper:
        info["widening"] = (f"lowered from {upper:g}, whose support of p held only {tried[0][1]} candidates, "
                            f"to reach {target}")
    if notes:
        info["note"] = "; ".join(notes)
    return selection, info


def describe_alpha(info: dict) -> str:
    """One line saying which alpha was chosen and why (the CLI summary, the dataset card)."""
    extra = [x for x in (info.get("widening"), info.get("note")) if x]
    return (f"alpha {info['alpha']:.4g} (support of p {info['support']} >= {info['multiple']:g} x {info['size']}"
            + "".join(f"; {x}" for x in extra) + ")")


def describe_parameters(params: dict) -> str:
    """The resolved TSDS parameters in one line, with the preset that filled those not given."""
    preset = params.get("preset")
    origin = {"default": "the default setting", "paper": "the published defaults (--paper)"}.get(preset, "as given")
    sampling = "n distinct draws" if params["sampling"] == "without-replacement" else "draws with replacement"
    if params.get("query_turns") and params["sampling"] == "without-replacement":
        sampling += " in turns over the queries"
    if params.get("one_per_cluster") and params["sampling"] == "without-replacement" and params["sigma"] > 0:
        sampling += ", one per near-duplicate cluster"
    return (f"{params['metric']}, alpha {params['alpha']:.4g}, C {params['C']:g}, sigma {params['sigma']:g}, "
            f"{sampling} ({origin})")
