"""Defects fixed with the layered design: several targets check their queries and rows like one target,
`tsds eval` checks its numbers like `tsds select`, and the report reads pool records the checked way."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tsds
from tsds.api import select_multi_text
from tsds.cli import app
from tsds.config import make_config
from tsds.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "data" / "demo" / "tasks"
JUNK = ["\U0001F600\U0001F389\U0001F525", "\u200b\u200b", "ᚠᚢᚦᚨᚱ ᚲᚷᚹᚺᚾ", "x" * 130]


@pytest.fixture(scope="module")
def pool(tmp_path_factory, static_embedder):
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in itertools.islice(f, 900)]
    return tsds.Pool.build(texts + JUNK, out=tmp_path_factory.mktemp("fix") / "store", embedder=static_embedder)


def _targets(tmp_path, bad_query=False):
    zoo = tmp_path / "zoo.jsonl"
    lines = [json.loads(x) for x in open(TASKS / "zoology" / "queries.jsonl", encoding="utf-8")][:5]
    if bad_query:
        lines.insert(1, {"text": "🎉🎉🎉"})
    zoo.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return [f"{TASKS / 'food' / 'queries.jsonl'}:0.6", f"{zoo}:0.4"]


def test_several_targets_name_a_zero_vector_query(pool, tmp_path):
    with pytest.raises(InputError, match=r"zoo\.jsonl: query 1 \('🎉🎉🎉'\) embeds to an all-zero vector"):
        select_multi_text(pool.store, _targets(tmp_path, bad_query=True), out=tmp_path / "o",
                          config=make_config(size=40, sigma=0.3, C=1.0))
    assert not (tmp_path / "o").exists()


def test_several_targets_leave_out_zero_rows_unless_kept(pool, tmp_path):
    zero = set(pool.store.zero_rows().tolist())
    assert len(zero) == len(JUNK)
    cfg = make_config(size=60, sigma=0.0, alpha=0.0, C=1.0)
    select_multi_text(pool.store, _targets(tmp_path), out=tmp_path / "default", config=cfg)
    m = json.loads((tmp_path / "default" / "manifest.json").read_text())
    assert m["eligibility"]["zero_rows"] == {**m["eligibility"]["zero_rows"], "count": len(JUNK), "excluded": True}
    rows = {json.loads(x)["_tsds_row"] for x in open(tmp_path / "default" / "selected.jsonl", encoding="utf-8")}
    assert not rows & zero
    kept = tsds.Selector(size=60, sigma=0.0, alpha=0.0, C=1.0).select_targets(pool, _targets(tmp_path),
                                                                             keep_zero_rows=True)
    assert kept.info["eligibility"]["zero_rows"]["excluded"] is False
    assert kept.info["eligibility"]["eligible_rows"] == len(pool)


def test_cli_several_targets_accept_keep_zero_rows(pool, tmp_path):
    args = ["select", "--pool", pool.path, "--size", "30", "--sigma", "0", "--out", tmp_path / "o", "-q",
            "--keep-zero-rows"]
    for t in _targets(tmp_path):
        args += ["--queries", t]
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["eligibility"]["zero_rows"]["excluded"] is False


@pytest.mark.parametrize("flag,value,message", [
    ("--budget", "0", "--budget must be above 0"),
    ("--budget", "1.5", "--budget must be at most 1"),
    ("--alpha", "2", "--alpha must be at most 1"),
    ("--C", "0", "--C must be above 0"),
    ("--sigma", "-1", "--sigma must be at least 0"),
    ("--size", "0", "--size must be between 1"),
])
def test_eval_checks_its_numbers_before_any_work(tmp_path, flag, value, message):
    args = ["eval", "--pool", tmp_path / "no-store", "--task", TASKS / "food", flag, value,
            "--out", tmp_path / "rows.json"]
    if flag != "--budget" and flag != "--size":
        args += ["--size", "10"]
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "rows.json").exists()


def test_eval_refuses_a_budget_under_one_row(pool, tmp_path):
    res = CliRunner().invoke(app, ["eval", "--pool", str(pool.path), "--task", str(TASKS / "food"),
                                   "--budget", "0.0001", "--methods", "random", "--seeds", "0"])
    assert res.exit_code == 2 and "less than one row" in res.output, res.output


def test_eval_writes_its_rows_atomically(pool, tmp_path):
    out = tmp_path / "rows.json"
    res = CliRunner().invoke(app, ["eval", "--pool", str(pool.path), "--task", str(TASKS / "food"), "--size", "20",
                                   "--methods", "random", "--seeds", "0", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert {r["method"] for r in rows} == {"none", "random"}
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]   # no temporary file left beside it


def test_the_report_refuses_a_pool_file_changed_after_the_selection(pool, tmp_path, static_embedder):
    from tsds.report import build_report

    store_dir = tmp_path / "store"
    texts = [json.loads(x)["text"] for x in open(pool.path / "source.jsonl", encoding="utf-8")]
    own = tsds.Pool.build(texts, out=store_dir, embedder=static_embedder)
    out = tsds.Selector(size=20, sigma=0.3, C=1.0).select(own, TASKS / "food" / "queries.jsonl").save(tmp_path / "s")
    source = store_dir / "source.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    source.write_text("".join([json.dumps({"text": "changed"}) + "\n"] + lines[1:]), encoding="utf-8")
    with pytest.raises(InputError, match="pool file changed since the store was built"):
        build_report(out)
    assert not (out / "report.html").exists()


def test_cli_report_of_a_baseline_selection(pool, tmp_path):
    res = CliRunner().invoke(app, ["select", "--pool", str(pool.path), "--queries", str(TASKS / "food" / "queries.jsonl"),
                                   "--size", "25", "--method", "random", "--report", "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "o" / "report.html").read_text()
    assert "random (baseline)" in html and "solves no TSDS problem" in html
    card = (tmp_path / "o" / "README.md").read_text()
    assert "drawn uniformly at random" in card and "selected with tsds (TSDS" not in card
