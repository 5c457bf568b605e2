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
from tsds.lazy import lazy_attributes as _lazy_attributes  # noqa: E402

__version__ = "0.1.0"

# The facade is imported on first use, so that `tsds --help` and the errors do not load numpy, faiss, pyarrow.
_LAZY = {"Pool": "tsds.api", "SelectionResult": "tsds.api", "Selector": "tsds.api", "select": "tsds.api",
         "select_embeddings": "tsds.api", "write_selection": "tsds.api", "SelectionConfig": "tsds.config",
         "Allocation": "tsds.core", "solve": "tsds.core"}
__getattr__, __dir__ = _lazy_attributes(__name__, _LAZY)

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
