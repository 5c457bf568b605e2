"""The persistent pool store: embeddings, indexes and densities computed once and reused per task."""

from tsds.store.pool import PoolStore, build_store

__all__ = ["PoolStore", "build_store"]
