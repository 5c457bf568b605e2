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
