"""TSDS itself behind the method signature: optimal-transport alignment to the queries with a
near-duplicate-aware diversity term, solved exactly on a prepared pool (tsds.pipeline)."""

from __future__ import annotations

import numpy as np

from tsds.config import SelectionConfig
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
        selection.info = {"method": "tsds", "query_vectors": np.asarray(queries.vectors, dtype=np.float32),
                          "index": {"kind": pool.index.kind, **pool.index.calibration},
                          "calibration": calibration, "query_warnings": warnings}
        return selection
