"""The persistent pool store: embeddings, row offsets, indexes and densities, computed once per pool.

Layout of a store folder::

    store.json                 embedder identity, text spec, source files with content hashes
    shards/000000.npy          float32 embeddings of one shard (memory-mappable)
    shards/000000.loc.npy      int64 location of each row in its source file (see tsds.io.readers)
    shards/000000.hash.npy     uint64 hash of each row's embedded text (see tsds.store.provenance)
    shards/000000.json         shard metadata; written last, so its presence marks the shard finished
    index/<metric>.faiss       a single FAISS index (+ .json metadata, .radius.npy list radii for IVF)
    index/<metric>/            or a sharded index: shard-0000.faiss/.json/.radius.npy per row range and
                               index.json listing them (see tsds.retrieval.sharded); either engine reads both
    index/<metric>-<kind>.faiss       an index of another kind than the stored one, built for a selection
                               that asked for it (or index/<metric>-<kind>/ sharded); never the default
    densities/<metric>-sigma<s>.npz   densities computed so far (NaN where not yet needed)
    densities/<metric>-sigma<s>-nearest<P>-<kind>.npz   approximate ones (--density approx), per index kind
    scale/<metric>-<kind>-<key>.npz    the pool scale measured on an exact index (tsds.store.scale)

Every file is written to a temporary name and renamed, so a build killed at any point
(even by SIGKILL) leaves only finished shards, and the same command continues from there.
What each file should hold is recorded when it is written and checked on use (tsds.store.verify).

The parts: ``layout`` (open and check), ``indexes``, ``densities``, ``scale``, ``build`` (with ``resume`` and
``embedding``), ``checks`` (what each file records), ``verify`` (full check and repair).
"""

from __future__ import annotations

from tsds.store.densities import StoreDensities
from tsds.store.indexes import StoreIndexes, build_index_shard
from tsds.store.layout import FORMAT_VERSION, SHARD_ROWS, ShardVectors, StoreLayout
from tsds.store.scale import StoreScale

__all__ = ["FORMAT_VERSION", "SHARD_ROWS", "PoolStore", "ShardVectors", "build_index_shard"]


class PoolStore(StoreLayout, StoreIndexes, StoreDensities, StoreScale):
    """A pool store folder. Open with ``PoolStore(path)``; build or extend with ``build_store``."""
