"""Approximate densities (`--density approx`): each over the members of the point's nearest IVF lists only.

What must hold: never above the exact density; exact once every list is probed; the same number whatever
other points are computed with it (a store caches them); kept apart from exact densities in a store; the
run reports a sampled check against exact; bad options fail with one line and write nothing."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tsds
from tsds.retrieval import Nearest, build_index
from tsds.store import PoolStore

ROOT = Path(__file__).resolve().parent.parent
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


def _clustered(n=6000, d=24, centres=40, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, d)).astype(np.float32)
    x[: n // 10] = x[n // 10: 2 * (n // 10)] + 0.01 * rng.normal(size=(n // 10, d)).astype(np.float32)  # near-copies
    return x


@pytest.fixture(scope="module")
def ivf():
    return build_index(_clustered(), kind="ivf", seed=0)


def test_never_above_exact_and_exact_with_every_list(ivf):
    ids = np.arange(0, ivf.ntotal, 7)
    sigma = 2.5
    exact, counts = ivf.densities(ids, sigma, return_counts=True)
    assert (counts > 1).mean() > 0.5  # a test where densities matter
    previous = np.ones(ids.size)
    for lists in (1, 2, 4, 8):
        approx, approx_counts = ivf.densities(ids, sigma, path=Nearest(lists), return_counts=True)
        assert (approx <= exact * (1 + 1e-6)).all() and (approx_counts <= counts).all()
        assert (approx >= previous).all()  # more lists: a superset of the same float32 terms
        if lists == 2:
            assert (approx < exact * (1 - 1e-3)).mean() > 0.1  # 2 of the 77 lists leave pairs out here
        previous = approx
    every = ivf.densities(ids, sigma, path=Nearest(ivf.nlist))
    np.testing.assert_allclose(every, exact, rtol=1e-6)


def test_a_points_density_does_not_depend_on_the_others(ivf):
    ids = np.arange(ivf.ntotal)
    whole = ivf.densities(ids, 2.5, path=Nearest(3))
    rng = np.random.default_rng(1)
    for size in (1, 5, 700):
        part = np.sort(rng.choice(ids, size, replace=False))
        assert np.array_equal(ivf.densities(part, 2.5, path=Nearest(3)), whole[part])


@pytest.mark.parametrize("n", [2000, 21_000])  # below and above the size where a flat index's densities use lists
def test_a_flat_index_has_no_lists_to_probe_and_stays_exact(n):
    flat = build_index(_clustered(n=n, d=8), kind="flat")
    ids = np.arange(0, n, 3)
    assert np.array_equal(flat.densities(ids, 1.0, path=Nearest(2)), flat.densities(ids, 1.0))


@pytest.mark.parametrize("bad", [0, -3, True, 2.5])
def test_nearest_needs_a_whole_number_of_lists(bad):
    with pytest.raises(ValueError, match="lists"):
        Nearest(bad)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tsds.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    d = tmp_path_factory.mktemp("approx-npy")
    x = _clustered(n=24_000, d=16, centres=60, seed=3)
    np.save(d / "cand.npy", x)
    np.save(d / "query.npy", x[::997][:20] + 0.05)
    return d


def test_cli_npy_reports_the_sampled_check(arrays, tmp_path):
    common = ["select", "--candidate-embeddings", arrays / "cand.npy", "--query-embeddings", arrays / "query.npy",
              "--size", 200, "--sigma", 2.0, "--index", "ivf"]
    exact = _cli(*common, "--out", tmp_path / "exact")
    approx = _cli(*common, "--density", "approx", "--density-lists", 4, "--out", tmp_path / "approx")
    assert exact.returncode == 0 and approx.returncode == 0, approx.stderr
    assert "densities approximate (4 nearest lists" in approx.stdout
    dens = json.loads((tmp_path / "approx" / "manifest.json").read_text())["result"]["densities"]
    check = dens["check"]
    assert dens["mode"] == "approx" and check["nearest_lists"] == 4
    assert check["sample"] == min(256, check["approximate_points"]) and check["approximate_points"] > 256
    assert 0 < check["shortfall_max"] < 1 and 0 < check["exact_share"] < 1  # 4 lists: some pairs left out
    assert check["low_share_bound"] >= check["low"] / check["sample"]
    ex = json.loads((tmp_path / "exact" / "manifest.json").read_text())["result"]["densities"]
    assert ex["mode"] == "exact" and "check" not in ex
    p, q = (np.load(tmp_path / name / "probabilities.npy") for name in ("exact", "approx"))
    assert p.shape == q.shape and abs(p.sum() - 1) < 1e-9 and abs(q.sum() - 1) < 1e-9


@pytest.mark.parametrize("args, message", [
    (["--density-lists", 4], "--density-lists applies with --density approx"),
    (["--density", "rough"], "density"),
    (["--density", "approx", "--density-lists", 0], "density_lists"),
])
def test_cli_bad_density_options_fail_in_one_line_and_write_nothing(arrays, tmp_path, args, message):
    out = tmp_path / "out"
    res = _cli("select", "--candidate-embeddings", arrays / "cand.npy", "--query-embeddings", arrays / "query.npy",
               "--size", 20, *args, "--out", out)
    assert res.returncode != 0 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out.exists()


def test_a_store_keeps_approximate_densities_apart(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store.root, store)
    shutil.rmtree(store / "densities", ignore_errors=True)
    pool = tsds.Pool(PoolStore(store))
    approx = tsds.Selector(size=60, sigma=0.9, C=1.0, index="ivf", density="approx", density_lists=2).select(pool, FOOD)
    files = sorted(p.name for p in (store / "densities").glob("*.npz"))
    assert files == ["cosine-sigma0.9-nearest2-ivf.npz"]
    assert approx.selection.density_cache.computed > 0
    with np.load(store / "densities" / files[0], allow_pickle=False) as z:
        saved = z["rho"]
    seen = ~np.isnan(approx.selection.density_cache.values)
    assert np.array_equal(saved[seen], approx.selection.density_cache.values[seen])
    # an exact selection neither reads nor overwrites them
    exact = tsds.Selector(size=60, sigma=0.9, C=1.0, index="ivf").select(tsds.Pool(PoolStore(store)), FOOD)
    assert exact.selection.density_cache.computed > 0
    assert sorted(p.name for p in (store / "densities").glob("*.npz")) == ["cosine-sigma0.9-nearest2-ivf.npz",
                                                                           "cosine-sigma0.9.npz"]
    assert (approx.selection.density_cache.values[seen]
            <= exact.selection.density_cache.values[seen] * (1 + 1e-6) + np.isnan(exact.selection.density_cache.values[seen])).all()
    # the same approximate selection again reads them all
    again = tsds.Selector(size=60, sigma=0.9, C=1.0, index="ivf", density="approx", density_lists=2).select(
        tsds.Pool(PoolStore(store)), FOOD)
    assert again.selection.density_cache.computed == 0
    assert np.array_equal(again.probabilities, approx.probabilities)
    info = _cli("pool", "info", store)
    assert info.returncode == 0 and "sigma 0.9 approx, 2 nearest ivf lists" in info.stdout


def test_a_sharded_index_refuses_approximate_densities(small_store):
    from tsds.errors import ParameterError
    from tsds.pipeline.select import DensityCache
    from tsds.retrieval import DensityStats
    from tsds.retrieval.sharded import ShardSpec, ShardedIndex

    small_store.index("euclidean")  # the single index file the shard spec points at
    spec = ShardSpec(0, 0, small_store.n_rows, "flat", str(small_store.root / "index" / "euclidean.faiss"), None)
    sharded = ShardedIndex([spec], "euclidean")
    cache = DensityCache(small_store.n_rows, rule=Nearest(2))
    with pytest.raises(ParameterError, match="--density approx needs the pool's single index"):
        cache.fill(sharded, np.arange(10), 0.5, 1000, DensityStats())
    assert np.isnan(cache.values).all()


def test_cli_refuses_approximate_densities_on_ray_before_starting_it(small_store, tmp_path):
    out = tmp_path / "out"
    res = _cli("select", "--pool", small_store.root, "--queries", FOOD, "--size", 20, "--density", "approx",
               "--engine", "ray", "--out", out)
    assert res.returncode != 0 and "--density approx needs the pool's single index" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()


def test_cli_text_mode_reports_the_check_in_manifest_summary_and_card(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store.root, store)
    out = tmp_path / "out"
    res = _cli("select", "--pool", store, "--queries", FOOD, "--size", 30, "--density", "approx", "--out", out)
    assert res.returncode == 0, res.stderr
    check = json.loads((out / "manifest.json").read_text())["result"]["densities"]["check"]
    # 1,500 rows, a flat index: no lists to probe, so the "approximate" densities are the exact ones
    assert check["sample"] > 0 and check["exact_share"] == 1.0 and check["shortfall_max"] == 0.0
    assert "densities approximate (32 nearest lists" in res.stdout
    assert "densities approximate (32 nearest lists" in (out / "README.md").read_text()


@pytest.mark.parametrize("hits, n", [(0, 256), (1, 256), (5, 256), (100, 256), (0, 10), (9, 10)])
def test_the_share_bound_is_clopper_pearsons(hits, n):
    from scipy.stats import beta

    from tsds.pipeline.density_check import CONFIDENCE, _upper_bound

    assert abs(_upper_bound(hits, n) - beta.ppf(CONFIDENCE, hits + 1, n - hits)) < 1e-9
    assert _upper_bound(n, n) == 1.0 and _upper_bound(0, 0) is None


def test_each_target_of_a_mixture_reports_its_check(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store.root, store)
    out = tmp_path / "out"
    games = ROOT / "data" / "demo" / "tasks" / "games" / "queries.jsonl"
    res = _cli("select", "--pool", store, "--queries", f"{FOOD}:0.5", "--queries", f"{games}:0.5", "--size", 40,
               "--density", "approx", "--out", out)
    assert res.returncode == 0, res.stderr
    targets = json.loads((out / "manifest.json").read_text())["targets"]
    assert len(targets) == 2 and all(t["density_check"]["sample"] > 0 for t in targets)
    assert res.stdout.count("densities approximate (32 nearest lists") == 2
