"""The dependent draws of n distinct examples (systematic rounding of n p, one draw per near-duplicate
cluster): exactly n distinct items, every inclusion frequency equal to its probability, seeded."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsds.core.sampling import draw_one_per_cluster, draw_systematic, inclusion_probabilities
from tsds.errors import ParameterError
from tsds.evaluation.metrics import near_duplicate_clusters

weights = st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(weights, st.integers(1, 60), st.integers(0, 2**31 - 1))
def test_systematic_draws_exactly_n_distinct_items_within_the_support(w, n, seed):
    p = np.asarray(w)
    if np.count_nonzero(p > 0) < n:
        with pytest.raises(ParameterError, match="positive probability|sum to zero"):
            draw_systematic(p, n, seed)
        return
    c = draw_systematic(p, n, seed)
    assert c.dtype == np.int64 and set(np.unique(c)) <= {0, 1} and c.sum() == n
    assert np.all(p[c > 0] > 0)
    pi = inclusion_probabilities(p, n)
    assert pi.sum() == pytest.approx(n) and pi.max() <= 1 + 1e-12
    assert np.all(c[pi >= 1] == 1)  # n p >= 1 (after capping): taken for sure
    np.testing.assert_array_equal(c, draw_systematic(p, n, seed))  # seeded


@settings(max_examples=8, deadline=None)
@given(st.lists(st.floats(0.01, 5.0), min_size=4, max_size=30), st.data())
def test_systematic_inclusion_frequencies_equal_n_p(w, data):
    p = np.asarray(w)
    n = data.draw(st.integers(1, p.size))
    pi = inclusion_probabilities(p, n)
    runs = 2500
    freq = sum(draw_systematic(p, n, s) for s in range(runs)) / runs
    # binomial standard error at most 0.5/sqrt(runs) = 0.01; 5 of them
    np.testing.assert_allclose(freq, pi, atol=0.05)


def test_inclusion_probabilities_cap_and_respread():
    pi = inclusion_probabilities([0.7, 0.1, 0.1, 0.1, 0.0], 2)
    np.testing.assert_allclose(pi, [1, 1 / 3, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(inclusion_probabilities([1, 1, 1, 1], 2), [0.5] * 4)


def test_systematic_spreads_a_flat_support_and_honours_the_order():
    """A flat p over 2n candidates: one candidate out of every consecutive pair in the given order."""
    p = np.ones(20)
    c = draw_systematic(p, 10, seed=3)
    assert all(c[2 * k] + c[2 * k + 1] == 1 for k in range(10))
    order = np.random.default_rng(0).permutation(20)
    c = draw_systematic(p, 10, seed=3, order=order)
    assert all(c[order[2 * k]] + c[order[2 * k + 1]] == 1 for k in range(10))
    with pytest.raises(ParameterError, match="permutation"):
        draw_systematic(p, 10, seed=3, order=np.zeros(20, dtype=int))


def test_one_per_cluster_avoids_copies_while_distinct_clusters_last():
    p = np.array([0.3, 0.3, 0.3, 0.05, 0.05, 0.0])
    clusters = np.array([0, 0, 0, 3, 4, 5])  # three near-copies
    for seed in range(20):
        c = draw_one_per_cluster(p, 3, seed, clusters)
        assert c.sum() == 3 and c[:3].sum() == 1 and c[3] == c[4] == 1 and c[5] == 0
    c = draw_one_per_cluster(p, 5, 0, clusters)  # more draws than clusters with mass: still n distinct
    assert c.sum() == 5 and c[5] == 0


def test_near_duplicate_clusters_join_rows_within_the_radius():
    x = np.array([[1, 0, 0], [1, 0.05, 0], [1, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    labels = near_duplicate_clusters(x, 0.06)
    assert labels.tolist() == [0, 0, 0, 3, 4]  # a chain of close rows is one cluster
    assert near_duplicate_clusters(x, 0.01).tolist() == [0, 1, 2, 3, 4]
