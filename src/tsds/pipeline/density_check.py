"""How far approximate densities (``--density approx``) were from exact, measured on a sample.

An approximate density sums only the pairs in a point's nearest index lists, so it is never above the
exact one (every term left out is >= 0), but the lists give no useful bound on how much is left out
(docs/benchmarks.md). So each approximate selection recomputes the exact densities of a seeded sample of
the approximate densities it read and reports their shortfall, (exact - approx) / exact, with a 95%
upper confidence bound (Clopper-Pearson) on the share of all of them that fall short by more than 1%.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import numpy as np

SAMPLE = 256
LOW = 0.01  # a density more than 1% below exact counts as "low"
CONFIDENCE = 0.95


def check_approximate(selection, index, stages=None, sample: int = SAMPLE) -> dict | None:
    """The sample's report (also kept in ``selection.info["density_check"]``; timed as the stage
    "density_check" of ``stages``), or None for exact densities."""
    cache, config = selection.density_cache, selection.config
    if config.density != "approx" or config.sigma == 0 or cache is None:
        return None
    with stages.stage("density_check") if stages is not None else nullcontext():
        return _check(selection, index, sample)


def _check(selection, index, sample: int) -> dict:
    cache, config = selection.density_cache, selection.config
    start = time.perf_counter()
    listed = np.zeros(cache.values.size, dtype=bool)
    listed[selection.neighbour_ids.ravel()] = True
    read = np.flatnonzero(listed & ~np.isnan(cache.values))
    rng = np.random.default_rng(config.seed)
    picked = np.sort(rng.choice(read, min(sample, read.size), replace=False)) if read.size else read
    exact = index.densities(picked, config.sigma, cap=config.density_cap) if picked.size else np.ones(0)
    shortfall = np.maximum(0.0, exact - cache.values[picked]) / exact
    low = int(np.count_nonzero(shortfall > LOW))
    equal = shortfall <= 1e-6  # exact densities on other products differ from the pruned ones at float32 rounding
    report = {
        "nearest_lists": config.density_lists,
        "approximate_points": int(read.size),
        "sample": int(picked.size),
        "exact_share": float(np.mean(equal)) if picked.size else None,
        "shortfall_median": float(np.median(shortfall)) if picked.size else None,
        "shortfall_max": float(shortfall.max()) if picked.size else None,
        "low": low,
        "low_share_bound": _upper_bound(low, int(picked.size)),
        "low_threshold": LOW,
        "confidence": CONFIDENCE,
        "seconds": round(time.perf_counter() - start, 3),
    }
    selection.info["density_check"] = report
    return report


def _upper_bound(hits: int, n: int) -> float | None:
    """One-sided Clopper-Pearson upper bound on a share from ``hits`` of ``n`` (None without a sample): the
    share u at which ``hits`` or fewer of ``n`` has probability 1 - CONFIDENCE, by bisection (the binomial
    CDF falls as u grows). Plain math: importing scipy.stats would cost more than the check."""
    if n == 0:
        return None
    if hits >= n:
        return 1.0

    def cdf(u: float) -> float:
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                            + k * math.log(u) + (n - k) * math.log1p(-u)) for k in range(hits + 1))

    low, high = hits / n, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if cdf(mid) > 1 - CONFIDENCE:
            low = mid
        else:
            high = mid
    return high


def describe_check(report: dict) -> str:
    """One line for the CLI summary and the dataset card."""
    if not report["sample"]:
        return f"densities approximate ({report['nearest_lists']} nearest lists); none read, nothing checked"
    return (f"densities approximate ({report['nearest_lists']} nearest lists, never above exact): of "
            f"{report['sample']} checked against exact, {report['exact_share']:.1%} equal, largest shortfall "
            f"{report['shortfall_max']:.2%}; at most {report['low_share_bound']:.1%} of the "
            f"{report['approximate_points']} read are more than {report['low_threshold']:.0%} low "
            f"({report['confidence']:.0%} confidence)")
