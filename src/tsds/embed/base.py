"""The one interface every embedding backend implements, plus helpers they share.

An `Embedder` turns texts into float32, L2-normalised rows. It sorts each call's texts by length and
embeds them in batches (similar lengths pad and tokenise together cheaply), then restores the input
order. It keeps a running count of texts longer than the model's token limit, so a caller can warn
that part of the pool was cut.
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tsds.errors import InputError, ParameterError

# Files whose bytes decide what a model computes: weights and tokenizer vocabularies. Configs and
# READMEs are left out on purpose (they can hold machine-specific paths, e.g. model2vec's
# `tokenizer_name`), so the same weights give the same hash on every machine.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npy", ".npz", ".h5", ".msgpack", ".model")
_TOKENIZER_NAMES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt")
# Alternative runtimes that the torch backend never reads.
_SKIPPED_DIRS = ("onnx", "openvino", ".git", ".cache")

_hash_memo: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def weights_sha256(model_dir: str | os.PathLike[str]) -> str:
    """SHA-256 over the weight and tokenizer files of a model directory (relative names and bytes).

    Two directories holding the same weights and vocabulary hash alike wherever they live, so a store
    can refuse embeddings computed by a different model. Memoised per process on (name, size, mtime).
    """
    root = Path(model_dir).resolve()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith("."))
        for name in filenames:
            if name.endswith(_WEIGHT_SUFFIXES) or name in _TOKENIZER_NAMES:
                files.append(Path(dirpath) / name)
    rels = sorted((f.relative_to(root).as_posix(), f) for f in files)
    if not rels:
        raise ParameterError(f"model directory {root} holds no weight files (*.safetensors, *.bin, ...)")
    stats = tuple((rel, f.stat().st_size, f.stat().st_mtime_ns) for rel, f in rels)
    key = (str(root), stats)
    if key in _hash_memo:
        return _hash_memo[key]
    h = hashlib.sha256()
    for rel, f in rels:
        h.update(rel.encode("utf-8") + b"\0")
        h.update(str(f.stat().st_size).encode("ascii") + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    digest = h.hexdigest()
    _hash_memo[key] = digest
    return digest


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return `texts` as a list, refusing a bare string or non-string items with a one-line error."""
    if isinstance(texts, (str, bytes)):
        raise InputError("embed() takes a list of texts, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"text {i} is {type(t).__name__}, not str")
    return out


class Embedder(abc.ABC):
    """Texts in, float32 (n, dim) L2-normalised rows out; same texts give the same rows.

    Attributes:
        dim: width of each embedding row.
        max_tokens: the model's token limit; longer texts are truncated to it.
        batch_size: texts per model call (after sorting by length).
        truncated: running count of texts that exceeded `max_tokens` (across all `embed` calls).
    """

    dim: int
    max_tokens: int
    batch_size: int
    truncated: int

    def __init__(self, *, dim: int, max_tokens: int, batch_size: int) -> None:
        if batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        self.dim = int(dim)
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.truncated = 0

    @property
    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-serialisable description (kind, model, weights_sha256, dim, normalize, max_tokens)."""

    @abc.abstractmethod
    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """Embed one batch of similar-length texts: float32 (len(texts), dim), rows L2-normalised.

        Implementations add the number of over-long texts in the batch to `self.truncated`.
        """

    def embed(self, texts: Sequence[str], progress=None) -> np.ndarray:
        """Embed `texts` (a list of str) into a float32 array of shape (len(texts), dim), rows unit-norm.

        Texts are sorted by character length (stable), embedded `batch_size` at a time, and written
        back in input order. ``progress(n)``, if given, is called after each batch with its size.
        """
        items = check_texts(texts)
        n = len(items)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        lengths = np.fromiter((len(t) for t in items), dtype=np.int64, count=n)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            rows = self._embed_batch([items[i] for i in idx])
            if rows.shape != (len(idx), self.dim):
                raise RuntimeError(f"backend returned shape {rows.shape}, expected {(len(idx), self.dim)}")
            out[idx] = rows
            if progress is not None:
                progress(len(idx))
        return out

    def __repr__(self) -> str:
        ident = self.identity
        return f"{type(self).__name__}(model={ident.get('model')!r}, dim={self.dim}, max_tokens={self.max_tokens})"


def embeds_with_progress(embedder) -> bool:
    """Whether ``embedder.embed`` takes a ``progress`` callback (one that overrides `Embedder.embed` may not)."""
    import inspect

    try:
        return "progress" in inspect.signature(embedder.embed).parameters
    except (TypeError, ValueError):
        return False


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Divide each row by its L2 norm, in float64 then back to float32; all-zero rows stay zero.

    Row by row and element-wise only, so a row's bytes do not depend on which other rows share the
    batch.
    """
    r64 = rows.astype(np.float64)
    norms = np.sqrt((r64 * r64).sum(axis=1, keepdims=True))
    norms[norms == 0.0] = 1.0
    return (r64 / norms).astype(np.float32)


def zero_vector_rows(rows: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Indices of the all-zero rows: texts the embedder could not represent (no token it knows, e.g.
    emoji-only text, a single word longer than the tokenizer's word limit, an unknown script, an empty
    or invisible text). Such a row is at the same distance from every query, so it must not be selected."""
    out = [start + np.flatnonzero(~np.any(rows[start:start + chunk] != 0, axis=1))
           for start in range(0, len(rows), chunk)]
    return np.concatenate(out).astype(np.int64) if out else np.empty(0, np.int64)
