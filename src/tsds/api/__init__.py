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

# Each submodule is imported on first use: `tsds select` on .npy files needs only tsds.api.arrays, and the
# text, store and sweep modules (with pyarrow and the embedders' code) cost it 0.1 s of imports per run.
_LAZY = {"select": "arrays", "select_embeddings": "arrays", "write_selection": "arrays", "Pool": "pool",
         "SelectionResult": "result", "Selector": "selector", "sweep_alpha": "sweep", "select_multi_text": "text",
         "select_text": "text"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tsds.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"tsds.api.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Pool", "SelectionResult", "Selector", "select", "select_embeddings", "select_multi_text", "select_text",
           "sweep_alpha", "write_selection"]
