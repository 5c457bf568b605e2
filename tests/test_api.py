"""The Python facade: tsds.Pool, tsds.Selector and the result, on real stores built from real demo rows."""

from __future__ import annotations

import gzip
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tsds
from tsds.errors import InputError, ParameterError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo"
FOOD = DEMO / "tasks" / "food" / "queries.jsonl"


def _rows(n=800):
    with gzip.open(DEMO / "pool.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def rows():
    return _rows()


@pytest.fixture(scope="module")
def text_pool(rows, tmp_path_factory, static_embedder):
    return tsds.Pool.build([r["text"] for r in rows], out=tmp_path_factory.mktemp("api") / "store",
                           embedder=static_embedder)


def _food_texts():
    return [json.loads(line)["text"] for line in open(FOOD, encoding="utf-8")]


def test_a_pool_from_strings_keeps_its_texts_in_its_folder_and_resumes(text_pool, rows, static_embedder):
    source = text_pool.path / "source.jsonl"
    assert [json.loads(line)["text"] for line in open(source, encoding="utf-8")] == [r["text"] for r in rows]
    assert len(text_pool) == len(rows) and text_pool.store.files[0]["path"] == str(source.resolve())
    again = tsds.Pool.build([r["text"] for r in rows], out=text_pool.path, embedder=static_embedder)
    assert again.store.meta["last_build"]["embedded_shards"] == 0        # the same texts: nothing re-embedded
    with pytest.raises(ParameterError, match="holds a store of other texts"):
        tsds.Pool.build(["other", "texts"], out=text_pool.path, embedder=static_embedder)
    assert [json.loads(line)["text"] for line in open(source, encoding="utf-8")] == [r["text"] for r in rows]


def test_select_for_query_strings_returns_checked_records(text_pool):
    result = tsds.Selector(size=40, sigma=0.3, C=1.0).select(text_pool, _food_texts())
    recs = result.records()
    assert len(recs) == 40 == result.indices.size == int(result.counts.sum())
    assert sorted(recs["_tsds_row"]) == result.indices.tolist()
    texts = [json.loads(line)["text"] for line in open(text_pool.path / "source.jsonl", encoding="utf-8")]
    assert all(texts[r] == t for r, t in zip(recs["_tsds_row"], recs["text"]))
    assert result.sigma_ == 0.3 and result.alpha_ == 0.5 and result.C_ == 1.0 and result.objective_ > 0
    assert abs(result.probabilities.sum() - 1) < 1e-9


def test_auto_parameters_are_resolved_on_the_result(text_pool):
    result = tsds.Selector(size=30, alpha="auto", sigma="auto").select(text_pool, _food_texts())
    cal = result.info["calibration"]
    assert result.sigma_ == cal["sigma"]["sigma"] > 0 and result.alpha_ == cal["alpha"]["alpha"]
    assert not hasattr(result, "sigma_auto")


def test_queries_as_path_list_dataset_and_array_select_the_same(text_pool, static_embedder):
    import datasets

    texts = _food_texts()
    sel = tsds.Selector(size=25, sigma=0.3, C=1.0, seed=3)
    by_path = sel.select(text_pool, FOOD)
    by_list = sel.select(text_pool, texts)
    by_ds = sel.select(text_pool, datasets.Dataset.from_list([{"text": t} for t in texts]))
    by_array = sel.select(text_pool, static_embedder.embed(texts))
    for other in (by_list, by_ds, by_array):
        assert np.array_equal(other.probabilities, by_path.probabilities)
        assert np.array_equal(other.indices, by_path.indices)
    with pytest.raises(InputError, match="expected an array of shape"):
        sel.select(text_pool, np.ones((3, 5), np.float32))


def test_a_pool_from_a_dataset_and_a_dataframe_keeps_every_field(rows, tmp_path, static_embedder):
    import datasets
    import pandas as pd

    recs = [{"text": r["text"], "source": r["source"], "label": r["label"]} for r in rows[:300]]
    for name, data in (("ds", datasets.Dataset.from_list(recs)), ("df", pd.DataFrame(recs))):
        pool = tsds.Pool.build(data, out=tmp_path / name, embedder=static_embedder)
        got = tsds.Selector(size=10, method="random").select(pool, _food_texts()).records()
        assert {"text", "source", "label", "_tsds_row"} <= set(got.column_names)
        assert all(recs[r]["source"] == s for r, s in zip(got["_tsds_row"], got["source"]))


def test_swapping_the_method_keeps_the_interface(text_pool):
    from tsds.methods import METHODS, Method

    assert all(isinstance(m, Method) and m.name == name and m.description for name, m in METHODS.items())
    for method in ("random", "knn", "dsir", "full"):
        result = tsds.Selector(size=20, method=method).select(text_pool, _food_texts())
        assert result.method_ == method and result.objective_ is None and result.alpha_ is None
        assert result.selection.allocation is None      # a baseline solves no TSDS problem
        assert len(result.records()) == len(result)
    with pytest.raises(ParameterError, match="alpha is a parameter of method tsds"):
        tsds.Selector(size=20, alpha=0.3, method="knn").select(text_pool, _food_texts())
    with pytest.raises(ParameterError, match="method must be one of"):
        tsds.Selector(size=20, method="bogus")


def test_save_and_report_of_a_baseline_name_its_method(text_pool, tmp_path):
    result = tsds.Selector(size=20, method="knn").select(text_pool, FOOD)
    out = result.save(tmp_path / "knn")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "knn" and manifest["result"]["objective"] is None
    card = (out / "README.md").read_text()
    assert "selected with tsds (TSDS" not in card and "baseline knn" in card
    page = result.report(out)
    html = page.read_text()
    assert page.is_file() and "knn (baseline)" in html and "solves no TSDS problem" in html


def test_the_tsds_card_still_says_tsds(text_pool, tmp_path):
    out = tsds.Selector(size=20).select(text_pool, FOOD).save(tmp_path / "t")
    assert "Training data selected with tsds (TSDS" in (out / "README.md").read_text()


def test_arrays_through_the_selector_and_select():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 8)).astype(np.float32)
    a = tsds.Selector(size=30, sigma=0.5).select(X, X[:5])
    b = tsds.select(X, X[:5], size=30, sigma=0.5)
    assert np.array_equal(a.probabilities, b.probabilities) and a.sigma_ == 0.5
    with pytest.raises(ParameterError, match="needs a pool store"):
        a.records()
    with pytest.raises(ParameterError, match="needs a pool store"):
        tsds.Selector(size=30, method="knn").select(X, X[:5])


def test_select_embeddings_refuses_keywords_beside_a_config():
    X = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    with pytest.raises(ParameterError, match="not both"):
        tsds.select_embeddings(X, X[:2], config=tsds.SelectionConfig(size=5), alpha=0.9)


def test_the_quickstart_example_runs(tmp_path):
    env = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Dataset(" in run.stdout and "knn: 50 rows" in run.stdout
    assert (tmp_path / "selection" / "selected.jsonl").is_file()
    assert sum(1 for _ in open(tmp_path / "selection" / "selected.jsonl")) == 50
