"""Adapters over FAISS: nearest-neighbour indexes and range-search densities."""

from tsds.retrieval.density import DensityStats, Nearest, densities
from tsds.retrieval.index import METRICS, SearchIndex, build_index, calibrate, prepare
from tsds.retrieval.prefix import narrow_ids, neighbour_round, search_ahead

__all__ = ["METRICS", "DensityStats", "Nearest", "SearchIndex", "build_index", "calibrate", "densities", "narrow_ids", "neighbour_round", "prepare", "search_ahead"]
