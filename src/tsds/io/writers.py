"""Writers for the selected records (JSON Lines or Parquet, by extension) and the dataset card."""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from pathlib import Path

from tsds import atomic
from tsds.errors import ParameterError
from tsds.io.output import check_records_name

RECORD_FORMATS = (".jsonl", ".jsonl.gz", ".parquet")


def records_format(name: str) -> str:
    """The format of the records file ``name``: a plain file name (no folders), written inside the output."""
    check_records_name(name)
    lower = name.lower()
    for ext in RECORD_FORMATS:
        if lower.endswith(ext):
            return ext
    raise ParameterError(f"records file {name!r}: extension must be one of {', '.join(RECORD_FORMATS)}")


def encode_jsonl(record: dict) -> str:
    """One JSON Lines row of the records file."""
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def write_records(path: Path, records: list[dict]) -> None:
    """Write records with all their fields; Parquet gets the union of all rows' fields (missing: null).

    Written to a temporary name beside ``path`` and renamed. Gzip output has no timestamp in its header,
    so the same records give the same bytes (whichever engine or process writes them).
    """
    path = Path(path)
    fmt = records_format(path.name)
    tmp = atomic.temp_file(path)
    try:
        if fmt == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            columns = list(dict.fromkeys(k for r in records for k in r))
            table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in records])
            pq.write_table(table, tmp)
        elif fmt == ".jsonl.gz":
            with open(tmp, "wb") as raw, gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, mtime=0) as g, \
                    io.TextIOWrapper(g, encoding="utf-8", newline="") as f:
                for r in records:
                    f.write(encode_jsonl(r))
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                for r in records:
                    f.write(encode_jsonl(r))
        atomic.commit(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def records_summary(records: list[dict], source_field: str) -> dict:
    """What the manifest and the dataset card say about the records: rows, rows per source, columns."""
    sources = dict(Counter(str(r.get(source_field)) for r in records).most_common()) \
        if records and source_field in records[0] else None
    return {"rows": len(records), "sources": sources, "columns": list(records[0]) if records else None}


def dataset_card(*, title: str, pool: dict, queries: dict, parameters: dict, summary: dict,
                 sources: dict | None, records_file: str, columns: list[str]) -> str:
    """A README.md for the output folder: what was selected, from what, how, and the figures."""
    lines = [
        f"# {title}",
        "",
        "Training data selected with tsds (TSDS: optimal-transport alignment to the query examples",
        "with a near-duplicate-aware diversity term).",
        "",
        "## Files",
        f"- `{records_file}`: the selected records with all their original fields and the provenance columns below.",
        "- `probabilities.npy`: the selection distribution p over the pool rows (float64, sums to 1).",
        "- `selected_indices.npy`: the drawn pool row ids (sorted; repeats when drawn with replacement).",
        "- `manifest.json`: every parameter, input hashes, library versions, objective terms and timings.",
        "",
        "## Source pool",
        f"- store: `{pool.get('store')}`",
        f"- rows: {pool.get('rows')}",
        f"- embedder: {pool.get('embedder')}",
    ]
    for f in pool.get("files", []):
        lines.append(f"- file: `{f['path']}` (sha256 {f['sha256'][:16]}…)")
    lines += [
        "",
        "## Query set",
        f"- file: `{queries.get('path')}`",
        f"- examples: {queries.get('count')}",
        "",
        "## Parameters",
        "",
        "| parameter | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in parameters.items()]
    lines += ["", "## Summary", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    if sources:
        lines += ["", "## Selected rows by source", "", "| source | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sources.items()]
    lines += [
        "",
        "## Provenance columns",
        "",
        "- `_tsds_row`: row id in the pool store; `_tsds_file`, `_tsds_location`: where it is in the source file.",
        "- `_tsds_probability`: its probability under the selection distribution.",
        "- `_tsds_times_drawn`: how often it was drawn (each draw is one row in the file).",
        "- `_tsds_nearest_query`, `_tsds_query_distance`: the nearest query example that reaches it, and the distance.",
        "- `_tsds_density`, `_tsds_cluster_size`: its kernel density and the number of pool rows within sigma (itself included).",
        "",
        f"Columns: {', '.join(f'`{c}`' for c in columns)}",
        "",
    ]
    return "\n".join(lines)
