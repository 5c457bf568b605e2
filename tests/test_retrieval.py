"""FAISS adapters: exact and IVF search, -1 labels, exact densities, adaptive K."""

import numpy as np
import pytest

from tsds import select_embeddings
from tsds.core import allocation_to_probabilities, solve
from tsds.retrieval import DensityStats, build_index, calibrate, densities, prepare


def _clustered(n, d, seed=0, clusters=30, noise=0.15):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_density(x, ids, sigma):
    sq = ((x[ids, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    return np.maximum(0, 1 - sq / sigma**2).sum(1)


def test_flat_search_is_exact_and_sorted():
    x = _clustered(2000, 16)
    q = x[:5] + 0.01
    index = build_index(x, kind="flat")
    D, ids = index.search(q, 50)
    truth = np.sqrt(((q[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
    assert np.all(np.diff(D, axis=1) >= 0)
    assert np.allclose(D, np.sort(truth, axis=1)[:, :50], atol=1e-5)
    assert np.allclose(np.take_along_axis(truth, ids, 1), D, atol=1e-5)


def test_ivf_recall_is_measured_and_reaches_target():
    x = _clustered(6000, 16, clusters=60)
    index = build_index(x, kind="ivf", nlist=64)
    q = _clustered(40, 16, seed=3, clusters=60)
    recall = calibrate(index, q, 100, target=0.95)
    assert recall >= 0.95
    assert index.calibration["nprobe"] >= 1 and index.calibration["recall"] == recall


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_recall_read_off_the_lists_equals_the_searched_recall(storage, tmp_path):
    """Calibration reads recall at every breadth off the lists holding the exact neighbours; it must be the
    number a search at that breadth measures, exclusions and rows searched again exactly (too few
    candidates in their lists) included, on both sides of the k where the search scans its lists."""
    from tsds.retrieval.recall import _truth
    from tsds.retrieval.recall import _recall, recall_by_lists

    x = _clustered(12000, 24, clusters=80, noise=0.3)
    index = build_index(x, kind="ivf", nlist=100, storage=storage, work_dir=tmp_path)
    q = _clustered(48, 24, seed=5, clusters=80, noise=0.3)
    seen = set()
    for excluded in (None, np.arange(0, 12000, 5)):
        if excluded is not None:
            index.exclude(excluded)
        for k in (20, 300, 1500):
            truth = _truth(index, q, k)
            by_lists = recall_by_lists(index, q, truth)
            for nprobe in (1, 2, 5, 13, 100):
                index.nprobe = nprobe
                measured = _recall(index.search(q, k)[1], truth)
                assert by_lists(nprobe) == measured, (excluded is not None, k, nprobe)
                seen.add(round(measured, 6))
    assert len(seen) > 8 and min(seen) < 0.9 and 1.0 in seen  # low, partial and full recall all compared
    assert recall_by_lists(build_index(x, kind="flat"), q, truth) is None


def test_recall_truth_is_reused_across_rounds_and_refreshed_on_exclusion():
    """Calibration measures against exact lists computed once for several rounds of K; their prefixes are the
    exact k nearest (ties by id), and excluding candidates invalidates them."""
    from tsds.retrieval.recall import _truth

    x = _clustered(6000, 16, clusters=60)
    index = build_index(x, kind="ivf", nlist=64)
    q = _clustered(40, 16, seed=3, clusters=60)
    d2 = ((q[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
    exact = np.lexsort((np.broadcast_to(np.arange(x.shape[0]), d2.shape), d2), axis=1)
    calibrate(index, q, 32)
    computed = index._truth_cache[1]
    assert computed.shape[1] > 64  # computed ahead of the next rounds
    for k in (16, 32, 64):
        got = _truth(index, q, k)
        assert index._truth_cache[1] is computed  # no new pass over the pool
        # float32 products may order near-equal distances differently: compare as sets, allowing a swap at the edge
        overlap = np.mean([np.intersect1d(g, e).size / k for g, e in zip(got, exact[:, :k])])
        assert overlap > 0.99
    index.exclude(exact[:, 0])
    got = _truth(index, q, 16)
    assert index._truth_cache[1] is not computed
    assert not np.isin(got, exact[:, 0]).any()


def test_recall_truth_is_remade_well_ahead_once_k_passes_it(monkeypatch):
    """Once K outgrows the exact lists kept for the sample, they are remade _TRUTH_GROWTH x ahead of that K
    (a scan of the whole pool costs about the same for any k), and still agree with exact search."""
    import tsds.retrieval.recall as recall_module
    from tsds.retrieval.recall import _truth

    monkeypatch.setattr(recall_module, "_TRUTH_AHEAD", 50)
    x = _clustered(6000, 16, clusters=60)
    index = build_index(x, kind="ivf", nlist=64)
    q = _clustered(40, 16, seed=3, clusters=60)
    _truth(index, q, 40)
    assert index._truth_cache[1].shape[1] == 50
    _truth(index, q, 100)
    remade = index._truth_cache[1]
    assert remade.shape[1] == recall_module._TRUTH_GROWTH * 100
    for k in (150, 200):
        got = _truth(index, q, k)
        assert index._truth_cache[1] is remade
        exact = index.exact_search(q, k)[1]
        assert np.mean([np.intersect1d(g, e).size / k for g, e in zip(got, exact)]) > 0.99
    other = q[::-1].copy()  # another sample: lists of its own, not ahead of the first k
    _truth(index, other, 60)
    assert index._truth_cache[1].shape[1] == 60


def test_ivf_short_lists_are_searched_exactly():
    """With nprobe = 1 and k larger than a list, FAISS pads with -1: those rows must be filled."""
    x = _clustered(3000, 8, clusters=40)
    index = build_index(x, kind="ivf", nlist=100)
    D, ids = index.search(x[:10], 500)
    assert np.all(ids >= 0)
    _, exact_ids = build_index(x, kind="flat").search(x[:10], 500)
    assert all(set(a) == set(b) for a, b in zip(ids, exact_ids))


def _by_distance_then_id(q, x, allowed):
    """Brute force: each query's candidates among ``allowed`` ordered by float64 distance, ties by id."""
    d2 = ((q[:, None].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    d2[:, ~allowed] = np.inf
    return np.lexsort((np.broadcast_to(np.arange(x.shape[0]), d2.shape), d2), axis=1), d2


def test_ivf_scan_of_every_list_is_exact_with_ties_by_id_and_exclusions():
    """IVF-Flat searches scan the probed lists themselves (FAISS's heap of k is slow for large k). With every
    list probed the result is the exact k nearest; exact copies (equal distances) come in id order; excluded
    candidates never appear."""
    from tsds.retrieval.index import scan_lists

    x = _clustered(4000, 16, clusters=40)
    x[100:106] = x[7]  # six more copies of row 7: equal distances to any query
    x[3000] = x[7]
    index = build_index(x, kind="ivf", nlist=50)
    q = np.vstack([x[7] + 0.01, _clustered(30, 16, seed=5, clusters=40)]).astype(np.float32)
    index.exclude([101, 2000, 2001])
    allowed = np.ones(x.shape[0], dtype=bool)
    allowed[[101, 2000, 2001]] = False
    k = 300
    d2, ids = scan_lists(index, q, k, index.nlist)
    order, exact_d2 = _by_distance_then_id(q, x, allowed)
    assert not np.isin(ids, [101, 2000, 2001]).any()
    assert np.allclose(d2, np.take_along_axis(exact_d2, order[:, :k], 1), atol=1e-5)
    assert np.all(np.diff(d2, axis=1) >= 0)
    # equal float32 distances are ordered by id
    same = d2[:, 1:] == d2[:, :-1]
    assert same.any() and np.all(ids[:, 1:][same] > ids[:, :-1][same])
    # the copies of row 7 come first for the query next to it, in id order
    copies = [7, 100, 102, 103, 104, 105, 3000]
    assert list(ids[0, :7]) == copies
    # the same sets as brute force, allowing float32 rounding to swap near-equal distances at the cut
    overlap = np.mean([np.intersect1d(a, b).size / k for a, b in zip(ids, order[:, :k])])
    assert overlap > 0.995


def test_flat_search_is_exact_with_ties_by_id_and_exclusions_on_any_thread_count(monkeypatch):
    """A flat index's search from 20 queries on (tsds.retrieval.scan.flat_top: BLAS products and partial sorts
    instead of FAISS's reservoirs): the exact k nearest up to float32 rounding, exact copies in id order,
    excluded candidates never returned, and the same bits on one thread as on several. Fewer queries get
    FAISS's own search."""
    import tsds.retrieval.threads as threads
    from tsds.retrieval.scan import flat_top

    x = _clustered(4000, 16, clusters=40)
    x[100:106] = x[7]
    x[3000] = x[7]
    index = build_index(x, kind="flat")
    q = np.vstack([x[7] + 0.01, _clustered(30, 16, seed=5, clusters=40)]).astype(np.float32)
    index.exclude([101, 2000, 2001])
    allowed = np.ones(x.shape[0], dtype=bool)
    allowed[[101, 2000, 2001]] = False
    k = 300
    d2, ids = flat_top(index, q, k)
    order, exact_d2 = _by_distance_then_id(q, x, allowed)
    assert d2.dtype == np.float32 and ids.dtype == np.int64 and (ids >= 0).all()
    assert not np.isin(ids, [101, 2000, 2001]).any()
    assert np.allclose(d2, np.take_along_axis(exact_d2, order[:, :k], 1), atol=1e-5)
    same = d2[:, 1:] == d2[:, :-1]
    assert np.all(np.diff(d2, axis=1) >= 0) and same.any() and np.all(ids[:, 1:][same] > ids[:, :-1][same])
    assert list(ids[0, :7]) == [7, 100, 102, 103, 104, 105, 3000]
    overlap = np.mean([np.intersect1d(a, b).size / k for a, b in zip(ids, order[:, :k])])
    assert overlap > 0.995
    longer = flat_top(index, q, 1000)
    assert np.array_equal(longer[0][:, :k], d2) and np.array_equal(longer[1][:, :k], ids)
    monkeypatch.setattr(threads, "cores", lambda: 1)
    one = flat_top(index, q, k)
    assert np.array_equal(one[0], d2) and np.array_equal(one[1], ids)
    few = flat_top(index, q[:5], k)
    faiss_d2, faiss_ids = index.index.search(q[:5], k, params=index.params())
    assert np.array_equal(few[0], faiss_d2) and np.array_equal(few[1], faiss_ids)
    # an index too large for a task of 32 queries' distances (a flat index asked for on a large pool): FAISS's
    import tsds.retrieval.scan as scan

    monkeypatch.setattr(scan, "_FLAT_BYTES", 4 * 32 * x.shape[0] - 1)
    large = flat_top(index, q, k)
    faiss_d2, faiss_ids = index.index.search(q, k, params=index.params())
    assert np.array_equal(large[0], faiss_d2) and np.array_equal(large[1], faiss_ids)
    assert not np.array_equal(large[0], d2)  # the product formula rounds otherwise: the other path was taken


def test_ivf_scan_of_some_lists_matches_faiss_and_pads_short_rows():
    """With nprobe < nlist the scan returns FAISS's IVF answer (the same probed lists); rows whose lists hold
    fewer than k members are padded with (inf, -1) like FAISS, and the search fills them exactly."""
    import faiss

    from tsds.retrieval.index import scan_lists

    x = _clustered(5000, 12, clusters=50)
    index = build_index(x, kind="ivf", nlist=70)
    q = _clustered(25, 12, seed=8, clusters=50)
    ivf = faiss.extract_index_ivf(index.index)
    for nprobe, k in ((3, 40), (8, 200)):
        ivf.nprobe = nprobe
        f_d2, f_ids = ivf.search(q, k)
        d2, ids = scan_lists(index, q, k, nprobe)
        assert np.allclose(d2, f_d2, atol=1e-5)
        assert np.mean([np.intersect1d(a, b).size / k for a, b in zip(ids, f_ids)]) > 0.995
    d2, ids = scan_lists(index, q, 2000, 1)
    assert (ids == -1).any() and np.all(np.isinf(d2[ids == -1]))
    assert np.all((ids == -1) == (f := np.isinf(d2))) and f.any()
    index.nprobe = 1
    _, filled = index.search(q, 2000)
    assert np.all(filled >= 0)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_densities_are_exact_over_the_whole_pool(kind):
    x = _clustered(5000, 12, clusters=25, noise=0.2)
    x[100:130] = x[100]
    sigma = 0.4
    index = build_index(x, kind=kind, nlist=50)
    ids = np.arange(0, 5000, 37)
    ids = np.append(ids, [100, 101])
    stats = DensityStats()
    rho = densities(index, ids, sigma, stats=stats)
    assert np.allclose(rho, _brute_density(x, ids, sigma), rtol=1e-4)
    assert rho[-1] >= 30 and stats.capped == 0
    if kind == "ivf":
        assert stats.lists_scanned < len(ids) * 50


def test_density_cap_binds_and_is_reported():
    x = np.zeros((300, 4), dtype=np.float32)
    x[:, 0] = np.linspace(0, 0.01, 300)
    index = build_index(x, kind="flat")
    stats = DensityStats()
    rho = densities(index, np.array([0, 1]), 1.0, cap=50, stats=stats)
    assert stats.capped == 2
    assert np.all(rho <= 50) and np.all(rho > 49)


def test_sigma_zero_gives_ones():
    index = build_index(_clustered(100, 4), kind="flat")
    assert np.array_equal(densities(index, np.arange(10), 0.0), np.ones(10))


def test_cosine_prepares_unit_rows():
    x = np.random.default_rng(0).normal(size=(10, 5)) * 7
    assert np.allclose(np.linalg.norm(prepare(x, "cosine"), axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("metric,sigma", [("euclidean", 0.0), ("cosine", 0.5), ("euclidean", 0.6)])
def test_adaptive_k_equals_full_lists(metric, sigma):
    """Growing K from a small start gives the same p as solving on all N neighbours at once."""
    x = _clustered(1500, 10, seed=5)
    q = _clustered(6, 10, seed=6)
    sel = select_embeddings(x, q, size=50, alpha=0.3, C=1.0, sigma=sigma, metric=metric, initial_k=4)
    assert len(sel.k_history) > 1
    index = build_index(x, metric=metric, kind="flat")
    D, ids = index.search(prepare(q, metric), 1500)
    rho = densities(index, np.arange(1500), sigma) if sigma else np.ones(1500)
    alloc = solve(D, rho[ids], alpha=0.3, C=1.0, complete=True)
    p = allocation_to_probabilities(ids, alloc, 1500)
    assert np.allclose(sel.probabilities, p, atol=1e-12)


def test_ivf_selection_reports_recall():
    x = _clustered(60_000, 8, clusters=200, noise=0.3)
    q = x[:20] + 0.01
    sel = select_embeddings(x, q, size=100, sigma=0.1, alpha=0.7, C=0.5)
    assert sel.recall is not None and sel.recall >= 0.95
    assert sel.timings["index"]["kind"] == "ivf"


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_excluded_candidates_never_returned_nor_counted(kind):
    x = _clustered(4000, 8, clusters=20, noise=0.2)
    x[50:60] = x[50]
    index = build_index(x, kind=kind, nlist=40)
    gone = np.r_[np.arange(51, 60), np.arange(1000, 1500)]
    index.exclude(gone)
    assert index.available == 4000 - gone.size
    D, ids = index.search(x[:30], 200)
    assert not np.isin(ids, gone).any() and np.all(ids >= 0)
    keep = np.setdiff1d(np.arange(4000), gone)
    rho = densities(index, np.array([50, 3]), 0.5)
    sub = x[keep]
    sq = ((x[[50, 3], None, :].astype(np.float64) - sub[None].astype(np.float64)) ** 2).sum(-1)
    assert np.allclose(rho, np.maximum(0, 1 - sq / 0.25).sum(1), rtol=1e-4)



def test_lazy_densities_give_the_answer_of_all_densities_bit_for_bit():
    """Densities are computed only along the prefix each list's optimum reads, and the answer is the
    one with every density known. Small integer coordinates make every float32 distance exact, so the
    densities do not depend on which points are computed together and the comparison can be exact."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 4, size=(1200, 6)).astype(np.float32)
    q = rng.integers(0, 4, size=(7, 6)).astype(np.float32) + 0.25
    index = build_index(x, kind="flat")
    D, ids = index.search(q, 1200)
    saved = []
    for sigma, alpha in [(1.5, 0.5), (2.5, 0.2), (1.1, 0.9), (2.5, 0.6)]:
        sel = select_embeddings(x, q, size=30, alpha=alpha, C=1.0, sigma=sigma, initial_k=8)
        rho = densities(index, np.arange(1200), sigma)
        alloc = solve(D, rho[ids], alpha=alpha, C=1.0, complete=True)
        p = allocation_to_probabilities(ids, alloc, 1200)
        assert np.array_equal(sel.probabilities, p)
        used = np.unique(ids[np.arange(1200)[None, :] < np.minimum(alloc.support + 1, 1200)[:, None]])
        assert used.size <= sel.density_stats.points <= np.unique(sel.neighbour_ids).size
        saved.append(np.unique(sel.neighbour_ids).size - sel.density_stats.points)
        known = np.isfinite(sel.neighbour_densities)
        assert np.array_equal(sel.neighbour_densities[known], rho[sel.neighbour_ids][known])
    assert max(saved) > 100  # points in the lists whose density the optimum never needed


def test_lazy_densities_on_real_valued_vectors_match_all_densities_bit_for_bit():
    """The same on clustered float vectors, flat and IVF: each kernel term comes from an exact product, so a
    density computed with some points equals the one computed with all (on AVX2 machines a float32 BLAS
    product moved with the block and broke this), and the lazy answer is the all-densities one."""
    x = _clustered(3000, 32, clusters=25, noise=0.3, seed=5)
    q = _clustered(9, 32, clusters=25, noise=0.3, seed=5)[:9] + np.float32(0.01)
    for kind in ("flat", "ivf"):
        index = build_index(x, kind=kind)
        for sigma, alpha in [(0.5, 0.5), (0.8, 0.3)]:
            sel = select_embeddings(x, q, size=30, alpha=alpha, C=1.0, sigma=sigma, initial_k=8, index=kind)
            rho = densities(index, np.arange(3000), sigma)
            known = np.isfinite(sel.neighbour_densities)
            assert known.any() and np.array_equal(sel.neighbour_densities[known], rho[sel.neighbour_ids][known])
            if kind == "flat":
                D, ids = index.search(q, 3000)
                alloc = solve(D, rho[ids], alpha=alpha, C=1.0, complete=True)
                assert np.array_equal(sel.probabilities, allocation_to_probabilities(ids, alloc, 3000))


def test_list_shell_bound_never_exceeds_a_members_distance():
    """The IVF pruning bound for densities is a lower bound on the distance to every member of a list."""
    import faiss

    from tsds.retrieval.density_bounds import _shell_bound, _shells
    from tsds.retrieval.threads import Scratch

    x = _clustered(6000, 24, clusters=40, noise=0.25, seed=2)
    index = build_index(x, kind="ivf", nlist=60)
    ivf = faiss.extract_index_ivf(index.index)
    shells = _shells(index)
    points = np.vstack([x[::97], _clustered(50, 24, seed=9)]).astype(np.float64)
    c64 = shells.centroids.astype(np.float64)
    full2 = ((points[:, None, :] - c64[None]) ** 2).sum(-1)
    bound = _shell_bound(shells, points, full2, np.ones((len(points), ivf.nlist), bool), Scratch())
    for lst in range(ivf.nlist):
        n = ivf.invlists.list_size(lst)
        members = faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n)
        dist = np.sqrt(((points[:, None, :].astype(np.float64) - x[members][None]) ** 2).sum(-1))
        assert np.all(bound[:, lst] <= dist.min(axis=1) + 1e-6)
    assert (bound > 0.3).mean() > 0.5  # and it does rule lists out


def test_candidates_within_hold_every_pair_within_sigma():
    """The pairs an IVF-Flat shard hands to the exact float64 recomputation include every pair within sigma."""
    from tsds.retrieval.density import candidates_within

    x = _clustered(5000, 20, clusters=30, noise=0.2, seed=4)
    x[10:40] = x[10]
    index = build_index(x, kind="ivf", nlist=50)
    points = np.vstack([x[::53], _clustered(30, 20, seed=8)])
    sigma = 0.45
    lims, labels, scanned = candidates_within(index, points, sigma)
    d2 = ((points[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)
    for i in range(len(points)):
        found = labels[lims[i]:lims[i + 1]]
        assert np.all(np.diff(found) > 0)  # increasing ids, no repeats
        assert set(np.flatnonzero(d2[i] < sigma**2)) <= set(found.tolist())
    assert lims[-1] < 0.2 * len(points) * len(x) and 0 < scanned < len(points) * 50


def test_density_estimates_are_the_same_per_candidate_or_per_list_entry():
    """The cache hands the solver one density per candidate (pool no larger than the lists) or the lists'
    own array (larger pools): the same values, 1 where not computed, and the same answer."""
    from tsds.pipeline.select import DensityCache

    rng = np.random.default_rng(0)
    n, (M, K) = 50, (3, 20)
    ids = np.stack([rng.permutation(n)[:K] for _ in range(M)]).astype(np.int32)
    D = np.sort(rng.random((M, K)), axis=1)
    small, large = DensityCache(n), DensityCache(n + M * K)  # the same 50 candidates known in both
    known = rng.choice(n, 30, replace=False)
    for cache in (small, large):
        cache.values[known] = 1 + rng.pareto(1.5, size=30) if cache is small else small.values[known]
    (rho_s, nb_s), (rho_l, nb_l) = small.estimates(ids), large.estimates(ids)
    assert nb_s is ids and rho_s.shape == (n,) and nb_l is None and rho_l.shape == (M, K)
    assert np.array_equal(rho_s[ids], rho_l) and np.isnan(small.values[ids]).any()
    assert np.array_equal(rho_l[np.isnan(small.values[ids])], np.ones(int(np.isnan(small.values[ids]).sum())))
    assert np.array_equal(small.unknown(ids), large.unknown(ids))
    a = solve(D, rho_s, neighbours=nb_s, alpha=0.4, C=0.2)
    b = solve(D, rho_l, alpha=0.4, C=0.2)
    assert np.array_equal(a.weights, b.weights) and a.level == b.level


def test_densities_progress_gets_a_total_that_grows_with_each_round():
    """The lazy densities announce each round's points before computing them, so a bar has a total; at the
    end it equals the points computed, and a rich bar reaches it."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from tsds.config import make_config
    from tsds.pipeline.select import select_on_index
    from tsds.progress import _Advance

    x = _clustered(3000, 12, seed=7)
    q = _clustered(8, 12, seed=8)
    with Progress(console=Console(file=io.StringIO())) as bar:
        task = bar.add_task("densities", total=None)
        advance = _Advance(bar, task, "points")
        sel = select_on_index(build_index(x, kind="flat"), q, make_config(size=20, sigma=0.6, initial_k=8),
                              progress=advance)
        done, total = bar.tasks[0].completed, bar.tasks[0].total
    assert sel.density_stats.points > 0
    assert done == total == sel.density_stats.points


def test_a_truncated_round_computes_no_densities_and_the_answer_is_unchanged():
    """A round whose solve with 1 (the smallest density) in every unknown entry is truncated computes no
    density; the final round's answer still equals the solve on all N neighbours with every density."""
    from tsds.config import make_config
    from tsds.pipeline.select import DensityCache, _solve_with_lazy_densities
    from tsds.pipeline.stages import StageLog

    x = _clustered(1500, 10, seed=5)
    q = prepare(_clustered(6, 10, seed=6), "euclidean")
    index = build_index(x, kind="flat")
    config = make_config(size=50, alpha=0.3, C=1.0, sigma=0.6, initial_k=4)
    D, ids = index.search(q, 4)
    cache = DensityCache(index.ntotal)
    alloc = _solve_with_lazy_densities(index, D, ids, config, cache, DensityStats(), StageLog(), None,
                                       complete=False)
    assert alloc.truncated and cache.computed == 0
    D, ids = index.search(q, 1500)
    alloc = _solve_with_lazy_densities(index, D, ids, config, cache, DensityStats(), StageLog(), None,
                                       complete=True)
    assert not alloc.truncated and 0 < cache.computed < 1500
    rho = densities(index, np.arange(1500), 0.6)
    full = solve(D, rho[ids], alpha=0.3, C=1.0, complete=True)
    # densities summed in other batches of points differ in their last float32 bits
    got, want = allocation_to_probabilities(ids, alloc, 1500), allocation_to_probabilities(ids, full, 1500)
    assert np.array_equal(got > 0, want > 0) and np.allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("offset", [0, 2**32 - 5000, 2**40])
def test_scan_order_is_distance_then_id_for_small_and_huge_ids(offset):
    """The scan's rows are ordered by one sort of 64-bit keys: the id itself below 2^32, its rank above."""
    from tsds.retrieval.scan import by_distance_then_id

    rng = np.random.default_rng(1)
    dist = rng.integers(0, 40, 3000).astype(np.float32) / 7  # many ties
    ids = rng.choice(10**6, 3000, replace=False).astype(np.int64) + offset
    got = by_distance_then_id(dist, ids)
    assert np.array_equal(got, np.lexsort((ids, dist)))
    from tsds.retrieval.scan import sorted_by_distance_then_id

    sd, si = sorted_by_distance_then_id(dist, ids)
    assert np.array_equal(sd, dist[got]) and np.array_equal(si, ids[got]) and sd.dtype == np.float32
