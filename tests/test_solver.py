"""The closed-form solver against the exact LP optimum, and its properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsds.core import allocation_to_probabilities, solve
from tsds.core.reference import solve_heap, solve_lp
from tsds.errors import ParameterError


def _instance(rng, M, N, d, sigma, metric, dup_share=0.0):
    Q = rng.normal(size=(M, d))
    X = rng.normal(size=(N, d))
    if dup_share:
        k = max(2, int(N * dup_share))
        X[:k] = X[0] + 0.02 * rng.normal(size=(k, d))
    if metric == "cosine":
        Q /= np.linalg.norm(Q, axis=1, keepdims=True)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    D = np.linalg.norm(Q[:, None] - X[None], axis=2)
    if sigma > 0:
        sq = ((X[:, None] - X[None]) ** 2).sum(-1)
        rho = np.maximum(0.0, 1 - sq / sigma**2).sum(1)
    else:
        rho = np.ones(N)
    return D, rho


def _closed_form(D, rho, alpha, C):
    order = np.argsort(D, axis=1, kind="stable")
    alloc = solve(np.take_along_axis(D, order, 1), rho[order], alpha=alpha, C=C, complete=True)
    return alloc, allocation_to_probabilities(order, alloc, D.shape[1])


CASES = [
    (seed, alpha, C, sigma, metric)
    for seed, (alpha, C, sigma, metric) in enumerate(
        (a, c, s, m)
        for a in (0.0, 0.2, 0.5, 0.9, 1.0)
        for c in (0.5, 5.0)
        for s in (0.0, 0.8)
        for m in ("euclidean", "cosine")
        for _ in range(2)
    )
]


@pytest.mark.parametrize("seed,alpha,C,sigma,metric", CASES)
def test_matches_lp_optimum(seed, alpha, C, sigma, metric):
    rng = np.random.default_rng(seed)
    M, N, d = int(rng.integers(1, 11)), int(rng.integers(2, 401)), int(rng.integers(2, 9))
    scale = 1.0 if metric == "cosine" else 2.0
    D, rho = _instance(rng, M, N, d, sigma * scale, metric, dup_share=0.1 * (seed % 2))
    alloc, p = _closed_form(D, rho, alpha, C)
    objective, p_lp, _ = solve_lp(D, rho, alpha=alpha, C=C)
    assert abs(alloc.objective - objective) <= 1e-7 * max(abs(objective), 1e-12)
    assert not alloc.truncated
    assert np.abs(p - p_lp).max() <= 1e-6
    assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-12


def test_case_count():
    assert len(CASES) >= 50


def test_identical_to_heap_walk():
    rng = np.random.default_rng(7)
    D = np.sort(rng.gamma(2.0, 0.3, size=(40, 300)), axis=1)
    rho = 1 + rng.pareto(2.0, size=(40, 300))
    for alpha in (0.05, 0.5, 0.95):
        alloc = solve(D, rho, alpha=alpha, C=1.0, complete=True)
        level, weights = solve_heap(D, rho, alpha=alpha, C=1.0)
        assert alloc.level == level
        assert np.array_equal(alloc.weights, weights)


def test_alpha_one_puts_mass_on_nearest():
    D = np.sort(np.random.default_rng(1).random((5, 20)), axis=1)
    alloc = solve(D, alpha=1.0, C=5.0)
    assert np.allclose(alloc.weights[:, 0], 1 / 5)
    assert np.all(alloc.weights[:, 1:] == 0)
    assert not alloc.truncated


def test_alpha_zero_needs_every_candidate():
    D = np.sort(np.random.default_rng(2).random((3, 10)), axis=1)
    assert solve(D, alpha=0.0, C=5.0).truncated
    alloc = solve(D, alpha=0.0, C=5.0, complete=True)
    assert np.allclose(alloc.weights, 1 / 30)


def test_single_query_and_ties():
    D = np.array([[0.5, 0.5, 0.5, 1.0, 2.0]])
    alloc = solve(D, alpha=0.5, C=0.1)
    assert np.isclose(alloc.weights.sum(), 1.0)
    assert np.allclose(alloc.weights[0, :3], 1 / 3)


def test_query_whose_neighbours_are_all_duplicates():
    D = np.array([[0.1, 0.1, 0.1, 0.1], [0.2, 0.3, 0.4, 0.5]])
    rho = np.array([[4.0, 4.0, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    alloc = solve(D, rho, alpha=0.5, C=1.0, complete=True)
    assert np.isclose(alloc.weights[0].sum(), 0.5)
    assert np.allclose(alloc.weights[0], alloc.weights[0, 0])


def test_truncation_is_flagged():
    D = np.tile(np.linspace(0, 1e-3, 8), (2, 1))
    assert solve(D, alpha=0.5, C=5.0).truncated
    assert not solve(D, alpha=0.5, C=5.0, complete=True).truncated


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": -0.1, "C": 1.0}, "alpha"),
    ({"alpha": 1.5, "C": 1.0}, "alpha"),
    ({"alpha": 0.5, "C": 0.0}, "C must"),
    ({"alpha": float("nan"), "C": 1.0}, "alpha"),
])
def test_parameter_errors(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        solve(np.array([[0.1, 0.2]]), **kwargs)


def test_unsorted_rows_rejected():
    with pytest.raises(ParameterError, match="ascending"):
        solve(np.array([[0.3, 0.2]]), alpha=0.5, C=1.0)


@pytest.mark.parametrize("kde", [False, True])
@pytest.mark.parametrize("bad,match", [("swap", "ascending"), ("nan", "finite"), ("inf", "finite")])
def test_bad_distances_in_the_columns_read_are_rejected(kde, bad, match):
    """Distances are checked as the solver reads them: a bad value where the answer depends on it raises."""
    rng = np.random.default_rng(0)
    D = np.sort(rng.random((3, 400)), axis=1)
    R = 1.0 + rng.random(D.shape) if kde else None
    reads = solve(D, R, alpha=0.5, C=5.0).max_support  # the answer reads up to here
    col = max(1, reads // 2)
    if bad == "swap":
        D[1, col], D[1, col + 1] = D[1, col + 1] + 0.1, D[1, col]
    else:
        D[1, col] = np.nan if bad == "nan" else np.inf
    with pytest.raises(ParameterError, match=match):
        solve(D, R, alpha=0.5, C=5.0)


@st.composite
def lists_with_ids(draw):
    """Sorted neighbour lists over a pool of N candidates (ids repeat across rows), one density per candidate."""
    M, K = draw(st.integers(1, 8)), draw(st.integers(1, 80))
    N = K + draw(st.integers(0, 50))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    ids = np.stack([rng.permutation(N)[:K] for _ in range(M)])
    D = np.sort(np.round(rng.random((M, K)) * 50) / 50, axis=1)  # ties
    table = rng.choice([1.0, 2.0, 3.5], size=N) if draw(st.booleans()) else 1 + rng.pareto(1.5, size=N)
    alpha = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.01, 0.99))
    return D, table, ids.astype(draw(st.sampled_from([np.int32, np.int64]))), alpha, draw(st.floats(0.01, 50.0))


@settings(max_examples=300, deadline=None)
@given(lists_with_ids(), st.booleans(), st.sampled_from([1, 2, 32]))
def test_densities_per_candidate_give_the_same_answer(problem, complete, first_prefix):
    """Densities given per candidate with the lists' ids (read as the solver goes) and the M x K array of
    the same values give bit-identical results."""
    from unittest import mock

    from tsds.core import lists as lists_module
    from tsds.core import solver as solver_module

    D, table, ids, alpha, C = problem
    with mock.patch.object(solver_module, "_FIRST_PREFIX", first_prefix), \
            mock.patch.object(lists_module, "SCRATCH", 64):  # gathers in many pieces
        a = solve(D, table[ids], alpha=alpha, C=C, complete=complete)
        b = solve(D, table, neighbours=ids, alpha=alpha, C=C, complete=complete)
    assert np.array_equal(a.weights, b.weights)
    assert np.array_equal(a.support, b.support)
    assert (a.level, a.alignment, a.diversity, a.objective, a.truncated) == \
        (b.level, b.alignment, b.diversity, b.objective, b.truncated)


@pytest.mark.parametrize("table,ids,match", [
    (np.ones(10), np.array([[0, 10]]), r"lie in \[0, 10\)"),
    (np.ones(10), np.array([[-1, 3]]), r"lie in \[0, 10\)"),
    (np.ones((1, 2)), np.array([[0, 1]]), "one per candidate"),
    (np.ones(10), np.array([[0, 1, 2]]), "shape of distances"),
    (np.ones(10), np.array([[0.0, 1.0]]), "integers"),
    (np.array([1.0, 0.0]), np.array([[0, 1]]), "finite and positive"),
])
def test_densities_per_candidate_errors(table, ids, match):
    with pytest.raises(ParameterError, match=match):
        solve(np.array([[0.1, 0.2]]), table, neighbours=ids, alpha=0.5, C=1e-3)


# ---- properties --------------------------------------------------------------------------

@st.composite
def problems(draw):
    M = draw(st.integers(1, 6))
    N = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31))
    alpha = draw(st.floats(0.0, 1.0))
    C = draw(st.floats(0.05, 20.0))
    kde = draw(st.booleans())
    rng = np.random.default_rng(seed)
    D = rng.random((M, N)) * draw(st.floats(0.01, 10.0))
    rho = 1 + rng.pareto(1.5, size=N) if kde else np.ones(N)
    return D, rho, alpha, C


@settings(max_examples=150, deadline=None)
@given(problems())
def test_probabilities_are_a_distribution(problem):
    D, rho, alpha, C = problem
    alloc, p = _closed_form(D, rho, alpha, C)
    assert np.all(p >= 0)
    assert abs(p.sum() - 1.0) < 1e-12
    assert np.allclose(alloc.weights.sum(axis=1), 1 / D.shape[0], rtol=1e-10, atol=0)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_alpha_one_is_nearest_neighbour(problem):
    D, rho, _, C = problem
    D = D + np.arange(D.shape[1]) * 1e-9
    _, p = _closed_form(D, rho, 1.0, C)
    expected = np.bincount(D.argmin(axis=1), minlength=D.shape[1]) / D.shape[0]
    assert np.allclose(p, expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(2, 12), st.floats(0.1, 0.9))
def test_exact_copies_share_what_one_copy_gets(seed, k, alpha):
    """k copies of an isolated candidate (rho = k each) together get what a single copy gets alone."""
    rng = np.random.default_rng(seed)
    M, N, d, sigma = 3, 30, 4, 0.5
    Q = rng.normal(size=(M, d))
    X = rng.normal(size=(N, d)) * 3
    sq = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.fill_diagonal(sq, np.inf)
    target = int(np.argmax(sq.min(axis=1)))
    if sq[target].min() <= sigma**2:
        return
    D1 = np.linalg.norm(Q[:, None] - X[None], axis=2)
    rho1 = np.maximum(0, 1 - np.where(np.isinf(sq), 0, sq) / sigma**2).sum(1)
    _, p1 = _closed_form(D1, rho1, alpha, 1.0)
    Xk = np.vstack([X, np.repeat(X[target:target + 1], k - 1, axis=0)])
    Dk = np.linalg.norm(Q[:, None] - Xk[None], axis=2)
    sqk = ((Xk[:, None] - Xk[None]) ** 2).sum(-1)
    rhok = np.maximum(0, 1 - sqk / sigma**2).sum(1)
    _, pk = _closed_form(Dk, rhok, alpha, 1.0)
    copies = np.r_[target, np.arange(N, N + k - 1)]
    assert np.isclose(pk[copies].sum(), p1[target], atol=1e-9)
    others = np.setdiff1d(np.arange(N), [target])
    assert np.allclose(pk[others], p1[others], atol=1e-9)


# ---- the fast paths against the heap walk, bit for bit ---------------------------------------

def _heap_totals(D, rho):
    """The heap walk's running total at the end of each breakpoint group (its own order)."""
    inv = 1.0 / rho
    S = np.cumsum(inv, axis=1)
    delta = np.zeros_like(D)
    delta[:, :-1] = S[:, :-1] * np.diff(D, axis=1)
    order = np.argsort(S.ravel(), kind="stable")
    v = S.ravel()[order]
    cum = np.cumsum(delta.ravel()[order])
    return cum[np.flatnonzero(np.append(v[1:] != v[:-1], True))]


@settings(max_examples=200, deadline=None)
@given(lists_with_ids(), st.booleans(), st.sampled_from([1, 2, 32]))
def test_column_major_lists_give_the_same_answer(problem, complete, first_prefix):
    """Lists laid out column-major (as a selection hands them over) give the row-major answer: weights, support,
    level and diversity bit for bit, the weights in the lists' layout; the alignment is a sum over the support
    taken in memory order, so it may differ by rounding."""
    from unittest import mock

    from tsds.core import lists as lists_module
    from tsds.core import solver as solver_module

    D, table, ids, alpha, C = problem
    with mock.patch.object(solver_module, "_FIRST_PREFIX", first_prefix), \
            mock.patch.object(lists_module, "SCRATCH", 64):
        a = solve(D, table, neighbours=ids, alpha=alpha, C=C, complete=complete)
        b = solve(np.asfortranarray(D), table, neighbours=np.asfortranarray(ids), alpha=alpha, C=C,
                  complete=complete)
        c = solve(np.asfortranarray(D), np.asfortranarray(table[ids]), alpha=alpha, C=C, complete=complete)
    for other in (b, c):
        assert np.array_equal(a.weights, other.weights) and np.array_equal(a.support, other.support)
        assert (a.level, a.diversity, a.truncated) == (other.level, other.diversity, other.truncated)
        assert other.alignment == pytest.approx(a.alignment, rel=1e-12, abs=1e-300)
        assert other.weights.flags.f_contiguous


@st.composite
def walk_problems(draw):
    """Small problems built to hit ties (distances and breakpoints), repeated densities and
    thresholds on, or a few ulps off, one of the walk's running totals."""
    M = draw(st.integers(1, 8))
    K = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    levels = draw(st.sampled_from([2, 5, 1000, None]))  # few distinct distances: many ties
    D = rng.random((M, K)) * draw(st.floats(0.01, 10.0))
    if levels:
        D = np.round(D * levels) / levels
    D = np.sort(D, axis=1)
    kind = draw(st.sampled_from(["none", "ones", "few", "shared", "pareto"]))
    rho = {
        "none": None,
        "ones": np.ones((M, K)),
        "few": rng.choice([0.5, 1.0, 2.0, 4.0], size=(M, K)),  # dyadic: S values tie across rows
        "shared": np.tile(1 + rng.pareto(1.5, size=K), (M, 1)),  # every row has the same breakpoints
        "pareto": 1 + rng.pareto(1.5, size=(M, K)),
    }[kind]
    alpha = draw(st.sampled_from([0.0, 1.0, 0.5, 0.3]) | st.floats(0.01, 0.99))
    if 0 < alpha < 1 and draw(st.booleans()):  # the threshold on a running total, +- a few ulps
        totals = _heap_totals(D, np.ones((M, K)) if rho is None else rho)
        target = totals[draw(st.integers(0, len(totals) - 1))]
        C = alpha * target / ((1 - alpha) * M)
        for _ in range(draw(st.integers(-3, 3)) % 7):
            C = np.nextafter(C, np.inf if draw(st.booleans()) else 0.0)
        C = float(C) if C > 0 else 1.0
    else:
        C = draw(st.floats(0.01, 50.0))
    return D, rho, alpha, C


@settings(max_examples=400, deadline=None)
@given(walk_problems(), st.sampled_from([1, 2, 32]), st.sampled_from([1, 3, 4096]))
def test_fast_paths_identical_to_heap_walk(problem, first_prefix, bracket):
    """Uniform walk, prefix growth, level search and certified comparisons give the heap's answer."""
    from unittest import mock

    from tsds.core import solver as solver_module

    D, rho, alpha, C = problem
    with mock.patch.object(solver_module, "_FIRST_PREFIX", first_prefix), \
            mock.patch.object(solver_module, "_BRACKET", bracket):
        alloc = solve(D, rho, alpha=alpha, C=C, complete=True)
    level, weights = solve_heap(D, rho, alpha=alpha, C=C)
    assert alloc.level == level
    assert np.array_equal(alloc.weights, weights)
    assert np.array_equal(alloc.support, (weights > 0).sum(axis=1))


def test_fast_search_needs_no_fallback_on_typical_data(monkeypatch):
    """On ordinary data the certified search decides alone (the exact sorted walk is not called)."""
    from tsds.core import solver as solver_module

    def forbidden(*args, **kwargs):
        raise AssertionError("fell back to the exact walk")

    monkeypatch.setattr(solver_module, "_exact_walk", forbidden)
    monkeypatch.setattr(solver_module, "_BRACKET", 64)
    rng = np.random.default_rng(3)
    D = np.sort(rng.gamma(2.0, 0.3, size=(60, 500)), axis=1)
    rho = 1 + rng.pareto(2.0, size=(60, 500))
    for alpha in (0.05, 0.5, 0.95):
        alloc = solve(D, rho, alpha=alpha, C=1.0, complete=True)
        level, weights = solve_heap(D, rho, alpha=alpha, C=1.0)
        assert alloc.level == level and np.array_equal(alloc.weights, weights)
