"""``tsds.api.sweep_alpha``: how the selection changes with alpha, from one neighbour fetch."""

from __future__ import annotations

from tsds.io.readers import TextSpec


def sweep_alpha(pool, queries, alphas, *, C: float | None = None, sigma="auto", metric: str = "euclidean",
                query_spec: TextSpec | None = None, with_ot: bool = True) -> dict:
    """For each alpha: support of p, objective terms and the OT distance to the queries.

    Parameters
    ----------
    pool : Pool or path of a store folder
    queries : path or list of str
        The target's query examples.
    alphas : sequence of float in [0, 1]
    C : float > 0, optional
        Scale of distances (distance units); default: the recommendation from the embedding scale.
    sigma : float >= 0 or "auto"
        Kernel radius (distance units), or the median nearest-neighbour distance / 3.
    metric : {"euclidean", "cosine"}
    query_spec : TextSpec, optional
        How to read the queries' text (default: the pool's).
    with_ot : bool
        Compute the exact OT distance (slow for very wide supports).

    Returns
    -------
    dict
        ``C``, ``C_recommendation``, ``sigma``, ``sigma_auto`` (the rule's report or None), ``k_used``,
        ``neighbour_fetches`` and ``rows`` (one dict per alpha).

    Examples
    --------
    >>> import tempfile, os, tsds
    >>> from tsds.api import sweep_alpha
    >>> pool = tsds.Pool.build([f"note {i} on bread and cheese {i % 7}" for i in range(60)],
    ...                        out=os.path.join(tempfile.mkdtemp(), "store"))
    >>> s = sweep_alpha(pool, ["bread", "cheese"], [0.2, 0.8], C=1.0, sigma=0.0, with_ot=False)
    >>> [r["alpha"] for r in s["rows"]], s["rows"][0]["support"] >= s["rows"][1]["support"]
    ([0.2, 0.8], True)
    """
    from tsds.api.pool import Pool
    from tsds.pipeline import autoparams as cal
    from tsds.pipeline.queries import load_store_embedder, read_query_texts
    from tsds.pipeline.select import DensityCache

    store = (pool if isinstance(pool, Pool) else Pool.open(pool)).store
    texts, _ = read_query_texts(store, queries, query_spec)
    q = load_store_embedder(store).embed(texts)
    index = store.index(metric)
    scale = cal.pool_scale(index)
    c_rec, c_info = cal.recommend_C(scale)
    if isinstance(sigma, str) and sigma.strip().lower() == "auto":
        s, s_info = cal.auto_sigma(scale)
    else:
        s, s_info = float(sigma), None
    c = C if C is not None else c_rec
    cache = None
    if s > 0:
        rho, count = store.load_densities(metric, s)
        cache = DensityCache(store.n_rows, rho, count)
    nb = cal.Neighbours(index, q, metric=metric, sigma=s, cache=cache)
    result = cal.sweep(index, q, alphas, C=c, sigma=s, metric=metric, neighbours=nb, with_ot=with_ot)
    if cache is not None and cache.computed:
        store.save_densities(metric, s, cache.values, cache.counts)
    return {"C": c, "C_recommendation": c_info, "sigma": s, "sigma_auto": s_info, "k_used": result.k_used,
            "neighbour_fetches": result.fetches, "rows": [r.as_dict() for r in result.rows]}
