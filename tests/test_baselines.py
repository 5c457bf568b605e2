"""Baselines on small real data: random, knn (round-robin), DSIR (against a hand-checked case), full."""

import json
import math

import numpy as np
import pytest

from tsds.methods import METHODS, select_baseline, select_method
from tsds.methods.dsir import dsir_log_weights, ngram_features, wordpunct
from tsds.methods.knn import round_robin
from tsds.config import make_config
from tsds.errors import ParameterError

POOL = "data/demo/pool.jsonl.gz"
FOOD = "data/demo/tasks/food/queries.jsonl"
FOOD_LABELS = {("wordnet", "noun.food"), ("gcide", "Cookery")}


def labels_of(store, counts):
    recs = [json.loads(line) for line in open(store.files[0]["path"])]
    rows = np.flatnonzero(counts)
    return np.mean([(recs[r]["source"], recs[r]["label"]) in FOOD_LABELS for r in rows])


def cfg(**kw):
    return make_config(**{"size": 40, "seed": 0, "sampling": "without-replacement", **kw})


def test_random_uniform_reproducible_and_both_draws(small_store, static_embedder):
    a, info = select_baseline("random", small_store, FOOD, cfg(), embedder=static_embedder)
    b, _ = select_baseline("random", small_store, FOOD, cfg(), embedder=static_embedder)
    assert np.allclose(a.probabilities, 1 / 1500) and a.counts.sum() == 40 and a.distinct_selected == 40
    assert np.array_equal(a.counts, b.counts)
    c, _ = select_baseline("random", small_store, FOOD, cfg(seed=1), embedder=static_embedder)
    assert not np.array_equal(a.counts, c.counts)
    w, _ = select_baseline("random", small_store, FOOD, cfg(sampling="with-replacement"), embedder=static_embedder)
    assert w.counts.sum() == 40
    assert info["method"] == "random" and len(info["query_texts"]) == 20


def test_round_robin_hand_case():
    ids = np.array([[1, 2, 3], [1, 4, 5]])
    chosen, short = round_robin(ids, 4)
    assert chosen.tolist() == [1, 4, 2, 5] and not short
    assert round_robin(ids, 6)[0] is None  # lists too short: the caller searches deeper


def test_knn_takes_each_querys_share_of_nearest(small_store, static_embedder):
    sel, _ = select_baseline("knn", small_store, FOOD, cfg(size=60), embedder=static_embedder)
    assert sel.counts.sum() == 60 and sel.counts.max() == 1
    assert np.isclose(sel.probabilities.sum(), 1.0)
    # every query's own nearest neighbour is in the selection (each query gets its share)
    q = static_embedder.embed([json.loads(line)["text"] for line in open(FOOD)])
    _, ids = small_store.index("cosine").search(q / np.linalg.norm(q, axis=1, keepdims=True), 1)
    assert all(sel.counts[i] == 1 for i in ids[:, 0])
    rnd, _ = select_baseline("random", small_store, FOOD, cfg(size=60), embedder=static_embedder)
    assert labels_of(small_store, sel.counts) > labels_of(small_store, rnd.counts) + 0.2
    # larger than a query's first list: grows k and still fills the budget with distinct rows
    big, _ = select_baseline("knn", small_store, FOOD, cfg(size=900), embedder=static_embedder)
    assert big.counts.sum() == 900 and big.counts.max() == 1


def test_dsir_features_and_weights_hand_checked():
    assert wordpunct("it's a b-c!") == ["it", "'", "s", "a", "b", "-", "c", "!"]
    f = ngram_features("A b a", num_buckets=100_003)
    assert f.sum() == 5  # 3 unigrams + 2 bigrams
    # pool {"a b", "c d"}, target {"a b"}: p_raw = 1/6 on each of a, b, "a b", c, d, "c d"; p_target = 1/3 on
    # a, b, "a b". Weight of "a b" = 3 (log 1/3 - log 1/6); of "c d" = 3 (log 1e-8 - log 1/6).
    from tsds.methods.dsir import _bucket

    assert len({_bucket(t, 100_003) for t in ["a", "b", "c", "d", "a b", "c d"]}) == 6  # no collision
    w = dsir_log_weights(["a b", "c d"], ["a b"], num_buckets=100_003)
    exp_ab = 3 * (math.log(1 / 3 + 1e-8) - math.log(1 / 6 + 1e-8))
    exp_cd = 3 * (math.log(1e-8) - math.log(1 / 6 + 1e-8))
    assert w == pytest.approx([exp_ab, exp_cd], rel=1e-9)
    assert exp_ab == pytest.approx(3 * math.log(2), rel=1e-6)


def test_dsir_featurizer_matches_the_authors_package():
    pkg = pytest.importorskip("data_selection.hashed_ngram_dsir")
    for text in ["Hello, World! it's a test-case.", "pattypan squash: round greenish-white squash", "ab ab ab"]:
        assert np.array_equal(ngram_features(text), pkg.get_ngram_counts(text))


def test_dsir_on_real_data_prefers_target_vocabulary(small_store, static_embedder):
    sel, _ = select_baseline("dsir", small_store, FOOD, cfg(size=60), embedder=static_embedder)
    assert sel.counts.sum() == 60 and sel.counts.max() == 1
    assert np.isclose(sel.probabilities.sum(), 1.0)
    top = np.argsort(-sel.probabilities)[:60]
    rnd, _ = select_baseline("random", small_store, FOOD, cfg(size=60), embedder=static_embedder)
    counts = np.zeros(1500, dtype=int)
    counts[top] = 1
    assert labels_of(small_store, counts) > labels_of(small_store, rnd.counts)


def test_full_pool_and_dispatch(small_store, static_embedder):
    sel, _ = select_baseline("full", small_store, FOOD, cfg(), embedder=static_embedder)
    assert sel.counts.sum() == 1500 and sel.counts.max() == 1
    with pytest.raises(ParameterError):
        select_baseline("bogus", small_store, FOOD, cfg(), embedder=static_embedder)
    assert set(METHODS) == {"tsds", "random", "knn", "dsir", "full"}
    t, info = select_method("tsds", small_store, FOOD, cfg(C=1.0, sigma=0.3, metric="cosine"),
                            embedder=static_embedder)
    assert t.counts.sum() == 40 and info["method"] == "tsds"


def test_baseline_writes_the_same_output_format(small_store, static_embedder, tmp_path):
    from tsds.pipeline.write import write_text_selection

    sel, info = select_baseline("knn", small_store, FOOD, cfg(size=30), embedder=static_embedder)
    out = write_text_selection(tmp_path / "sel", small_store, sel, info, queries_path=FOOD)
    rows = [json.loads(line) for line in open(out / "selected.jsonl")]
    assert len(rows) == 30 and all(r["_tsds_nearest_query"] for r in rows)
    assert all(0 <= r["_tsds_query_distance"] <= 2 for r in rows)
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["timings"]["method"] == "knn" and manifest["result"]["distinct_drawn"] == 30
    assert np.load(out / "selected_indices.npy").size == 30
