"""The sharded index in this process (no Ray): merged lists, exact densities, exclusion, cap, IVF shards."""

import itertools

import numpy as np
import pytest

from tsds.retrieval import build_index, densities
from tsds.config import make_config
from tsds.pipeline.select import select_on_index
from tsds.retrieval.sharded import (
    PQ_ABOVE,
    ShardedIndex,
    ShardSpec,
    build_shard,
    merge_topk,
    plan_shards,
    shard_kind,
)


def _sharded(x, cuts, tmp_path, kind="flat"):
    specs = []
    bounds = [0, *cuts, x.shape[0]]
    for j, (a, b) in enumerate(itertools.pairwise(bounds)):
        vectors = ()
        if kind == "ivfpq":         # the exact rows an IVF-PQ shard re-ranks with (a store's embedding shard)
            np.save(tmp_path / f"v{j}.npy", x[a:b])
            vectors = (str(tmp_path / f"v{j}.npy"),)
        spec = ShardSpec(j, a, b - a, kind, str(tmp_path / f"s{j}.faiss"),
                         str(tmp_path / f"s{j}.radius.npy") if kind != "flat" else None, vectors)
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


def test_shard_kind_by_size():
    assert shard_kind(50_000, "auto") == "flat"
    assert shard_kind(50_001, "auto") == "ivf" and shard_kind(PQ_ABOVE, "auto") == "ivf"
    assert shard_kind(PQ_ABOVE + 1, "auto") == "ivfpq" and shard_kind(10, "ivfpq") == "ivfpq"
    with pytest.raises(Exception, match="index must be one of"):
        shard_kind(10, "pq")


def test_ivfpq_shards_select_like_exact_shards(data, tmp_path):
    """IVF-PQ shards re-ranked with the stored vectors: the same lists, densities and probabilities as
    exact (flat) shards once calibration measures recall 1 (tiny data: the search reaches every list)."""
    x, q = data
    (tmp_path / "f").mkdir()
    (tmp_path / "p").mkdir()
    flat = _sharded(x, [2500], tmp_path / "f")
    pq = _sharded(x, [2500], tmp_path / "p", kind="ivfpq")
    assert pq.kind == "ivfpq" and pq.n_shards == 2
    for sigma, alpha in ((0.8, 0.3), (0.5, 0.9), (2.0, 0.5)):
        config = make_config(size=50, alpha=alpha, C=1.0, sigma=sigma, seed=1, initial_k=8, recall_target=1.0)
        a = select_on_index(flat, q, config)
        b = select_on_index(pq, q, config)
        assert b.recall == 1.0 and a.k_history == b.k_history
        assert np.array_equal(a.neighbour_ids, b.neighbour_ids)
        assert np.max(np.abs(a.probabilities - b.probabilities)) <= 1e-12
        # densities are computed only as far along each list as needed (NaN beyond): the same places
        assert np.array_equal(np.isnan(a.neighbour_densities), np.isnan(b.neighbour_densities))
        assert np.nanmax(np.abs(a.neighbour_densities - b.neighbour_densities)) <= 1e-12
    ids = np.unique(flat.search(q, 60)[1])
    rho_f, n_f = flat.densities(ids, 0.9, return_counts=True)
    rho_p, n_p = pq.densities(ids, 0.9, return_counts=True)
    assert np.array_equal(n_f, n_p) and np.max(np.abs(rho_f - rho_p)) <= 1e-12
    # the vectors behind densities and reports are the stored ones, not the PQ approximation
    assert np.array_equal(pq.reconstruct(ids), x[ids])
    rows, items = pq.within_radius(q, 0.9)
    rows_f, items_f = flat.within_radius(q, 0.9)
    assert sorted(zip(items.tolist(), rows.tolist())) == sorted(zip(items_f.tolist(), rows_f.tolist()))


def test_ivfpq_recall_is_calibrated_and_distances_are_exact(tmp_path):
    """On data where the PQ codes alone misorder neighbours, nprobe is doubled until merged recall@K
    reaches the target, and every returned distance is the exact float64 distance."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((12000, 64)).astype(np.float32)
    q = rng.standard_normal((40, 64)).astype(np.float32)
    pq = _sharded(x, [6000], tmp_path, kind="ivfpq")
    k = 50
    truth = pq.exact_search(q, k)[1]
    exact = np.sqrt(((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1))
    assert np.array_equal(truth, np.argsort(exact, axis=1, kind="stable")[:, :k])
    pq.nprobe = 1
    low = np.mean([np.intersect1d(f, t).size / k for f, t in zip(pq.search(q, k)[1], truth)])
    recall = pq.calibrate(q, k, target=0.9)
    assert low < 0.9 <= recall and pq.calibration["nprobe"] > 1
    D, I = pq.search(q, k)
    assert np.max(np.abs(D - np.take_along_axis(exact, I, 1))) <= 1e-12
    assert np.all(np.diff(D, axis=1) >= 0)
