"""A store's density cache: the densities computed so far per metric and sigma, checked on load.

A cache is filled by selections (the densities they needed) or for every row at once ahead of them
(`tsds pool densities`, tsds.pipeline.densities). It records the store's fingerprint (a cache of other
content is never used) and the neighbour cap it was computed with: a density is a sum over at most ``cap``
neighbours, so an entry with more neighbours than a later selection's cap, or computed under another cap
than it had to obey, is computed again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.store.checks import Damaged, arrays_digest, read_density_cache

log = logging.getLogger("tsds")

DEFAULT_CAP = 100_000  # the cap of a cache that records none (written before caps were recorded)


def recorded_cap(path: Path) -> int:
    """The neighbour cap a density cache was computed with (``DEFAULT_CAP`` if it records none)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return int(z["cap"]) if "cap" in z.files else DEFAULT_CAP
    except (OSError, ValueError, TypeError):
        return DEFAULT_CAP


def usable_for_cap(rho: np.ndarray, count: np.ndarray, saved_cap: int, cap: int | None) -> np.ndarray:
    """``rho`` with NaN where the entry is not the density under ``cap``: an entry over the smaller of the two
    caps was capped differently (or must be capped now)."""
    if cap is None or int(cap) == int(saved_cap):
        return rho
    rho = rho.copy()
    rho[count > min(int(cap), int(saved_cap))] = np.nan
    return rho


class StoreDensities:
    """The density-cache part of `tsds.store.PoolStore`."""

    def _density_path(self, metric: str, sigma: float, rule=None, index_kind: str | None = None) -> Path:
        """``rule``: None or "auto" for exact densities (the same on every index); approximate ones
        (``tsds.retrieval.Nearest``) depend on the index's lists, so they have a file per rule and index kind."""
        lists = getattr(rule, "lists", None)
        tail = "" if lists is None else f"-nearest{lists}-{index_kind}"
        return self.root / "densities" / f"{metric}-sigma{sigma!r}{tail}.npz"

    def load_densities(self, metric: str, sigma: float, cap: int | None = None, rule=None,
                       index_kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(densities, near-duplicate counts) computed so far; NaN / -1 where not yet computed.

        A cache of another size (the store before an append) is ignored; one that is damaged, of another
        store's content, or without checksum (older tsds) is ignored with a warning and recomputed. ``cap``:
        the selection's neighbour cap (entries computed under another cap that it changes are dropped);
        ``rule``, ``index_kind``: approximate densities are kept apart from exact ones (see _density_path)."""
        path = self._density_path(metric, sigma, rule, index_kind)
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
        return usable_for_cap(rho, count, recorded_cap(path), cap), count

    def save_densities(self, metric: str, sigma: float, rho: np.ndarray, count: np.ndarray, *,
                       cap: int | None = None, strict: bool = False, rule=None, index_kind: str | None = None) -> None:
        """Save the density cache (atomically: a reader sees the old file or the new one). A store that cannot
        be written keeps none (it only saves time), with a warning; ``strict``: raise instead."""
        folder = self.root / "densities"
        path = self._density_path(metric, sigma, rule, index_kind)
        rho = np.ascontiguousarray(rho, dtype=np.float64)
        count = np.ascontiguousarray(count, dtype=np.int64)
        extra = {} if cap is None else {"cap": np.array(int(cap), dtype=np.int64)}
        try:
            folder.mkdir(exist_ok=True)
            atomic.write_npz(path, rho=rho, count=count, sha256=np.array(arrays_digest(rho, count)),
                             fingerprint=np.array(self.fingerprint), **extra)
        except OSError as exc:
            if strict:
                from tsds.errors import InputError

                raise InputError(f"{path}: cannot write the densities ({exc.strerror or exc})") from None
            log.warning("%s: cannot save the density cache (%s); the selection is not affected",
                        path, exc.strerror or exc)
