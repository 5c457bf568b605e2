"""The query-turns draw: n distinct rows taken in turns over the queries of the transport plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tsds
from tsds.config import make_config
from tsds.core.sampling import draw_query_turns
from tsds.errors import ParameterError

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "data" / "demo" / "tasks"


@pytest.mark.parametrize("bad", ["yes", 1, ""])
def test_query_turns_must_be_true_or_false(bad):
    with pytest.raises(ParameterError, match=r"^query_turns: Input should be a valid boolean"):
        make_config(size=10, query_turns=bad)


def test_turns_give_each_query_its_share_of_distinct_rows():
    # queries 0 and 1 share one list; query 2 has its own: each query takes 2 of the 6 draws
    ids = np.array([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]])
    w = np.ones(ids.shape)
    counts = draw_query_turns(ids, w, 6, 0, n_candidates=16)
    assert counts.sum() == 6 and set(np.flatnonzero(counts)) == {0, 1, 2, 3, 10, 11}
    # the plan bounds a query's reach: past its support the other queries take the turns
    w[2, 1:] = 0
    assert set(np.flatnonzero(draw_query_turns(ids, w, 6, 0, n_candidates=16))) == {0, 1, 2, 3, 4, 10}
    # one row per cluster while distinct clusters last (rows 0 and 1 are copies), then the skipped row
    labels = np.arange(16)
    labels[1] = 0
    w = np.ones(ids.shape)
    assert set(np.flatnonzero(draw_query_turns(ids, w, 6, 0, n_candidates=16, clusters=labels))) == {0, 2, 3, 4, 10, 11}
    only = np.array([[0, 1]]), np.ones((1, 2))
    assert set(np.flatnonzero(draw_query_turns(*only, 2, 0, n_candidates=2, clusters=np.array([0, 0])))) == {0, 1}
    with pytest.raises(ParameterError, match="size 3 is larger than the 2 candidates with positive probability"):
        draw_query_turns(*only, 3, 0, n_candidates=2)
    with pytest.raises(ParameterError, match="do not match the plan"):
        draw_query_turns(ids, np.ones((3, 2)), 2, 0, n_candidates=16)


def test_queries_sharing_their_neighbours_keep_their_share(small_store):
    """Five identical food queries and one computing query: the plan spreads each query's mass over the
    same number of neighbours, so the five share one neighbourhood and a draw of a support of n (the
    previous default's support, drawn in proportion to p) gives the lone query about half the rows. In turns (the default), each of the six
    queries takes a sixth."""
    food = json.loads((TASKS / "food" / "queries.jsonl").read_text().splitlines()[1])["text"]
    net = json.loads((TASKS / "computing-networking" / "queries.jsonl").read_text().splitlines()[0])["text"]
    queries = [food] * 5 + [net]
    n = 120
    whole = tsds.Selector(size=n, support_multiple=1).select(small_store.root, queries)
    turns = tsds.Selector(size=n).select(small_store.root, queries)

    def lone_share(result):
        q, _ = result.selection.nearest_query(np.flatnonzero(result.counts))
        return float(np.mean(q == 5))

    assert np.count_nonzero(turns.counts) == n and turns.info["calibration"]["draw"]["rule"].startswith("in turns")
    assert lone_share(whole) > 0.4
    assert abs(lone_share(turns) - 1 / 6) < 0.05
