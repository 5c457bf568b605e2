"""tsds: task-specific data selection by optimal transport with near-duplicate-aware diversity.

    import tsds
    sel = tsds.select_embeddings("pool.npy", "task.npy", size=1000, out="selection")
"""

from tsds.api import select_embeddings, write_selection
from tsds.config import SelectionConfig
from tsds.core import Allocation, solve
from tsds.errors import InputError, ParameterError, TsdsError

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "InputError",
    "ParameterError",
    "SelectionConfig",
    "TsdsError",
    "select_embeddings",
    "solve",
    "write_selection",
]
