"""Two target tasks in one selection: the budget split in the given proportions, shared densities, overlaps."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tsds.config import make_config
from tsds.errors import ParameterError
from tsds.api import select_multi_text
from tsds.pipeline.multi import TARGET_COLUMN, parse_target, split_budget
from tsds.store import build_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
TASKS = ROOT / "data" / "demo" / "tasks"


@pytest.fixture(scope="module")
def store(tmp_path_factory, static_embedder):
    d = tmp_path_factory.mktemp("multi")
    path = d / "pool.jsonl"
    with gzip.open(POOL, "rt", encoding="utf-8") as f, open(path, "w", encoding="utf-8") as g:
        for _, line in zip(range(5000), f):
            g.write(line)
    return build_store([path], d / "store", embedder=static_embedder, shard_rows=1000)


def test_split_and_parse():
    assert split_budget(100, [0.7, 0.3]) == [70, 30]
    assert split_budget(10, [1, 1, 1]) == [4, 3, 3] and sum(split_budget(7, [0.5, 0.25, 0.25])) == 7
    assert parse_target("a/b.jsonl:0.25") == ("a/b.jsonl", 0.25)
    assert parse_target("a/b.jsonl") == ("a/b.jsonl", 1.0)
    with pytest.raises(ParameterError):
        parse_target("a.jsonl:-1")


def _records(out):
    return [json.loads(line) for line in open(out / "selected.jsonl", encoding="utf-8")]


@pytest.mark.parametrize("sampling", ["without-replacement", "with-replacement"])
def test_two_targets_get_their_proportions(store, tmp_path, sampling):
    food, zoo = TASKS / "food" / "queries.jsonl", TASKS / "zoology" / "queries.jsonl"
    out = tmp_path / "sel"
    multi = select_multi_text(store, [f"{food}:0.7", f"{zoo}:0.3"], out=out,
                              config=make_config(size=120, C=1.3, sigma=0.25, sampling=sampling))
    recs = _records(out)
    by = {t: sum(r[TARGET_COLUMN] == t for r in recs) for t in ("food", "zoology")}
    assert by == {"food": 84, "zoology": 36}
    if sampling == "without-replacement":
        assert len({r["_tsds_row"] for r in recs}) == 120  # distinct across targets too
    # each target's rows are attributed to that target's own queries
    food_q = {json.loads(line)["text"] for line in open(food)}
    assert all(r["_tsds_nearest_query"] in food_q for r in recs if r[TARGET_COLUMN] == "food")
    assert not any(r["_tsds_nearest_query"] in food_q for r in recs if r[TARGET_COLUMN] == "zoology")
    m = json.loads((out / "manifest.json").read_text())
    assert [t["share"] for t in m["targets"]] == [0.7, 0.3]
    assert m["overlaps"][0]["a"] == "food" and "support_overlap" in m["overlaps"][0]
    assert m["records"]["by_target"] == by
    p = np.load(out / "probabilities.npy")
    assert p.sum() == pytest.approx(1.0)
    assert np.allclose(p, 0.7 * multi.selections[0].probabilities + 0.3 * multi.selections[1].probabilities)
    # shared densities: both targets read the same cache (one object, computed once per candidate)
    assert multi.selections[0].density_cache is multi.selections[1].density_cache


def test_cli_two_targets(store, tmp_path):
    from typer.testing import CliRunner

    from tsds.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["select", "--pool", str(store.root),
                                   "--queries", f"{TASKS / 'food' / 'queries.jsonl'}:0.5",
                                   "--queries", f"{TASKS / 'games' / 'queries.jsonl'}:0.5",
                                   "--size", "40", "--C", "1.3", "--sigma", "0.25", "--without-replacement",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "target food" in res.output and "overlap food / games" in res.output
    recs = _records(out)
    assert sum(r[TARGET_COLUMN] == "games" for r in recs) == 20
