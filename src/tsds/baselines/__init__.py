"""Baseline selectors behind the same interface, budget and output format as TSDS.

    sel, info = select_method("knn", store, "task/queries.jsonl", config)
    write_text_selection(out, store, sel, info, queries_path="task/queries.jsonl")

Every method returns the same `Selection` type as TSDS (probabilities over the whole pool, draws per
candidate), so any selection can be swapped for another, written by the same writer and evaluated by the
same harness:

Every method selects from the same eligible rows (tsds.pipeline.eligibility: rows with an all-zero
embedding and the rows ``exclude`` removes are left out), and baselines draw n distinct rows unless
with-replacement is asked for explicitly; a TSDS-only parameter (alpha, C, sigma, ...) given to a baseline
is refused, and its manifest records the parameters it used and no objective.

- ``random``: uniform over the eligible rows.
- ``knn``: the nearest neighbours of the queries (cosine), round-robin over the queries so that each query
  gets its share n/M of distinct candidates (RDS-style retrieval). Deterministic; always distinct.
- ``dsir``: hashed n-gram importance resampling (Xie et al., 2023), as in the authors' ``data-selection``
  package: unigram+bigram counts hashed into 10,000 buckets, importance weight
  w_i = exp(sum_b f_ib (log p_target(b) - log p_raw(b))), then Gumbel top-k (without replacement) or
  multinomial draws (with replacement) from p proportional to w.
- ``full``: every eligible row once (the budget does not apply).
- ``tsds``: the method itself (``tsds.pipeline.text.select_from_store``), for one dispatch point.
"""

from __future__ import annotations

from tsds.baselines.common import BASELINES, METHODS, query_inputs, select_baseline, select_method

__all__ = ["BASELINES", "METHODS", "query_inputs", "select_baseline", "select_method"]
