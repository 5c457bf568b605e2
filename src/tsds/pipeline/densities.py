"""Densities of every pool row, computed ahead of the selections (`tsds pool densities`, `tsds pool build
--densities`, ``tsds.Pool.add_densities``).

A selection computes the densities of the candidates its optimum reads and keeps them in the store's
density cache (tsds.store.densities). Computed here for every eligible row with the same index, the same
eligible rows (zero rows left out as a selection leaves them out), the same neighbour cap and the same
code, the cache then holds every density a later selection with that metric and sigma can ask for, and
the selection computes none. Each density is a kernel sum of float32 terms that are multiples of 2^-24
in [0, 1], each from an exact inner product (tsds.retrieval.exact), added in float64: the sum is exact in
any order, so it does not depend on which other points were computed with it.

The work is saved chunk by chunk (an atomic rewrite of the cache): a run that is killed resumes from the
rows still missing.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from tsds.config import PRESETS, make_config
from tsds.errors import ParameterError
from tsds.retrieval import DensityStats

log = logging.getLogger("tsds")

DEFAULT_METRIC = PRESETS["default"]["metric"]  # what a store's selection uses unless told otherwise
_SAVE_EVERY = 8192  # rows per chunk at least; a chunk is saved before the next starts


def parse_sigmas(text: str, flag: str = "--densities") -> list:
    """'0.3,0.5' or 'auto' (comma-separated) into floats / 'auto', each checked; one-line error naming it."""
    sigmas = []
    for part in (p.strip() for p in str(text).split(",")):
        if part == "auto":
            sigmas.append("auto")
            continue
        try:
            value = float(part)
        except ValueError:
            raise ParameterError(f"{flag}: {part!r} is not a number (e.g. 0.3,0.5 or auto)") from None
        if not np.isfinite(value) or value <= 0:
            raise ParameterError(f"{flag}: sigma must be a finite number above 0, got {part!r}")
        sigmas.append(value)
    if not sigmas:
        raise ParameterError(f"{flag}: give at least one sigma")
    return sigmas


def pool_densities(store, sigma, *, metric: str = DEFAULT_METRIC, index: str = "auto", cap: int | None = None,
                   progress=None, chunk_rows: int | None = None) -> dict:
    """Compute (or finish) the density of every eligible row of ``store`` for ``metric`` and ``sigma``
    (a number above 0, or "auto": the sigma a selection with sigma auto resolves to), saved in the store's
    density cache after each chunk. Returns a summary (metric, sigma, rows, computed now, seconds)."""
    from tsds.pipeline.prepare import prepare_pool

    params = {"size": 1, "metric": metric, "index": index}
    if cap is not None:
        params["density_cap"] = cap
    if sigma == "auto":
        params["sigma_auto"] = True
    else:
        params["sigma"] = sigma
    config = make_config(**params)
    if config.sigma <= 0 and not config.sigma_auto:
        raise ParameterError(f"sigma must be above 0 to compute densities, got {sigma!r}")
    start = time.perf_counter()
    pool = prepare_pool(store, config, embedder=None)
    config = pool.config
    if not pool.eligibility.full_pool_densities:
        raise ParameterError(f"{store.root}: built before zero rows were recorded; rebuild it to keep densities")
    cache = pool.cache
    eligible = np.setdiff1d(np.arange(store.n_rows), pool.eligibility.excluded)
    todo = eligible[np.isnan(cache.values[eligible])]
    lists = pool.index.lists_of(todo) if todo.size and hasattr(pool.index, "lists_of") else None
    if lists is not None:  # members of one IVF list together: a chunk then needs few lists
        todo = todo[np.lexsort((todo, lists))]
    step = max(_SAVE_EVERY, -(-todo.size // 64)) if chunk_rows is None else int(chunk_rows)
    stats = DensityStats()
    for a in range(0, todo.size, step):
        cache.fill(pool.index, todo[a:a + step], config.sigma, config.density_cap, stats, progress=progress)
        store.save_densities(config.metric, config.sigma, cache.values, cache.counts, cap=config.density_cap,
                             strict=True)
    known = int(np.count_nonzero(~np.isnan(cache.values[eligible])))
    summary = {"metric": config.metric, "sigma": config.sigma, "rows": int(eligible.size), "known": known,
               "computed": int(todo.size), "seconds": round(time.perf_counter() - start, 3),
               "index": pool.index.kind}
    log.debug("densities %s sigma %g: %d rows (%d computed now) in %.1f s", config.metric, config.sigma,
             eligible.size, todo.size, summary["seconds"])
    return summary
