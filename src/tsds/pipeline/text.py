"""Text in, selected records out: select from a pool store for a query file and write the records."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from tsds.config import SelectionConfig
from tsds.errors import InputError
from tsds.io.output import atomic_dir, check_output_dir, save_json, save_npy
from tsds.io.readers import TextSpec, read_records, read_texts
from tsds.io.writers import dataset_card, records_format, write_records
from tsds.pipeline.select import DensityCache, Selection, select_on_index
from tsds.pipeline.stages import StageLog
from tsds.store.pool import PoolStore

PROVENANCE = ["_tsds_row", "_tsds_file", "_tsds_location", "_tsds_probability", "_tsds_times_drawn",
              "_tsds_nearest_query", "_tsds_query_distance", "_tsds_density", "_tsds_cluster_size"]


def select_from_store(
    store: PoolStore | str | Path,
    queries,
    config: SelectionConfig,
    *,
    query_spec: TextSpec | None = None,
    embedder=None,
    stages: StageLog | None = None,
    progress=None,
) -> tuple[Selection, dict]:
    """Embed the queries with the store's embedder and select; densities are read from and saved to the store."""
    from tsds.embed import load_embedder

    store = store if isinstance(store, PoolStore) else PoolStore(store)
    store.require_complete()
    stages = stages or StageLog()
    with stages.stage("read_queries") as info:
        if isinstance(queries, (str, Path)):
            texts, qstats = read_texts(queries, query_spec or store.text_spec)
            info["queries"] = len(texts)
        else:
            texts, qstats = list(queries), None
        if not texts:
            raise InputError(f"{queries}: no query examples")
    with stages.stage("embed_queries"):
        embedder = embedder or load_embedder(store.meta["embedder_spec"])
        if embedder.identity != store.meta["embedder"]:
            raise InputError(f"{store.root}: store was embedded with {store.meta['embedder'].get('model')!r}, "
                             f"which differs from the embedder available now ({embedder.identity.get('model')!r})")
        q = embedder.embed(texts)
    with stages.stage("index") as info:
        index = store.index(config.metric, config.index)
        info["kind"] = index.kind
    rho, count = store.load_densities(config.metric, config.sigma) if config.sigma > 0 else (None, None)
    cache = DensityCache(store.n_rows, rho, count)
    selection = select_on_index(index, q, config, stages=stages, density_cache=cache, progress=progress)
    if config.sigma > 0 and cache.computed:
        with stages.stage("save_densities"):
            store.save_densities(config.metric, config.sigma, cache.values, cache.counts)
    info = {"query_texts": texts, "query_read": qstats, "index": {"kind": index.kind, **index.calibration}}
    return selection, info


def selected_records(store: PoolStore, selection: Selection, query_texts: list[str]) -> list[dict]:
    """The drawn records (one row per draw) with all original fields plus provenance columns."""
    rows = selection.selected_indices
    if rows.size == 0:
        return []
    file_idx, locs = store.locations()
    distinct = np.unique(rows)
    fetched: dict[int, dict] = {}
    for f in np.unique(file_idx[distinct]):
        members = distinct[file_idx[distinct] == f]
        entry = store.files[int(f)]
        recs = read_records(entry["path"], locs[members].tolist(), fmt=entry["format"])
        fetched.update(zip(members.tolist(), recs))
    nearest, distance = selection.nearest_query(distinct)
    rho, cluster = selection.density_of(distinct)
    extra = {}
    for i, r in enumerate(distinct.tolist()):
        extra[r] = {
            "_tsds_row": r,
            "_tsds_file": store.files[int(file_idx[r])]["path"],
            "_tsds_location": int(locs[r]),
            "_tsds_probability": float(selection.probabilities[r]),
            "_tsds_times_drawn": int(selection.counts[r]),
            "_tsds_nearest_query": query_texts[int(nearest[i])] if nearest[i] >= 0 else None,
            "_tsds_query_distance": float(distance[i]) if np.isfinite(distance[i]) else None,
            "_tsds_density": float(rho[i]),
            "_tsds_cluster_size": int(cluster[i]),
        }
    return [{**fetched[r], **extra[r]} for r in rows.tolist()]


def write_text_selection(
    out: str | Path,
    store: PoolStore,
    selection: Selection,
    info: dict,
    *,
    queries_path,
    records_name: str = "selected.jsonl",
    overwrite: bool = False,
    stages: StageLog | None = None,
    source_field: str = "source",
) -> Path:
    """Write records, arrays, manifest and README.md dataset card into ``out`` atomically."""
    from tsds.api import build_manifest

    records_format(records_name)
    stages = stages or StageLog()
    with stages.stage("write"):
        records = selected_records(store, selection, info["query_texts"])
        with atomic_dir(out, overwrite) as tmp:
            write_records(tmp / records_name, records)
            save_npy(tmp / "probabilities.npy", selection.probabilities)
            save_npy(tmp / "selected_indices.npy", selection.selected_indices)
            sources = dict(Counter(str(r.get(source_field)) for r in records).most_common()) \
                if records and source_field in records[0] else None
            qstats = info.get("query_read")
            manifest = build_manifest(selection, {"queries": queries_path}, {
                "pool_store": {"path": str(store.root.resolve()), "rows": store.n_rows,
                               "files": store.files, "embedder": store.meta["embedder"],
                               "skipped_rows": store.meta.get("skipped_rows", 0),
                               "truncated_texts": store.meta.get("truncated_texts", 0)},
                "queries": {"count": len(info["query_texts"]),
                            "skipped_rows": qstats.skipped if qstats else 0},
                "index": info["index"],
                "records": {"file": records_name, "rows": len(records), "sources": sources},
            })
            save_json(tmp / "manifest.json", manifest)
            res = manifest["result"]
            summary = {
                "rows written (draws)": len(records),
                "distinct records": selection.distinct_selected,
                "support of p": res["support_size"],
                "objective": f"{res['objective']:.6g}",
                "alignment term (alpha/C x transport cost)": f"{res['alignment_term']:.6g}",
                "diversity term": f"{res['diversity_term']:.6g}",
                "level s": f"{res['level_s']:.6g}",
                "neighbours per query (mean)": f"{res['neighbours_used_per_query']['mean']:.1f}",
                "K used": res["k_used"],
                "recall@K of the index": res["recall_at_k"],
            }
            card = dataset_card(
                title=f"Selection for {Path(str(queries_path)).name}",
                pool={"store": str(store.root.resolve()), "rows": store.n_rows,
                      "embedder": store.meta["embedder"].get("model"), "files": store.files},
                queries={"path": str(queries_path), "count": len(info["query_texts"])},
                parameters=selection.config.model_dump(), summary=summary, sources=sources,
                records_file=records_name, columns=list(records[0]) if records else PROVENANCE,
            )
            (tmp / "README.md").write_text(card)
    return Path(out)


def select_text(pool, queries, *, out, config: SelectionConfig, query_spec: TextSpec | None = None,
                records_name: str = "selected.jsonl", overwrite: bool = False, progress=None,
                embedder=None) -> Selection:
    """One call: pool store + query file -> selected records, arrays, manifest and card in ``out``."""
    check_output_dir(out, overwrite)
    records_format(records_name)
    store = pool if isinstance(pool, PoolStore) else PoolStore(pool)
    stages = StageLog()
    started = time.time()
    selection, info = select_from_store(store, queries, config, query_spec=query_spec, stages=stages,
                                        progress=progress, embedder=embedder)
    write_text_selection(out, store, selection, info, queries_path=queries, records_name=records_name,
                         overwrite=overwrite, stages=stages)
    selection.timings["total_seconds"] = round(time.time() - started, 3)
    return selection
