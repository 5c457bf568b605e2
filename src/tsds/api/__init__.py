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

from tsds.lazy import lazy_attributes as _lazy_attributes

# Each submodule is imported on first use: `tsds select` on .npy files needs only tsds.api.arrays, and the
# text, store and sweep modules (with pyarrow and the embedders' code) cost it 0.1 s of imports per run.
_LAZY = {"select": "tsds.api.arrays", "select_embeddings": "tsds.api.arrays", "write_selection": "tsds.api.arrays",
         "Pool": "tsds.api.pool", "SelectionResult": "tsds.api.result", "Selector": "tsds.api.selector",
         "sweep_alpha": "tsds.api.sweep", "select_multi_text": "tsds.api.text", "select_text": "tsds.api.text"}
__getattr__, __dir__ = _lazy_attributes(__name__, _LAZY)

__all__ = ["Pool", "SelectionResult", "Selector", "select", "select_embeddings", "select_multi_text", "select_text",
           "sweep_alpha", "write_selection"]
