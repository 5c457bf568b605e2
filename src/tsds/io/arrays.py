"""Embedding matrices from .npy files or arrays, validated and streamed in chunks.

A .npy file is read by its header and then chunk by chunk from disk, so a pool larger
than memory is never loaded whole and pickled payloads are never executed.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

import numpy as np

from tsds.errors import InputError

CHUNK_ROWS = 16_384
_TAKE_ROWS = 1024  # rows of one batch of NpyVectors.take (ascending, so they lie in one stretch of the file)


class ArrayVectors:
    """An in-memory matrix seen as a vector source."""

    def __init__(self, array, name: str = "array"):
        self.name = name
        a = np.asarray(array)
        _check_dtype(a.dtype, name)
        if a.ndim != 2:
            raise InputError(f"{name}: expected a 2-D matrix (rows x dimensions), got {a.ndim} dimension(s)")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise InputError(f"{name}: empty matrix of shape {a.shape}")
        self._a = a
        self.n, self.dim = a.shape

    def chunks(self, rows: int = CHUNK_ROWS):
        for start in range(0, self.n, rows):
            chunk = np.asarray(self._a[start:start + rows], dtype=np.float32)
            _check_finite(chunk, start, self.name)
            yield start, chunk

    def take(self, rows) -> np.ndarray:
        return np.asarray(self._a[np.asarray(rows)], dtype=np.float32)

    def read_all(self) -> np.ndarray:
        return np.concatenate([c for _, c in self.chunks()]) if self.n else np.empty((0, self.dim), np.float32)


class NpyVectors:
    """A 2-D numeric .npy file read lazily: header first, then rows straight from disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise InputError(f"{self.name}: no such file")
        if self.path.stat().st_size == 0:
            raise InputError(f"{self.name}: empty file")
        try:
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            if "object" in str(exc).lower() or "pickle" in str(exc).lower():
                raise InputError(f"{self.name}: holds pickled Python objects; only numeric arrays are accepted") from None
            raise InputError(f"{self.name}: not a valid .npy file ({exc})") from None
        except OSError as exc:
            raise InputError(f"{self.name}: not a valid .npy file ({exc})") from None
        if not isinstance(mm, np.memmap):
            raise InputError(f"{self.name}: not a .npy file (an .npz archive?)")
        # a single row (or column) is both C- and Fortran-contiguous: only a layout that is not C order is refused
        shape, dtype, fortran, self.offset = mm.shape, mm.dtype, not mm.flags.c_contiguous, mm.offset
        del mm
        _check_dtype(dtype, self.name)
        if len(shape) != 2:
            raise InputError(f"{self.name}: expected a 2-D matrix (rows x dimensions), got shape {shape}")
        if shape[0] == 0 or shape[1] == 0:
            raise InputError(f"{self.name}: empty matrix of shape {shape}")
        if fortran:
            raise InputError(f"{self.name}: Fortran-ordered arrays are not supported; save with np.save(np.ascontiguousarray(a))")
        expected = self.offset + shape[0] * shape[1] * dtype.itemsize
        if self.path.stat().st_size < expected:
            raise InputError(f"{self.name}: truncated file ({self.path.stat().st_size} bytes, header promises {expected})")
        self.n, self.dim = int(shape[0]), int(shape[1])
        self.dtype = dtype

    def chunks(self, rows: int = CHUNK_ROWS):
        """(first row, float32 rows) in order. Each chunk is read into the same buffer and is valid until the
        next one is read: a fresh array per chunk is a fresh mapping to fault in (24 MB each by default)."""
        buf = np.empty(min(rows, self.n) * self.dim, dtype=self.dtype)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, self.n, rows):
                count = min(rows, self.n - start)
                raw = buf[:count * self.dim]
                if f.readinto(memoryview(raw).cast("B")) != raw.nbytes:
                    raise InputError(f"{self.name}: truncated file (ends before row {start + count})")
                chunk = raw.reshape(count, self.dim).astype(np.float32, copy=False)
                _check_finite(chunk, start, self.name)
                yield start, chunk

    def take(self, rows) -> np.ndarray:
        """The given rows (float32), read through a mapping of the file in batches of ascending rows; the
        mapping's pages are dropped after each batch, so that a sample spread over the whole file does not
        leave the whole file resident in this process (a 14k-row sample of a 200k x 384 pool did: 307 MB)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        if rows.size == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.n:
            raise IndexError(f"{self.name}: rows outside 0..{self.n - 1}")
        order = np.argsort(rows, kind="stable")
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            drop = hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED")
            a = np.frombuffer(m, dtype=self.dtype, count=self.n * self.dim, offset=self.offset).reshape(self.n, self.dim)
            for start in range(0, rows.size, _TAKE_ROWS):
                pick = order[start:start + _TAKE_ROWS]
                out[pick] = a[rows[pick]]
                if drop:
                    m.madvise(mmap.MADV_DONTNEED)
            del a
        return out

    def read_all(self) -> np.ndarray:
        out = np.empty((self.n, self.dim), dtype=np.float32)
        for start, chunk in self.chunks():
            out[start:start + chunk.shape[0]] = chunk
        return out


def as_source(source):
    """Accept a path, an array or an existing vector source."""
    if hasattr(source, "chunks") and hasattr(source, "n"):
        return source
    if isinstance(source, (str, os.PathLike)):
        return NpyVectors(source)
    return ArrayVectors(source)


def load_matrix(source) -> np.ndarray:
    """The whole matrix as float32, validated (used for the small query matrix)."""
    return as_source(source).read_all()


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.hasobject:
        raise InputError(f"{name}: holds pickled Python objects; only numeric arrays are accepted")
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise InputError(f"{name}: expected a numeric matrix, got dtype {dtype}")


def _check_finite(chunk: np.ndarray, start: int, name: str) -> None:
    bad = ~np.isfinite(chunk).all(axis=1)
    if bad.any():
        row = start + int(np.argmax(bad))
        raise InputError(f"{name}: row {row} holds NaN or infinite values")


def check_same_dim(candidates, queries) -> None:
    if candidates.dim != queries.dim:
        raise InputError(
            f"dimension mismatch: {queries.name} has {queries.dim} dimensions, {candidates.name} has {candidates.dim}"
        )


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
