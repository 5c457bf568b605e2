"""A density does not depend on which other points were computed with it, nor on the index kind or path:
what makes densities computed ahead (tsds.pipeline.densities) equal to those a selection computes itself."""

import numpy as np
import pytest

from tsds.retrieval import build_index
from tsds.retrieval.threads import Scratch, stable_product


def test_stable_product_entries_do_not_depend_on_the_block_shape():
    rng = np.random.default_rng(0)
    for d in (16, 256, 384):
        x = rng.standard_normal((300, d)).astype(np.float32)
        y = rng.standard_normal((700, d)).astype(np.float32)
        big = stable_product(x, y, Scratch()).copy()
        for m, n in ((1, 1), (1, 700), (2, 3), (5, 40), (17, 17), (300, 1), (64, 64)):
            got = stable_product(x[:m], y[:n], Scratch())
            assert got.shape == (m, n) and np.array_equal(got, big[:m, :n]), (d, m, n)


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
