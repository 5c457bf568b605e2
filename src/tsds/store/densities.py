"""A store's density cache: the densities computed so far per metric and sigma, checked on load."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.store.checks import Damaged, density_digest, read_density_cache

log = logging.getLogger("tsds")


class StoreDensities:
    """The density-cache part of `tsds.store.PoolStore`."""

    def _density_path(self, metric: str, sigma: float) -> Path:
        return self.root / "densities" / f"{metric}-sigma{sigma!r}.npz"

    def load_densities(self, metric: str, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """(densities, near-duplicate counts) computed so far; NaN / -1 where not yet computed.

        A cache of another size (the store before an append) is ignored; one that is damaged, of another
        store's content, or without checksum (older tsds) is ignored with a warning and recomputed."""
        path = self._density_path(metric, sigma)
        fresh = np.full(self.n_rows, np.nan), np.full(self.n_rows, -1, dtype=np.int64)
        if not path.exists():
            return fresh
        try:
            rho, count, digest, fp = read_density_cache(path)
        except Damaged as exc:
            log.warning("%s: %s; the densities are computed again", path, exc.reason)
            return fresh
        if rho.shape != (self.n_rows,) and fp != self.fingerprint:
            return fresh
        if fp != self.fingerprint:
            log.warning("%s: made from other embeddings than this store's; the densities are computed again", path)
            return fresh
        return rho, count

    def save_densities(self, metric: str, sigma: float, rho: np.ndarray, count: np.ndarray) -> None:
        """Save the density cache; a store that cannot be written keeps none (it only saves time), with a warning."""
        folder = self.root / "densities"
        path = self._density_path(metric, sigma)
        rho = np.ascontiguousarray(rho, dtype=np.float64)
        count = np.ascontiguousarray(count, dtype=np.int64)
        try:
            folder.mkdir(exist_ok=True)
            atomic.write_npz(path, rho=rho, count=count, sha256=np.array(density_digest(rho, count)),
                             fingerprint=np.array(self.fingerprint))
        except OSError as exc:
            log.warning("%s: cannot save the density cache (%s); the selection is not affected",
                        path, exc.strerror or exc)
