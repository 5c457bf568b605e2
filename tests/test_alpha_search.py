"""Alpha auto found from above (tsds.pipeline.alpha_search): the same alpha, probabilities and draw as the
bisection that solved every trial on fully computed lists, with far fewer densities and solves, cold.
On the real rows of the ``small_store`` fixture (1,500 demo rows, exact index) and the static embedder."""

from pathlib import Path

import numpy as np
import pytest

from tsds.config import SelectionConfig, apply_preset
from tsds.core import allocation_to_probabilities
from tsds.pipeline import autoparams as cal
from tsds.pipeline.alpha_search import bisection_answer, level_bound
from tsds.pipeline.prepare import prepare_pool
from tsds.pipeline.queries import embed_queries
from tsds.pipeline.select import DensityCache, draw_counts, select_on_index
from tsds.pipeline.stages import StageLog

TASKS = Path(__file__).resolve().parent.parent / "data" / "demo" / "tasks"


def _prepared(store, embedder, size, task, **given):
    config = SelectionConfig(**apply_preset({"size": size, **given}, "default"))
    pool = prepare_pool(store, config, embedder=embedder, stages=StageLog(measure_memory=False), densities=False)
    q = embed_queries(store, TASKS / task / "queries.jsonl", embedder).vectors
    return pool, q


def _new(pool, q):
    """The selection as tsds select makes it, with no density computed before (cold)."""
    cache = DensityCache(pool.index.ntotal)
    sel, info = cal.select_auto_alpha(pool.index, q, pool.config, cache=cache, stages=StageLog(measure_memory=False))
    return sel, info, cache


def _old(pool, q):
    """The bisection as it was: every trial solved on lists with every density computed, K grown by the
    widest trial, and the selection solved on those lists. Returns (alpha, p, counts, density points)."""
    config = pool.config
    cache = DensityCache(pool.index.ntotal)
    upper = config.alpha_auto_max
    target = min(int(np.ceil(config.alpha_auto * config.size)), pool.index.available)
    first = select_on_index(pool.index, q, config.model_copy(update={"alpha": upper}), density_cache=cache,
                            draw=False, stages=StageLog(measure_memory=False))
    assert np.count_nonzero(first.probabilities) < target  # the cases below are all widened
    nb = cal.Neighbours(pool.index, q, metric=config.metric, sigma=config.sigma, initial_k=first.k_used, cache=cache,
                        cap=config.density_cap, recall=(config.recall_target, config.seed))
    alpha, _ = cal._bisect(lambda a: int(np.count_nonzero(nb.probabilities(nb.solve(a, config.C)))), target, upper,
                           [])
    p = nb.probabilities(nb.solve(alpha, config.C))
    return alpha, p, draw_counts(p, config.model_copy(update={"alpha": alpha})), cache.computed


@pytest.mark.parametrize("task,size", [("food", 250), ("food", 400), ("games", 300), ("zoology", 350), ("science-quotes", 300)])
def test_the_search_from_above_gives_the_bisections_alpha_probabilities_and_draw(small_store, static_embedder,
                                                                                  task, size):
    pool, q = _prepared(small_store, static_embedder, size, task)
    sel, info, _ = _new(pool, q)
    alpha, p, counts, _ = _old(pool, q)
    assert info["widened"] and info["alpha"] == alpha < 0.5
    assert np.array_equal(sel.probabilities, p)
    assert np.array_equal(sel.counts, counts)
    assert info["support"] == np.count_nonzero(p) >= size


def test_the_search_from_above_computes_only_the_densities_the_selection_reads(small_store, static_embedder):
    """Cold, the densities computed are those the final allocation reads (each list up to its support and
    the breakpoint after it; with the first ``initial_k`` of each list, which the first solve computes) and
    a small margin; the bisection computed every density of the widest trial's lists, half as many more.
    The predicted alpha is checked by two solves, with no other trial."""
    pool, q = _prepared(small_store, static_embedder, 300, "food")
    sel, info, cache = _new(pool, q)
    ids, support = sel.neighbour_ids, sel.allocation.support
    reads = np.unique(np.concatenate([ids[j, :min(ids.shape[1], s + 1)] for j, s in enumerate(support)]
                                     + [ids[:, :pool.config.initial_k].ravel()])).size
    _, _, _, old_points = _old(pool, q)
    assert info["widened"] and reads >= info["target_support"] >= 300
    assert cache.computed <= 1.05 * reads + 8, (cache.computed, reads)
    assert old_points > 1.4 * reads  # what the change saves (735 against 472)
    assert len(info["evaluations"]) == 3  # alpha_max, then the predicted alpha and the grid point above it
    target = info["target_support"]
    assert [e["support"] >= target for e in info["evaluations"]] == [False, False, True]


def test_the_prediction_is_the_bisections_answer_on_lists_with_every_density(small_store, static_embedder):
    """``level_bound`` on lists with every density known: the alphas below its bound reach the target and
    the grid point at or above it does not (the solver decides), for several targets."""
    pool, q = _prepared(small_store, static_embedder, 200, "games")
    config = pool.config
    nb = cal.Neighbours(pool.index, q, metric=config.metric, sigma=config.sigma, initial_k=256)
    for target in (250, 400, 700):
        what, bound = level_bound(nb.D, nb.ids, nb.R, target, config.C)
        assert what == "alpha"
        lo, hi = bisection_answer(0.5, cal.ALPHA_STEPS, bound)

        def support(a):
            alloc = nb.solve(a, config.C)
            return np.count_nonzero(allocation_to_probabilities(nb.ids, alloc, pool.index.ntotal))

        assert support(hi) < target <= support(lo), (target, lo, hi)


@pytest.mark.parametrize("wrong", [None, 0.001, 0.2, 0.499])
def test_a_wrong_prediction_costs_solves_not_the_answer(small_store, static_embedder, monkeypatch, wrong):
    """Whatever the prediction says (none, far too low, near, too high), the bisection decides: the same
    alpha, probabilities and draw as with the real prediction."""
    pool, q = _prepared(small_store, static_embedder, 300, "games")
    right, info_right, _ = _new(pool, q)
    monkeypatch.setattr(cal, "predict", lambda lists, target: wrong)
    sel, info, _ = _new(pool, q)
    assert info["alpha"] == info_right["alpha"] and info["support"] == info_right["support"]
    assert np.array_equal(sel.probabilities, right.probabilities) and np.array_equal(sel.counts, right.counts)
    assert len(info["evaluations"]) > len(info_right["evaluations"])
