"""Building one index shard: flat or IVF-Flat (tsds.retrieval.index), or IVF-PQ with exact list radii."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from tsds import atomic
from tsds.retrieval.index import SearchIndex, build_index, prepare
from tsds.retrieval.sharded.specs import ShardSpec


def build_shard(source, spec: ShardSpec, metric: str, seed: int = 0) -> dict:
    """Build one index shard from ``source`` (its rows only) and write its .faiss (and IVF list radii) atomically;
    returns its json (a store adds its files' checksums and writes it, marking the shard finished)."""
    if spec.kind == "ivfpq":
        built = build_ivfpq(source, metric=metric, seed=seed + spec.shard)
    else:
        built = build_index(source, metric=metric, kind=spec.kind, seed=seed + spec.shard, storage="memory")
    atomic.write_index(Path(spec.path), built.index)
    if built.list_radius is not None:
        atomic.write_npy(Path(spec.radius_path), built.list_radius)
    return {**spec.to_json(), "metric": metric}


def _pq_shape(d: int, n: int) -> tuple[int, int]:
    """(sub-quantizers, bits each) for IVF-PQ codes: up to 64 bytes a row, 8 bits when there is data to train."""
    m = max(k for k in range(1, max(1, min(64, d // 2)) + 1) if d % k == 0)
    return m, int(min(8, max(1, math.floor(math.log2(max(2, n / 39))))))   # FAISS wants 39 points a centroid


def build_ivfpq(source, *, metric: str = "euclidean", nlist: int | None = None, seed: int = 0) -> SearchIndex:
    """IVF-PQ over ``source`` (2 sqrt(N) lists, the count its recall was measured with; IVF-Flat has sqrt(N)),
    with each list's radius measured on the exact vectors, so range searches can prune lists exactly; the codes
    only propose search candidates."""
    from tsds.io.arrays import as_source

    src = as_source(source)
    n, d = src.n, src.dim
    nlist = min(nlist or max(1, int(2 * math.sqrt(n))), n)
    m, nbits = _pq_shape(d, n)
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits)
    index.cp.niter = 8
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # the sample is sized on purpose; FAISS would print a warning
    index.pq.cp.min_points_per_centroid = 1
    index.pq.cp.seed = seed
    index.pq.cp.niter = 10           # the codes only propose candidates: a rough codebook is enough
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max(32 * nlist, 40 << nbits)), replace=False))
    index.train(prepare(src.take(sample), metric))
    radius = np.zeros(nlist, dtype=np.float64)
    for start, chunk in src.chunks():
        x = prepare(chunk, metric)
        d2c, a = quantizer.search(x, 1)
        np.maximum.at(radius, a[:, 0], np.sqrt(np.maximum(d2c[:, 0].astype(np.float64), 0)))
        ids = np.arange(start, start + x.shape[0], dtype=np.int64)
        assign = np.ascontiguousarray(a[:, 0], dtype=np.int64)
        # the lists the radii were measured on, not a second assignment that could differ at a tie
        index.add_core(x.shape[0], faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
    return SearchIndex(index=index, kind="ivfpq", metric=metric, list_radius=radius)
