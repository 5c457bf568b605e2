"""Centring of gradient features: the mean projected gradient of a seeded sample of the pool, subtracted
before normalising.

Per-example gradients of one language model share a large common component (the update that makes any
text more likely); after normalisation it dominates every inner product, and the same rows come out as
nearest neighbours of every target. Subtracting the mean gradient of a pool sample leaves what tells
texts apart. The projection is linear, so subtracting the projected mean equals projecting the centred
gradient; the mean is held in the projected space (``dim`` numbers).

The mean is computed once per embedder configuration and sample, cached under the tsds cache folder as a
.npz (``mean``: float64 (dim,), ``rows``: how many texts with a loss it averages), and its SHA-256 enters
the embedder's identity, so pool rows and queries are centred by the same numbers or the store refuses
them. ``centre_mean=FILE`` reuses such a file (e.g. on another machine).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from tsds.errors import ParameterError


def mean_sha256(mean: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mean, dtype="<f8").tobytes()).hexdigest()


def load_mean(path: Path, dim: int) -> tuple[np.ndarray, int, Any]:
    """(mean, rows, the sample's description or None) from a centring .npz; a missing, unreadable or
    misfitting file is a one-line error."""
    if not path.is_file():
        raise ParameterError(f"centre_mean {str(path)!r} is not a file")
    try:
        with np.load(path, allow_pickle=False) as z:
            mean, rows = np.asarray(z["mean"], dtype=np.float64), int(z["rows"])
            sample = json.loads(str(z["sample"])) if "sample" in z.files else None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ParameterError(f"centre_mean {str(path)!r} is not a centring .npz (mean, rows): {e}") from None
    if mean.shape != (dim,) or not np.all(np.isfinite(mean)) or rows < 1:
        raise ParameterError(f"centre_mean {str(path)!r}: expected {dim} finite numbers from >= 1 rows, "
                             f"got shape {mean.shape} from {rows} rows")
    return mean, rows, sample


def cache_key(features: dict[str, Any], sample: dict[str, Any]) -> str:
    """File name of the cached mean: a hash of everything that decides the features and the sample."""
    key = json.dumps({"features": features, "sample": sample}, sort_keys=True, default=str)
    return "centre-" + hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz"


def sample_mean(projected, texts: list[str], batch: int) -> tuple[np.ndarray, int]:
    """(float64 mean of the rows with a loss, their number). ``projected(texts)`` gives (rows, has_loss);
    texts go in length order, in fixed batches, and the sum runs in that order (deterministic)."""
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    total, count = None, 0
    for s in range(0, len(order), batch):
        rows, has_loss = projected([texts[i] for i in order[s:s + batch]])
        for row, keep in zip(np.asarray(rows, dtype=np.float64), has_loss):
            if keep:
                total = row.copy() if total is None else total + row
                count += 1
    if total is None:
        raise ParameterError("centring sample has no text with a loss (all empty or nothing after sep)")
    return total / count, count


def centre_rows(rows: np.ndarray, has_loss, mean: np.ndarray) -> np.ndarray:
    """Rows minus the mean, in float64; rows without a loss stay all-zero."""
    out = np.asarray(rows, dtype=np.float64) - mean[None, :]
    out[~np.asarray(has_loss, dtype=bool)] = 0.0
    return out
