"""The selected records: fetched back from the pool files by location, checked against the store (each
record's text must be the text embedded for its row), with provenance columns; and the detail file that
`tsds report` draws its figures from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tsds.errors import InputError
from tsds.io.readers import LINE_FORMATS, TextSpec, read_records
from tsds.io.writers import records_summary, write_records
from tsds.pipeline.select import Selection
from tsds.store import check_record, check_source

DETAIL_FILE = "selection_detail.npz"
QUERIES_FILE = "queries.jsonl"

PROVENANCE_PREFIX = "_tsds_"
PROVENANCE = ["_tsds_row", "_tsds_file", "_tsds_location", "_tsds_probability", "_tsds_times_drawn",
              "_tsds_nearest_query", "_tsds_query_distance", "_tsds_density", "_tsds_cluster_size"]


def save_detail(folder: Path, parts: list[Selection], query_vectors: np.ndarray, query_texts: list[str],
                query_target: np.ndarray | None = None, targets: list[str] | None = None) -> None:
    """What `tsds report` needs beyond the records: neighbour lists, transport weights, query vectors and texts."""
    arrays = {"query_vectors": np.asarray(query_vectors, dtype=np.float32),
              "query_target": np.zeros(len(query_texts), np.int64) if query_target is None else query_target}
    for t, sel in enumerate(parts):
        arrays[f"ids_{t}"] = sel.neighbour_ids
        arrays[f"distances_{t}"] = sel.neighbour_distances
        arrays[f"densities_{t}"] = sel.neighbour_densities
        arrays[f"weights_{t}"] = sel.transport_weights()
    with open(folder / DETAIL_FILE, "wb") as f:
        np.savez_compressed(f, **arrays)
    with open(folder / QUERIES_FILE, "w", encoding="utf-8") as f:
        for j, text in enumerate(query_texts):
            tgt = targets[int(arrays["query_target"][j])] if targets else None
            f.write(json.dumps({"query": j, "target": tgt, "text": text}, ensure_ascii=False) + "\n")


def record_groups(store, selection: Selection, query_texts: list[str], chunk: int = 2048) -> list[dict]:
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
    spec = store.text_spec.to_dict()
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
                    "_tsds_file": entry["source_path"],   # relative to the pool's source root
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
    spec = TextSpec.from_dict(group["spec"])
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


def selected_records(store, selection: Selection, query_texts: list[str]) -> list[dict]:
    """The drawn records (one row per draw) with all original fields plus provenance columns."""
    records = [r for g in record_groups(store, selection, query_texts) for r in fetch_group(g)]
    _check_drawn(len(records), selection)
    return records


def write_selected(path: Path, store, selection: Selection, query_texts: list[str],
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


def fetch_rows(store, rows) -> list[dict]:
    """The records of the given pool rows (in that order), read back by location and checked like the
    records file's: each pool file against the store (tsds.store.check_source), each record's text against
    the text the store embedded for its row."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return []
    file_idx, locs = store.locations()
    hashes, known = store.text_hashes(rows)
    spec = store.text_spec
    found: dict[int, dict] = {}
    for f in np.unique(file_idx[rows]):
        members = np.flatnonzero(file_idx[rows] == f)
        entry = store.files[int(f)]
        check_source(entry, full=not bool(known[members].all()))
        try:
            recs = read_records(entry["path"], locs[rows[members]].tolist(), fmt=entry["format"])
        except InputError as exc:
            raise InputError(f"{exc}; the pool file changed since the store was built; rebuild the store") from None
        for i, rec in zip(members.tolist(), recs):
            r = int(rows[i])
            if known[i]:
                check_record(spec, rec, int(hashes[i]), entry["path"], r, int(locs[r]))
            found[i] = rec
    return [found[i] for i in range(rows.size)]
