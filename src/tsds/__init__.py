"""tsds: task-specific data selection by optimal transport with near-duplicate-aware diversity.

    import tsds
    pool = tsds.Pool.build(texts_or_files, out="store")
    result = tsds.Selector(size=1000).select(pool, "task/queries.jsonl")
    result.records()                        # the selected records (a datasets.Dataset)
    sel = tsds.select(X, Q, size=1000)      # on embedding arrays
"""

import os as _os

# OpenMP threads that spin while waiting steal the cores from BLAS and the embedder on small
# shared machines; set before faiss or torch load their runtime. A user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tsds.errors import InputError, ParameterError, TsdsError  # noqa: E402

__version__ = "0.1.0"

# The facade is imported on first use, so that `tsds --help` and the errors do not load numpy, faiss, pyarrow.
_LAZY = {"Pool": "tsds.api", "SelectionResult": "tsds.api", "Selector": "tsds.api", "select": "tsds.api",
         "select_embeddings": "tsds.api", "write_selection": "tsds.api", "SelectionConfig": "tsds.config",
         "Allocation": "tsds.core", "solve": "tsds.core"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tsds' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "Allocation",
    "InputError",
    "ParameterError",
    "Pool",
    "SelectionConfig",
    "SelectionResult",
    "Selector",
    "TsdsError",
    "select",
    "select_embeddings",
    "solve",
    "write_selection",
]
