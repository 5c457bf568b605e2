"""The index interface: what densities and the list scan read of an index, so that they depend on this
and not on the index module (which builds, searches and calibrates, and offers densities in turn)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class SearchIndexProtocol(Protocol):
    """An exact (flat) or IVF FAISS index over prepared candidate vectors (`tsds.retrieval.SearchIndex`).

    ``list_radius``: each IVF list's largest member-to-centroid distance (None for flat); ``excluded``:
    candidates no search returns; ``pages``: the resident window of a mapped IVF index's vectors, or None.
    The last fields are caches kept with the index by the scan and the densities."""

    index: Any
    kind: str
    metric: str
    list_radius: np.ndarray | None
    excluded: np.ndarray | None
    pages: Any
    _list_norms: Any
    _density_shells: Any
    _density_plans: dict

    @property
    def ntotal(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def members(self) -> tuple[np.ndarray, np.ndarray]: ...

    def lists_of(self, ids: np.ndarray) -> np.ndarray | None: ...

    def reconstruct(self, ids: np.ndarray) -> np.ndarray: ...

    def release(self) -> None: ...
