"""Flat searches served from one longer search (tsds.retrieval.prefix): the same lists and selections, bit for bit."""

import numpy as np
import pytest

import tsds.retrieval.prefix as prefix
from tsds.config import make_config
from tsds.pipeline.select import select_on_index
from tsds.retrieval import build_index, neighbour_round, search_ahead


def _data(n=3000, d=16, m=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[n // 2:n // 2 + 600] = x[:600]  # exact duplicates: ties in every list
    x[-5:] = x[0]
    q = x[rng.integers(0, n, m)] + 0.05 * rng.standard_normal((m, d)).astype(np.float32)
    return x, q


def test_prefix_of_a_longer_search_is_the_shorter_search_with_ties_and_exclusions():
    x, q = _data()
    index = build_index(x, kind="flat")
    for excluded in (None, np.arange(0, 3000, 7)):
        if excluded is not None:
            index.exclude(excluded)
        search_ahead(index, q, 256, grow=True)  # saves every candidate: the pool is within the memory bound
        assert index._prefix is not None and index._prefix[0].shape[1] == index.available > 512
        for k in (1, 7, 64, 256, 300, 512):
            d, ids = search_ahead(index, q, k)
            d0, ids0 = index.search(q, k)
            assert np.array_equal(d, d0) and np.array_equal(ids, ids0)
        if excluded is not None:
            assert not np.isin(ids, excluded).any()
    other = q[::-1].copy()  # other queries: not served from the saved lists
    d, ids = search_ahead(index, other, 64)
    assert np.array_equal(ids, index.search(other, 64)[1])


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_selection_identical_with_and_without_searching_ahead(sigma, monkeypatch):
    x, q = _data()
    config = make_config(size=200, alpha=0.005, C=1.0, sigma=sigma, metric="euclidean")
    runs = []
    for ahead in (1, 2, 8, prefix.FLAT_AHEAD):
        monkeypatch.setattr(prefix, "FLAT_AHEAD", ahead)
        index = build_index(x, kind="flat")
        runs.append(select_on_index(index, q, config))
    a = runs[0]
    assert len(a.k_history) >= 4
    for b in runs[1:]:
        assert a.k_history == b.k_history
        assert np.array_equal(a.probabilities, b.probabilities) and np.array_equal(a.counts, b.counts)
        assert np.array_equal(a.neighbour_ids, b.neighbour_ids) and np.array_equal(a.neighbour_distances,
                                                                                    b.neighbour_distances)
    for sel in runs:  # served from a saved search (views of it) or searched directly: read-only either way
        for lists in (sel.neighbour_ids, sel.neighbour_distances, sel.neighbour_densities):
            assert not lists.flags.writeable
            with pytest.raises(ValueError):
                lists[0, 0] = 0


def test_search_ahead_saves_no_more_than_the_stored_vectors():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20_000, 256)).astype(np.float32)  # 20.5 MB of vectors
    q = rng.standard_normal((300, 256)).astype(np.float32)
    index = build_index(x, kind="flat")
    d, ids = search_ahead(index, q, 4000, grow=True)  # 8x ahead would save 300 x 20,000 x 12 B = 72 MB
    saved = index._prefix[0].shape[1]
    assert 4000 < saved <= x.nbytes // (12 * 300) and d.shape == (300, 4000)
    d0, ids0 = index.search(q, 4000)
    assert np.array_equal(d, d0) and np.array_equal(ids, ids0)
    d, ids = search_ahead(index, q, saved)  # served from the saved lists
    assert np.array_equal(ids, index.search(q, saved)[1])


def test_no_solve_is_repeated_on_the_same_inputs(monkeypatch):
    """The screen's solve at a new K is the lazy loop's first solve when that loop's first fill computes
    nothing: it is reused, not solved again (reference selections are byte-identical to before)."""
    import hashlib

    import tsds.pipeline.select as select_module

    x, q = _data()
    config = make_config(size=200, alpha=0.005, C=1.0, sigma=1.5, metric="euclidean")
    seen = []
    real = select_module.solve

    def recording(D, rho, **kw):
        seen.append((D.shape, hashlib.sha256(np.ascontiguousarray(rho).tobytes()).hexdigest(), kw["complete"]))
        return real(D, rho, **kw)

    monkeypatch.setattr(select_module, "solve", recording)
    sel = select_on_index(build_index(x, kind="flat"), q, config)
    assert len(sel.k_history) >= 3 and len(seen) >= 4
    assert all(a != b for a, b in zip(seen, seen[1:]))


def test_saved_lists_are_narrow_column_major_views_and_dropped_once_no_doubling_fits():
    """The saved lists are int32 ids and finished float64 distances, column-major, so every round's prefix is a
    read-only view of them in the solver's layout (no copy); a call whose doubling would not fit in the saved width drops them: the next round could
    not be served, and they would sit next to the last round's own lists. The values are a direct search's."""
    x, q = _data()
    index = build_index(x, kind="flat")
    search_ahead(index, q, 128, grow=True)
    wide = index._prefix[0].shape[1]
    assert wide == index.available and index._prefix[1].dtype == np.int32
    assert index._prefix[0].flags.f_contiguous and index._prefix[1].flags.f_contiguous
    d, ids = search_ahead(index, q, wide // 2, grow=True)
    assert index._prefix is not None and ids.dtype == np.int32 and np.shares_memory(ids, index._prefix[1])
    assert d.dtype == np.float64 and np.shares_memory(d, index._prefix[0])  # finished once, served as views
    assert not d.flags.writeable and not ids.flags.writeable
    assert d.flags.f_contiguous and ids.flags.f_contiguous
    d0, ids0 = index.search(q, wide // 2)
    assert d0.flags.c_contiguous and np.array_equal(ids, ids0) and np.array_equal(d, d0)
    d, ids = search_ahead(index, q, wide, grow=True)
    assert index._prefix is None
    d0, ids0 = index.search(q, wide)
    assert ids.flags.f_contiguous and np.array_equal(ids, ids0) and np.array_equal(d, d0)


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_ivf_scan_prefix_is_the_shorter_search_with_short_rows_and_exclusions(storage):
    """An IVF-Flat index's list scan, searched ahead: every k from 256 on is the direct search, bit for bit,
    including rows whose probed lists hold fewer than k candidates (searched again exactly) and excluded
    candidates; a changed search breadth is not served from lists saved at another."""
    x, q = _data(n=6000)
    index = build_index(x, kind="ivf", nlist=24, storage=storage)
    index.nprobe = 1
    for excluded in (None, np.arange(0, 6000, 5)):
        if excluded is not None:
            index.exclude(excluded)
        for k in (256, 300, 512, 1000, 2048):
            search_ahead(index, q, 256, grow=True)
            saved = index._prefix
            assert saved is not None and saved[0].shape[1] == prefix.AHEAD * 256 and saved[4] == 1
            assert (saved[1] < 0).any()  # some rows' one list holds fewer than 2,048 candidates
            d, ids = search_ahead(index, q, k)
            d0, ids0 = index.search(q, k)
            assert (ids0 >= 0).all() and np.array_equal(ids, ids0) and np.array_equal(d, d0)
            if excluded is not None:
                assert not np.isin(ids, excluded).any()
        search_ahead(index, q, 256, grow=True)
        index.nprobe = 3
        d, ids = search_ahead(index, q, 512)
        d0, ids0 = index.search(q, 512)
        assert np.array_equal(ids, ids0) and np.array_equal(d, d0)
        index.nprobe = 1


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_ivf_selection_identical_with_and_without_searching_ahead(sigma, monkeypatch):
    x, q = _data(n=6000)
    config = make_config(size=200, alpha=0.002, C=1.0, sigma=sigma, metric="euclidean")
    runs = []
    for ahead in (1, 8):
        monkeypatch.setattr(prefix, "AHEAD", ahead)
        index = build_index(x, kind="ivf", nlist=24)
        runs.append(select_on_index(index, q, config))
    a, b = runs
    assert max(a.k_history) >= 1024 and a.k_history == b.k_history
    assert np.array_equal(a.probabilities, b.probabilities) and np.array_equal(a.counts, b.counts)
    assert np.array_equal(a.neighbour_ids, b.neighbour_ids) and np.array_equal(a.neighbour_distances,
                                                                                b.neighbour_distances)


def test_a_search_ahead_is_calibrated_for_every_round_it_serves(monkeypatch):
    """Calibrated round by round, the breadth rises after the list scan has searched ahead at round 256 (on
    these data from 16 to all 24 lists at k 512), and the saved lists, searched at the old breadth, cannot
    serve: a second scan. ``neighbour_round`` calibrates the scan for the longest round it serves: one scan
    serves the rounds 256 .. 2,048, each the direct search at the breadth in effect, bit for bit, with its
    own recall@k recorded."""
    x, q = _data(n=6000)
    scans = []
    real = prefix.scan_lists

    def counted(index, queries, k, nprobe=None):
        scans.append(k)
        return real(index, queries, k, nprobe)

    monkeypatch.setattr(prefix, "scan_lists", counted)
    rounds = (64, 128, 256, 512, 1024, 2048)
    index = build_index(x, kind="ivf", nlist=24)
    for k in rounds:  # the rounds calibrated one at a time, as before
        index.calibrate(q, k, target=0.95)
        search_ahead(index, q, k, grow=True)
    assert scans == [prefix.AHEAD * 256, prefix.AHEAD * 512]
    scans.clear()
    index = build_index(x, kind="ivf", nlist=24)
    for k in rounds:
        d, ids, recall = neighbour_round(index, q, k, target=0.95)
        assert index.calibration["k"] == k and recall == index.recall >= 0.95
        d0, ids0 = index.search(q, k)
        assert np.array_equal(ids, ids0) and np.array_equal(d, d0)
    assert scans == [prefix.AHEAD * 256]
    flat = build_index(x, kind="flat")
    d, ids, recall = neighbour_round(flat, q, 300, target=0.95)
    d0, ids0 = flat.search(q, 300)
    assert recall == 1.0 and np.array_equal(ids, ids0) and np.array_equal(d, d0)
