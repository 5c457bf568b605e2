"""The persistent pool store: embeddings, indexes and densities computed once and reused per task."""

from tsds.store.pool import PoolStore, build_store
from tsds.store.provenance import check_record, check_source

__all__ = ["PoolStore", "build_store", "check_record", "check_source"]
