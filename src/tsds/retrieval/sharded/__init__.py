"""A sharded index: one FAISS index per contiguous range of pool rows, searched as one.

``ShardedIndex`` has the interface of ``SearchIndex`` (search, exact_search, reconstruct, exclude,
available, calibrate) plus ``densities``. Its shards are served by a *backend*: ``LocalShards`` holds
them in this process and visits them one after another; a distributed engine's backend (its ``serve``,
set up by tsds.store.indexes) holds them in actors and fans the same calls out. Both run the per-shard
code in ``ShardWorker``, so a store's index gives the same lists and densities whichever engine serves it.

Exactness. Each shard returns its own top-k (k capped at what the shard holds) with shard-local ids;
they are shifted to global ids and merged by (distance, id), so with exact (flat) shards the merged
lists are the k nearest of the whole pool, ties broken by id. Densities are range searches per shard
(IVF lists pruned by the triangle inequality, as in tsds.retrieval.density), the kernel sums and
counts added over shards in shard order; when a point's total count exceeds the cap, its terms are
gathered from every shard and the ``cap`` largest kept, as the single-index path does.

Store layout (see tsds.store)::

    index/<metric>/shard-0000.faiss       FAISS index of rows [start, start + rows), ids 0..rows-1
    index/<metric>/shard-0000.radius.npy  IVF list radii (IVF shards only)
    index/<metric>/shard-0000.json        shard metadata, written last (marks the shard finished)
    index/<metric>/index.json             the shard list; written when every shard is finished

Modules: ``specs`` (shard specs, planning, kinds), ``build`` (one shard), ``pq`` (IVF-PQ shards), ``worker``
(per-shard work, the in-process backend), ``index`` (ShardedIndex and the merge).
"""

from tsds.retrieval.sharded.build import build_ivfpq, build_shard
from tsds.retrieval.sharded.index import ShardedIndex, merge_topk
from tsds.retrieval.sharded.pq import RERANK, PQShard, StoredRows
from tsds.retrieval.sharded.specs import (
    PQ_ABOVE,
    SHARD_KINDS,
    ShardSpec,
    default_shards,
    plan_shards,
    shard_kind,
)
from tsds.retrieval.sharded.worker import LocalShards, ShardWorker, load_shard

__all__ = [
    "PQ_ABOVE", "RERANK", "SHARD_KINDS", "LocalShards", "PQShard", "ShardSpec", "ShardWorker", "ShardedIndex",
    "StoredRows", "build_ivfpq", "build_shard", "default_shards", "load_shard", "merge_topk", "plan_shards",
    "shard_kind",
]
