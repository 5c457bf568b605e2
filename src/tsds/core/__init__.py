"""Pure numerical core: the TSDS solver and sampling. Arrays in, arrays out; no I/O."""

from tsds.core.allocation import Allocation, allocation_to_probabilities
from tsds.core.sampling import draw_with_replacement, draw_without_replacement
from tsds.core.solver import solve

__all__ = [
    "Allocation",
    "allocation_to_probabilities",
    "draw_with_replacement",
    "draw_without_replacement",
    "solve",
]
