"""Text in, selected records out: select from a pool store for a query file and write the records."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tsds.config import SelectionConfig
from tsds.errors import InputError, ParameterError
from tsds.io.output import atomic_dir, check_output_dir, save_json, save_npy
from tsds.io.readers import LINE_FORMATS, TextSpec, read_records, read_texts
from tsds.io.writers import dataset_card, records_format, records_summary, write_records
from tsds.pipeline.select import DensityCache, Selection, select_on_index
from tsds.pipeline.stages import StageLog
from tsds.pipeline.decontaminate import Decontamination
from tsds.pipeline.eligibility import Eligibility, pool_eligibility, refuse_zero_queries
from tsds.store.pool import PoolStore
from tsds.store.provenance import check_record, check_source

log = logging.getLogger("tsds")
DETAIL_FILE = "selection_detail.npz"
QUERIES_FILE = "queries.jsonl"

PROVENANCE_PREFIX = "_tsds_"
PROVENANCE = ["_tsds_row", "_tsds_file", "_tsds_location", "_tsds_probability", "_tsds_times_drawn",
              "_tsds_nearest_query", "_tsds_query_distance", "_tsds_density", "_tsds_cluster_size"]


@dataclass
class PoolContext:
    """The pool side of a selection, shared by every target: index (after decontamination), densities,
    the pool's distance scale and the calibration and decontamination reports."""

    store: PoolStore
    index: object
    cache: DensityCache
    config: SelectionConfig
    scale: object
    calibration: dict = field(default_factory=dict)
    eligibility: Eligibility | None = None

    @property
    def decontamination(self) -> Decontamination | None:
        return self.eligibility.decontamination if self.eligibility is not None else None

    def save_densities(self, stages: StageLog) -> None:
        # densities over a decontaminated pool differ from the full pool's: never persist those
        if self.config.sigma > 0 and self.cache.computed and self._persisted_densities:
            with stages.stage("save_densities"):
                self.store.save_densities(self.config.metric, self.config.sigma, self.cache.values, self.cache.counts)

    @property
    def _persisted_densities(self) -> bool:
        return self.eligibility is None or self.eligibility.full_pool_densities


_GENERIC_STEMS = ("queries", "query", "train", "examples", "data", "dev", "test", "heldout")


def task_name(queries, explicit: str | None = None) -> str:
    """The target task's name for cards, reports and evaluation rows: ``explicit``, else the query file's
    name, or its folder's when the file has a generic name (tasks/food/queries.jsonl -> food)."""
    if explicit:
        return str(explicit)
    if not isinstance(queries, (str, Path)):
        return "queries"
    path = Path(queries)
    stem = path.name.split(".")[0]
    return path.parent.name if stem.lower() in _GENERIC_STEMS and path.parent.name not in ("", ".") else stem


def read_query_texts(store: PoolStore, queries, query_spec: TextSpec | None = None):
    """(texts, read stats) of a query file or an in-memory list of texts."""
    if isinstance(queries, (str, Path)):
        texts, qstats = read_texts(queries, query_spec or store.text_spec)
    else:
        texts, qstats = list(queries), None
    if not texts:
        raise InputError(f"{queries}: no query examples")
    return texts, qstats


def load_store_embedder(store: PoolStore, embedder=None):
    from tsds.embed import load_embedder

    embedder = embedder or load_embedder(store.meta["embedder_spec"])
    if embedder.identity != store.meta["embedder"]:
        raise InputError(f"{store.root}: store was embedded with {store.meta['embedder'].get('model')!r}, "
                         f"which differs from the embedder available now ({embedder.identity.get('model')!r})")
    return embedder


def prepare_pool(store: PoolStore, config: SelectionConfig, *, embedder, stages: StageLog,
                 exclude=None, exclude_radius: float = 0.0, exclude_spec: TextSpec | None = None,
                 keep_zero_rows: bool = False, eligibility: Eligibility | None = None) -> PoolContext:
    """Index, eligible rows (zero rows, decontamination), pool scale and sigma calibration: everything that
    does not depend on the queries. ``eligibility``: rows already decided (e.g. once for several methods);
    otherwise computed here from ``exclude`` and ``keep_zero_rows``, as for every other method."""
    from tsds import calibration as cal

    with stages.stage("index") as info:
        index = store.index(config.metric, config.index)
        info["kind"] = index.kind
    with stages.stage("eligibility") as info:
        elig = eligibility or pool_eligibility(
            store, embedder=embedder, index=index, metric=config.metric, index_kind=config.index, exclude=exclude,
            exclude_radius=exclude_radius, exclude_spec=exclude_spec, keep_zero_rows=keep_zero_rows)
        elig.apply(index)
        info.update(excluded=int(elig.excluded.size), zero_rows=int(elig.zero_rows.size))
        if elig.decontamination is not None:
            info.update(removed=int(elig.decontamination.removed.size), eval_items=elig.decontamination.eval_items)
    calibration: dict = {}
    with stages.stage("pool_scale"):
        scale = cal.pool_scale(index)
    if config.sigma_auto:
        sigma, calibration["sigma"] = cal.auto_sigma(scale)
        config = config.model_copy(update={"sigma": sigma})
    c_rec, calibration["C_recommendation"] = cal.recommend_C(scale)
    calibration["C_recommendation"]["used"] = config.C
    calibration["pool_scale"] = scale.summary()
    if elig.full_pool_densities and config.sigma > 0:
        rho, count = store.load_densities(config.metric, config.sigma)
        cache = DensityCache(store.n_rows, rho, count)
    else:
        cache = DensityCache(store.n_rows)
    return PoolContext(store, index, cache, config, scale, calibration, elig)


def select_queries(ctx: PoolContext, q: np.ndarray, texts: list[str], config: SelectionConfig, *,
                   stages: StageLog, progress=None) -> tuple[Selection, dict, list[dict]]:
    """One target on a prepared pool: alpha auto if asked, select, hygiene warnings."""
    from tsds import calibration as cal
    from tsds.hygiene import query_warnings

    calib = {}
    if config.alpha_auto is not None:
        with stages.stage("alpha_auto"):
            alpha, calib = cal.auto_alpha(ctx.index, q, size=config.size, C=config.C, sigma=config.sigma,
                                          multiple=config.alpha_auto, metric=config.metric,
                                          initial_k=config.initial_k, cache=ctx.cache)
        config = config.model_copy(update={"alpha": alpha})
    selection = select_on_index(ctx.index, q, config, stages=stages, density_cache=ctx.cache, progress=progress)
    warnings = query_warnings(texts, q, selection.neighbour_distances[:, 0], ctx.scale.typical(95))
    for w in warnings:
        log.warning("query warning: %s", w["message"])
    return selection, calib, warnings


def select_from_store(
    store: PoolStore | str | Path,
    queries,
    config: SelectionConfig,
    *,
    query_spec: TextSpec | None = None,
    embedder=None,
    stages: StageLog | None = None,
    progress=None,
    exclude=None,
    exclude_radius: float = 0.0,
    exclude_spec: TextSpec | None = None,
    keep_zero_rows: bool = False,
    eligibility: Eligibility | None = None,
) -> tuple[Selection, dict]:
    """Embed the queries with the store's embedder and select; densities are read from and saved to the store.

    ``exclude``: evaluation file(s) whose items (within ``exclude_radius``, or equal after normalising
    whitespace and case) are removed from the pool first. Rows with an all-zero embedding are left out
    unless ``keep_zero_rows``. ``eligibility``: the rows decided already (tsds.pipeline.eligibility),
    instead of ``exclude`` and ``keep_zero_rows``. ``config.sigma_auto`` / ``config.alpha_auto``
    calibrate sigma and alpha (see tsds.calibration); the choices are in ``info["calibration"]``.
    """
    store = store if isinstance(store, PoolStore) else PoolStore(store)
    store.require_complete()
    stages = stages or StageLog()
    with stages.stage("read_queries") as info:
        texts, qstats = read_query_texts(store, queries, query_spec)
        info["queries"] = len(texts)
    with stages.stage("embed_queries"):
        embedder = load_store_embedder(store, embedder)
        q = embedder.embed(texts)
        refuse_zero_queries(texts, q, queries)
    ctx = prepare_pool(store, config, embedder=embedder, stages=stages, exclude=exclude,
                       exclude_radius=exclude_radius, exclude_spec=exclude_spec, keep_zero_rows=keep_zero_rows,
                       eligibility=eligibility)
    selection, alpha_info, warnings = select_queries(ctx, q, texts, ctx.config, stages=stages, progress=progress)
    ctx.save_densities(stages)
    calibration = dict(ctx.calibration)
    if alpha_info:
        calibration["alpha"] = alpha_info
    info = {"query_texts": texts, "query_read": qstats, "query_vectors": np.asarray(q, dtype=np.float32),
            "index": {"kind": ctx.index.kind, **ctx.index.calibration}, "calibration": calibration,
            "decontamination": ctx.decontamination.summary() if ctx.decontamination else None,
            "eligibility": ctx.eligibility.summary(), "excluded_rows": ctx.eligibility.excluded,
            "query_warnings": warnings}
    return selection, info


def save_detail(folder: Path, parts: list[Selection], query_vectors: np.ndarray, query_texts: list[str],
                query_target: np.ndarray | None = None, targets: list[str] | None = None) -> None:
    """What `tsds report` needs beyond the records: neighbour lists, transport weights, query vectors and texts."""
    arrays = {"query_vectors": np.asarray(query_vectors, dtype=np.float32),
              "query_target": np.zeros(len(query_texts), np.int64) if query_target is None else query_target}
    for t, sel in enumerate(parts):
        arrays[f"ids_{t}"] = sel.neighbour_ids
        arrays[f"distances_{t}"] = sel.neighbour_distances
        arrays[f"densities_{t}"] = sel.neighbour_densities
        arrays[f"weights_{t}"] = sel.allocation.weights
    with open(folder / DETAIL_FILE, "wb") as f:
        np.savez_compressed(f, **arrays)
    with open(folder / QUERIES_FILE, "w", encoding="utf-8") as f:
        for j, text in enumerate(query_texts):
            tgt = targets[int(arrays["query_target"][j])] if targets else None
            f.write(json.dumps({"query": j, "target": tgt, "text": text}, ensure_ascii=False) + "\n")


def record_groups(store: PoolStore, selection: Selection, query_texts: list[str], chunk: int = 2048) -> list[dict]:
    """The drawn records as fetch jobs, in output order: groups of distinct rows of one pool file, each
    with its rows' locations, draw counts, embedded-text hashes and provenance columns. ``fetch_group``
    turns a group into records; the groups' records concatenated are the records file (one row per
    draw). Files that can be entered at a row (plain line formats, Parquet) are cut into groups of
    ``chunk`` rows, fetched in parallel by an engine that can; others (gzip, JSON arrays, Arrow) are
    read in one pass, one group. Each pool file with drawn rows is checked against the store first
    (tsds.store.provenance.check_source): a changed file is refused here."""
    rows = selection.selected_indices
    if rows.size == 0:
        return []
    file_idx, locs = store.locations()
    distinct, times = np.unique(rows, return_counts=True)
    nearest, distance = selection.nearest_query(distinct)
    rho, cluster = selection.density_of(distinct)
    hashes, known = store.text_hashes(distinct)
    spec = asdict(store.text_spec)
    groups = []
    for f in np.unique(file_idx[distinct]):       # rows are numbered file by file, so this keeps row order
        members = np.flatnonzero(file_idx[distinct] == f)
        entry = store.files[int(f)]
        # rows without a text hash (a store built before them) rely on the whole file's sha256
        check_source(entry, full=not bool(known[members].all()))
        step = chunk if _enterable(entry) else members.size
        for a in range(0, members.size, step):
            part = members[a:a + step]
            extras = []
            for i in part.tolist():
                r = int(distinct[i])
                extras.append({
                    "_tsds_row": r,
                    "_tsds_file": entry["path"],
                    "_tsds_location": int(locs[r]),
                    "_tsds_probability": float(selection.probabilities[r]),
                    "_tsds_times_drawn": int(selection.counts[r]),
                    "_tsds_nearest_query": query_texts[int(nearest[i])] if nearest[i] >= 0 else None,
                    "_tsds_query_distance": float(distance[i]) if np.isfinite(distance[i]) else None,
                    "_tsds_density": float(rho[i]),
                    "_tsds_cluster_size": int(cluster[i]),
                })
            groups.append({"path": entry["path"], "format": entry["format"],
                           "locations": locs[distinct[part]].tolist(), "times": times[part].tolist(),
                           "hashes": [int(h) if k else None for h, k in zip(hashes[part], known[part])],
                           "spec": spec, "extras": extras})
    if sum(len(g["extras"]) for g in groups) != distinct.size:
        raise RuntimeError(f"fetch plan covers {sum(len(g['extras']) for g in groups)} of {distinct.size} drawn rows")
    return groups


def _enterable(entry: dict) -> bool:
    """Whether records of this pool file can be read without a pass over the whole file."""
    if entry["format"] == "parquet":
        return True
    if entry["format"] not in LINE_FORMATS or not Path(entry["path"]).is_file():
        return False
    with open(entry["path"], "rb") as f:
        return f.read(2) != b"\x1f\x8b"


def fetch_group(group: dict) -> list[dict]:
    """A group's records (read back by location with the pool's reader) with their provenance columns,
    one row per draw. Each record's text, extracted with the store's text spec, must be the text the
    store embedded for the row; a record with a field of the provenance columns' prefix is refused."""
    path = group["path"]
    try:
        recs = read_records(path, group["locations"], fmt=group["format"])
    except InputError as exc:      # the build read a row at each of these locations
        raise InputError(f"{exc}; the pool file changed since the store was built; rebuild the store") from None
    spec = TextSpec(**group["spec"])
    out = []
    for rec, extra, n, h, loc in zip(recs, group["extras"], group["times"], group["hashes"], group["locations"]):
        row = extra["_tsds_row"]
        if h is not None:
            check_record(spec, rec, h, path, row, loc)
        clash = next((k for k in rec if isinstance(k, str) and k.startswith(PROVENANCE_PREFIX)), None)
        if clash is not None:
            raise InputError(f"{path}: row {row} (location {loc}) has a field {clash!r}; names starting with "
                             f"{PROVENANCE_PREFIX!r} are the records file's provenance columns; rename or drop it")
        out.extend([{**rec, **extra}] * n)
    return out


def _check_drawn(records: int, selection: Selection) -> None:
    drawn = int(selection.selected_indices.size)
    if records != drawn:
        raise RuntimeError(f"fetched {records} records for {drawn} draws")


def selected_records(store: PoolStore, selection: Selection, query_texts: list[str]) -> list[dict]:
    """The drawn records (one row per draw) with all original fields plus provenance columns."""
    records = [r for g in record_groups(store, selection, query_texts) for r in fetch_group(g)]
    _check_drawn(len(records), selection)
    return records


def write_selected(path: Path, store: PoolStore, selection: Selection, query_texts: list[str],
                   source_field: str) -> dict:
    """Fetch and write the records file; returns its summary (tsds.io.writers.records_summary), whose
    row count is counted in the written file and equals the number of draws (else an error).

    An engine that can (Ray: fetched and written by Ray Data tasks) does it; otherwise this process.
    Either way the file has the same bytes.
    """
    groups = record_groups(store, selection, query_texts)
    drawn = int(selection.selected_indices.size)
    engine = store.engine
    if engine is not None and getattr(engine, "distributed", False):
        from tsds.pipeline.records_ray import write_records_on

        summary = write_records_on(engine, path, groups, fetch_group, source_field=source_field, expected=drawn)
    else:
        records = [r for g in groups for r in fetch_group(g)]
        _check_drawn(len(records), selection)
        summary = records_summary(records, source_field, rows=write_records(path, records, expected=drawn))
    if summary["rows"] != drawn:
        raise RuntimeError(f"{path}: {summary['rows']} rows written for {drawn} draws")
    return summary


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
        with atomic_dir(out, overwrite) as tmp:
            written = write_selected(tmp / records_name, store, selection, info["query_texts"], source_field)
            save_npy(tmp / "probabilities.npy", selection.probabilities)
            save_npy(tmp / "selected_indices.npy", selection.selected_indices)
            sources = written["sources"]
            qstats = info.get("query_read")
            manifest = build_manifest(selection, {"queries": queries_path}, {
                "pool_store": {"path": str(store.root.resolve()), "rows": store.n_rows,
                               "files": store.files, "embedder": store.meta["embedder"],
                               "skipped_rows": store.meta.get("skipped_rows", 0),
                               "truncated_texts": store.meta.get("truncated_texts", 0)},
                "queries": {"count": len(info["query_texts"]),
                            "skipped_rows": qstats.skipped if qstats else 0},
                "index": info["index"],
                "records": {"file": records_name, "rows": written["rows"], "sources": sources},
                "method": info.get("method", "tsds"),
                "task": task_name(queries_path, info.get("task_name")),
                **{k: info[k] for k in ("calibration", "decontamination", "eligibility", "query_warnings")
                   if info.get(k) is not None},
            })
            baseline = manifest["method"] != "tsds"
            if baseline:
                # a baseline solves no TSDS problem: its parameters are what it used, and it has no objective
                manifest["parameters"] = info.get("parameters") or {"method": manifest["method"]}
                manifest["result"].update({k: None for k in _TSDS_RESULT})
            save_json(tmp / "manifest.json", manifest)
            if info.get("query_vectors") is not None:
                save_detail(tmp, [selection], info["query_vectors"], info["query_texts"])
            res = manifest["result"]
            summary = {
                "rows written (draws)": written["rows"],
                "distinct records": selection.distinct_selected,
                "support of p": res["support_size"],
            }
            if not baseline:
                summary.update({
                    "objective": f"{res['objective']:.6g}",
                    "alignment term (alpha/C x transport cost)": f"{res['alignment_term']:.6g}",
                    "diversity term": f"{res['diversity_term']:.6g}",
                    "level s": f"{res['level_s']:.6g}",
                    "neighbours per query (mean)": f"{res['neighbours_used_per_query']['mean']:.1f}",
                    "K used": res["k_used"],
                    "recall@K of the index": res["recall_at_k"],
                })
            card = dataset_card(
                title=f"Selection for {manifest['task']}" + (f" (baseline {manifest['method']})" if baseline else ""),
                pool={"store": str(store.root.resolve()), "rows": store.n_rows,
                      "embedder": store.meta["embedder"].get("model"), "files": store.files},
                queries={"path": str(queries_path), "count": len(info["query_texts"])},
                parameters=manifest["parameters"], summary=summary, sources=sources,
                records_file=records_name, columns=written["columns"] or PROVENANCE,
            )
            (tmp / "README.md").write_text(card + card_extra(info))
    return Path(out)


_TSDS_RESULT = ("objective", "alignment_term", "diversity_term", "transport_cost", "max_weighted_mass", "level_s",
                "neighbours_used_per_query", "k_used", "k_history", "truncated", "recall_at_k", "densities")


def card_extra(info: dict) -> str:
    """Dataset-card lines for calibration, decontamination, query warnings and the report files."""
    lines = ["", "## Calibration, decontamination and query checks", ""]
    cal = info.get("calibration") or {}
    if "sigma" in cal:
        lines.append(f"- sigma auto: {cal['sigma']['sigma']} ({cal['sigma']['rule']})")
    if "alpha" in cal:
        a = cal["alpha"]
        lines.append(f"- alpha auto: {a['alpha']:.4g} (support {a['support']} >= {a['multiple']} x {a['size']}; {a['rule']})")
    if "C_recommendation" in cal:
        lines.append(f"- C used {cal['C_recommendation']['used']}; recommended from the embedding scale: "
                     f"{cal['C_recommendation']['C']} ({cal['C_recommendation']['rule']})")
    e = info.get("eligibility")
    if e:
        z = e["zero_rows"]
        lines.append(f"- eligible pool rows: {e['eligible_rows']} of {e['pool_rows']}; rows with an all-zero "
                     f"embedding: {z['count']} ({'left out' if z['excluded'] else 'kept'})"
                     + (f", e.g. {'; '.join(z['examples'][:3])}" if z["examples"] else ""))
    d = info.get("decontamination")
    if d:
        lines.append(f"- decontamination: {d['removed']} pool rows removed ({d['removed_by_radius']} within radius "
                     f"{d['radius']} of {d['eval_items']} evaluation items, {d['removed_by_exact_text']} more by exact text)")
    warns = info.get("query_warnings") or []
    lines.append(f"- query warnings: {len(warns)}")
    for w in warns[:20]:
        lines.append(f"  - {w['kind']}: {w['message']}")
    lines += ["", f"`{DETAIL_FILE}` and `{QUERIES_FILE}` hold the neighbour lists, transport weights and queries "
              "that `tsds report` draws its figures from.", ""]
    return "\n".join(lines)


def select_text(pool, queries, *, out, config: SelectionConfig, query_spec: TextSpec | None = None,
                records_name: str = "selected.jsonl", overwrite: bool = False, progress=None,
                embedder=None, exclude=None, exclude_radius: float = 0.0, exclude_spec: TextSpec | None = None,
                report: bool = False, method: str = "tsds", keep_zero_rows: bool = False,
                task_name: str | None = None) -> Selection:
    """One call: pool store + query file -> selected records, arrays, manifest and card in ``out``.

    ``method``: tsds, or a baseline (random, knn, dsir, full; see tsds.baselines) written the same way,
    from the same eligible rows (zero-vector rows and ``exclude`` left out for every method).
    ``task_name``: the target's name in the card and manifest (default: from the query file's path).
    """
    from tsds.baselines import METHODS, select_method

    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "tsds" and report:
        raise ParameterError(f"--report draws the transport plan of method tsds; method {method!r} has none")
    check_output_dir(out, overwrite)
    records_format(records_name)
    store = pool if isinstance(pool, PoolStore) else PoolStore(pool)
    stages = StageLog()
    started = time.time()
    selection, info = select_method(method, store, queries, config, query_spec=query_spec, stages=stages,
                                    progress=progress, embedder=embedder, exclude=exclude,
                                    exclude_radius=exclude_radius, exclude_spec=exclude_spec,
                                    keep_zero_rows=keep_zero_rows)
    info["task_name"] = task_name
    write_text_selection(out, store, selection, info, queries_path=queries, records_name=records_name,
                         overwrite=overwrite, stages=stages)
    selection.timings["total_seconds"] = round(time.time() - started, 3)
    if report:
        from tsds.report import build_report

        build_report(out, store=store)
    return selection
