"""The shared part of the baselines: query handling, building a `Selection`, and the dispatcher."""

from __future__ import annotations

import time

import numpy as np

from tsds.config import SelectionConfig
from tsds.core.solver import Allocation
from tsds.errors import ParameterError
from tsds.io.readers import TextSpec
from tsds.pipeline.select import Selection
from tsds.retrieval import DensityStats, prepare
from tsds.store.pool import PoolStore

BASELINES = ("random", "knn", "dsir", "full")
METHODS = ("tsds",) + BASELINES


def _open(store) -> PoolStore:
    store = store if isinstance(store, PoolStore) else PoolStore(store)
    store.require_complete()
    return store


def query_inputs(store: PoolStore, queries, *, query_spec: TextSpec | None = None, embedder=None,
                 need_vectors: bool = True):
    """(texts, read stats, unit-norm query embeddings or None) with the store's own embedder."""
    from tsds.pipeline.text import load_store_embedder, read_query_texts

    texts, qstats = read_query_texts(store, queries, query_spec)
    if not need_vectors:
        return texts, qstats, None
    embedder = load_store_embedder(store, embedder)
    q = np.asarray(embedder.embed(texts), dtype=np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return texts, qstats, q


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# Parameters of the TSDS objective and its search: a baseline does not use them, so giving one explicitly
# to a baseline is refused rather than recorded as if it had been used.
TSDS_ONLY = ("alpha", "C", "sigma", "initial_k", "recall_target", "density_cap", "sigma_auto", "alpha_auto")


def refuse_tsds_parameters(method: str, config: SelectionConfig) -> None:
    given = [k for k in TSDS_ONLY if k in config.model_fields_set]
    if given:
        raise ParameterError(f"{', '.join(given)} {'is a parameter' if len(given) == 1 else 'are parameters'} "
                             f"of method tsds; method {method!r} does not use {'it' if len(given) == 1 else 'them'}")


def baseline_config(method: str, config: SelectionConfig) -> SelectionConfig:
    """The config a baseline runs with: n distinct draws unless with-replacement was asked for explicitly
    (a baseline should be the strongest simple version of itself)."""
    refuse_tsds_parameters(method, config)
    if "sampling" not in config.model_fields_set:
        config = config.model_copy(update={"sampling": "without-replacement"})
    return config


def used_parameters(method: str, config: SelectionConfig, dsir_options: dict | None = None) -> dict:
    """What a baseline really used, for its manifest and card (no TSDS parameter it ignored)."""
    out: dict = {"method": method, "size": config.size}
    if method in ("random", "dsir"):
        out.update(sampling=config.sampling, seed=config.seed)
    if method == "knn":
        out.update(metric="cosine", index=config.index, order="round-robin over the queries")
    if method == "dsir":
        from tsds.baselines.dsir import NUM_BUCKETS

        out.update({"ngram": 2, "num_buckets": NUM_BUCKETS, **(dsir_options or {})})
    if method == "full":
        out["note"] = "every eligible pool row once; the budget does not apply"
    return out


def make_selection(store: PoolStore, q: np.ndarray | None, p: np.ndarray, counts: np.ndarray,
                   config: SelectionConfig, method: str, timings: dict) -> Selection:
    """A `Selection` for a baseline: p and counts as given; the "neighbour lists" hold every distinct
    selected candidate for every query with its cosine distance, so that the writer's provenance
    (nearest query and distance of each record) is exact. The allocation is empty (no transport
    weights, objective NaN): a baseline solves no TSDS problem."""
    chosen = np.flatnonzero(counts)
    m = 1 if q is None else q.shape[0]
    if q is not None and chosen.size:
        x = _unit(store.vectors().take(chosen))
        dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (q @ x.T))).astype(np.float64)
    else:
        dist = np.zeros((m, chosen.size))
    ids = np.broadcast_to(chosen, (m, chosen.size)).copy()
    nan = float("nan")
    alloc = Allocation(weights=np.zeros((m, chosen.size)), level=nan, support=np.zeros(m, dtype=np.int64),
                       alignment=nan, diversity=nan, objective=nan, truncated=False,
                       alpha=nan, C=nan)
    return Selection(probabilities=p, counts=np.asarray(counts, dtype=np.int64), allocation=alloc,
                     neighbour_ids=ids, neighbour_distances=dist, neighbour_densities=np.ones_like(dist),
                     k_used=int(chosen.size), k_history=[], recall=1.0, density_stats=DensityStats(),
                     config=config, timings={"method": method, **timings}, density_cache=None)


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


def select_baseline(method: str, store, queries, config: SelectionConfig, *, embedder=None,
                    query_spec: TextSpec | None = None, pool_texts: list[str] | None = None,
                    dsir_options: dict | None = None, exclude=None, exclude_radius: float = 0.0,
                    exclude_spec: TextSpec | None = None, keep_zero_rows: bool = False,
                    eligibility=None) -> tuple[Selection, dict]:
    """Run one baseline; returns (Selection, info) like `tsds.pipeline.text.select_from_store`, so
    `write_text_selection(out, store, selection, info, queries_path=...)` writes the same output.

    The rows it may select are decided as for tsds (tsds.pipeline.eligibility: zero-vector rows and
    ``exclude``), or given as ``eligibility``; the query checks are tsds's too.
    """
    from tsds import calibration as cal
    from tsds.hygiene import query_warnings
    from tsds.pipeline.eligibility import pool_eligibility, refuse_zero_queries
    from tsds.pipeline.text import load_store_embedder

    if method not in BASELINES:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    config = baseline_config(method, config)
    store = _open(store)
    started = time.time()
    texts, qstats, q = query_inputs(store, queries, query_spec=query_spec, embedder=embedder)
    refuse_zero_queries(texts, q, queries)
    t_query = time.time() - started
    n = store.n_rows
    timings = {"read_embed_queries_seconds": round(t_query, 3)}
    t0 = time.time()
    # the same index as tsds's for the same config: the radius matches and the query checks are the same rows
    index = store.index(config.metric, config.index)
    elig = eligibility or pool_eligibility(
        store, embedder=load_store_embedder(store, embedder), index=index, metric=config.metric,
        index_kind=config.index, exclude=exclude, exclude_radius=exclude_radius, exclude_spec=exclude_spec,
        keep_zero_rows=keep_zero_rows, pool_texts=pool_texts)
    elig.require(config.size, method)
    elig.apply(index)
    mask = elig.mask
    timings["eligibility_seconds"] = round(time.time() - t0, 3)
    t0 = time.time()
    if method == "random":
        p = mask / mask.sum()
        counts = draw(p, config)
    elif method == "full":
        p = mask / mask.sum()
        counts = mask.astype(np.int64)
    elif method == "knn":
        from tsds.baselines.knn import knn_round_robin

        knn_index = store.index("cosine", config.index)
        elig.apply(knn_index)
        counts = knn_round_robin(knn_index, q, config.size)
        p = counts / counts.sum()
    else:
        from tsds.baselines.dsir import dsir_log_weights, store_texts

        pool = pool_texts if pool_texts is not None else store_texts(store)
        logw = dsir_log_weights(pool, texts, eligible=mask, **(dsir_options or {}))
        p = np.exp(logw - logw[mask].max())
        p /= p.sum()
        counts = draw(p, config, log_p=logw)
    timings[f"{method}_seconds"] = round(time.time() - t0, 3)
    sel = make_selection(store, q, p, counts, config, method, timings)
    nearest, _ = index.search(prepare(q, config.metric), 1)
    warnings = query_warnings(texts, q, nearest[:, 0], cal.pool_scale(index).typical(95))
    info = {"query_texts": texts, "query_read": qstats, "method": method, "query_vectors": q,
            "parameters": used_parameters(method, config, dsir_options),
            "index": {"kind": "flat" if method == "knn" else "none"},
            "decontamination": elig.decontamination.summary() if elig.decontamination else None,
            "eligibility": elig.summary(), "excluded_rows": elig.excluded, "query_warnings": warnings}
    return sel, info


def select_method(method: str, store, queries, config: SelectionConfig, **kwargs) -> tuple[Selection, dict]:
    """One dispatch point for `tsds select --method`: TSDS or any baseline; (Selection, info). Every method
    takes the same eligibility arguments (``exclude``, ``exclude_radius``, ``exclude_spec``,
    ``keep_zero_rows`` or a ready ``eligibility``)."""
    if method == "tsds":
        from tsds.pipeline.text import select_from_store

        kwargs = {k: v for k, v in kwargs.items() if k not in ("pool_texts", "dsir_options")}
        sel, info = select_from_store(store, queries, config, **kwargs)
        sel.timings["method"] = "tsds"
        info["method"] = "tsds"
        return sel, info
    kwargs = {k: v for k, v in kwargs.items() if k not in ("stages", "progress")}
    return select_baseline(method, store, queries, config, **kwargs)
