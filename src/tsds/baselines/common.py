"""The shared part of the baselines: query handling, building a `Selection`, and the dispatcher."""

from __future__ import annotations

import time

import numpy as np

from tsds.config import SelectionConfig
from tsds.core.solver import Allocation
from tsds.errors import ParameterError
from tsds.io.readers import TextSpec
from tsds.pipeline.select import Selection
from tsds.retrieval import DensityStats
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


def make_selection(store: PoolStore, q: np.ndarray | None, p: np.ndarray, counts: np.ndarray,
                   config: SelectionConfig, method: str, timings: dict) -> Selection:
    """A `Selection` for a baseline: p and counts as given; the "neighbour lists" hold every distinct
    selected candidate for every query with its cosine distance, so that the writer's provenance
    (nearest query and distance of each record) is exact."""
    chosen = np.flatnonzero(counts)
    m = 1 if q is None else q.shape[0]
    if q is not None and chosen.size:
        x = _unit(store.vectors().take(chosen))
        dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (q @ x.T))).astype(np.float64)
    else:
        dist = np.zeros((m, chosen.size))
    ids = np.broadcast_to(chosen, (m, chosen.size)).copy()
    alloc = Allocation(weights=np.zeros((m, chosen.size)), level=0.0, support=np.zeros(m, dtype=np.int64),
                       alignment=0.0, diversity=0.0, objective=0.0, truncated=False,
                       alpha=config.alpha, C=config.C)
    return Selection(probabilities=p, counts=np.asarray(counts, dtype=np.int64), allocation=alloc,
                     neighbour_ids=ids, neighbour_distances=dist, neighbour_densities=np.ones_like(dist),
                     k_used=int(chosen.size), k_history=[], recall=1.0, density_stats=DensityStats(),
                     config=config, timings={"method": method, **timings}, density_cache=None)


def draw(p: np.ndarray, config: SelectionConfig, log_p: np.ndarray | None = None) -> np.ndarray:
    """Counts per candidate: n multinomial draws, or n distinct by Gumbel top-k (in log space when given)."""
    n = config.size
    rng = np.random.default_rng(config.seed)
    if config.sampling == "with-replacement":
        return rng.multinomial(n, p / p.sum()).astype(np.int64)
    logp = np.log(np.maximum(p, 1e-300)) if log_p is None else log_p
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
                    dsir_options: dict | None = None) -> tuple[Selection, dict]:
    """Run one baseline; returns (Selection, info) like `tsds.pipeline.text.select_from_store`, so
    `write_text_selection(out, store, selection, info, queries_path=...)` writes the same output."""
    if method not in BASELINES:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    store = _open(store)
    started = time.time()
    texts, qstats, q = query_inputs(store, queries, query_spec=query_spec, embedder=embedder)
    t_query = time.time() - started
    n = store.n_rows
    if method != "full" and config.size > n:
        raise ParameterError(f"size {config.size} is larger than the pool ({n} rows)")
    timings = {"read_embed_queries_seconds": round(t_query, 3)}
    t0 = time.time()
    if method == "random":
        p = np.full(n, 1.0 / n)
        counts = draw(p, config)
    elif method == "full":
        p = np.full(n, 1.0 / n)
        counts = np.ones(n, dtype=np.int64)
    elif method == "knn":
        from tsds.baselines.knn import knn_round_robin

        index = store.index("cosine", config.index)
        counts = knn_round_robin(index, q, config.size)
        p = counts / counts.sum()
    else:
        from tsds.baselines.dsir import dsir_log_weights, store_texts

        pool = pool_texts if pool_texts is not None else store_texts(store)
        logw = dsir_log_weights(pool, texts, **(dsir_options or {}))
        p = np.exp(logw - logw.max())
        p /= p.sum()
        counts = draw(p, config, log_p=logw)
    timings[f"{method}_seconds"] = round(time.time() - t0, 3)
    sel = make_selection(store, q, p, counts, config, method, timings)
    info = {"query_texts": texts, "query_read": qstats, "method": method,
            "index": {"kind": "flat" if method == "knn" else "none"}}
    return sel, info


def select_method(method: str, store, queries, config: SelectionConfig, **kwargs) -> tuple[Selection, dict]:
    """One dispatch point for `tsds select --method`: TSDS or any baseline; (Selection, info)."""
    if method == "tsds":
        from tsds.pipeline.text import select_from_store

        kwargs = {k: v for k, v in kwargs.items() if k in ("embedder", "query_spec")}
        sel, info = select_from_store(store, queries, config, **kwargs)
        sel.timings["method"] = "tsds"
        info["method"] = "tsds"
        return sel, info
    return select_baseline(method, store, queries, config, **kwargs)
