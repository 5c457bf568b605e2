"""The persistent pool store: embeddings, indexes and densities computed once and reused per task."""

from tsds.store.build import build_store, replacing_store
from tsds.store.info import store_info
from tsds.store.options import BuildOptions
from tsds.store.pool import PoolStore
from tsds.store.provenance import check_record, check_source

__all__ = ["BuildOptions", "PoolStore", "build_store", "check_record", "replacing_store", "check_source", "store_info"]
