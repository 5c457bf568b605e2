"""Calibration on real text: sigma auto separates planted near-duplicates from ordinary neighbours; the alpha
sweep shares one set of neighbour lists; alpha auto meets its support target; query-set hygiene warnings."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tsds.pipeline import autoparams as cal
from tsds.config import make_config
from tsds.pipeline.hygiene import query_warnings
from tsds.pipeline.select import DensityCache, select_on_index
from tsds.api import select_text
from tsds.store import build_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


def _rows(n):
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def _light_edit(text: str, i: int) -> str:
    words = text.split()
    k = 1 + i % (len(words) - 2)
    words = words[:k] + words[k + 1:]  # one word dropped, and whitespace / case / punctuation changed
    return "  ".join(words).upper() if i % 2 else " ".join(words) + " ."


@pytest.fixture(scope="module")
def planted(tmp_path_factory, static_embedder):
    d = tmp_path_factory.mktemp("cal")
    rows = _rows(3000)
    long = [i for i, r in enumerate(rows) if len(r["text"].split()) >= 20][:60]
    copies = [{**rows[i], "id": rows[i]["id"] + "-edit", "text": _light_edit(rows[i]["text"], j)}
              for j, i in enumerate(long)]
    path = d / "pool.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in rows + copies:
            f.write(json.dumps(r) + "\n")
    store = build_store([path], d / "store", embedder=static_embedder, shard_rows=1000)
    pairs = np.array([(i, 3000 + j) for j, i in enumerate(long)])
    return store, pairs


def test_sigma_auto_separates_planted_near_duplicates(planted):
    store, pairs = planted
    index = store.index("euclidean")
    scale = cal.pool_scale(index, sample=1000)
    sigma, info = cal.auto_sigma(scale)
    assert info["rule"] == cal.SIGMA_RULE and 0 < sigma < 1
    v = store.vectors()
    planted_d = np.linalg.norm(v.take(pairs[:, 0]) - v.take(pairs[:, 1]), axis=1)
    # every planted edit lies inside sigma ...
    assert np.mean(planted_d < sigma) >= 0.95, (sigma, np.sort(planted_d)[-5:])
    # ... while ordinary rows (not planted) almost never have a neighbour that close
    ordinary = np.setdiff1d(np.arange(3000), pairs[:, 0])[:1500]
    D, I = index.search(v.take(ordinary), 2)
    nn = np.where(I[:, 0] == ordinary, D[:, 1], D[:, 0])
    assert np.mean(nn < sigma) < 0.05, (sigma, np.mean(nn < sigma))
    assert np.median(nn) > 2.5 * sigma
    # and the density term sees the planted pairs as clusters of (at least) 2
    cache = DensityCache(index.ntotal)
    cache.fill(index, pairs.ravel(), sigma, 100_000, cal.DensityStats())
    assert np.mean(cache.counts[pairs[:, 1]] >= 2) >= 0.95


def test_recommend_C_is_the_embedding_scale(planted):
    store, _ = planted
    scale = cal.pool_scale(store.index("euclidean"))
    c, info = cal.recommend_C(scale)
    assert 0.5 < c < 2.0 and abs(c - np.median(scale.pairs)) < 0.05 and info["rule"] == cal.C_RULE


def test_sweep_matches_full_selections_on_one_set_of_lists(planted, static_embedder):
    store, _ = planted
    index = store.index("euclidean")
    q = static_embedder.embed([json.loads(line)["text"] for line in open(FOOD)])
    alphas = [0.2, 0.5, 0.8]
    sw = cal.sweep(index, q, alphas, C=1.3, sigma=0.25)
    supports = [r.support for r in sw.rows]
    assert supports == sorted(supports, reverse=True) and supports[0] > supports[-1]
    assert sw.fetches <= 4  # K grown once for the widest support, then shared by every alpha
    for row in sw.rows:
        sel = select_on_index(index, q, make_config(size=10, alpha=row.alpha, C=1.3, sigma=0.25))
        assert row.support == int(np.count_nonzero(sel.probabilities))
        assert row.objective == pytest.approx(sel.allocation.objective, rel=1e-9)
        assert 0 < row.ot_distance <= sel.allocation.alignment + 1e-9  # the plan is one feasible coupling


def test_alpha_auto_meets_the_support_target(planted, static_embedder):
    store, _ = planted
    index = store.index("euclidean")
    q = static_embedder.embed([json.loads(line)["text"] for line in open(FOOD)])
    alpha, info = cal.auto_alpha(index, q, size=100, C=1.3, sigma=0.25, multiple=2)
    assert info["support"] >= 200 and 0 < alpha < 1
    nb = cal.Neighbours(index, q, metric="euclidean", sigma=0.25)
    above = np.count_nonzero(nb.probabilities(nb.solve(min(1.0, alpha + 2 / 1024), 1.3)))
    assert above < 200  # the largest such alpha, to the bisection's resolution


def test_select_text_reports_calibration(planted, tmp_path):
    store, _ = planted
    select_text(store, FOOD, out=tmp_path / "sel", config=make_config(
        size=50, C=1.3, sigma_auto=True, alpha_auto=3.0, sampling="without-replacement"))
    m = json.loads((tmp_path / "sel" / "manifest.json").read_text())
    assert m["parameters"]["sigma"] == m["calibration"]["sigma"]["sigma"]
    assert m["parameters"]["alpha"] == m["calibration"]["alpha"]["alpha"]
    assert m["result"]["support_size"] >= 150
    assert "C_recommendation" in m["calibration"]


def test_query_hygiene_warnings(planted, static_embedder):
    store, _ = planted
    texts = [json.loads(line)["text"] for line in open(FOOD)]
    texts = texts + [texts[0].upper() + "  ", "planted outlier"]
    q = static_embedder.embed(texts)
    index = store.index("euclidean")
    centre = store.vectors().take(np.arange(0, 3000, 7)).mean(0)
    q[-1] = -centre / np.linalg.norm(centre)  # a unit vector on the far side of the pool
    D, _ = index.search(q, 1)
    scale = cal.pool_scale(index)
    warns = query_warnings(texts, q, D[:, 0], scale.typical(95))
    kinds = {(w["kind"], w["query"]) for w in warns}
    assert ("duplicate", len(texts) - 2) in kinds
    assert ("outlier", len(texts) - 1) in kinds or ("no_close_candidate", len(texts) - 1) in kinds
    assert not any(w["query"] < len(texts) - 2 for w in warns if w["kind"] != "no_close_candidate")
