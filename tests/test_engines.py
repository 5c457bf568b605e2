"""The sharded index in this process (no Ray): merged lists, exact densities, exclusion, cap, IVF shards."""

import itertools

import numpy as np
import pytest

from tsds.retrieval import build_index, densities
from tsds.retrieval.sharded import (
    ShardedIndex,
    ShardSpec,
    build_shard,
    merge_topk,
    plan_shards,
)


def _sharded(x, cuts, tmp_path, kind="flat"):
    specs = []
    bounds = [0, *cuts, x.shape[0]]
    for j, (a, b) in enumerate(itertools.pairwise(bounds)):
        spec = ShardSpec(j, a, b - a, kind, str(tmp_path / f"s{j}.faiss"),
                         str(tmp_path / f"s{j}.radius.npy") if kind == "ivf" else None)
        build_shard(x[a:b], spec, "euclidean")
        specs.append(spec)
    return ShardedIndex(specs, "euclidean")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, 32))
    x = (centres[rng.integers(0, 40, 6000)] + 0.15 * rng.standard_normal((6000, 32))).astype(np.float32)
    q = (centres[:10] + 0.1 * rng.standard_normal((10, 32))).astype(np.float32)
    return x, q


def test_plan_shards_cuts_on_embedding_shards():
    assert plan_shards([100] * 10, 3) == [(0, 400), (400, 300), (700, 300)]
    assert plan_shards([100, 50], 5) == [(0, 100), (100, 50)]


def test_merge_breaks_ties_by_id():
    parts = [(np.array([[0.5, 1.0]]), np.array([[1, 0]])), (np.array([[0.5, 0.7]]), np.array([[0, 1]]))]
    D, I = merge_topk(parts, np.array([0, 10]), 3)
    assert I.tolist() == [[1, 10, 11]] and D.tolist() == [[0.5, 0.5, 0.7]]


def test_flat_shards_equal_one_flat_index(data, tmp_path):
    x, q = data
    single = build_index(x, kind="flat")
    sharded = _sharded(x, [1000, 3500], tmp_path)
    D1, I1 = single.search(q, 300)
    D2, I2 = sharded.search(q, 300)
    assert np.array_equal(I1, I2) and np.allclose(D1, D2, atol=1e-5)
    ids = np.unique(I1[:, :40])
    # the single index sums FAISS's float32 distances (|x|^2 + |y|^2 - 2xy); the shards recompute in float64
    assert np.allclose(densities(single, ids, 1.0), sharded.densities(ids, 1.0), rtol=1e-4)
    assert np.array_equal(sharded.reconstruct(ids), single.reconstruct(ids))


def test_ivf_shards_give_exact_densities_and_calibrated_recall(data, tmp_path):
    x, q = data
    (tmp_path / "f").mkdir()
    (tmp_path / "i").mkdir()
    flat = _sharded(x, [3000], tmp_path / "f")
    ivf = _sharded(x, [3000], tmp_path / "i", kind="ivf")
    ids = np.unique(flat.search(q, 50)[1])
    rho_f, n_f = flat.densities(ids, 0.8, return_counts=True)
    rho_i, n_i = ivf.densities(ids, 0.8, return_counts=True)
    assert np.array_equal(n_f, n_i) and np.allclose(rho_f, rho_i, rtol=0, atol=1e-12)
    recall = ivf.calibrate(q, 100, target=0.95)
    assert recall >= 0.95 and ivf.calibration["shards"] == 2
    assert np.array_equal(ivf.exact_search(q, 100)[1], flat.search(q, 100)[1])


def test_exclusion_spans_shards(data, tmp_path):
    x, q = data
    sharded = _sharded(x, [2000, 4000], tmp_path)
    _, I = sharded.search(q, 20)
    gone = np.unique(I[:, :5])
    sharded.exclude(gone)
    assert sharded.available == x.shape[0] - gone.size
    _, I2 = sharded.search(q, 20)
    assert not np.isin(I2, gone).any()
    single = build_index(x, kind="flat")
    single.exclude(gone)
    keep = np.unique(I2)
    assert np.allclose(densities(single, keep, 1.0), sharded.densities(keep, 1.0), rtol=1e-4)


def test_cap_keeps_the_nearest_terms_over_all_shards(data, tmp_path):
    x, _ = data
    sharded = _sharded(x, [1500, 3000, 4500], tmp_path)
    single = build_index(x, kind="flat")
    ids = np.arange(0, 6000, 300)
    capped = sharded.densities(ids, 2.0, cap=5)
    assert np.allclose(capped, densities(single, ids, 2.0, cap=5), rtol=1e-4)
    assert np.all(capped <= 5) and np.all(capped < sharded.densities(ids, 2.0))


def test_within_radius_over_shards(data, tmp_path):
    x, q = data
    sharded = _sharded(x, [2500], tmp_path, kind="ivf")
    rows, items = sharded.within_radius(q, 0.9)
    d = np.linalg.norm(x[rows].astype(np.float64) - q[items].astype(np.float64), axis=1)
    assert rows.size > 0 and np.all(d < 0.9)
    truth = sum(int((np.linalg.norm(x.astype(np.float64) - v, axis=1) < 0.9).sum()) for v in q.astype(np.float64))
    assert rows.size == truth
