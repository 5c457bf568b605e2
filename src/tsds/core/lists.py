"""The solver's inputs: neighbour distances checked up front, and the densities read by blocks of columns."""

from __future__ import annotations

import numpy as np

from tsds.errors import ParameterError

SCRATCH = 1 << 16  # about as many values gathered or steps computed at a time (cache-sized, 512 KB)


class Densities:
    """The neighbours' densities, read by blocks of columns: an M x K array, or one density per candidate
    with the M x K neighbour ids, gathered as the blocks are read (no M x K copy of the densities).

    Both forms give the same float64 values, so the solver's results do not depend on the form.
    """

    def __init__(self, values: np.ndarray, ids: np.ndarray | None = None):
        self.values, self.ids = values, ids

    def columns(self, a: int, b: int, out: np.ndarray, transposed: bool = False) -> np.ndarray:
        """Columns a .. b - 1 (M x (b - a), or (b - a) x M when ``transposed``): a view of the M x K array,
        or gathered into ``out``."""
        if self.ids is None:
            block = self.values[:, a:b]
            return block.T if transposed else block
        if not transposed and out.flags.f_contiguous and not out.flags.c_contiguous:
            self.columns(a, b, out.T, transposed=True)  # column-major lists: gathered column by column
            return out
        idx = self.ids[:, a:b].T if transposed else self.ids[:, a:b]
        step = max(1, SCRATCH // max(1, idx.shape[1]))  # np.take copies the ids (and a strided out) first
        for r in range(0, idx.shape[0], step):
            np.take(self.values, idx[r:r + step], out=out[r:r + step], mode="clip")  # ids checked up front
        return out


def validate(distances, densities, neighbours=None) -> tuple[np.ndarray, Densities | None]:
    """Check the shapes and return the distances as float64 and the densities as a column reader.

    The values are checked where the solver reads them, column block by column block (``tsds.core.solver``):
    an answer that stops at column L does not depend on the columns after L + 1, and a pass over a whole
    M x K matrix would cost more than the solve when the support is a small part of the lists.
    """
    D = np.asarray(distances, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] == 0 or D.shape[1] == 0:
        raise ParameterError(f"distances must be a non-empty M x K matrix, got shape {D.shape}")
    if not (D[:, 0] >= 0).all() or not np.isfinite(D[:, 0]).all():  # NaN >= 0 is False
        raise ParameterError("distances must be finite and non-negative")
    if densities is None:
        return D, None
    R = np.asarray(densities, dtype=np.float64)
    if neighbours is None:
        if R.shape != D.shape:
            raise ParameterError(f"densities must have the shape of distances {D.shape}, got {R.shape}")
        return D, Densities(R)  # their values are checked column by column as the solver reads them
    ids = np.asarray(neighbours)
    if R.ndim != 1:
        raise ParameterError(f"densities given with neighbour ids must be one per candidate, got shape {R.shape}")
    if ids.shape != D.shape or not np.issubdtype(ids.dtype, np.integer):
        raise ParameterError(f"neighbour ids must be integers of the shape of distances {D.shape}, "
                             f"got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= R.size):
        raise ParameterError(f"neighbour ids must lie in [0, {R.size}), the candidates with a density")
    return D, Densities(R, ids)
