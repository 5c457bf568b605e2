"""A large first K (``initial_k``, which the authors' config key max_K sets) gives the default's selection
at about the default's cost: the IVF search breadth is not left where every row runs out of candidates,
and the lazy densities start from a short prefix of each list, not from all of it."""

from __future__ import annotations

import numpy as np
import pytest

from tsds.config import make_config
from tsds.pipeline.select import select_on_index
from tsds.retrieval import build_index
from tsds.retrieval.recall import SHORT_ROWS


def _clusters(n=6000, d=16, m=40, seed=3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, d)).astype(np.float32) * 3
    x = centres[rng.integers(0, 30, n)] + rng.standard_normal((n, d)).astype(np.float32)
    q = x[rng.integers(0, n, m)] + 0.1 * rng.standard_normal((m, d)).astype(np.float32)
    return x, q


def test_calibration_at_a_large_k_widens_the_search_past_rows_that_run_out():
    """At k = 1,000 one list (about 250 members) leaves every row short: each would be searched again over
    every list, which counts as found, so recall alone kept one list per query."""
    x, q = _clusters()
    index = build_index(x, kind="ivf", nlist=24)
    index.nprobe = 1
    recall = index.calibrate(q, 1000, target=0.95)
    assert recall >= 0.95
    assert index.calibration["short"] <= SHORT_ROWS and index.nprobe >= 4
    d, ids = index.search(q, 1000)
    assert (ids >= 0).all()


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_a_large_first_k_starts_densities_from_a_short_prefix(kind, monkeypatch):
    """The same selection as densities over whole lists (the code before: from the first K on), with a
    fraction of the densities; on an exact index also the same as from the default first K."""
    import tsds.pipeline.select as select_module

    x, q = _clusters()
    runs = {}
    for first, start in ((64, 64), (2048, 64), (2048, 2048)):
        monkeypatch.setattr(select_module, "_DENSITY_START", start)
        index = build_index(x, kind=kind, **({"nlist": 24} if kind == "ivf" else {}))
        config = make_config(size=300, alpha=0.02, C=1.0, sigma=1.0, metric="euclidean", initial_k=first)
        runs[first, start] = select_on_index(index, q, config)
    default, large, whole = runs[64, 64], runs[2048, 64], runs[2048, 2048]
    assert large.k_history[0] == 2048 and int((large.allocation.support + 1).max()) < 600
    assert np.array_equal(large.probabilities, whole.probabilities) and np.array_equal(large.counts, whole.counts)
    assert large.density_stats.points < 0.5 * whole.density_stats.points
    if kind == "flat":  # exact lists: the first K changes nothing but the work
        assert np.array_equal(default.probabilities, large.probabilities)
        assert large.density_stats.points <= 1.2 * default.density_stats.points
