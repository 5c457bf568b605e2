"""Shared fixtures: real embedders, loaded once per test session; everything offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
