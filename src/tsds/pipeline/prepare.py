"""The pool side of a selection, prepared once and shared by every method and every target: the index,
the eligible rows (one code path for every method: tsds.pipeline.eligibility), the pool's distance scale,
the automatic parameters that depend on the pool only (sigma auto, the C recommendation) and the density
cache."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsds.config import SelectionConfig
from tsds.pipeline import autoparams
from tsds.pipeline.decontaminate import Decontamination
from tsds.pipeline.eligibility import Eligibility, Exclusion, pool_eligibility
from tsds.pipeline.hygiene import query_warnings
from tsds.pipeline.density_check import check_approximate
from tsds.pipeline.select import DensityCache, Selection, density_rule, select_on_index
from tsds.pipeline.stages import StageLog

log = logging.getLogger("tsds")


@dataclass(frozen=True)
class Preparation(Exclusion):
    """Which pool rows a selection may take, the same for every method.

    exclude : path or list of paths, optional
        Evaluation file(s): pool rows within ``exclude_radius`` (embedding distance) of an item, or equal to
        one after normalising whitespace and case, are left out.
    exclude_radius : float
        Embedding distance for ``exclude``; 0 removes exact (normalised) text matches only.
    exclude_spec : TextSpec, optional
        How to read text from the ``exclude`` files (default: the store's).
    keep_zero_rows : bool
        Let rows whose embedding is all zeros be selected (left out by default).
    exclude_texts : list of str, optional
        Evaluation texts in memory, used like ``exclude``.
    eligibility : Eligibility, optional
        Rows decided already (e.g. once for several methods), instead of the fields above.
    pool_texts : list of str, optional
        The pool's texts in row order, when the caller holds them (saves a pass over the pool files).
    """

    eligibility: Eligibility | None = None


@dataclass
class PreparedPool:
    """The pool side of a selection, shared by every target: store, embedder, index (after the eligible rows
    were applied), density cache, the config with pool-level automatic parameters resolved, the pool's
    distance scale, the parameter choices made (``calibration``) and the eligible rows."""

    store: object
    index: object
    cache: DensityCache
    config: SelectionConfig
    scale: autoparams.PoolScale
    calibration: dict = field(default_factory=dict)
    eligibility: Eligibility | None = None
    embedder: object = None
    progress: object = None
    stages: StageLog = field(default_factory=StageLog)
    preparation: Preparation = field(default_factory=Preparation)

    @property
    def decontamination(self) -> Decontamination | None:
        return self.eligibility.decontamination if self.eligibility is not None else None

    def save_densities(self) -> None:
        """Persist the densities computed, unless the pool was decontaminated (they differ from the full
        pool's then)."""
        if self.config.sigma > 0 and self.cache.computed and self._persisted_densities:
            with self.stages.stage("save_densities"):
                self.store.save_densities(self.config.metric, self.config.sigma, self.cache.values, self.cache.counts,
                                         cap=self.config.density_cap, rule=self.cache.rule,
                                         index_kind=self.index.kind)

    @property
    def _persisted_densities(self) -> bool:
        return self.eligibility is None or self.eligibility.full_pool_densities


# the older name, kept for readers of the code that knew it
PoolContext = PreparedPool


def prepare_pool(store, config: SelectionConfig, *, embedder, stages: StageLog | None = None,
                 preparation: Preparation | None = None, densities: bool = True) -> PreparedPool:
    """Index, eligible rows (zero rows, decontamination), pool scale and sigma auto: everything that does not
    depend on the queries. ``densities``: load the store's persisted densities for ``config.sigma``."""
    prep = preparation or Preparation()
    stages = stages or StageLog()
    with stages.stage("index") as info:
        index = store.index(config.metric, config.index)
        info["kind"] = index.kind
    with stages.stage("eligibility") as info:
        elig = prep.eligibility or pool_eligibility(store, prep, embedder=embedder, index=index,
                                                    metric=config.metric, index_kind=config.index)
        elig.apply(index)
        info.update(excluded=int(elig.excluded.size), zero_rows=int(elig.zero_rows.size))
        if elig.decontamination is not None:
            info.update(removed=int(elig.decontamination.removed.size), eval_items=elig.decontamination.eval_items)
    calibration: dict = {}
    with stages.stage("pool_scale"):  # kept in the store for the next tasks (not for a decontaminated pool's rows)
        scale = autoparams.stored_pool_scale(store, index, save=elig.full_pool_densities)
    if config.sigma_auto:
        sigma, calibration["sigma"] = autoparams.auto_sigma(scale)
        config = config.model_copy(update={"sigma": sigma})
    c_rec, calibration["C_recommendation"] = autoparams.recommend_C(scale)
    calibration["C_recommendation"]["used"] = config.C
    calibration["pool_scale"] = scale.summary()
    if densities and elig.full_pool_densities and config.sigma > 0:
        rho, count = store.load_densities(config.metric, config.sigma, cap=config.density_cap,
                                          rule=density_rule(config), index_kind=index.kind)
        cache = DensityCache(store.n_rows, rho, count, rule=density_rule(config))
    else:
        cache = DensityCache(store.n_rows, rule=density_rule(config))
    return PreparedPool(store, index, cache, config, scale, calibration, elig, embedder, stages=stages,
                        preparation=prep)


def select_queries(pool: PreparedPool, q: np.ndarray, texts: list[str], config: SelectionConfig, *,
                   progress=None) -> tuple[Selection, dict, list[dict]]:
    """TSDS for one target on a prepared pool: select (with alpha auto if asked), query warnings.
    Returns (selection, the alpha choice or {}, warnings)."""
    stages = pool.stages
    calib = {}
    if config.alpha_auto is not None:
        selection, calib = autoparams.select_auto_alpha(pool.index, q, config, cache=pool.cache, stages=stages,
                                                        progress=progress)
    else:
        selection = select_on_index(pool.index, q, config, stages=stages, density_cache=pool.cache,
                                    progress=progress)
    check_approximate(selection, pool.index, stages)
    warnings = query_warnings(texts, q, selection.neighbour_distances[:, 0], pool.scale.typical(95))
    for w in warnings:
        log.warning("query warning: %s", w["message"])
    return selection, calib, warnings


def open_store(store):
    """A complete pool store from a store or its folder."""
    from tsds.store import PoolStore

    store = store if isinstance(store, PoolStore) else PoolStore(Path(store))
    store.require_complete()
    return store
