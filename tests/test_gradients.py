"""LoRA gradient features on a tiny random Llama built here (no download): exactness against plain autograd,
the projection's Johnson-Lindenstrauss behaviour, determinism, the response mask, the warm-up, the spec."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hashlib
import math
import urllib.parse
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from tsds.embed import load_embedder  # noqa: E402
from tsds.embed.gradients import GradientEmbedder, parse_spec  # noqa: E402
from tsds.embed.gradients.projection import SparseProjection  # noqa: E402
from tsds.errors import ParameterError  # noqa: E402

SEP = "\n### Response:\n"
TEXTS = [
    "Name a colour." + SEP + "Blue.",
    "What is two plus two?" + SEP + "Two plus two is four.",
    "the cat sat on the mat",
    "Translate 'bonjour' to English." + SEP + "Hello.",
    "a much longer text about the weather, the seasons and the rain falling on the hills in spring",
    "Write a haiku about snow." + SEP + "White hush on the pines / footprints fill before the dawn / the kettle whistles",
    "Summarise: the meeting moved to Tuesday." + SEP + "Meeting now on Tuesday.",
    "numbers 1 2 3 4 5 6 7 8 9 10 11 12",
    "Give an antonym of hot." + SEP + "Cold.",
    "short",
    "List three fruits." + SEP + "Apple, pear, plum.",
    "Is water wet?" + SEP + "Yes, in everyday language.",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer, 32-wide random Llama with a byte-level BPE tokenizer trained on the test texts."""
    from tokenizers import ByteLevelBPETokenizer

    root = tmp_path_factory.mktemp("tiny-llama")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS * 3, vocab_size=320, min_frequency=1, special_tokens=["<s>", "</s>"],
                            show_progress=False)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>")
    tok.save_pretrained(root)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger than the default 0.02 init, so that gradients are far from float noise
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.2)
    model.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def warm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("warm") / "warm.txt"
    path.write_text("\n".join(TEXTS * 2) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TSDS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tsds-cache"))


def _spec(model_dir, **opts) -> str:
    return f"gradients:{model_dir}?" + urllib.parse.urlencode({"sep": SEP, **opts})


def _direct(emb: GradientEmbedder, text: str) -> np.ndarray:
    """The gradient of one text's mean response NLL by plain autograd on the model alone, preconditioned as
    LESS does, flattened in the embedder's parameter order."""
    tok = emb.tokenizer
    cut = text.rfind(SEP) + len(SEP) if SEP in text else 0
    prompt_ids = tok(text[:cut], add_special_tokens=False)["input_ids"] if cut else []
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    assert ids[1:1 + len(prompt_ids)] == prompt_ids  # the separator ends a token in these texts
    ids = ids[: emb.max_tokens]
    first = 1 + len(prompt_ids)
    x = torch.tensor([ids])
    params = [p for _, p in emb.params]
    for p in params:
        p.grad = None
    logits = emb.model(input_ids=x).logits[0]
    loss = torch.nn.functional.cross_entropy(logits[first - 1:-1], x[0, first:])
    loss.backward()
    g = torch.cat([p.grad.reshape(-1) for p in params]).double()
    for p in params:
        p.grad = None
    if emb._moments is not None:
        m, v = (t.double() for t in emb._moments)
        g = (0.9 * m + 0.1 * g) / torch.sqrt(0.999 * v + 0.001 * g * g + 1e-8)
    return g.numpy()


@pytest.mark.parametrize("warm", [False, True])
def test_features_equal_direct_autograd(tiny_model, warm_file, warm):
    opts = {"dim": 64, "lora_r": 4}
    if warm:
        opts.update(warmup=3, warmup_data=str(warm_file), centre=0)
    emb = load_embedder(_spec(tiny_model, **opts), device="cpu", batch_size=5)
    assert emb.identity["precondition"] == ("adam" if warm else "none")
    rows = emb.embed(TEXTS)
    dense = emb.projection.dense()
    raw, _ = emb.raw_gradients(TEXTS)
    for i, text in enumerate(TEXTS):
        g = _direct(emb, text)
        np.testing.assert_allclose(raw[i].double().numpy(), g, rtol=1e-4, atol=1e-6 * np.abs(g).max())
        f = dense @ g
        f /= np.linalg.norm(f)
        np.testing.assert_allclose(rows[i], f, atol=2e-5)
    if not warm:  # LoRA B starts at zero, so the A matrices get no gradient until a warm-up moved B
        a_cols = np.concatenate([np.full(p.numel(), "lora_A" in n) for n, p in emb.params])
        assert np.all(raw.numpy()[:, a_cols] == 0) and np.any(raw.numpy()[:, ~a_cols] != 0)


def test_projection_preserves_inner_products_within_jl_bound(tiny_model):
    emb = load_embedder(_spec(tiny_model, dim=64, lora_r=4, targets="q_proj,k_proj,v_proj,o_proj"), device="cpu")
    g = emb.raw_gradients(TEXTS)[0].double().numpy()
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    exact = g @ g.T
    n = len(g)
    for k in (256, 1024):
        errors = []
        for seed in range(3):
            proj = SparseProjection(g.shape[1], k, seed=seed, nnz=4)
            p = proj.project(torch.from_numpy(g)).astype(np.float64)
            err = np.abs(p @ p.T - exact)
            # JL: k >= 8 ln(n) / eps^2 keeps every norm within 1 +- eps, hence unit inner products within eps.
            assert err.max() <= math.sqrt(8 * math.log(n) / k), (k, seed, err.max())
            errors.append(err[np.triu_indices(n, 1)].mean())
        assert np.mean(errors) < 1.5 / math.sqrt(k)


def test_projection_is_a_fixed_function_of_seed_and_shape():
    a = SparseProjection(1000, 64, seed=7, nnz=4)
    b = SparseProjection(1000, 64, seed=7, nnz=4)
    c = SparseProjection(1000, 64, seed=8, nnz=4)
    assert a.sha256 == b.sha256 != c.sha256
    dense = a.dense()
    assert np.all(np.count_nonzero(dense, axis=0) == 4) and np.allclose(np.abs(dense[dense != 0]), 0.5)
    x = np.random.default_rng(0).standard_normal((3, 1000))
    np.testing.assert_allclose(a.project(torch.from_numpy(x)), (dense @ x.T).T, rtol=1e-5, atol=1e-5)
    # pinned buckets and signs: the same matrix on every machine and numpy version
    assert a.rows[:, :3].tolist() == [[7, 9, 10], [30, 20, 16], [43, 34, 40], [60, 55, 58]]
    assert (a.signs[:, :3] * 2).tolist() == [[-1, 1, 1], [1, -1, -1], [-1, -1, 1], [-1, 1, 1]]
    with pytest.raises(ParameterError, match="multiple of nnz"):
        SparseProjection(10, 63, nnz=4)


def test_deterministic_across_runs_batch_sizes_and_threads(tiny_model, warm_file):
    spec = _spec(tiny_model, dim=64, lora_r=4, warmup=2, warmup_data=str(warm_file))
    first = load_embedder(spec, device="cpu", batch_size=4).embed(TEXTS)
    again = load_embedder(spec, device="cpu", batch_size=4)
    assert np.array_equal(again.embed(TEXTS), first)
    for bs in (1, 3, 12):
        again.batch_size = bs
        np.testing.assert_allclose(again.embed(TEXTS), first, rtol=0, atol=1e-6)
    threads = torch.get_num_threads()
    try:
        out = {}
        for t in (1, 2):
            torch.set_num_threads(t)
            out[t] = again.embed(TEXTS)
        np.testing.assert_allclose(out[1], out[2], rtol=0, atol=1e-6)
    finally:
        torch.set_num_threads(threads)


def test_response_mask_and_texts_without_loss(tiny_model):
    masked = load_embedder(_spec(tiny_model, dim=64), device="cpu")
    whole = load_embedder(f"gradients:{tiny_model}?dim=64", device="cpu")
    texts = [TEXTS[0], TEXTS[2], "", "Only a prompt" + SEP]
    a, b = masked.embed(texts), whole.embed(texts)
    assert not np.allclose(a[0], b[0])          # the prompt's tokens are out of the masked loss
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)  # no separator: the whole text either way
    assert not a[2].any() and not b[2].any()     # nothing to predict: an all-zero row
    assert not a[3].any() and b[3].any()         # nothing after the separator
    np.testing.assert_allclose(np.linalg.norm(a[[0, 1]], axis=1), 1.0, atol=1e-6)
    assert masked.identity["loss"]["response_sep"] == SEP and whole.identity["loss"]["response_sep"] is None


def test_truncation_is_counted(tiny_model):
    emb = load_embedder(f"gradients:{tiny_model}?dim=64&max_tokens=8", device="cpu")
    rows = emb.embed(TEXTS)
    long = sum(len(emb.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 > 8 for t in TEXTS)
    assert emb.truncated == long > 0 and rows.shape == (len(TEXTS), 64)


def test_warmup_is_cached_and_recorded(tiny_model, warm_file):
    spec = _spec(tiny_model, dim=64, warmup=2, warmup_data=str(warm_file), centre=0)
    a = load_embedder(spec, device="cpu")
    ident = a.identity
    assert ident["warmup"]["steps"] == 2 and len(ident["checkpoint_sha256"]) == 64
    assert ident["precondition"] == "adam" and ident["projection"]["dim"] == 64
    ckpts = Path(os.environ["TSDS_CACHE_DIR"], "gradients").glob("*.npz")
    # the same checkpoint given by file gives the same features and checkpoint hash
    ckpt = next(p for p in ckpts if hashlib.sha256(p.read_bytes()).hexdigest() == ident["checkpoint_sha256"])
    b = load_embedder(_spec(tiny_model, dim=64, checkpoint=str(ckpt)), device="cpu")
    assert b.identity["checkpoint_sha256"] == ident["checkpoint_sha256"]
    assert np.array_equal(a.embed(TEXTS), b.embed(TEXTS))
    plain = load_embedder(_spec(tiny_model, dim=64), device="cpu")
    assert plain.identity != ident and plain.identity["checkpoint_sha256"] is None


def test_warmup_centres_by_default_and_a_bare_checkpoint_warns(tiny_model, warm_file):
    """Preconditioned features are centred unless told otherwise: by default on a sample of the warm-up data
    (all of it when shorter than 512 texts); a checkpoint without centring data warns."""
    a = load_embedder(_spec(tiny_model, dim=64, warmup=2, warmup_data=str(warm_file)), device="cpu")
    lines = warm_file.read_text(encoding="utf-8").splitlines()
    assert a.identity["centre"]["sample"]["texts"] == 512 and a.identity["centre"]["rows"] == sum(map(bool, lines))
    assert a.identity["centre"]["sample"]["data_sha256"] == a.identity["warmup"]["data_sha256"]
    cache = Path(os.environ["TSDS_CACHE_DIR"], "gradients")
    ckpt = next(p for p in cache.glob("*.npz")
                if hashlib.sha256(p.read_bytes()).hexdigest() == a.identity["checkpoint_sha256"])
    mean = next(p for p in cache.glob("centre-*.npz") if load_embedder(
        _spec(tiny_model, dim=64, checkpoint=str(ckpt), centre_mean=str(p)), device="cpu").identity["centre"]
        == a.identity["centre"])
    # the warm-up's checkpoint and centring mean carried as files give the same rows
    b = load_embedder(_spec(tiny_model, dim=64, checkpoint=str(ckpt), centre_mean=str(mean)), device="cpu")
    assert np.array_equal(a.embed(TEXTS), b.embed(TEXTS))
    with pytest.warns(UserWarning, match="without centring share one dominant direction"):
        load_embedder(_spec(tiny_model, dim=64, checkpoint=str(ckpt)), device="cpu")
    off = load_embedder(_spec(tiny_model, dim=64, warmup=2, warmup_data=str(warm_file), centre=0), device="cpu")
    assert "centre" not in off.identity and off.identity["warmup"] == a.identity["warmup"]


def test_identity_covers_projection_and_lora(tiny_model):
    base = load_embedder(_spec(tiny_model, dim=64), device="cpu").identity
    assert base["kind"] == "lora-gradients" and base["dim"] == 64 and len(base["weights_sha256"]) == 64
    for change in ({"seed": 1}, {"lora_r": 2}, {"lora_seed": 3}, {"nnz": 2}):
        other = load_embedder(_spec(tiny_model, dim=64, **change), device="cpu").identity
        assert other != base, change


def test_few_texts_warn(tiny_model):
    emb = load_embedder(_spec(tiny_model, dim=64), device="cpu")
    with pytest.warns(UserWarning, match="fewer than 10"):
        emb.embed(TEXTS[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb.embed(TEXTS)


@pytest.mark.parametrize("spec, message", [
    ("gradients:{m}?dim=0", "dim must be >= 1"),
    ("gradients:{m}?dim=abc", "dim='abc' is not a number"),
    ("gradients:{m}?colour=red", "unknown option 'colour'"),
    ("gradients:{m}?warmup=5", "needs warmup_data"),
    ("gradients:{m}?precondition=adam", "needs a warmup or a checkpoint"),
    ("gradients:{m}?dim=10&nnz=4", "multiple of nnz"),
    ("gradients:{m}?checkpoint=/nonexistent.npz", "is not a file"),
    ("gradients:{m}?targets=nothing_here", "LoRA targets"),
    ("gradients:/nonexistent/model", "neither a causal-LM folder"),
])
def test_bad_specs_fail_in_one_line(tiny_model, spec, message):
    with pytest.raises(ParameterError, match=message) as info:
        load_embedder(spec.format(m=tiny_model), device="cpu")
    assert "\n" not in str(info.value)


def test_parse_spec_defaults():
    model, o = parse_spec("gradients")
    assert model == "smollm2" and o["dim"] == 8192 and o["lora_r"] == 8 and o["lora_alpha"] == 16.0
    assert o["precondition"] == "none" and o["targets"] == ("q_proj", "v_proj") and o["centre"] == 0
    _, o = parse_spec("gradients?warmup=5&warmup_data=w.txt")
    assert o["centre"] == 512 and o["centre_data"] == "w.txt"
    assert parse_spec("gradients?warmup=5&warmup_data=w.txt&centre=0")[1]["centre"] == 0
    # plain gradients are not dominated by one direction: no default centring without preconditioning
    assert parse_spec("gradients?warmup=5&warmup_data=w.txt&precondition=none")[1]["centre"] == 0


def _shards(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(root, "shards").glob("*.npy"))}


def test_pool_build_with_gradients_is_deterministic_and_resumable(tiny_model, tmp_path):
    """`tsds pool build --embedder gradients:...` like any embedder: the same command gives the same shard
    bytes (so resuming by shard is sound), a second run reuses every shard, another projection is refused."""
    import json
    import subprocess
    import sys

    from tsds.errors import InputError
    from tsds.store import PoolStore, build_store

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    spec = _spec(tiny_model, dim=64, lora_r=4)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "CUDA_VISIBLE_DEVICES": ""}
    cli = subprocess.run([sys.executable, "-m", "tsds.cli", "pool", "build", str(pool), "--out", str(tmp_path / "a"),
                          "--embedder", spec, "--shard-rows", "5", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert cli.returncode == 0, cli.stderr
    build_store([pool], tmp_path / "b", embedder_spec=spec, shard_rows=5)
    assert _shards(tmp_path / "a") == _shards(tmp_path / "b")
    assert {"000000.npy", "000001.npy", "000002.npy"} <= set(_shards(tmp_path / "a"))
    store = PoolStore(tmp_path / "a")
    assert store.n_rows == len(TEXTS) and store.meta["embedder"]["kind"] == "lora-gradients"
    direct = load_embedder(spec, device="cpu").embed(TEXTS)
    np.testing.assert_allclose(np.asarray(store.vectors().take(np.arange(len(TEXTS)))), direct, atol=1e-6)
    again = build_store([pool], tmp_path / "a", embedder_spec=spec, shard_rows=5)
    assert again.meta["last_build"]["reused_shards"] == 3
    with pytest.raises(InputError, match="use a new store folder"):
        build_store([pool], tmp_path / "a", embedder_spec=_spec(tiny_model, dim=64, lora_r=4, seed=1), shard_rows=5)
    assert _shards(tmp_path / "a") == _shards(tmp_path / "b")


def _manual_centred(emb: GradientEmbedder, texts: list[str], mean: np.ndarray) -> np.ndarray:
    """normalise(P g - mean) from the raw gradients and the dense projection; zero rows stay zero."""
    raw = emb.raw_gradients(texts)[0].double().numpy()
    proj = raw @ emb.projection.dense().T
    keep = np.any(raw != 0, axis=1)
    proj[keep] -= mean
    n = np.linalg.norm(proj, axis=1, keepdims=True)
    return proj / np.where(n > 0, n, 1)


def test_centring_is_shared_by_pool_and_queries_and_recorded(tiny_model, tmp_path, monkeypatch):
    """A centred store's rows and the queries embedded for it (the store's spec loaded anew, as a selection
    does) are centred by the same cached mean: the sample's mean projected gradient; the identity records it."""
    import json

    from tsds.pipeline.queries import load_store_embedder
    from tsds.store import PoolStore, build_store

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    spec = _spec(tiny_model, dim=64, lora_r=4, centre=6, centre_data=str(pool))
    monkeypatch.setenv("TSDS_CACHE_DIR", str(tmp_path / "cache"))
    store = build_store([pool], tmp_path / "store", embedder_spec=spec, shard_rows=5)
    cached = sorted(Path(os.environ["TSDS_CACHE_DIR"], "gradients").glob("centre-*.npz"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    queries = load_store_embedder(PoolStore(tmp_path / "store"))  # loads the spec again: reuses the cache
    assert cached[0].stat().st_mtime_ns == mtime
    ident = queries.identity
    assert ident == store.meta["embedder"] and ident["centre"]["rows"] == 6
    assert ident["centre"]["sample"]["texts"] == 6 and len(ident["centre"]["mean_sha256"]) == 64
    # the mean is that of the seeded sample's projected gradients
    from tsds.embed.gradients import read_warmup_texts

    sample = read_warmup_texts(pool, "text", 6, 0)
    plain = load_embedder(_spec(tiny_model, dim=64, lora_r=4), device="cpu")
    mean = (plain.raw_gradients(sample)[0].double().numpy() @ plain.projection.dense().T).mean(0)
    np.testing.assert_allclose(queries._mean, mean, rtol=1e-5, atol=1e-6 * np.abs(mean).max())
    # pool rows and query rows: normalise(P g - mean), with the same mean
    expected = _manual_centred(queries, TEXTS, queries._mean)
    np.testing.assert_allclose(np.asarray(store.vectors().take(np.arange(len(TEXTS)))), expected, atol=2e-5)
    np.testing.assert_allclose(queries.embed(TEXTS[:10]), expected[:10], atol=2e-5)
    # centring changes the features and the identity; the uncentred identity has no centre entry
    assert "centre" not in plain.identity and plain.identity != ident
    assert not np.allclose(plain.embed(TEXTS), expected, atol=1e-3)
    other = load_embedder(_spec(tiny_model, dim=64, lora_r=4, centre=6, centre_data=str(pool), centre_seed=1),
                          device="cpu")
    assert other.identity["centre"]["mean_sha256"] != ident["centre"]["mean_sha256"]
    # the cached file given as centre_mean gives the same identity and rows
    by_file = load_embedder(_spec(tiny_model, dim=64, lora_r=4, centre_mean=str(cached[0])), device="cpu")
    assert by_file.identity == ident
    np.testing.assert_array_equal(by_file.embed(TEXTS), queries.embed(TEXTS))
    # a store built without centring refuses the centred embedder for its queries
    build_store([pool], tmp_path / "plain", embedder_spec=_spec(tiny_model, dim=64, lora_r=4), shard_rows=5)
    from tsds.errors import InputError

    with pytest.raises(InputError, match="differs from the embedder"):
        load_store_embedder(PoolStore(tmp_path / "plain"), queries)


def test_centring_keeps_texts_without_loss_zero(tiny_model, warm_file):
    emb = load_embedder(_spec(tiny_model, dim=64, centre=8, centre_data=str(warm_file)), device="cpu")
    rows = emb.embed(["", "Only a prompt" + SEP, *TEXTS[:8]])
    assert not rows[:2].any()
    np.testing.assert_allclose(np.linalg.norm(rows[2:], axis=1), 1.0, atol=1e-6)
    # with a warm-up the sample defaults to the warm-up data
    warm = load_embedder(_spec(tiny_model, dim=64, warmup=2, warmup_data=str(warm_file), centre=4), device="cpu")
    assert warm.options["centre_data"] == str(warm_file)
    assert warm.identity["centre"]["sample"]["data_sha256"] == warm.identity["warmup"]["data_sha256"]


@pytest.mark.parametrize("opts, message", [
    ({"centre": -1}, "centre must be >= 0"),
    ({"centre": 4}, "needs centre_data"),
    ({"centre": 4, "centre_data": "/nonexistent.jsonl"}, "centre_data '/nonexistent.jsonl' is not a file"),
    ({"centre": 4, "centre_data": "x", "centre_mean": "y.npz"}, "centre or centre_mean, not both"),
    ({"centre_mean": "/nonexistent.npz"}, "is not a file"),
    ({"centre_mean": "{bad}"}, "is not a centring .npz"),
    ({"centre_mean": "{wrong}"}, "expected 64 finite numbers"),
    ({"centre_mean": "{nan}"}, "expected 64 finite numbers"),
    ({"centre_mean": "{sample}"}, "is not a centring .npz"),
])
def test_bad_centring_fails_in_one_line(tiny_model, tmp_path, opts, message):
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    np.savez(tmp_path / "wrong.npz", mean=np.zeros(32), rows=np.int64(3))
    np.savez(tmp_path / "nan.npz", mean=np.full(64, np.nan), rows=np.int64(3))
    np.savez(tmp_path / "sample.npz", mean=np.zeros(64), rows=np.int64(3), sample=np.str_("{not json"))
    files = {k: tmp_path / f"{k}.npz" for k in ("bad", "wrong", "nan", "sample")}
    opts = {k: v.format(**files) if isinstance(v, str) else v for k, v in opts.items()}
    with pytest.raises(ParameterError, match=message) as info:
        load_embedder(_spec(tiny_model, dim=64, **opts), device="cpu")
    assert "\n" not in str(info.value)
