"""The Python facade.

    import tsds
    pool = tsds.Pool.build(["a text", "another text", ...], out="store")     # or files, a Dataset, a DataFrame
    result = tsds.Selector(size=1000, alpha="auto", sigma="auto").select(pool, "task/queries.jsonl")
    result.records()          # a datasets.Dataset of the drawn records (with provenance columns)
    result.indices, result.probabilities, result.alpha_, result.sigma_
    result.save("selection"); result.report("selection")

    sel = tsds.select(X, Q, size=100)        # on embedding arrays
    alloc = tsds.solve(D, rho, alpha=0.5, C=1.0)   # the solver on neighbour lists
"""

from tsds.api.arrays import select, select_embeddings, write_selection
from tsds.api.pool import Pool
from tsds.api.result import SelectionResult
from tsds.api.selector import Selector
from tsds.api.sweep import sweep_alpha
from tsds.api.text import select_multi_text, select_text

__all__ = ["Pool", "SelectionResult", "Selector", "select", "select_embeddings", "select_multi_text", "select_text",
           "sweep_alpha", "write_selection"]
