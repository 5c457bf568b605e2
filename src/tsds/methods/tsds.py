"""TSDS itself behind the method signature: optimal-transport alignment to the queries with a
near-duplicate-aware diversity term, solved exactly on a prepared pool (tsds.pipeline)."""

from __future__ import annotations

import numpy as np

from tsds.config import SelectionConfig
from tsds.core.sampling import draw_one_per_cluster, draw_query_turns, near_duplicate_clusters
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
        distinct = selection.config.sampling == "without-replacement"
        if distinct and selection.config.query_turns:
            calibration["draw"] = draw_turns(pool.index, selection)
        elif distinct and selection.config.one_per_cluster and selection.config.sigma > 0:
            calibration["draw"] = draw_per_cluster(pool.index, selection)
        selection.info.update({"method": "tsds", "query_vectors": np.asarray(queries.vectors, dtype=np.float32),
                               "index": {"kind": pool.index.kind, **pool.index.calibration},
                               "calibration": calibration, "query_warnings": warnings})
        return selection


def cluster_labels(index, selection: Selection) -> tuple[np.ndarray, np.ndarray]:
    """(a near-duplicate cluster label per pool row, the support rows compared). A cluster joins support
    rows within sigma of each other; only rows whose density counted another row within sigma can belong
    to one, so only those are compared; every other row is a cluster of its own."""
    p, config = selection.probabilities, selection.config
    support = np.flatnonzero(p)
    counts = selection.density_cache.counts[support] if selection.density_cache is not None else None
    near = support if counts is None else support[counts != 1]  # unknown (-1) or with a neighbour within sigma
    labels = np.arange(p.size, dtype=np.int64)
    if near.size and config.sigma > 0:
        labels[near] = near[near_duplicate_clusters(index.reconstruct(near), config.sigma)]
    return labels, near


def _clusters_with_copies(labels: np.ndarray, near: np.ndarray) -> int:
    """How many clusters hold more than one row (only rows in ``near`` can share a label)."""
    return int(np.count_nonzero(np.unique(labels[near], return_counts=True)[1] > 1)) if near.size else 0


def draw_per_cluster(index, selection: Selection) -> dict:
    """Redraw ``selection.counts``: n distinct rows in proportion to p (the same Gumbel keys as the plain
    draw), at most one per near-duplicate cluster of the support while distinct clusters last (see
    ``cluster_labels``). Returns what the draw did, for the manifest."""
    p, config = selection.probabilities, selection.config
    labels, near = cluster_labels(index, selection)
    plain = selection.counts
    selection.counts = draw_one_per_cluster(p, config.size, config.seed, labels)
    clustered = _clusters_with_copies(labels, near)
    return {"rule": "at most one draw per near-duplicate cluster (support rows within sigma) while distinct "
                    "clusters last", "clusters_with_copies": clustered,
            "draws_changed": int(np.count_nonzero(plain != selection.counts) // 2)}


def draw_turns(index, selection: Selection) -> dict:
    """Redraw ``selection.counts`` in turns over the queries (``tsds.core.sampling.draw_query_turns``): each
    query takes its nearest row of the plan not drawn yet, at most one per near-duplicate cluster while
    distinct clusters last when ``one_per_cluster``. A row several queries share then counts once towards
    one query's share instead of shortening all of theirs, so queries in the task's dense core reach as far
    as isolated ones. Returns what the draw did, for the manifest."""
    config = selection.config
    clusters, clustered = None, 0
    if config.one_per_cluster and config.sigma > 0:
        clusters, near = cluster_labels(index, selection)
        clustered = _clusters_with_copies(clusters, near)
    plain = selection.counts
    selection.counts = draw_query_turns(selection.neighbour_ids, selection.transport_weights(), config.size,
                                        config.seed, n_candidates=selection.probabilities.size, clusters=clusters)
    return {"rule": "in turns over the queries, each taking its nearest row of the plan not drawn yet"
                    + (", at most one per near-duplicate cluster while distinct clusters last" if clusters is not None
                       else ""),
            "clusters_with_copies": clustered, "draws_changed": int(np.count_nonzero(plain != selection.counts) // 2)}
