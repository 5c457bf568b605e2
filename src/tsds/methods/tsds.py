"""TSDS itself behind the method signature: optimal-transport alignment to the queries with a
near-duplicate-aware diversity term, solved exactly on a prepared pool (tsds.pipeline)."""

from __future__ import annotations

import numpy as np

from tsds.config import SelectionConfig
from tsds.core.sampling import draw_one_per_cluster, near_duplicate_clusters
from tsds.io.writers import TSDS_DESCRIPTION
from tsds.pipeline.prepare import PreparedPool, select_queries
from tsds.pipeline.queries import QuerySet
from tsds.pipeline.select import Selection


class Tsds:
    """The TSDS method: alpha auto (``config.alpha_auto``) if asked, then the exact solve and the draw.
    sigma auto is resolved with the pool (tsds.pipeline.prepare)."""

    name = "tsds"
    description = TSDS_DESCRIPTION
    uses_densities = True

    def configure(self, config: SelectionConfig) -> SelectionConfig:
        return config

    def select(self, pool: PreparedPool, queries: QuerySet, config: SelectionConfig) -> Selection:
        selection, alpha_info, warnings = select_queries(pool, queries.vectors, queries.texts, config,
                                                         progress=pool.progress)
        pool.save_densities()
        calibration = dict(pool.calibration)
        if alpha_info:
            calibration["alpha"] = alpha_info
        if selection.config.one_per_cluster and selection.config.sampling == "without-replacement" \
                and selection.config.sigma > 0:
            calibration["draw"] = draw_per_cluster(pool.index, selection)
        selection.info = {"method": "tsds", "query_vectors": np.asarray(queries.vectors, dtype=np.float32),
                          "index": {"kind": pool.index.kind, **pool.index.calibration},
                          "calibration": calibration, "query_warnings": warnings}
        return selection


def draw_per_cluster(index, selection: Selection) -> dict:
    """Redraw ``selection.counts``: n distinct rows in proportion to p (the same Gumbel keys as the plain
    draw), at most one per near-duplicate cluster of the support while distinct clusters last. A cluster
    joins support rows within sigma of each other; only rows whose density counted another row within
    sigma can belong to one, so only those are compared. Returns what the draw did, for the manifest."""
    p, config = selection.probabilities, selection.config
    support = np.flatnonzero(p)
    counts = selection.density_cache.counts[support] if selection.density_cache is not None else None
    near = support if counts is None else support[counts != 1]  # unknown (-1) or with a neighbour within sigma
    labels = np.arange(p.size, dtype=np.int64)
    if near.size:
        labels[near] = near[near_duplicate_clusters(index.reconstruct(near), config.sigma)]
    plain = selection.counts
    selection.counts = draw_one_per_cluster(p, config.size, config.seed, labels)
    clustered = int(np.count_nonzero(np.unique(labels[near], return_counts=True)[1] > 1)) if near.size else 0
    return {"rule": "at most one draw per near-duplicate cluster (support rows within sigma) while distinct "
                    "clusters last", "clusters_with_copies": clustered,
            "draws_changed": int(np.count_nonzero(plain != selection.counts) // 2)}
