"""The default setting and the published one: what ``tsds select`` and ``tsds.Selector(size=n)`` do with no
other option (cosine, sigma 0.3, C 1, n distinct draws in turns over the queries at most one per
near-duplicate cluster, alpha 0.5 lowered until the support of p holds twice the budget), that it never fails on a feasible budget and says what it chose, that alpha auto's support lands on
its target on an IVF index searched at a calibrated nprobe, and that ``--paper`` gives the published
defaults. On real demo rows embedded by a real model."""

import gzip
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tsds
from tsds.config import PRESETS, make_config
from tsds.errors import ParameterError
from tsds.pipeline import autoparams as cal

ROOT = Path(__file__).resolve().parent.parent
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tsds.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, static_embedder):
    """A store of the first 4,000 demo rows (large enough for an IVF index with 63 lists)."""
    from tsds.store import build_store

    d = tmp_path_factory.mktemp("defaults")
    src = d / "pool.jsonl"
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 4000))
    return build_store([src], d / "store", embedder=static_embedder)


@pytest.mark.parametrize("size", [150, 400])
def test_alpha_auto_support_lands_on_its_target_on_an_ivf_index(demo_store, size):
    """The support is measured on the lists the selection uses (searched at the calibrated nprobe, not at
    nprobe 1) and the selection is solved on those lists: it holds the target and one bisection step up
    of alpha would not."""
    result = tsds.Selector(size=size, alpha="auto", index="ivf").select(demo_store.root, FOOD)
    sel, info = result.selection, result.info["calibration"]["alpha"]
    assert result.info["index"]["kind"] == "ivf" and result.info["index"]["nprobe"] > 1
    support = int(np.count_nonzero(sel.probabilities))
    target = 2 * size
    assert info["target_support"] == target and info["support"] == support and result.alpha_ == info["alpha"]
    assert target <= support <= 1.05 * target + 5, (support, target)
    index = demo_store.index("cosine", "ivf")
    index.nprobe = int(result.info["index"]["nprobe"])
    nb = cal.Neighbours(index, sel_queries(result), metric="cosine", sigma=0.3, initial_k=sel.k_used)
    np.testing.assert_array_equal(nb.ids, sel.neighbour_ids)  # the same lists ...
    above = np.count_nonzero(nb.probabilities(nb.solve(info["alpha"] + 1 / 1024, 1.0)))
    assert above < target  # ... on which a step larger alpha misses the target


def sel_queries(result):
    return result.info["query_vectors"]


@pytest.mark.parametrize("share", [0.005, 0.01, 0.05, 0.10, 0.20])
def test_default_never_fails_up_to_a_fifth_of_the_pool_and_says_when_it_widened(small_store, share):
    eligible = small_store.n_rows - small_store.zero_rows().size if hasattr(small_store, "zero_rows") else None
    size = int(round(share * small_store.n_rows))
    result = tsds.Selector(size=size).select(small_store.root, FOOD)
    info = result.info["calibration"]["alpha"]
    assert result.counts.sum() == size and np.count_nonzero(result.counts) == size  # n distinct draws
    assert np.count_nonzero(result.probabilities) == info["support"] >= size
    assert result.selection.config.preset == "default" and result.C_ == 1.0 and result.sigma_ == 0.3
    assert result.alpha_ == info["alpha"] <= 0.5
    assert info["widened"] == (info["alpha"] < 0.5) and (("lowered from 0.5" in cal.describe_alpha(info))
                                                         == info["widened"])
    if info["widened"]:  # alpha 0.5 really could not hold twice the budget
        assert info["evaluations"][0] == {"alpha": 0.5, "support": info["evaluations"][0]["support"]}
        assert info["evaluations"][0]["support"] < info["target_support"] == 2 * size
    if share >= 0.2:
        assert info["widened"]
    del eligible


def test_default_takes_every_eligible_row_when_the_budget_is_all_of_them(small_store):
    """The widest support: a budget equal to the eligible rows needs alpha 0, and is reported."""
    probe = tsds.Selector(size=10).select(small_store.root, FOOD)
    eligible = probe.info["eligibility"]["eligible_rows"]
    result = tsds.Selector(size=eligible).select(small_store.root, FOOD)
    info = result.info["calibration"]["alpha"]
    assert np.count_nonzero(result.counts) == eligible and info["widened"]
    assert info["support"] >= eligible
    with pytest.raises(ParameterError, match="eligible pool rows"):
        tsds.Selector(size=eligible + 1).select(small_store.root, FOOD)


def test_an_explicit_alpha_is_honoured_not_widened(small_store):
    with pytest.raises(ParameterError, match="positive probability"):
        tsds.Selector(size=300, alpha=0.5).select(small_store.root, FOOD)


def test_default_is_the_explicit_recommended_setting_when_its_support_holds(small_store):
    default = tsds.Selector(size=15).select(small_store.root, FOOD)
    explicit = tsds.Selector(size=15, alpha=0.5, C=1, sigma=0.3, metric="cosine", sampling="without-replacement",
                             one_per_cluster=True, query_turns=True).select(small_store.root, FOOD)
    plain = tsds.Selector(size=15, alpha=0.5, C=1, sigma=0.3, metric="cosine",
                          sampling="without-replacement").select(small_store.root, FOOD)
    assert not default.info["calibration"]["alpha"]["widened"]
    np.testing.assert_array_equal(default.probabilities, explicit.probabilities)
    np.testing.assert_array_equal(default.counts, explicit.counts)
    # an explicit alpha alone keeps the plain draw of the same p
    np.testing.assert_array_equal(default.probabilities, plain.probabilities)
    assert not plain.selection.config.query_turns and "draw" not in plain.info["calibration"]


def test_paper_preset_gives_the_published_defaults(small_store, tmp_path):
    c = tsds.Selector(size=10, preset="paper").config_
    assert (c.metric, c.alpha, c.C, c.sigma, c.sampling, c.alpha_auto) == (
        "euclidean", 0.5, 5.0, 0.75, "with-replacement", None)
    assert make_config(size=10).model_dump(exclude={"preset"}) == c.model_dump(exclude={"preset"})
    assert PRESETS["paper"] == {k: getattr(c, k) for k in PRESETS["paper"]}
    # --paper on the command line is the published setting spelled out
    r1 = _cli("select", "--pool", small_store.root, "--queries", FOOD, "--size", 40, "--paper", "--out", tmp_path / "p")
    r2 = _cli("select", "--pool", small_store.root, "--queries", FOOD, "--size", 40, "--metric", "euclidean",
              "--alpha", 0.5, "--C", 5, "--sigma", 0.75, "--with-replacement", "--out", tmp_path / "e")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["parameters"]["preset"] == "paper" and "alpha" not in m["calibration"]
    assert "published defaults" in r1.stdout
    for name in ("probabilities.npy", "selected_indices.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "p" / name), np.load(tmp_path / "e" / name))


def test_cli_default_reports_what_it_chose(small_store, tmp_path):
    """The README's recommended options without an alpha (which failed at a large budget) now widen the
    support; the summary, the manifest and the dataset card say so."""
    out = tmp_path / "sel"
    r = _cli("select", "--pool", small_store.root, "--queries", FOOD, "--size", 300, "--C", 1, "--sigma", 0.3,
             "--without-replacement", "--out", out)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    a = m["calibration"]["alpha"]
    assert m["parameters"]["alpha"] == a["alpha"] < 0.5 and a["widened"] and a["alpha_max"] == 0.5
    assert (m["parameters"]["preset"], m["parameters"]["metric"], m["result"]["distinct_drawn"]) == ("default", "cosine", 300)
    assert m["result"]["support_size"] == a["support"] >= 300
    flat = " ".join(r.stdout.split())
    assert "parameters: cosine" in flat and "lowered from 0.5" in flat
    card = (out / "README.md").read_text()
    assert "lowered from 0.5" in card and "the default setting" in card


def test_embeddings_keep_the_published_defaults(tmp_path):
    """Pool embeddings (the authors' interface) keep the paper's setting unless asked otherwise."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 16)).astype(np.float32)
    r = tsds.Selector(size=50).select(X, X[:5])
    c = r.selection.config
    assert (c.metric, c.C, c.sigma, c.sampling, c.alpha_auto) == ("euclidean", 5.0, 0.75, "with-replacement", None)
    np.save(tmp_path / "X.npy", X), np.save(tmp_path / "Q.npy", X[:5])
    res = _cli("select", "--candidate-embeddings", tmp_path / "X.npy", "--query-embeddings", tmp_path / "Q.npy",
               "--size", 50, "--out", tmp_path / "o", "-q")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["parameters"]["preset"] == "paper" and m["parameters"]["C"] == 5.0
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "probabilities.npy"), r.probabilities)
    with pytest.raises(ParameterError, match="alpha auto needs a pool store"):
        tsds.Selector(size=50, preset="default").select(X, X[:5])


def test_default_draws_one_row_per_near_duplicate_cluster(tmp_path, static_embedder):
    """Eight exact copies each of ten food texts in a pool of demo rows: the plain draw of the same p (an
    explicit alpha) takes several copies of a text; the default takes at most one per cluster, still n
    distinct rows, and says what it did."""
    from tsds.store import build_store

    held = [json.loads(line)["text"] for line in gzip.open(ROOT / "data/demo/tasks/food/heldout.jsonl.gz", "rt")][:10]
    src = tmp_path / "pool.jsonl"
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt") as f, open(src, "w") as g:
        g.writelines(itertools.islice(f, 600))
        g.writelines(json.dumps({"text": t}) + "\n" for t in held for _ in range(8))
    store = build_store([src], tmp_path / "store", embedder=static_embedder)
    groups = [np.arange(600 + 8 * k, 608 + 8 * k) for k in range(10)]
    default = tsds.Selector(size=40).select(store.root, FOOD)
    plain = tsds.Selector(size=40, alpha=default.alpha_, C=1, sigma=0.3, metric="cosine",
                          sampling="without-replacement").select(store.root, FOOD)
    np.testing.assert_array_equal(default.probabilities, plain.probabilities)
    assert default.counts.sum() == plain.counts.sum() == 40 and np.count_nonzero(default.counts) == 40
    assert max(plain.counts[g].sum() for g in groups) > 1
    assert max(default.counts[g].sum() for g in groups) <= 1
    draw = default.info["calibration"]["draw"]
    assert draw["clusters_with_copies"] >= 1 and draw["draws_changed"] >= 1
    assert "draw" not in plain.info["calibration"] and not plain.selection.config.one_per_cluster
