"""The baselines, behind the same signature as TSDS (tsds.methods.base.Method).

- ``random``: uniform over the eligible rows.
- ``knn``: the nearest neighbours of the queries (cosine), round-robin over the queries so that each query
  gets its share n/M of distinct candidates (RDS-style retrieval). Deterministic; always distinct.
- ``dsir``: hashed n-gram importance resampling (Xie et al., 2023), as in the authors' ``data-selection``
  package: unigram+bigram counts hashed into 10,000 buckets, importance weight
  w_i = exp(sum_b f_ib (log p_target(b) - log p_raw(b))), then Gumbel top-k (without replacement) or
  multinomial draws (with replacement) from p proportional to w.
- ``full``: every eligible row once (the budget does not apply).
"""

from __future__ import annotations

import numpy as np

from tsds.config import SelectionConfig
from tsds.methods.base import Baseline, draw, make_selection
from tsds.pipeline.hygiene import query_warnings
from tsds.pipeline.prepare import PreparedPool
from tsds.pipeline.queries import QuerySet
from tsds.pipeline.select import Selection
from tsds.retrieval import prepare


class _Baseline(Baseline):
    """The shared frame of a baseline's selection: the eligible rows, the draw, the provenance lists, the
    query checks and what it reports."""

    def counts(self, pool: PreparedPool, queries: QuerySet, q: np.ndarray, config: SelectionConfig):
        """(p over the pool, counts per row) of this baseline."""
        raise NotImplementedError

    def select(self, pool: PreparedPool, queries: QuerySet, config: SelectionConfig) -> Selection:
        elig = pool.eligibility
        elig.require(config.size, self.name)
        q = queries.unit()
        with pool.stages.stage(f"{self.name}"):
            p, counts = self.counts(pool, queries, q, config)
        sel = make_selection(pool.store, q, p, counts, config)
        nearest, _ = pool.index.search(prepare(q, config.metric), 1)
        warnings = query_warnings(queries.texts, q, nearest[:, 0], pool.scale.typical(95))
        sel.info = {"method": self.name, "description": self.description, "query_vectors": q,
                    "parameters": self.parameters(config),
                    "index": {"kind": "flat" if self.name == "knn" else "none"}, "query_warnings": warnings}
        return sel


class Random(_Baseline):
    name = "random"
    description = "Training data drawn uniformly at random from the eligible pool rows (baseline random)."

    def parameters(self, config):
        return {**super().parameters(config), "sampling": config.sampling, "seed": config.seed}

    def counts(self, pool, queries, q, config):
        mask = pool.eligibility.mask
        p = mask / mask.sum()
        return p, draw(p, config)


class Full(_Baseline):
    name = "full"
    description = "Every eligible pool row once (baseline full: no selection; the budget does not apply)."

    def parameters(self, config):
        return {**super().parameters(config), "note": "every eligible pool row once; the budget does not apply"}

    def counts(self, pool, queries, q, config):
        mask = pool.eligibility.mask
        return mask / mask.sum(), mask.astype(np.int64)


class Knn(_Baseline):
    name = "knn"
    description = ("Training data selected as the nearest pool rows of the query examples (baseline knn: cosine, "
                   "round-robin over the queries so that each gets its share).")

    def parameters(self, config):
        return {**super().parameters(config), "metric": "cosine", "index": config.index,
                "order": "round-robin over the queries"}

    def counts(self, pool, queries, q, config):
        from tsds.methods.knn import knn_round_robin

        knn_index = pool.store.index("cosine", config.index)
        pool.eligibility.apply(knn_index)
        counts = knn_round_robin(knn_index, q, config.size)
        return counts / counts.sum(), counts


class Dsir(_Baseline):
    name = "dsir"
    description = ("Training data selected by hashed n-gram importance resampling towards the query examples "
                   "(baseline dsir, Xie et al. 2023).")

    def __init__(self, **options):
        self.options = options  # n, num_buckets of tsds.methods.dsir.dsir_log_weights

    def parameters(self, config):
        from tsds.methods.dsir import NUM_BUCKETS

        return {**super().parameters(config), "sampling": config.sampling, "seed": config.seed,
                "ngram": 2, "num_buckets": NUM_BUCKETS, **self.options}

    def counts(self, pool, queries, q, config):
        from tsds.methods.dsir import dsir_log_weights, store_texts

        texts = pool.preparation.pool_texts
        texts = texts if texts is not None else store_texts(pool.store)
        mask = pool.eligibility.mask
        logw = dsir_log_weights(texts, queries.texts, eligible=mask, **self.options)
        p = np.exp(logw - logw[mask].max())
        p /= p.sum()
        return p, draw(p, config, log_p=logw)
