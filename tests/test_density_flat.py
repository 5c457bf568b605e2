"""Flat-index densities in cache-sized tiles: the same terms as one product per block, on any thread count."""

import numpy as np
import pytest

from tsds.retrieval import build_index, densities
from tsds.retrieval.density import kernel_sums
from tsds.retrieval.density_flat import flat_vectors, tiled_kernel_sums


def _data(n, d, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(15, d))
    x = centres[rng.integers(0, 15, n)] + 0.3 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[10:40] = x[10]
    return (scale * x).astype(np.float32)


@pytest.mark.parametrize("scale,excluded", [(1.0, False), (4.0, True)])
def test_tiled_sums_equal_one_product_per_block(scale, excluded):
    x = _data(7000, 20, scale=scale)
    index = build_index(x, kind="flat")
    if excluded:
        index.exclude(np.arange(0, 7000, 4))
    sigma = 0.6 * scale
    pts = x[np.r_[np.arange(0, 7000, 9), 10, 11]]
    old_sums, old_counts = kernel_sums(index, pts, sigma)  # the block-at-once products (also used per shard)
    for workers in (1, 2):
        sums, counts = tiled_kernel_sums(flat_vectors(index), pts, sigma, index.excluded, workers=workers)
        assert np.array_equal(counts, old_counts)
        assert np.allclose(sums, old_sums, rtol=1e-12, atol=0)  # same float32 terms, summed in another order
    assert counts[-1] >= 30 - (8 if excluded else 0)


def test_flat_densities_match_float64_and_ignore_excluded_rows():
    x = _data(5000, 16)
    index = build_index(x, kind="flat")
    index.exclude(np.arange(4000, 5000))
    ids = np.arange(0, 4000, 7)
    rho, count = densities(index, ids, 0.5, return_counts=True)
    y = x[:4000].astype(np.float64)
    d2 = np.maximum(((x[ids, None].astype(np.float64) - y[None]) ** 2).sum(-1), 0)
    assert np.allclose(rho, np.maximum(np.maximum(0, 1 - d2 / 0.25).sum(1), 1), rtol=1e-4)
    assert np.abs(count - np.maximum((d2 < 0.25).sum(1), 1)).max() <= 1


def test_tiled_sums_do_not_depend_on_the_order_of_the_points():
    """The tiles group near points together (an order chosen from the points themselves); each point's
    sum is exact, so it is the same number whatever the other points and their order."""
    x = _data(6000, 24, seed=2)
    pts = x[np.arange(0, 6000, 5)]
    sums, counts = tiled_kernel_sums(x, pts, 0.6)
    perm = np.random.default_rng(0).permutation(pts.shape[0])
    psums, pcounts = tiled_kernel_sums(x, pts[perm], 0.6)
    assert np.array_equal(psums, sums[perm]) and np.array_equal(pcounts, counts[perm])
    single, _ = tiled_kernel_sums(x, pts[5:6], 0.6)
    assert single[0] == sums[5] and counts.max() > 30


def test_scratch_buffers_come_back_in_the_dtype_asked_for():
    """A thread's buffer named alike by two callers (the pruned blocks' float64 products, the tiles' float32
    ones) must not hand one the other's dtype."""
    from tsds.retrieval.threads import Scratch

    scratch = Scratch()
    wide = scratch.array("product", (64, 64), np.float64)
    narrow = scratch.array("product", (8, 8), np.float32)
    assert wide.dtype == np.float64 and narrow.dtype == np.float32 and narrow.shape == (8, 8)
    again = scratch.array("product", (4, 4), np.float32)
    assert np.shares_memory(again, narrow)  # reused while it is large enough
