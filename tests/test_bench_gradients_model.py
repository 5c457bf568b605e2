"""The plan, time limit and report of benchmarks/bench_gradients_model.py on a tiny results file (no model)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gradients_model",
                                                  ROOT / "benchmarks" / "bench_gradients_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gradients_model"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_gradients_model", None)
        sys.modules.pop("bench_model", None)


def test_plan_runs_every_cell_of_a_seed_before_the_next_seed(bench):
    cells = bench.plan(seeds=(0, 1), tasks=("food", "games"), features=("static", "gradients-centred"))
    methods = ["random", "tsds static", "knn static", "tsds gradients-centred", "knn gradients-centred"]
    assert len(cells) == 2 * 2 * 5 and len(set(cells)) == len(cells)
    assert cells[:5] == [(0, "food", m) for m in methods]
    assert [s for s, _, _ in cells] == [0] * 10 + [1] * 10
    assert cells[5:10] == [(0, "games", m) for m in methods]


def test_no_cell_starts_that_would_end_past_the_limit(bench):
    assert bench.fits(100.0, None, 1e9)
    assert bench.fits(100.0, 200.0, 100.0)  # ends exactly at the limit
    assert not bench.fits(100.0, 200.0, 100.5)
    # before any cell the default estimate; then the slowest cell of the run, not the mean
    assert bench.cell_estimate([], 96.0) == 96.0
    assert bench.cell_estimate([80.0, 130.0, 90.0], 96.0) == 130.0


def _row(task, method, seed, nll, label=None):
    return {"task": task, "method": method, "seed": seed, "nll": nll, "label_share": label, "epochs": 2.0,
            "cell_seconds": 90.0 if seed is not None else None}


def _data(rows):
    plan = [[s, t, m] for s in (0, 1, 2) for t in ("food", "zoology")
            for m in ("random", "tsds static", "knn static", "tsds gradients-centred", "knn gradients-centred")]
    meta = {"command": "python benchmarks/bench_gradients_model.py run --minutes 5", "date": "2026-12-03 15:00 UTC",
            "model": "m.gguf", "code_digest": "abc", "git_head": "0123456789ab", "features": ["static",
            "gradients-centred"], "tsds": {"alpha": 0.5}, "plan": plan,
            "recipe": {"size": 100, "train_layers": 2, "lr": 3e-4, "steps": 50, "batch": 8, "seq_len": 64,
                       "heldout": 100}}
    return {"meta": meta, "rows": rows}


def test_report_of_a_partial_grid_names_what_ran_and_pairs_by_task_and_seed(bench, tmp_path):
    rows = [_row("food", "none", None, 6.0), _row("zoology", "none", None, 5.0)]
    for t, off in (("food", 0.0), ("zoology", 0.5)):
        for s in (0, 1):
            rows += [_row(t, "random", s, 5.5 + off), _row(t, "tsds static", s, 5.0 + off + 0.01 * s, 0.7),
                     _row(t, "knn static", s, 5.02 + off, 0.8),
                     _row(t, "tsds gradients-centred", s, 5.1 + off + 0.02 * s, 0.4)]
    rows.append(_row("food", "knn gradients-centred", 0, 5.2, 0.5))  # seed 1 and zoology's never ran
    rows.append(_row("food", "random", 2, 5.5))  # a seed barely started: the cells that ran are named
    path = tmp_path / "gradients_model.json"
    path.write_text(json.dumps(_data(rows)))
    doc = tmp_path / "page.md"
    doc.write_text("# Page\n\nbefore\n<!-- model:begin -->\nold table\n<!-- model:end -->\nafter\n")
    block = bench.report(path, doc)
    text = doc.read_text()
    assert text.startswith("# Page\n\nbefore\n<!-- model:begin -->\n") and text.endswith("<!-- model:end -->\nafter\n")
    assert "old table" not in text and block in text
    assert "seed 0: 9 of 10 cells (not run: zoology knn gradients-centred)" in block
    assert "seed 1: 8 of 10 cells (not run: food knn gradients-centred, zoology knn gradients-centred)" in block
    assert "seed 2: 1 of 10 cells (ran: food random)." in block
    lines = block.splitlines()
    # gradients-centred tsds - static tsds: +0.10 and +0.11 on each task; the pooled row has all 4 pairs
    food = next(x for x in lines if x.startswith("| tsds gradients-centred − tsds static | food |"))
    assert "| 2 | +0.100, +0.110 | +0.105 |" in food
    pooled = next(x for x in lines if x.startswith("| tsds gradients-centred − tsds static | all |"))
    assert "| 4 |" in pooled and "| +0.105 |" in pooled and "excludes 0 (tsds gradients-centred higher)" in pooled
    one = next(x for x in lines if x.startswith("| knn gradients-centred − knn static | food |"))
    assert "| 1 | +0.180 |" in one and "one pair: no interval" in one
    assert not any(x.startswith("| knn gradients-centred − knn static | all |") for x in lines)
    nll = next(x for x in lines if x.startswith("| zoology | tsds gradients-centred |"))
    assert "| 0,1 | 5.610 ± 0.014 | +0.610 |" in nll and nll.endswith("| 0.40 |")


def test_report_refuses_a_page_without_its_markers(bench, tmp_path):
    path = tmp_path / "gradients_model.json"
    path.write_text(json.dumps(_data([_row("food", "none", None, 6.0)])))
    doc = tmp_path / "page.md"
    doc.write_text("# Page\n")
    with pytest.raises(SystemExit, match="model:begin"):
        bench.report(path, doc)
    assert doc.read_text() == "# Page\n"
