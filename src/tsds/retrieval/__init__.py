"""Adapters over FAISS: nearest-neighbour indexes and range-search densities."""

from tsds.retrieval.density import DensityStats, Nearest, densities
from tsds.retrieval.index import METRICS, SearchIndex, build_index, calibrate, prepare
from tsds.retrieval.prefix import search_ahead

__all__ = ["METRICS", "DensityStats", "Nearest", "SearchIndex", "build_index", "calibrate", "densities", "prepare", "search_ahead"]
