"""Index shards: where each lives and which pool rows it holds, how a pool is cut into shards, what kind each is."""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsds.errors import ParameterError
from tsds.retrieval.index import EXACT_UP_TO


PQ_ABOVE = 1_000_000     # shards with more rows get IVF-PQ (64-byte codes) instead of IVF-Flat under "auto"


@dataclass(frozen=True)
class ShardSpec:
    """Where one index shard lives and which pool rows it holds."""

    shard: int
    start: int
    rows: int
    kind: str
    path: str                 # .faiss file
    radius_path: str | None   # IVF list radii, or None for flat shards
    vectors: tuple = ()       # IVF-PQ: the .npy files holding this shard's rows as float32 (the store's shards)

    def to_json(self) -> dict:
        d = {"shard": self.shard, "start": self.start, "rows": self.rows, "kind": self.kind,
             "path": Path(self.path).name, "radius_path": Path(self.radius_path).name if self.radius_path else None}
        if self.vectors:
            folder = Path(self.path).parent
            d["vectors"] = [os.path.relpath(v, folder) for v in self.vectors]
        return d

    @classmethod
    def from_json(cls, folder: Path, d: dict) -> ShardSpec:
        return cls(shard=int(d["shard"]), start=int(d["start"]), rows=int(d["rows"]), kind=d["kind"],
                   path=str(folder / d["path"]), radius_path=str(folder / d["radius_path"]) if d["radius_path"] else None,
                   vectors=tuple(os.path.normpath(folder / v) for v in d.get("vectors", ())))


SHARD_KINDS = ("auto", "flat", "ivf", "ivfpq")


def shard_kind(rows: int, kind: str, pq_above: int = PQ_ABOVE) -> str:
    """The index kind of one shard: ``auto`` is exact up to 50,000 rows, IVF-Flat up to ``pq_above``
    rows, IVF-PQ above (its codes are 1/16 of the float32 vectors at d = 256; exact distances come from
    the store's shards on disk)."""
    if kind not in SHARD_KINDS:
        raise ParameterError(f"index must be one of {', '.join(SHARD_KINDS)}, got {kind!r}")
    if kind == "auto":
        return "flat" if rows <= EXACT_UP_TO else ("ivf" if rows <= pq_above else "ivfpq")
    return kind


def plan_shards(shard_rows: list[int], n_shards: int) -> list[tuple[int, int]]:
    """Group consecutive embedding shards into ``n_shards`` index shards of about equal rows.

    Returns (start row, rows) per index shard. Boundaries fall on embedding-shard boundaries, so an
    index shard is built from whole embedding files.
    """
    total = int(sum(shard_rows))
    n_shards = max(1, min(int(n_shards), len(shard_rows)))
    bounds = np.cumsum([0] + list(shard_rows))
    cuts = [0]
    for j in range(1, n_shards):
        target = total * j / n_shards
        c = int(np.searchsorted(bounds, target))
        c = min(max(c, cuts[-1] + 1), len(shard_rows) - (n_shards - j))
        cuts.append(c)
    cuts.append(len(shard_rows))
    return [(int(bounds[a]), int(bounds[b] - bounds[a])) for a, b in itertools.pairwise(cuts)]


def default_shards(n_rows: int, workers: int, max_rows: int = 2_000_000) -> int:
    """Index shards for a pool: at least one per worker, at most ``max_rows`` rows each."""
    return max(1, int(workers), math.ceil(n_rows / max_rows))
