"""Densities of every pool row computed ahead of selections: identical selections, resume, stale files, the cap."""

import gzip
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tsds
from tsds.errors import ParameterError
from tsds.pipeline.densities import parse_sigmas, pool_densities
from tsds.store import PoolStore

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
FOOD = DEMO / "tasks" / "food" / "queries.jsonl"
SIGMA = 0.9  # wide enough on the demo rows for many densities above 1


def _copy(small_store, tmp_path, name="store") -> PoolStore:
    dst = tmp_path / name
    shutil.copytree(small_store.root, dst)
    shutil.rmtree(dst / "densities", ignore_errors=True)
    return PoolStore(dst)


def _select(store, sigma=SIGMA, **kw):
    return tsds.Selector(size=60, sigma=sigma, C=1.0, seed=2, **kw).select(tsds.Pool(store), FOOD)


def _cache(store, metric="cosine", sigma=SIGMA):
    with np.load(store.root / "densities" / f"{metric}-sigma{sigma!r}.npz", allow_pickle=False) as z:
        return z["rho"], z["count"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tsds.cli", *map(str, args)], capture_output=True, text=True)


def test_precomputed_densities_select_bit_for_bit_what_the_selection_computes(small_store, tmp_path):
    cold_store, warm_store = _copy(small_store, tmp_path, "cold"), _copy(small_store, tmp_path, "warm")
    done = tsds.Pool(warm_store).add_densities(SIGMA)
    assert done[0]["rows"] == done[0]["known"] == done[0]["computed"] == warm_store.n_rows
    rho, _ = _cache(warm_store)
    assert not np.isnan(rho).any() and (rho > 1).sum() > 100
    cold, warm = _select(cold_store), _select(warm_store)
    assert warm.selection.density_cache.computed == 0  # read, not computed
    assert cold.selection.density_cache.computed > 0
    assert np.array_equal(cold.probabilities, warm.probabilities)
    assert np.array_equal(cold.indices, warm.indices)
    # what the cold selection computed equals the precomputed values bit for bit
    seen = ~np.isnan(cold.selection.density_cache.values)
    assert np.array_equal(cold.selection.density_cache.values[seen], rho[seen])
    # alpha and sigma auto read them too
    auto_cold = tsds.Selector(size=60, alpha="auto", sigma="auto", seed=1).select(tsds.Pool(cold_store), FOOD)
    tsds.Pool(warm_store).add_densities("auto")
    auto_warm = tsds.Selector(size=60, alpha="auto", sigma="auto", seed=1).select(tsds.Pool(warm_store), FOOD)
    assert auto_warm.selection.density_cache.computed == 0
    assert np.array_equal(auto_cold.probabilities, auto_warm.probabilities)


def test_an_interrupted_run_resumes_from_the_rows_still_missing(small_store, tmp_path):
    store = _copy(small_store, tmp_path)

    class Stop(Exception):
        pass

    def stop_after_first_chunk(n):
        raise Stop

    with pytest.raises(Stop):
        pool_densities(store, SIGMA, chunk_rows=500, progress=stop_after_first_chunk)
    assert not (store.root / "densities").exists() or not any((store.root / "densities").glob("*.npz"))
    seen = []

    def stop_in_second_chunk(n):
        seen.append(n)
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        pool_densities(store, SIGMA, chunk_rows=500, progress=stop_in_second_chunk)
    rho, count = _cache(store)
    assert np.count_nonzero(~np.isnan(rho)) == 500 and np.count_nonzero(count > 0) == 500
    done = pool_densities(store, SIGMA, chunk_rows=500)
    assert done["computed"] == store.n_rows - 500 and done["known"] == store.n_rows
    again = pool_densities(store, SIGMA)
    assert again["computed"] == 0
    full = _copy(small_store, tmp_path, "full")
    pool_densities(full, SIGMA)
    assert np.array_equal(_cache(store)[0], _cache(full)[0]) and np.array_equal(_cache(store)[1], _cache(full)[1])


def test_densities_of_other_content_are_never_used(small_store, tmp_path, static_embedder):
    # a store with other rows but as many: the file copied over is refused, and info calls it stale
    src = tmp_path / "other.jsonl"
    with gzip.open(DEMO / "pool.jsonl.gz", "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 2000, 2000 + small_store.n_rows))
    other = tsds.Pool.build([src], tmp_path / "other", embedder=static_embedder).store
    assert other.n_rows == small_store.n_rows
    mine = _copy(small_store, tmp_path)
    pool_densities(mine, SIGMA)
    (other.root / "densities").mkdir(exist_ok=True)
    shutil.copy(mine.root / "densities" / f"cosine-sigma{SIGMA!r}.npz", other.root / "densities")
    info = tsds.Pool.inspect(other.root)["densities"]
    assert [(d["state"], d["known"]) for d in info] == [("stale", 0)]
    rho, _ = PoolStore(other.root).load_densities("cosine", SIGMA)
    assert np.isnan(rho).all()
    copied = _select(PoolStore(other.root))
    assert copied.selection.density_cache.computed > 0
    fresh = _copy(PoolStore(other.root), tmp_path, "other-fresh")
    assert np.array_equal(copied.probabilities, _select(fresh).probabilities)

    # a store appended to: the old densities (fewer rows, old fingerprint) are not used
    extra = tmp_path / "extra.jsonl"
    with gzip.open(DEMO / "pool.jsonl.gz", "rt") as f, open(extra, "w") as g:
        g.writelines(itertools.islice(f, 5000, 5300))
    grown = tsds.Pool.build([extra], mine.root, embedder=static_embedder, append=True).store
    assert grown.n_rows == small_store.n_rows + 300
    rho, _ = grown.load_densities("cosine", SIGMA)
    assert np.isnan(rho).all()
    assert tsds.Pool.inspect(grown.root)["densities"][0]["state"] == "stale"
    assert pool_densities(grown, SIGMA)["computed"] == grown.n_rows


def test_entries_computed_under_another_cap_are_computed_again(small_store, tmp_path):
    store = _copy(small_store, tmp_path)
    pool_densities(store, SIGMA)
    rho, count = _cache(store)
    cap = int(np.percentile(count, 90))
    assert (count > cap).any() and (count <= cap).any()
    loaded, _ = store.load_densities("cosine", SIGMA, cap=cap)
    assert np.isnan(loaded[count > cap]).all() and np.array_equal(loaded[count <= cap], rho[count <= cap])
    assert np.array_equal(store.load_densities("cosine", SIGMA, cap=100_000)[0], rho)
    capped = pool_densities(store, SIGMA, cap=cap)
    assert capped["computed"] == int((count > cap).sum())
    rho_c, _ = _cache(store)
    assert (rho_c[count > cap] < rho[count > cap]).all()  # only the cap nearest terms count
    # and the file now records that cap: the default cap drops those entries again
    assert np.isnan(store.load_densities("cosine", SIGMA, cap=100_000)[0][count > cap]).all()


def test_cli_densities_build_option_info_and_bad_sigma(small_store, tmp_path):
    store = _copy(small_store, tmp_path)
    r = _cli("pool", "densities", store.root, "--sigma", "0,3")
    assert r.returncode == 2 and "--sigma" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (store.root / "densities").exists()
    r = _cli("pool", "densities", store.root, "--sigma", "0.9", "--metric", "dot")
    assert r.returncode == 2 and "--metric" in r.stderr
    r = _cli("pool", "densities", store.root, "--sigma", "0.9", "-q")
    assert r.returncode == 0, r.stderr
    assert not np.isnan(_cache(store)[0]).any()
    r = _cli("pool", "info", store.root)
    assert "cosine sigma 0.9 (every row" in r.stdout
    info = json.loads(_cli("pool", "info", store.root, "--json").stdout)
    assert info["densities"][0]["known"] == store.n_rows

    src = tmp_path / "tiny.jsonl"
    with gzip.open(DEMO / "pool.jsonl.gz", "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 300))
    r = _cli("pool", "build", src, "--out", tmp_path / "built", "--densities", "0.5,auto", "-q")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "built" / "densities").glob("*.npz"))
    assert len(names) == 2 and "cosine-sigma0.5.npz" in names
    r = _cli("pool", "build", src, "--out", tmp_path / "bad", "--densities", "x")
    assert r.returncode == 2 and "--densities" in r.stderr and not (tmp_path / "bad").exists()


def test_verify_checks_the_precomputed_file(small_store, tmp_path):
    from tsds.store.verify import verify_store

    store = _copy(small_store, tmp_path)
    pool_densities(store, SIGMA)
    found = {f.file: f.status for f in verify_store(store.root)}
    assert found[f"densities/cosine-sigma{SIGMA!r}.npz"] == "ok"
    path = store.root / "densities" / f"cosine-sigma{SIGMA!r}.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    found = {f.file: f.status for f in verify_store(store.root)}
    assert found[f"densities/cosine-sigma{SIGMA!r}.npz"] == "damaged"


def test_parse_sigmas():
    assert parse_sigmas("0.3, 0.5,auto") == [0.3, 0.5, "auto"]
    for bad in ("", "0", "-1", "nan", "a"):
        with pytest.raises(ParameterError):
            parse_sigmas(bad)


def test_densities_computed_ahead_on_an_ivf_index_select_bit_for_bit(small_store, tmp_path):
    cold_store, warm_store = _copy(small_store, tmp_path, "cold"), _copy(small_store, tmp_path, "warm")
    assert pool_densities(warm_store, SIGMA, index="ivf")["index"] == "ivf"
    cold, warm = _select(cold_store, index="ivf"), _select(warm_store, index="ivf")
    assert list((cold_store.root / "index").glob("cosine-ivf*"))  # the selection ran on an IVF index
    assert warm.selection.density_cache.computed == 0 and cold.selection.density_cache.computed > 0
    assert np.array_equal(cold.probabilities, warm.probabilities) and np.array_equal(cold.indices, warm.indices)
    seen = ~np.isnan(cold.selection.density_cache.values)
    assert np.array_equal(cold.selection.density_cache.values[seen], _cache(warm_store)[0][seen])
    # and the flat selection reads the same file: the densities do not depend on the index
    flat = _select(warm_store)
    assert flat.selection.density_cache.computed == 0
    assert np.array_equal(flat.probabilities, _select(_copy(small_store, tmp_path, "flat-cold")).probabilities)
