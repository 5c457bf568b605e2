"""The larger real-text pool's per-source quotas (scripts/build_demo_data.py --pool-size)."""

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "build_demo_data.py"
_spec = importlib.util.spec_from_file_location("build_demo_data", _PATH)
bdd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bdd)
NAMES = list(bdd.POOL_QUOTA)


def test_demo_size_with_room_everywhere_gives_the_demo_quotas():
    avail = {n: 10**6 for n in NAMES}
    assert bdd.scale_quotas(avail, sum(bdd.POOL_QUOTA.values())) == bdd.POOL_QUOTA


def test_sources_that_run_out_give_all_they_have_and_the_rest_is_shared():
    avail = {"wordnet": 116694, "gcide": 179517, "foldoc": 11377, "fortunes": 14696, "debian": 63116,
             "chatterbot": 894}
    q = bdd.scale_quotas(avail, 200000)
    assert sum(q.values()) == 200000
    assert (q["foldoc"], q["fortunes"], q["chatterbot"]) == (11377, 14696, 894)
    assert abs(q["wordnet"] / 12000 - q["debian"] / 5000) < 1e-3


def test_more_than_available_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        bdd.scale_quotas({n: 10 for n in NAMES}, 61)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=len(NAMES), max_size=len(NAMES)), st.data())
def test_quotas_sum_to_the_size_and_never_exceed_a_source(sizes, data):
    avail = dict(zip(NAMES, sizes))
    total = data.draw(st.integers(1, max(1, sum(sizes))))
    if sum(sizes) == 0:
        return
    q = bdd.scale_quotas(avail, total)
    assert sum(q.values()) == total
    assert all(0 <= q[n] <= avail[n] for n in NAMES)
