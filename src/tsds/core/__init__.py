"""Pure numerical core: the TSDS solver and sampling. Arrays in, arrays out; no I/O."""

from tsds.core.sampling import draw_with_replacement, draw_without_replacement
from tsds.core.solver import Allocation, allocation_to_probabilities, solve

__all__ = [
    "Allocation",
    "allocation_to_probabilities",
    "draw_with_replacement",
    "draw_without_replacement",
    "solve",
]
