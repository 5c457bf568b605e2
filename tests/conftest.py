"""Shared fixtures: real embedders, loaded once per test session; everything offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def static_embedder():
    from tsds.embed import load_embedder

    return load_embedder("static")


@pytest.fixture(scope="session")
def minilm_embedder():
    from tsds.embed import load_embedder

    return load_embedder("minilm", device="cpu")


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, static_embedder):
    """A store of the first 1,500 rows of the bundled demo pool."""
    import gzip
    import itertools
    from pathlib import Path

    from tsds.store import build_store

    pool = Path(__file__).resolve().parent.parent / "data" / "demo" / "pool.jsonl.gz"
    d = tmp_path_factory.mktemp("pool")
    src = d / "pool.jsonl"
    with gzip.open(pool, "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 1500))
    return build_store([src], d / "store", embedder=static_embedder)


@pytest.fixture
def same_distillation():
    """``check(a, b, identity=True)``: two static embedders hold the same distillation of all-MiniLM-L6-v2.

    Each token row of their tables agrees within 0.2% of its norm, and their identities agree but for the
    weights' hash. A local build (``ensure_static_model``) gives the shipped bytes on some machines; on
    others the float32 arithmetic of the distillation rounds otherwise (an AMD EPYC, OpenBLAS's AVX2
    kernels: rows apart by up to 0.04% of their norm), and the hash then tells the two models apart.
    """

    def check(a, b, identity: bool = True):
        if identity:
            ia, ib = dict(a.identity), dict(b.identity)
            ia.pop("weights_sha256"), ib.pop("weights_sha256")
            assert ia == ib
        ta, tb = a._table, b._table
        assert ta.shape == tb.shape
        assert (np.abs(ta - tb).max(axis=1) <= 2e-3 * np.linalg.norm(tb, axis=1)).all()

    return check
