"""A seeded sparse Johnson-Lindenstrauss projection that is never held as a dense matrix.

Each input coordinate i (a LoRA parameter) is sent to ``nnz`` output coordinates, one in each of
``nnz`` equal blocks of the output, with a random sign, scaled by 1/sqrt(nnz) (Kane and Nelson's block
construction of a sparse JL transform). Bucket and sign come from a counter-based hash
(splitmix64 of ``seed``, block and i) computed with unsigned 64-bit integer arithmetic, so the matrix
is the same on every machine and with every numpy version, and costs O(nnz * n_in) memory instead of
dim * n_in. E<Px, Py> = <x, y>; the error of an inner product shrinks like ||x|| ||y|| / sqrt(dim).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import numpy as np

from tsds.errors import ParameterError

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


class SparseProjection:
    """``project(G)``: (batch, n_in) float rows -> (batch, dim) float32, the same matrix everywhere."""

    def __init__(self, n_in: int, dim: int, *, seed: int = 0, nnz: int = 4) -> None:
        if dim < 1 or nnz < 1 or dim % nnz:
            raise ParameterError(f"projection dim ({dim}) must be a positive multiple of nnz ({nnz})")
        if n_in < 1:
            raise ParameterError("projection needs at least one input coordinate")
        if not 0 <= seed < 2**32:
            raise ParameterError(f"projection seed must be in [0, 2**32), got {seed}")
        self.n_in, self.dim, self.seed, self.nnz = int(n_in), int(dim), int(seed), int(nnz)
        block = dim // nnz
        i = np.arange(n_in, dtype=np.uint64)
        rows, signs = [], []
        for j in range(nnz):
            key = np.uint64((self.seed << 32) ^ (j << 24))
            h = splitmix64(splitmix64(i ^ key) ^ np.uint64(self.seed))
            rows.append((j * block + (h >> np.uint64(1)) % np.uint64(block)).astype(np.int64))
            signs.append(np.where(h & np.uint64(1), 1.0, -1.0))
        self.rows = np.stack(rows)                      # (nnz, n_in) output coordinate of each input
        self.signs = np.stack(signs) / np.sqrt(nnz)     # (nnz, n_in) +-1/sqrt(nnz)
        self._csr: dict[str, Any] = {}
        digest = hashlib.sha256(self.rows.tobytes() + self.signs.tobytes()).hexdigest()
        self.sha256 = digest

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "sparse-jl-splitmix64", "seed": self.seed, "nnz": self.nnz, "n_in": self.n_in,
                "dim": self.dim, "sha256": self.sha256}

    def dense(self) -> np.ndarray:
        """The (dim, n_in) matrix itself, float64; only for small n_in (tests, checks)."""
        m = np.zeros((self.dim, self.n_in))
        cols = np.arange(self.n_in)
        for j in range(self.nnz):
            m[self.rows[j], cols] += self.signs[j]
        return m

    def _matrix(self, device):
        """The projection as a torch CSR matrix (dim, n_in) on `device`: each output is one row's sum in a
        fixed order, so results do not depend on thread counts or batch composition."""
        import torch

        key = str(device)
        if key not in self._csr:
            order = np.lexsort((np.tile(np.arange(self.n_in), self.nnz), self.rows.ravel()))
            cols = np.tile(np.arange(self.n_in), self.nnz)[order]
            vals = self.signs.ravel()[order]
            counts = np.bincount(self.rows.ravel(), minlength=self.dim)
            crow = np.concatenate([[0], np.cumsum(counts)])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._csr[key] = torch.sparse_csr_tensor(
                    torch.from_numpy(crow), torch.from_numpy(cols.astype(np.int64)),
                    torch.from_numpy(vals).to(torch.float64), size=(self.dim, self.n_in),
                    check_invariants=True).to(device)
        return self._csr[key]

    def project(self, grads) -> np.ndarray:
        """(batch, n_in) torch or numpy rows -> (batch, dim) float32 numpy, computed in float64 row by row."""
        import torch

        g = torch.as_tensor(grads)
        if g.ndim != 2 or g.shape[1] != self.n_in:
            raise ValueError(f"expected (batch, {self.n_in}) gradients, got {tuple(g.shape)}")
        m = self._matrix(g.device)
        out = [(m @ row.to(torch.float64).unsqueeze(1)).squeeze(1) for row in g]
        if not out:
            return np.empty((0, self.dim), np.float32)
        return torch.stack(out).cpu().numpy().astype(np.float32)
