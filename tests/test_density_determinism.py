"""A density does not depend on which other points were computed with it, nor on the index kind or path:
what makes densities computed ahead (tsds.pipeline.densities) equal to those a selection computes itself."""

import numpy as np
import pytest

from tsds.retrieval import build_index
import tsds.retrieval.exact as exact


@pytest.mark.parametrize("d", [16, 64, 256, 384, 1024])
def test_exact_products_do_not_depend_on_the_block_shape_and_are_exact(d):
    """The float32 BLAS of some machines (OpenBLAS's Haswell kernels on AMD EPYC) rounds a pair's product
    differently with the pair's place in the block: the rounded vectors' float64 products carry no rounding
    at all, so every block shape and order gives the same numbers, equal to an exact rational sum."""
    from fractions import Fraction

    rng = np.random.default_rng(d)
    x = exact.rounded(rng.standard_normal((300, d)).astype(np.float32) * rng.uniform(0.01, 100, (300, 1)))
    y = exact.rounded(rng.standard_normal((700, d)).astype(np.float32))
    big = exact.product(x, y)
    for m, n in ((1, 1), (1, 700), (2, 3), (5, 40), (17, 17), (300, 1), (64, 64), (299, 700)):
        assert np.array_equal(exact.product(x[-m:], y[:n]), big[-m:, :n]), (d, m, n)
    perm = rng.permutation(700)
    assert np.array_equal(exact.product(x, y[perm]), big[:, perm])
    for i, j in ((0, 0), (7, 123), (299, 699)):
        want = sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(x[i], y[j]))
        assert Fraction(float(big[i, j])) == want
    assert np.array_equal(exact.squared_norms(x), np.diag(exact.product(x, x)))


def test_rounding_keeps_vectors_within_a_float32_scale_error():
    rng = np.random.default_rng(3)
    v = rng.standard_normal((50, 384)).astype(np.float32)
    v[0] = 0.0
    r = exact.rounded(v)
    assert r.dtype == np.float64 and np.array_equal(r[0], np.zeros(384))
    top = np.abs(v.astype(np.float64)).max(axis=1, keepdims=True)
    assert (np.abs(r - v) <= top * 2.0 ** -22).all()


def test_kept_shifts_round_as_the_rows_own():
    """The shifts an IVF index keeps per member (tsds.retrieval.density_bounds) give the same rounded rows."""
    rng = np.random.default_rng(4)
    v = (rng.standard_normal((40, 96)) * np.geomspace(1e-3, 1e3, 40)[:, None]).astype(np.float32)
    v[3] = 0.0
    kept = exact.shifts(v)
    assert kept.dtype == np.float32 and kept.shape == (40,)
    for rows in (np.arange(40), np.array([7, 3, 3, 39])):
        got = exact.rounded(v[rows], shift=kept[rows], work=np.empty((rows.size, 96), np.float32))
        assert np.array_equal(got, exact.rounded(v[rows]))


@pytest.fixture(scope="module")
def vectors(small_store):
    return np.ascontiguousarray(small_store.vectors().take(np.arange(small_store.n_rows)), dtype=np.float32)


@pytest.mark.parametrize("sigma", [0.9, 1.1])
def test_densities_of_any_subset_equal_those_of_all_rows_on_every_index_and_path(vectors, sigma):
    flat = build_index(vectors, metric="cosine", kind="flat")
    ivf = build_index(vectors, metric="cosine", kind="ivf", storage="memory")
    n = vectors.shape[0]
    every = flat.densities(np.arange(n), sigma)
    assert (every > 1).sum() > 50
    for path in ("pruned", "brute"):
        assert np.array_equal(ivf.densities(np.arange(n), sigma, path=path), every), path
    rng = np.random.default_rng(1)
    for size in (1, 2, 3, 9, 40, 333):
        ids = rng.choice(n, size, replace=False)
        assert np.array_equal(flat.densities(ids, sigma), every[ids]), size
        for path in ("pruned", "brute"):
            assert np.array_equal(ivf.densities(ids, sigma, path=path), every[ids]), (size, path)


def test_flat_index_densities_over_a_partition_are_the_brute_force_ones(vectors, monkeypatch):
    """A flat index from PARTITION_FROM vectors, once PARTITION_POINTS densities were asked, computes them
    over an IVF partition of the same vectors, built once: the same numbers and counts as the flat tiles,
    with and after exclusions."""
    import tsds.retrieval.index as index_module

    n = vectors.shape[0]
    plain = build_index(vectors, metric="cosine", kind="flat")
    monkeypatch.setattr(index_module, "PARTITION_FROM", 10**12)
    ids = np.random.default_rng(2).choice(n, 600, replace=False)
    want, want_counts = plain.densities(ids, 1.0, return_counts=True)
    plain.exclude(np.arange(0, n, 5))
    want_excl = plain.densities(ids, 1.0)
    assert plain._density_partition is None

    monkeypatch.setattr(index_module, "PARTITION_FROM", n)
    monkeypatch.setattr(index_module, "PARTITION_POINTS", 1000)
    flat = build_index(vectors, metric="cosine", kind="flat")
    assert np.array_equal(flat.densities(ids, 1.0), want) and flat._density_partition is None  # 600 asked
    got, got_counts = flat.densities(ids, 1.0, return_counts=True)  # 1,200 asked: over the partition
    part = flat._density_partition
    assert part is not None and part.kind == "ivf" and part.ntotal == n and part.list_radius is not None
    assert np.array_equal(got, want) and np.array_equal(got_counts, want_counts) and (want > 1).sum() > 20
    flat.exclude(np.arange(0, n, 5))
    assert np.array_equal(flat.densities(ids, 1.0), want_excl) and not np.array_equal(want_excl, want)
    assert flat._density_partition is part and part.excluded is flat.excluded  # built once, exclusions follow
    flat.exclude([])
    assert np.array_equal(flat.densities(ids, 1.0), want) and part.excluded is None
    assert np.array_equal(flat.densities(ids, 1.0, path="brute"), want)  # an explicit path: the flat tiles
    assert build_index(vectors[: n - 1], metric="cosine", kind="flat").density_partition() is None


def test_the_partition_follows_the_index_storage_and_work_dir(vectors, monkeypatch, tmp_path):
    """--index-storage memory keeps a flat index's density partition in memory; --work-dir holds its file."""
    import tsds.retrieval.index as index_module
    from tsds.retrieval.mapped import MAPS_PAGES

    monkeypatch.setattr(index_module, "PARTITION_FROM", 1)
    monkeypatch.setattr(index_module, "PARTITION_POINTS", 1)
    ids = np.arange(0, vectors.shape[0], 3)
    want = build_index(vectors, metric="cosine", kind="flat").densities(ids, 1.0, path="brute")
    in_memory = build_index(vectors, metric="cosine", kind="flat", storage="memory")
    assert np.array_equal(in_memory.densities(ids, 1.0), want)
    assert in_memory._density_partition is not None and in_memory._density_partition.pages is None
    if not MAPS_PAGES:
        pytest.skip("mapped lists need Linux")
    folder = tmp_path / "scratch"
    folder.mkdir()
    mapped = build_index(vectors, metric="cosine", kind="flat", work_dir=folder)
    assert np.array_equal(mapped.densities(ids, 1.0), want)
    assert mapped._density_partition.pages is not None
    maps = open("/proc/self/maps").read()
    assert str(folder) in maps  # the partition's file lives (unlinked, mapped) in the work folder
    assert not any(folder.iterdir())  # and nothing is left in it


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_densities_do_not_depend_on_how_points_are_split_into_tasks(vectors, chunk, monkeypatch):
    """The tasks' size (tsds.retrieval.density.chunk_size) is a speed setting: every kernel term is a float32
    multiple of 2^-24, so the float64 sums are exact however the points are grouped and whichever thread
    computes them."""
    import tsds.retrieval.density as density_module

    ivf = build_index(vectors, metric="cosine", kind="ivf", storage="memory")
    ids = np.arange(vectors.shape[0])
    want, want_counts = ivf.densities(ids, 1.0, return_counts=True)
    monkeypatch.setattr(density_module, "_CHUNK", chunk)
    monkeypatch.setattr(density_module, "_CHUNK_MIN", 1)
    assert density_module._task_size(ivf, None) == chunk
    for path in ("pruned", "brute"):
        got, counts = ivf.densities(ids, 1.0, return_counts=True, path=path)
        assert np.array_equal(got, want) and np.array_equal(counts, want_counts), path
    assert (want > 1).sum() > 50


def test_balanced_tasks_keep_every_thread_busy_and_cover_every_point():
    from tsds.retrieval.density import balanced_size

    assert balanced_size(1053, 1024, 2) == 527  # not 1,024 and 29
    assert balanced_size(4096, 1024, 2) == 1024 and balanced_size(10, 1024, 2) == 5
    for points in (1, 2, 3, 129, 1000, 2049, 6864):
        for size in (1, 64, 1024):
            for workers in (1, 2, 3, 16):
                b = balanced_size(points, size, workers)
                tasks = -(-points // b)
                fewest = -(-points // size)
                assert 1 <= b <= size
                assert -(-tasks // workers) == -(-fewest // workers)  # no more rounds of tasks than needed
                assert tasks >= min(fewest * workers, points, workers) - 1  # and (nearly) every thread in each


def test_task_size_keeps_every_threads_buffers_within_the_budget():
    from tsds.retrieval.density import _CHUNK, _CHUNK_MIN, _SCRATCH_BYTES, chunk_size

    assert chunk_size(447, 2) == chunk_size(1000, 2) == _CHUNK  # the benchmark pools on 2 cores
    for nlist, workers in ((1000, 16), (2236, 8), (4000, 64)):
        size = chunk_size(nlist, workers)
        assert _CHUNK_MIN <= size < _CHUNK
        assert size == _CHUNK_MIN or size * 41 * nlist * workers <= _SCRATCH_BYTES
    assert chunk_size(10**6, 128) == _CHUNK_MIN


@pytest.mark.parametrize("members", [1, 5, 64])
def test_densities_do_not_depend_on_how_long_lists_are_split(vectors, members, monkeypatch):
    """The members of a list are rounded and multiplied in parts (tsds.retrieval.density._MEMBERS) so that a
    thread's float64 copy of a long list stays small; the parts change no sum, with excluded candidates too,
    and on a flat index's stored vectors (no kept shifts or norms)."""
    import tsds.retrieval.density as density_module

    ivf = build_index(vectors, metric="cosine", kind="ivf", storage="memory")
    flat = build_index(vectors, metric="cosine", kind="flat")
    ids = np.arange(vectors.shape[0])
    x = ivf.reconstruct(ids[:300])
    want = [ivf.densities(ids, 1.0, return_counts=True, path="pruned"), density_module.kernel_sums(flat, x, 1.0)]
    ivf.exclude(ids[::3])
    want.append(ivf.densities(ids, 1.0, return_counts=True, path="pruned"))
    ivf.exclude([])
    assert max(np.diff(np.flatnonzero(np.r_[True, np.diff(np.sort(ivf.lists_of(ids))) != 0, True]))) > 64
    monkeypatch.setattr(density_module, "_MEMBERS", members)
    got = [ivf.densities(ids, 1.0, return_counts=True, path="pruned"), density_module.kernel_sums(flat, x, 1.0)]
    ivf.exclude(ids[::3])
    got.append(ivf.densities(ids, 1.0, return_counts=True, path="pruned"))
    for (a, ca), (b, cb) in zip(want, got):
        assert np.array_equal(a, b) and np.array_equal(ca, cb)
    assert (want[0][0] > 1).sum() > 50 and not np.array_equal(want[0][0], want[2][0])
