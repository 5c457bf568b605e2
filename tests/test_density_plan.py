"""The density path chooser: pruned IVF scan or a product of every list with every point, both exact."""

import numpy as np
import pytest

from tsds.errors import ParameterError
from tsds.retrieval import DensityStats, build_index, densities
from tsds.retrieval.density_plan import DensityPlan, plan_for


def _reference(x, ids, sigma):
    """Float64 densities over the whole pool, blocked."""
    x64 = x.astype(np.float64)
    xq = x64[ids]
    d2 = np.maximum((xq**2).sum(1)[:, None] + (x64**2).sum(1)[None] - 2 * xq @ x64.T, 0)
    within = d2 < sigma**2
    return np.maximum(np.where(within, 1 - d2 / sigma**2, 0).sum(1), 1), within.sum(1)


def _clustered(n, d, seed=0, clusters=30, noise=0.15, scale=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))
    return (scale * x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("scale", [1.0, 5.0])  # unit vectors, and long ones (computed around list centroids)
def test_brute_force_densities_equal_the_pruned_ones_and_the_exact_ones(scale):
    x = _clustered(6000, 24, clusters=20, noise=0.25, scale=scale)
    x[200:240] = x[200]  # a near-duplicate cluster
    sigma = 0.5 * scale
    index = build_index(x, kind="ivf", nlist=60)
    ids = np.append(np.arange(0, 6000, 11), [200, 201])
    got = {}
    for path in ("pruned", "brute"):
        stats = DensityStats()
        got[path] = densities(index, ids, sigma, stats=stats, path=path, return_counts=True)
        assert stats.brute_points == (ids.size if path == "brute" else 0) and stats.points == ids.size
    want, want_counts = _reference(x, ids, sigma)
    for rho, counts in got.values():
        assert np.allclose(rho, want, rtol=1e-4)
        assert rho[-1] >= 40
    # float32 products of different shapes: the two paths agree to float32 rounding, and count the same pairs
    assert np.allclose(got["brute"][0], got["pruned"][0], rtol=1e-5, atol=0)
    assert np.array_equal(got["brute"][1], got["pruned"][1])
    assert np.abs(got["pruned"][1] - want_counts).max() <= 1  # pairs at sigma within float32 rounding


def test_brute_force_keeps_the_cap_and_the_exclusions():
    x = _clustered(3000, 16, clusters=10, noise=0.2)
    index = build_index(x, kind="ivf", nlist=30)
    index.exclude(np.arange(0, 3000, 3))
    ids = np.arange(1, 3000, 13)
    a = densities(index, ids, 0.6, path="pruned", cap=50)
    stats = DensityStats()
    b = densities(index, ids, 0.6, path="brute", cap=50, stats=stats)
    assert stats.capped > 0 and stats.brute_points == ids.size
    assert np.allclose(a, b, rtol=1e-5, atol=0)
    keep = np.setdiff1d(np.arange(3000), np.arange(0, 3000, 3))
    y = x[keep].astype(np.float64)
    d2 = np.maximum(((x[ids, None, :].astype(np.float64) - y[None]) ** 2).sum(-1), 0)
    terms = -np.sort(-np.maximum(0, 1 - d2 / 0.36), axis=1)[:, :50]  # a capped point keeps its 50 largest terms
    assert np.allclose(b, np.maximum(terms.sum(1), 1), rtol=1e-4)


def test_chooser_keeps_the_pruned_path_where_the_bounds_prune():
    x = _clustered(20000, 32, clusters=60, noise=0.05)
    index = build_index(x, kind="ivf", nlist=140)
    ids = np.arange(0, 20000, 2)  # three batches: the first measures, the others choose
    stats = DensityStats()
    rho = densities(index, ids, 0.2, stats=stats)
    plan = plan_for(index, 0.2)
    assert plan.keep is not None and stats.brute_points == 0 and stats.sieved > 0
    assert stats.multiplied < 0.05 * ids.size * x.shape[0]
    assert np.array_equal(rho, densities(index, ids, 0.2, path="pruned"))  # the same chunks of points: same sums


def test_chooser_switches_to_brute_force_where_the_bounds_prune_nothing():
    # isotropic points on a sphere, sigma above their typical distance: every list is within reach
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = build_index(x, kind="ivf", nlist=100)
    ids = np.arange(0, 12000, 2)
    stats = DensityStats()
    rho = densities(index, ids, 1.5, stats=stats)
    assert 0 < stats.brute_points < ids.size  # the first batch measured, the rest went brute force
    assert plan_for(index, 1.5).keep > 0.5
    want, _ = _reference(x, ids, 1.5)
    assert np.allclose(rho, want, rtol=1e-4)
    # a second call (a later round of the same selection) starts from what the first measured
    again = DensityStats()
    densities(index, ids[:4096], 1.5, stats=again)
    assert again.brute_points == 4096


def test_chooser_rule_compares_counted_work():
    plan = DensityPlan()
    assert not plan.brute(10**9, 512, 10**6, 384, 64)  # nothing measured yet: pruned
    plan.learn(sieved=1000, multiplied=900)
    assert plan.brute(bounded=512 * 10**6, points=512, ntotal=10**6, dim=384, p=64)  # bound keeps every pair
    assert not plan.brute(bounded=512 * 10**4, points=512, ntotal=10**6, dim=384, p=64)  # keeps 1%
    assert DensityPlan(mode="brute").brute(0, 1, 1, 1, 1) and not DensityPlan(mode="pruned").brute(10**9, 1, 1, 1, 1)


def test_unknown_density_path_is_a_parameter_error():
    x = _clustered(2000, 8)
    index = build_index(x, kind="ivf", nlist=20)
    with pytest.raises(ParameterError, match="density path"):
        densities(index, np.arange(5), 0.3, path="fast")
