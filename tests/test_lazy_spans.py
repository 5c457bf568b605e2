"""The lazy densities' bookkeeping reads only the columns each list still needs: the ids of a span of columns
per list, and whether a span holds a density not computed yet, against masks over every column."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tsds.pipeline.select import DensityCache, _spans, _unknown_in


@st.composite
def _lists(draw):
    m = draw(st.integers(1, 12))
    k = draw(st.integers(1, 40))
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ids = np.asfortranarray(rng.integers(0, n, size=(m, k)).astype(np.int32))
    start = rng.integers(0, k + 1, size=m)
    stop = rng.integers(0, k + 1, size=m)  # stop < start too: an empty span
    known = rng.random(n) < draw(st.floats(0.0, 1.0))
    return ids, start, stop, known


@settings(max_examples=200, deadline=None)
@given(_lists())
def test_spans_and_unknown_match_masks_over_every_column(case):
    ids, start, stop, known = case
    by_column = ids.T
    cols = np.arange(ids.shape[1])
    inside = (cols[:, None] >= start[None, :]) & (cols[:, None] < stop[None, :])  # K x M

    got = _spans(by_column, start, stop)
    assert got.dtype == ids.dtype
    assert sorted(got.tolist()) == sorted(by_column[inside].tolist())

    cache = DensityCache(known.size)
    cache.values[known] = 1.5
    expected = (np.isnan(cache.values)[by_column] & inside).any(axis=0)
    assert np.array_equal(_unknown_in(cache, by_column, start, stop), expected)
