"""The paired differences and t intervals of benchmarks/bench_model.py (the model itself is not needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_model", ROOT / "benchmarks" / "bench_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_model"] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_model", None)


def _row(task, method, seed, nll):
    return {"task": task, "method": method, "seed": seed, "nll": nll}


def test_t_interval_matches_the_textbook_formula(bench):
    values = [-0.12, -0.05, 0.01, -0.08]
    got = bench.t_interval(values)
    a = np.asarray(values)
    half = stats.t.ppf(0.975, 3) * a.std(ddof=1) / np.sqrt(4)
    assert got["n"] == 4 and got["mean"] == pytest.approx(a.mean())
    assert (got["low"], got["high"]) == pytest.approx((a.mean() - half, a.mean() + half))
    # two values: t(0.975, 1) = 12.706, so the interval is 12.706 x sd / sqrt(2) either side
    two = bench.t_interval([0.0, 0.2])
    assert two["high"] - two["mean"] == pytest.approx(12.7062 * np.std([0.0, 0.2], ddof=1) / np.sqrt(2), rel=1e-4)
    one = bench.t_interval([0.3])
    assert one["mean"] == 0.3 and np.isnan(one["low"]) and np.isnan(one["high"])


def test_paired_differences_pair_by_task_and_seed_and_pool_every_pair(bench):
    rows = [_row("food", "none", None, 6.0),  # the pretrained reference has no seed: never paired
            _row("food", "tsds", 0, 5.0), _row("food", "knn", 0, 5.3),
            _row("food", "tsds", 1, 5.1), _row("food", "knn", 1, 5.2),
            _row("food", "tsds", 2, 5.4),  # no knn row for seed 2: left out, not paired with another seed
            _row("zoology", "knn", 0, 4.0), _row("zoology", "tsds", 0, 4.5),
            _row("zoology", "tsds", 1, 4.4), _row("zoology", "knn", 1, 4.2)]
    out = {d["task"]: d for d in bench.paired_differences(rows, "tsds", "knn")}
    assert set(out) == {"food", "zoology", "all"}
    assert out["food"]["seeds"] == [0, 1] and out["food"]["diffs"] == pytest.approx([-0.3, -0.1])
    assert out["zoology"]["diffs"] == pytest.approx([0.5, 0.2])
    assert out["all"]["n"] == 4 and out["all"]["mean"] == pytest.approx((-0.3 - 0.1 + 0.5 + 0.2) / 4)
    assert out["food"]["high"] < 0 or out["food"]["low"] <= 0 <= out["food"]["high"]
    assert bench.verdict(out["all"]) == "**includes 0**"
    assert "tsds lower" in bench.verdict({**out["food"], "low": -0.4, "high": -0.01})


def test_one_task_has_no_pooled_row(bench):
    rows = [_row("food", "tsds", 0, 5.0), _row("food", "random", 0, 5.3)]
    out = bench.paired_differences(rows, "tsds", "random")
    assert [d["task"] for d in out] == ["food"] and out[0]["n"] == 1
    assert bench.verdict(out[0]) == "one pair: no interval"


def _run(rows, steps=50, store="abc"):
    return {"meta": {"recipe": {"steps": steps}, "store_fingerprint": store, "model": "m", "date": "d",
                     "code_digest": "old", "git_head": "g"}, "rows": rows}


def test_merge_keeps_the_earlier_rows_of_the_methods_not_rerun_only(bench):
    earlier = _run([_row("food", "none", None, 5.6), _row("food", "tsds", 0, 5.1), _row("food", "knn", 0, 5.0),
                    _row("food", "random", 0, 5.3)])
    now = _run([_row("food", "none", None, 5.6), _row("food", "tsds", 0, 4.9)])
    merged = bench.merge_rows(now, earlier)
    got = sorted((r["method"], r["nll"]) for r in merged["rows"])
    assert got == [("knn", 5.0), ("none", 5.6), ("random", 5.3), ("tsds", 4.9)]  # the old tsds row is dropped
    assert merged["meta"]["merged"] == {"methods": ["knn", "random"], "tasks": [], "date": "d", "code_digest": "old",
                                        "git_head": "g", "rows": 2}
    assert "The knn, random rows" in bench.merged_note(merged["meta"])


def test_merge_keeps_every_row_of_the_tasks_not_run(bench):
    earlier = _run([_row("food", "none", None, 5.6), _row("food", "tsds", 0, 5.1), _row("food", "knn", 0, 5.0),
                    _row("zoology", "tsds", 0, 4.0), _row("zoology", "knn", 0, 4.1)])
    now = _run([_row("games", "none", None, 6.0), _row("games", "tsds", 0, 5.5), _row("games", "knn", 0, 5.6),
                _row("zoology", "tsds", 0, 3.9)])
    merged = bench.merge_rows(now, earlier)
    got = sorted((r["task"], r["method"], r["nll"]) for r in merged["rows"])
    assert got == [("food", "knn", 5.0), ("food", "none", 5.6), ("food", "tsds", 5.1), ("games", "knn", 5.6),
                   ("games", "none", 6.0), ("games", "tsds", 5.5), ("zoology", "knn", 4.1), ("zoology", "tsds", 3.9)]
    assert merged["meta"]["merged"]["methods"] == ["knn"] and merged["meta"]["merged"]["tasks"] == ["food"]
    note = bench.merged_note(merged["meta"])
    assert "The knn rows" in note and "every row of food" in note


@pytest.mark.parametrize("change", [{"steps": 30}, {"store": "other"}])
def test_merge_refuses_a_run_of_another_recipe_or_store(bench, change):
    earlier = _run([_row("food", "knn", 0, 5.0)], **change)
    with pytest.raises(SystemExit, match="--merge: the earlier run's"):
        bench.merge_rows(_run([_row("food", "tsds", 0, 4.9)]), earlier)
