"""Densities of every row computed on the Ray engine (the store's index shards served by actors) equal the
local engine's on the same store, and a selection on Ray then computes none."""

import gzip
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import tsds
from tsds.engines import make_engine
from tsds.store import PoolStore

ROOT = Path(__file__).resolve().parent.parent
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


def test_build_with_densities_on_ray_equals_local(tmp_path, static_embedder):
    src = tmp_path / "pool.jsonl"
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 1200))
    engine = make_engine("ray", num_cpus=2)
    try:
        built = tsds.Pool.build([src], tmp_path / "ray", embedder=static_embedder, shard_rows=400, engine=engine,
                                index_shards=2, densities=[0.9])
        path = built.path / "densities" / "cosine-sigma0.9.npz"
        with np.load(path) as z:
            on_ray = z["rho"], z["count"]
        assert not np.isnan(on_ray[0]).any() and (on_ray[0] > 1).sum() > 50
        shutil.copytree(built.path, tmp_path / "local")
        shutil.rmtree(tmp_path / "local" / "densities")
        tsds.Pool(PoolStore(tmp_path / "local")).add_densities(0.9)
        with np.load(tmp_path / "local" / "densities" / "cosine-sigma0.9.npz") as z:
            assert np.array_equal(z["rho"], on_ray[0]) and np.array_equal(z["count"], on_ray[1])
        result = tsds.Selector(size=50, sigma=0.9, C=1.0).select(tsds.Pool(PoolStore(built.path, engine=engine)), FOOD)
        assert result.selection.density_cache.computed == 0
    finally:
        engine.close()
