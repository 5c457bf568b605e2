"""Every selection method behind one signature (tsds.methods.base.Method) and one registry, ``METHODS``.

    sel, info = select_method("knn", store, "task/queries.jsonl", config)

Every method selects from the same eligible rows (tsds.pipeline.eligibility: rows with an all-zero
embedding and the rows ``exclude`` removes are left out), and returns the same `Selection` type
(probabilities over the whole pool, draws per candidate), so any selection can be swapped for another,
written by the same writer and evaluated by the same harness. Baselines draw n distinct rows unless
with-replacement is asked for explicitly; a TSDS-only parameter (alpha, C, sigma, ...) given to a baseline
is refused, and its manifest records the parameters it used and no objective.
"""

from __future__ import annotations

from tsds.methods.base import Method
from tsds.methods.baselines import Dsir, Full, Knn, Random
from tsds.methods.run import METHODS, BASELINES, get_method, run_method, select_baseline, select_from_store, select_method
from tsds.methods.tsds import Tsds

__all__ = ["BASELINES", "METHODS", "Dsir", "Full", "Knn", "Method", "Random", "Tsds", "get_method", "run_method",
           "select_baseline", "select_from_store", "select_method"]
