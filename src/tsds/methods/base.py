"""One signature for every selection method, and what the baselines share.

A method is an object with a ``name``, a one-line ``description`` (the dataset card says how the data was
selected), ``configure(config)`` (the config it runs with, refusing parameters it does not use) and
``select(pool, queries, config) -> Selection`` on a prepared pool (tsds.pipeline.prepare: the index with
the eligible rows applied, decided by one code path for every method) and embedded queries
(tsds.pipeline.queries.QuerySet). A baseline's Selection has no allocation (``allocation is None``): it
solves no TSDS problem, and its manifest has no objective.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from tsds.config import SelectionConfig
from tsds.errors import ParameterError
from tsds.pipeline.prepare import PreparedPool
from tsds.pipeline.queries import QuerySet
from tsds.pipeline.select import Selection
from tsds.retrieval import DensityStats


@runtime_checkable
class Method(Protocol):
    """The interface of every selection method (see the module docstring)."""

    name: str
    description: str
    uses_densities: bool

    def configure(self, config: SelectionConfig) -> SelectionConfig: ...

    def select(self, pool: PreparedPool, queries: QuerySet, config: SelectionConfig) -> Selection: ...


# Parameters of the TSDS objective and its search: a baseline does not use them, so giving one explicitly
# to a baseline is refused rather than recorded as if it had been used.
TSDS_ONLY = ("alpha", "C", "sigma", "initial_k", "recall_target", "density_cap", "sigma_auto", "alpha_auto",
             "density", "density_lists")


def refuse_tsds_parameters(method: str, config: SelectionConfig) -> None:
    given = [k for k in TSDS_ONLY if k in config.model_fields_set]
    if given:
        raise ParameterError(f"{', '.join(given)} {'is a parameter' if len(given) == 1 else 'are parameters'} "
                             f"of method tsds; method {method!r} does not use {'it' if len(given) == 1 else 'them'}")


class Baseline:
    """What every baseline shares: its config (n distinct draws unless with-replacement was asked for
    explicitly: a baseline should be the strongest simple version of itself), no TSDS parameter, no
    densities."""

    name = "baseline"
    description = ""
    uses_densities = False

    def configure(self, config: SelectionConfig) -> SelectionConfig:
        refuse_tsds_parameters(self.name, config)
        if "sampling" not in config.model_fields_set:
            config = config.model_copy(update={"sampling": "without-replacement"})
        return config

    def parameters(self, config: SelectionConfig) -> dict:
        """What the baseline really used, for its manifest and card (no TSDS parameter it ignored)."""
        return {"method": self.name, "size": config.size}


def make_selection(store, q: np.ndarray | None, p: np.ndarray, counts: np.ndarray,
                   config: SelectionConfig) -> Selection:
    """A `Selection` for a baseline: p and counts as given; the "neighbour lists" hold every distinct
    selected candidate for every query with its cosine distance, so that the writer's provenance
    (nearest query and distance of each record) is exact. No allocation: a baseline solves no TSDS problem."""
    chosen = np.flatnonzero(counts)
    m = 1 if q is None else q.shape[0]
    if q is not None and chosen.size:
        x = np.asarray(store.vectors().take(chosen), dtype=np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (q @ x.T))).astype(np.float64)
    else:
        dist = np.zeros((m, chosen.size))
    ids = np.broadcast_to(chosen, (m, chosen.size)).copy()
    return Selection(probabilities=p, counts=np.asarray(counts, dtype=np.int64), allocation=None,
                     neighbour_ids=ids, neighbour_distances=dist, neighbour_densities=np.ones_like(dist),
                     k_used=int(chosen.size), k_history=[], recall=1.0, density_stats=DensityStats(),
                     config=config, density_cache=None)


def draw(p: np.ndarray, config: SelectionConfig, log_p: np.ndarray | None = None) -> np.ndarray:
    """Counts per candidate: n multinomial draws, or n distinct by Gumbel top-k (in log space when given).
    Candidates with probability 0 (log -inf) are never drawn."""
    n = config.size
    rng = np.random.default_rng(config.seed)
    if config.sampling == "with-replacement":
        return rng.multinomial(n, p / p.sum()).astype(np.int64)
    logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), -np.inf) if log_p is None else log_p
    finite = np.flatnonzero(np.isfinite(logp))
    if finite.size < n:
        raise ParameterError(f"size {n} is larger than the {finite.size} candidates available")
    keys = logp[finite] + rng.gumbel(size=finite.size)
    chosen = finite[np.argpartition(-keys, n - 1)[:n]]
    counts = np.zeros(p.size, dtype=np.int64)
    counts[chosen] = 1
    return counts
