"""Which pool rows a selection may draw, the same for every method: rows the embedder cannot represent
(all-zero embeddings) are counted at build and left out by default, and decontamination removes the same
rows whichever method runs; the evaluation removes a task's own texts and never scores a selection that
holds a held-out text."""

import gzip
import json
import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsds.methods import METHODS, select_method
from tsds.config import make_config
from tsds.errors import InputError, ParameterError
from tsds.pipeline.decontaminate import normalise
from tsds.store import PoolStore, build_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
FOOD = ROOT / "data" / "demo" / "tasks" / "food"
N = 1500


def _junk(i: int) -> str:
    """Real texts the static embedder has no token for."""
    rng = random.Random(i)
    kind = i % 5
    if kind == 0:
        return "".join(rng.choice("\U0001F600\U0001F389\U0001F525\U0001F680\u2764\uFE0F") for _ in range(3 + i % 4))
    if kind == 1:  # a hex blob: one "word" past the tokenizer's 100-character word limit
        return bytes(rng.randrange(256) for _ in range(60 + i)).hex()
    if kind == 2:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(101 + i))
    if kind == 3:
        return " ".join("".join(rng.choice("ᚠᚢᚦᚨᚱᚲᚷᚹᚺᚾᛁᛃ") for _ in range(5)) for _ in range(3))
    return "\u200b" * (1 + i % 3)


def _near_copy(text: str, i: int) -> str:
    if i % 3 == 0:
        return text
    if i % 3 == 1:
        return "  " + text.upper().replace(" ", "   ") + "\n"
    return text.replace(".", ";")


def _read(path, n=None):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n) if n else iter(int, 1), f)]


@pytest.fixture(scope="module")
def pool(tmp_path_factory, static_embedder):
    """1,500 demo rows, then 40 junk rows, then copies and near copies of 30 held-out and 5 query texts
    of the food task."""
    d = tmp_path_factory.mktemp("elig")
    rows = _read(POOL, N)
    heldout = _read(FOOD / "heldout.jsonl.gz")[:30]
    queries = [json.loads(line) for line in open(FOOD / "queries.jsonl", encoding="utf-8")][:5]
    junk = [{"id": f"junk-{i}", "text": _junk(i), "source": "junk"} for i in range(40)]
    leaks = [{**r, "id": f"leak-{i}", "text": _near_copy(r["text"], i)} for i, r in enumerate(heldout + queries)]
    path = d / "pool.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for r in rows + junk + leaks:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    store = build_store([path], d / "store", embedder=static_embedder, shard_rows=512)
    zero = set(range(N, N + len(junk)))
    leaked = set(range(N + len(junk), N + len(junk) + len(leaks)))
    return store, zero, leaked, d


def cfg(**kw):
    return make_config(**{"size": 100, "seed": 0, **kw})


def test_zero_rows_are_counted_at_build_and_named(pool, static_embedder):
    store, zero, _, _ = pool
    vectors = store.vectors().take(np.arange(store.n_rows))
    assert set(np.flatnonzero(~vectors.any(axis=1)).tolist()) == zero  # the junk really embeds to zeros
    assert store.meta["zero_rows"] == 40
    assert set(store.zero_rows().tolist()) == zero
    assert sum(len(s["zero_rows"]) for s in store.shard_meta()) == 40  # recorded per shard, two shards hold them
    from tsds.pipeline.eligibility import name_rows

    assert name_rows(store, [N])[0].startswith(f"row {N} (pool.jsonl at ")


def test_pool_build_summary_reports_zero_rows(pool, tmp_path):
    _, _, _, d = pool
    junk = tmp_path / "junk.jsonl"
    with open(junk, "w", encoding="utf-8") as f:
        for i, t in enumerate(["A plain sentence about bread.", _junk(0), _junk(3), "Soup is a liquid food."]):
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    res = subprocess.run([sys.executable, "-m", "tsds.cli", "pool", "build", str(junk), "--out", str(tmp_path / "s")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "zero-vector rows 2" in res.stdout
    assert "row 1 (junk.jsonl at " in res.stdout
    assert json.loads((tmp_path / "s" / "store.json").read_text())["zero_rows"] == 2


@pytest.mark.parametrize("method", METHODS)
def test_no_method_selects_a_zero_row_at_the_defaults(pool, static_embedder, method):
    store, zero, _, _ = pool
    kw = {"sampling": "without-replacement"} if method == "tsds" else {}
    sel, info = select_method(method, store, FOOD / "queries.jsonl", cfg(**kw), embedder=static_embedder)
    assert not set(np.flatnonzero(sel.counts).tolist()) & zero
    assert info["eligibility"]["zero_rows"] == {"count": 40, "excluded": True, "examples": info["eligibility"]
                                                ["zero_rows"]["examples"]}
    assert len(info["eligibility"]["zero_rows"]["examples"]) == 10
    if method != "full":
        assert sel.counts.sum() == 100


def test_cosine_metric_works_on_a_store_with_zero_rows(pool, static_embedder):
    store, zero, _, _ = pool
    sel, _ = select_method("tsds", store, FOOD / "queries.jsonl", cfg(metric="cosine", sigma=0.3),
                           embedder=static_embedder)
    assert sel.counts.sum() == 100 and not set(np.flatnonzero(sel.counts).tolist()) & zero


def test_zero_rows_would_take_the_draws_kept(pool, static_embedder):
    """At distance 1 from every query, zero rows soak up draws when kept; the default leaves them out."""
    store, zero, _, _ = pool
    rows = np.array(sorted(zero))
    kept, _ = select_method("tsds", store, FOOD / "queries.jsonl", cfg(sigma=0.0), embedder=static_embedder,
                            keep_zero_rows=True)
    default, _ = select_method("tsds", store, FOOD / "queries.jsonl", cfg(sigma=0.0), embedder=static_embedder)
    assert kept.counts[rows].sum() > 0
    assert default.counts[rows].sum() == 0 and default.probabilities[rows].sum() == 0


def test_a_query_the_embedder_cannot_represent_is_named(pool, static_embedder, tmp_path):
    store, _, _, _ = pool
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"text": "A soup of beans."}) + "\n" + json.dumps({"text": "🎉🎉🎉"}) + "\n")
    for method in ("tsds", "knn"):
        with pytest.raises(InputError, match=r"q\.jsonl: query 1 \('🎉🎉🎉'\) embeds to an all-zero vector"):
            select_method(method, store, q, cfg(), embedder=static_embedder)


def test_npy_cosine_names_the_zero_row(tmp_path):
    from tsds.api import select_embeddings

    rng = np.random.default_rng(0)
    cand = rng.normal(size=(50, 8)).astype(np.float32)
    cand[17] = 0
    np.save(tmp_path / "c.npy", cand)
    np.save(tmp_path / "q.npy", rng.normal(size=(3, 8)).astype(np.float32))
    with pytest.raises(InputError, match=r"c\.npy: row 17 is all zeros"):
        select_embeddings(tmp_path / "c.npy", tmp_path / "q.npy", size=5, metric="cosine")


def test_exclude_removes_the_same_rows_for_every_method(pool, static_embedder, tmp_path):
    store, zero, leaked, _ = pool
    eval_path = tmp_path / "eval.jsonl"
    with open(eval_path, "w", encoding="utf-8") as f:
        for r in _read(FOOD / "heldout.jsonl.gz")[:30]:
            f.write(json.dumps(r) + "\n")
    excluded = {}
    for method in METHODS:
        sel, info = select_method(method, store, FOOD / "queries.jsonl", cfg(), embedder=static_embedder,
                                  exclude=[eval_path], exclude_radius=0.3)
        excluded[method] = info["excluded_rows"]
        assert info["decontamination"]["removed"] >= 30
        assert not set(np.flatnonzero(sel.counts).tolist()) & set(info["excluded_rows"].tolist())
        if method == "full":
            assert np.array_equal(np.flatnonzero(sel.counts == 0), info["excluded_rows"])
    for method in METHODS:
        assert np.array_equal(excluded[method], excluded["tsds"]), method
    planted_heldout = set(range(N + 40, N + 70))
    assert planted_heldout | zero <= set(excluded["tsds"].tolist())


def test_select_cli_accepts_exclude_for_a_baseline(pool, tmp_path):
    store, _, _, _ = pool
    eval_path = tmp_path / "eval.jsonl"
    with open(eval_path, "w", encoding="utf-8") as f:
        for r in _read(FOOD / "heldout.jsonl.gz")[:30]:
            f.write(json.dumps(r) + "\n")
    manifests = {}
    for method in ("tsds", "knn"):
        res = subprocess.run([sys.executable, "-m", "tsds.cli", "select", "--pool", str(store.root), "--queries",
                              str(FOOD / "queries.jsonl"), "--size", "50", "--method", method, "--exclude",
                              str(eval_path), "--exclude-radius", "0.3", "--out", str(tmp_path / method), "-q"],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        manifests[method] = json.loads((tmp_path / method / "manifest.json").read_text())
    assert manifests["knn"]["decontamination"]["removed"] == manifests["tsds"]["decontamination"]["removed"] >= 30
    assert manifests["knn"]["eligibility"]["eligible_rows"] == manifests["tsds"]["eligibility"]["eligible_rows"]
    assert manifests["tsds"]["task"] == "food"


def test_evaluation_removes_the_tasks_texts_for_every_method(pool, static_embedder):
    from tsds.evaluation.harness import PoolView, default_methods, evaluate_methods, load_task

    store, zero, leaked, _ = pool
    view = PoolView(store, embedder=static_embedder)
    task = load_task(FOOD)
    messages = []
    rows = evaluate_methods(view, task, 60, default_methods()[:4], [0], mode="ngram", reference=False,
                            log=messages.append)
    held = {normalise(t) for t in task.heldout}
    for r in rows:
        assert r["decontaminated_rows"] >= len(leaked) and r["zero_rows_excluded"] == 40
        assert r["eligible_rows"] <= store.n_rows - len(leaked) - 40
    assert any(f"decontamination removed {rows[0]['decontaminated_rows']} pool rows" in m for m in messages)
    from tsds.evaluation.harness import select, task_eligibility

    elig = task_eligibility(view, task)
    assert leaked | zero <= set(elig.excluded.tolist())
    for spec in default_methods():
        sel, _ = select(spec, view, task, 60, 0, eligibility=elig)
        chosen = np.flatnonzero(sel.counts)
        assert not set(chosen.tolist()) & (leaked | zero), spec.name
        assert not any(normalise(view.texts[r]) in held for r in chosen), spec.name


def test_evaluation_refuses_to_score_a_selection_holding_heldout(pool, static_embedder):
    from tsds.evaluation.harness import MethodSpec, PoolView, evaluate_methods, load_task

    store, _, _, _ = pool
    view = PoolView(store, embedder=static_embedder)
    task = load_task(FOOD)
    with pytest.raises(InputError, match=r"method knn selected \d+ pool rows whose text is a held-out text of task food .*refusing to score it"):
        evaluate_methods(view, task, 60, [MethodSpec("knn", "knn")], [0], reference=False, decontaminate=False)


def test_random_draws_n_distinct_rows_by_default(pool, static_embedder):
    store, _, _, _ = pool
    sel, info = select_method("random", store, FOOD / "queries.jsonl", make_config(size=1000),
                              embedder=static_embedder)
    assert sel.distinct_selected == 1000 and sel.counts.max() == 1
    assert info["parameters"]["sampling"] == "without-replacement"
    rep, _ = select_method("random", store, FOOD / "queries.jsonl", make_config(size=1000, sampling="with-replacement"),
                           embedder=static_embedder)
    assert rep.counts.sum() == 1000 and rep.distinct_selected < 1000


def test_sigma_auto_does_not_move_with_the_seed(pool, static_embedder):
    store, _, _, _ = pool
    sigmas = set()
    for seed in (0, 1, 7):
        _, info = select_method("tsds", store, FOOD / "queries.jsonl", cfg(seed=seed, sigma_auto=True),
                                embedder=static_embedder)
        sigmas.add(info["calibration"]["sigma"]["sigma"])
        assert info["calibration"]["pool_scale"]["seed"] == 0
    assert len(sigmas) == 1


def test_baselines_record_what_they_used_and_refuse_tsds_parameters(pool, static_embedder, tmp_path):
    from tsds.api import select_text

    store, _, _, _ = pool
    for name, kw in (("alpha", {"alpha": 0.9}), ("sigma", {"sigma": 0.1}), ("C", {"C": 2.0}),
                     ("sigma_auto", {"sigma_auto": True})):
        with pytest.raises(ParameterError, match=f"{name} is a parameter of method tsds; method 'knn' does not use it"):
            select_method("knn", store, FOOD / "queries.jsonl", cfg(**kw), embedder=static_embedder)
    select_text(store, FOOD / "queries.jsonl", out=tmp_path / "knn", config=cfg(), method="knn",
                embedder=static_embedder)
    m = json.loads((tmp_path / "knn" / "manifest.json").read_text())
    assert m["result"]["objective"] is None and m["result"]["level_s"] is None
    assert m["parameters"] == {"method": "knn", "size": 100, "metric": "cosine", "index": "auto",
                               "order": "round-robin over the queries"}
    card = (tmp_path / "knn" / "README.md").read_text()
    head = card.split("## Calibration")[0].replace(str(FOOD), "")  # the path may hold the word itself
    assert "# Selection for food (baseline knn)" in card and "alpha" not in head
    res = subprocess.run([sys.executable, "-m", "tsds.cli", "select", "--pool", str(store.root), "--queries",
                          str(FOOD / "queries.jsonl"), "--size", "20", "--method", "random", "--alpha", "0.9",
                          "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert res.returncode == 2 and "alpha is a parameter of method tsds" in res.stderr
    assert not (tmp_path / "r").exists()


def test_task_is_named_after_its_folder_or_given_name(pool, static_embedder, tmp_path):
    from tsds.evaluation.harness import load_task
    from tsds.api import select_text

    store, _, _, _ = pool
    assert load_task(queries=FOOD / "queries.jsonl", heldout=FOOD / "heldout.jsonl.gz").name == "food"
    assert load_task(FOOD, name="cookery").name == "cookery"
    select_text(store, FOOD / "queries.jsonl", out=tmp_path / "t", config=cfg(sampling="without-replacement"),
                embedder=static_embedder, task_name="cookery")
    assert json.loads((tmp_path / "t" / "manifest.json").read_text())["task"] == "cookery"
    assert "\n# Selection for cookery" in (tmp_path / "t" / "README.md").read_text()


def test_query_checks_apply_to_every_method(pool, static_embedder, tmp_path):
    store, _, _, _ = pool
    q = tmp_path / "queries.jsonl"
    lines = [json.loads(line) for line in open(FOOD / "queries.jsonl", encoding="utf-8")][:6]
    with open(q, "w", encoding="utf-8") as f:
        for r in lines + [lines[0]]:
            f.write(json.dumps(r) + "\n")
    for method in METHODS:
        _, info = select_method(method, store, q, cfg(size=20), embedder=static_embedder)
        assert any(w["kind"] == "duplicate" for w in info["query_warnings"]), method


def test_densities_of_an_older_store_with_zero_rows_are_not_reused(pool):
    """A store built before zero rows were recorded may hold densities that counted them."""
    from dataclasses import replace

    from tsds.pipeline.eligibility import pool_eligibility

    store, _, _, _ = pool
    elig = pool_eligibility(store)
    assert elig.zero_rows_recorded and elig.full_pool_densities
    assert not replace(elig, zero_rows_recorded=False).full_pool_densities
    assert not replace(elig, keep_zero_rows=True).full_pool_densities


def test_zero_rows_of_a_store_built_before_they_were_recorded(pool, tmp_path):
    import shutil

    store, zero, _, _ = pool
    old = tmp_path / "old"
    shutil.copytree(store.root, old)
    for path in (old / "shards").glob("[0-9]*.json"):
        meta = json.loads(path.read_text())
        del meta["zero_rows"]
        meta.pop("checksum", None)  # an older store's shard json: neither zero rows nor a checksum
        path.write_text(json.dumps(meta))
    old_store = PoolStore(old)
    assert not old_store.zero_rows_recorded()
    assert set(old_store.zero_rows().tolist()) == zero  # found by reading the embeddings
