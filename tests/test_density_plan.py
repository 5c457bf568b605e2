"""The density path chooser: pruned IVF scan or a product of every list with every point, both exact."""

import numpy as np
import pytest

from tsds.errors import ParameterError
import faiss

from tsds.retrieval import DensityStats, build_index, densities
from tsds.retrieval.density import kernel_sums
from tsds.retrieval.density_bounds import _shells
from tsds.retrieval.density_plan import DensityPlan, Nearest, plan_for
from tsds.retrieval.ivf import list_vectors


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


def _topics(n, d, seed=0):
    """Clusters of isotropic noise around centres drawn near 20 topics (benchmarks/bench_select.py's shape):
    a 64-dimensional projection sees part of two clusters' distance, a direction between them all of it."""
    rng = np.random.default_rng(seed)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    topics = unit(rng.normal(size=(20, d)))
    centres = unit(topics[rng.integers(0, 20, 300)] + rng.normal(size=(300, d)) * 0.06)
    label = rng.integers(0, 300, n)
    return unit(centres[label] + rng.normal(size=(n, d)) * rng.uniform(0.022, 0.045, 300)[label, None]).astype(np.float32)


@pytest.fixture(scope="module")
def topics_index():
    return build_index(_topics(16000, 256), kind="ivf", nlist=240)


def _both_ways(index, ids, path, key):
    """Densities and counts with the direction test off and on (the plan kept under ``key``)."""
    got, multiplied = {}, {}
    for directions in (False, True):
        index._density_plans = {key: DensityPlan(mode="pruned", directions=directions)}
        stats = DensityStats()
        got[directions] = densities(index, ids, 0.6, stats=stats, path=path, return_counts=True)
        multiplied[directions] = stats.multiplied
    assert multiplied[True] < 0.9 * multiplied[False]  # pairs the sieve kept and the direction test did not
    return got


def test_the_direction_test_rules_out_pairs_and_keeps_every_one_within_sigma(topics_index):
    ids = np.arange(0, 16000, 4)
    got = _both_ways(topics_index, ids, "pruned", (0.6, "pruned"))
    want = densities(topics_index, ids, 0.6, path="brute", return_counts=True)
    assert (want[1] > 1).mean() > 0.4  # many points have others within sigma: pairs near the edge abound
    for rho, counts in got.values():  # exact terms: any pair dropped within sigma would change a sum
        assert np.array_equal(rho, want[0]) and np.array_equal(counts, want[1])


@pytest.mark.parametrize("scale", [1.0, 30.0])  # the margin grows with the vectors' length
def test_the_direction_test_keeps_pairs_at_the_edge_of_sigma_along_its_direction(scale):
    # points placed just inside sigma of a list's members, straight along the direction the test projects on
    x = _topics(16000, 256) * np.float32(scale)
    index = build_index(x, kind="ivf", nlist=240)
    ivf, c, sigma = faiss.extract_index_ivf(index.index), _shells(index).centroids64, 0.6 * scale
    rng = np.random.default_rng(4)
    edge = []
    for _ in range(60):
        a, b = rng.choice(240, 2, replace=False)
        u = (c[b] - c[a]) / np.linalg.norm(c[b] - c[a])
        y = list_vectors(ivf, a)[0].astype(np.float64)
        for row in y[np.argsort(y @ u)[-8:]]:  # the members nearest to list b's side
            p = (row + sigma * (1 - 1e-4) * u).astype(np.float32)
            if np.argmin(((c - p) ** 2).sum(1)) == b:  # in the group whose direction is u
                edge.append(p)
    edge = np.array(edge)
    assert len(edge) >= 100
    plan = DensityPlan(mode="pruned", directions=True)
    stats = DensityStats()
    got = kernel_sums(index, edge, sigma, stats=stats, plan=plan)
    want = kernel_sums(index, edge, sigma, plan=DensityPlan(mode="brute"))
    assert stats.multiplied < 0.5 * edge.shape[0] * x.shape[0]  # the filters ran
    assert (want[1] >= 1).all()  # each point's member lies within sigma
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_approximate_densities_take_the_same_filters_and_stay_the_same_numbers(topics_index):
    ids = np.arange(0, 16000, 4)
    got = _both_ways(topics_index, ids, Nearest(8), (0.6, Nearest(8)))
    assert np.array_equal(got[True][0], got[False][0]) and np.array_equal(got[True][1], got[False][1])
    topics_index._density_plans = {}
    stats = DensityStats()
    assert np.array_equal(densities(topics_index, ids, 0.6, path=Nearest(8), stats=stats), got[True][0])
    assert stats.probed > 0 and (0.6, Nearest(8)) in topics_index._density_plans  # probed, then decided


def test_the_plan_tests_by_direction_only_where_its_counts_say_it_pays():
    plan = DensityPlan()
    plan.learn(10**6, 10**5, (1000, 100, 2000), dim=384, p=64)
    assert plan.directions is None  # too few probed pairs to decide
    # the sieve keeps 10%; the direction test leaves 1/16 for two multiply-adds a pair
    plan.learn(10**8, 10**7, (2 << 20, 1 << 17, 4 << 20), dim=384, p=64)
    assert plan.directions is True
    plan.learn(10**8, 10**8, (2 << 20, 2 << 20, 10**9), dim=384, p=64)
    assert plan.directions is True  # decided once: every later batch of the index takes the same filters
    # texts: the sieve keeps 0.1% and the direction test leaves three quarters of the pairs
    text = DensityPlan()
    text.learn(10**8, 10**5, (2 << 20, 3 << 19, 4 << 20), dim=384, p=64)
    assert text.directions is False
    # a chunk's pruned cost counts the direction test's work where the plan uses it
    assert plan._filter(64) < text._filter(64) + 10 and text._filter(64) == 64 + 1 + 2
    forced = DensityPlan(directions=True)  # set by hand, nothing probed: charged as the sieve alone
    assert forced._filter(64) == 64 + 1 + 2
    forced.learn(1000, 10)  # the sieve keeps 1%: brute force where the bounds keep more than 5.6% of the pairs
    assert forced.brute(10**9, 10, 10**6, 384, 64) and not forced.brute(10**7, 10, 10**6, 384, 64)


def test_the_chooser_decides_the_direction_test_on_real_densities():
    x = _topics(30000, 256, seed=1)
    index = build_index(x, kind="ivf", nlist=240)
    ids = np.arange(0, 30000, 3)
    stats = DensityStats()
    rho = densities(index, ids, 0.6, stats=stats)
    plan = plan_for(index, 0.6)
    assert plan.directions is not None and plan.probed >= 1 << 20 and stats.probed == plan.probed
    assert np.array_equal(rho, densities(index, ids, 0.6, path="brute"))


@pytest.mark.parametrize("scale", [1.0, 30.0])  # the float32 test's margin grows with the vectors' length
def test_narrowing_by_a_float32_product_keeps_every_pair_within_sigma(topics_index, scale):
    """Points placed at sigma from a member, in random directions, from 1e-3 to 1e-8 of sigma^2 inside it (the
    last within float32's rounding of the point): the pairs the float32 product would drop at its rounding
    are these, and each dropped one would change a sum."""
    x = _topics(16000, 256) * np.float32(scale)
    index = topics_index if scale == 1.0 else build_index(x, kind="ivf", nlist=240)
    sigma = 0.6 * scale
    rng = np.random.default_rng(9)
    members = x[rng.choice(x.shape[0], 600, replace=False)].astype(np.float64)
    u = rng.normal(size=members.shape)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    inside = np.geomspace(1e-3, 1e-8, members.shape[0])[:, None]
    edge = (members + sigma * np.sqrt(1 - inside) * u).astype(np.float32)
    want = kernel_sums(index, edge, sigma, plan=DensityPlan(mode="brute"))
    assert (want[1] >= 1).mean() > 0.6  # most points keep their member inside sigma after rounding
    narrowed = DensityPlan(mode="pruned")
    whole = DensityPlan(mode="pruned", multiplied=1, within=1)  # measured: every multiplied pair within sigma
    assert narrowed.narrows and not whole.narrows
    for plan in (narrowed, whole):
        got = kernel_sums(index, edge, sigma, plan=plan)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_the_plan_narrows_the_exact_products_unless_most_pairs_lie_within_sigma():
    plan = DensityPlan()
    assert plan.narrows  # nothing measured yet
    plan.learn(10**8, 10**7, within=2 * 10**6)  # a fifth of the multiplied pairs within sigma (200k benchmark)
    assert plan.narrows
    plan.learn(10**8, 10**8, within=10**8)  # near-duplicates: almost all of them
    assert not plan.narrows
    stats = DensityStats()
    x = _clustered(3000, 16, clusters=10, noise=0.2)
    index = build_index(x, kind="ivf", nlist=30)
    densities(index, np.arange(0, 3000, 7), 0.6, stats=stats, path="pruned")
    learned = plan_for(index, 0.6, "pruned")
    assert 0 < stats.pruned_pairs == learned.within <= learned.multiplied == stats.pruned_multiplied


def test_unknown_density_path_is_a_parameter_error():
    x = _clustered(2000, 8)
    index = build_index(x, kind="ivf", nlist=20)
    with pytest.raises(ParameterError, match="density path"):
        densities(index, np.arange(5), 0.3, path="fast")
