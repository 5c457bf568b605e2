"""Writers for the selected records (JSON Lines or Parquet, by extension) and the dataset card."""

from __future__ import annotations

import base64
import datetime
import decimal
import gzip
import io
import json
import logging
import math
from collections import Counter
from pathlib import Path

from tsds import atomic
from tsds.errors import InputError, ParameterError, TsdsError
from tsds.io.output import check_records_name

log = logging.getLogger("tsds")

RECORD_FORMATS = (".jsonl", ".jsonl.gz", ".parquet")


def records_format(name: str) -> str:
    """The format of the records file ``name``: a plain file name (no folders), written inside the output."""
    check_records_name(name)
    lower = name.lower()
    for ext in RECORD_FORMATS:
        if lower.endswith(ext):
            return ext
    raise ParameterError(f"records file {name!r}: extension must be one of {', '.join(RECORD_FORMATS)}")


def _json_default(value):
    """JSON for the values Parquet and Arrow pools give beyond JSON's own: bytes as base64, dates and
    times in ISO 8601, decimals as their exact text, durations in seconds."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    item = getattr(value, "item", None)        # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"a value of type {type(value).__name__} has no JSON form")


def _finite(value):
    """``value`` with NaN and infinities (which JSON cannot hold) as null, and how many there were."""
    if isinstance(value, float):
        return (value, 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, dict):
        out, n = {}, 0
        for k, v in value.items():
            out[k], m = _finite(v)
            n += m
        return out, n
    if isinstance(value, (list, tuple)):
        items = [_finite(v) for v in value]
        return [v for v, _ in items], sum(m for _, m in items)
    return value, 0


def _dumps(value, nonfinite: list | None = None) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=False)
    except ValueError:
        value, n = _finite(value)
        if nonfinite is not None:
            nonfinite[0] += n
        return json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=False)


def encode_jsonl(record: dict, nonfinite: list | None = None) -> str:
    """One JSON Lines row of the records file (see ``_json_default``; NaN and infinities as null, counted
    in ``nonfinite[0]``). A value with no JSON form is a one-line error naming its field."""
    try:
        line = _dumps(record, nonfinite)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:      # a lone surrogate (JSON can carry one): escaped, as JSON allows
                line = json.dumps(json.loads(line), ensure_ascii=True)
        return line + "\n"
    except TypeError as exc:
        field = next((k for k, v in record.items() if not _encodable(v)), "?")
        raise InputError(f"record from {record.get('_tsds_file', '?')} (row {record.get('_tsds_row', '?')}): "
                         f"field {field!r}: {exc}") from None


def _encodable(value) -> bool:
    try:
        _dumps(value)
        return True
    except TypeError:
        return False


def _arrow_table(records: list[dict]):
    """The records as an Arrow table with the union of their fields (missing: null) and the list of
    columns coerced: values of different types that pyarrow unifies (int and float: float) are
    unified; a column whose values cannot share a type is written as strings (other values as JSON)."""
    import pyarrow as pa

    columns = list(dict.fromkeys(k for r in records for k in r))
    arrays, coerced = [], []
    for c in columns:
        values = [r.get(c) for r in records]
        try:
            array = pa.array(values)
            if not _parquet_writable(array.type):
                raise ValueError("an object with no fields")
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            if len(kinds) > 1:
                coerced.append(f"{c} ({' and '.join(kinds)}: {array.type})")
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            try:
                array = pa.array([v if v is None or isinstance(v, str) else _dumps(v) for v in values], pa.string())
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise InputError(f"column {c!r} cannot be written to Parquet ({exc}); write .jsonl") from None
            coerced.append(f"{c} (no common type: strings, others as JSON)")
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=columns), coerced


def _parquet_writable(t) -> bool:
    """Whether Parquet can hold the Arrow type (it has no struct without fields, e.g. from ``{}``)."""
    import pyarrow as pa

    if pa.types.is_struct(t):
        return t.num_fields > 0 and all(_parquet_writable(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _parquet_writable(t.key_type) and _parquet_writable(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _parquet_writable(t.value_type)
    return True


def count_rows(path: Path, fmt: str) -> int:
    """Rows actually in a records file of format ``fmt`` (see ``records_format``): lines of (gzip)
    JSON Lines, or the Parquet file's row count."""
    if fmt == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    opener = gzip.open if fmt == ".jsonl.gz" else open
    with opener(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 22), b""))


def write_records(path: Path, records: list[dict], expected: int | None = None) -> int:
    """Write records with all their fields, check that the file holds ``expected`` rows (default: one per
    record) and return that count; a records file with another number of rows is an error and is not kept.

    Parquet gets the union of all rows' fields (missing: null; see ``_arrow_table`` for mixed types).
    Written to a temporary name beside ``path`` and renamed. Gzip output has no timestamp in its header,
    so the same records give the same bytes (whichever engine or process writes them).
    """
    path = Path(path)
    fmt = records_format(path.name)
    expected = len(records) if expected is None else int(expected)
    tmp = atomic.temp_file(path)
    nonfinite = [0]
    try:
        if fmt == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table, coerced = _arrow_table(records)
            if coerced:
                log.warning("%s: columns coerced to one type: %s", path.name, "; ".join(coerced))
            try:
                pq.write_table(table, tmp)
            except pa.ArrowException as exc:
                raise InputError(f"{path}: the records cannot be written as Parquet ({exc}); use .jsonl") from None
        elif fmt == ".jsonl.gz":
            with open(tmp, "wb") as raw, gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, mtime=0) as g, \
                    io.TextIOWrapper(g, encoding="utf-8", newline="") as f:
                for r in records:
                    f.write(encode_jsonl(r, nonfinite))
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                for r in records:
                    f.write(encode_jsonl(r, nonfinite))
        if nonfinite[0]:
            log.warning("%s: %d NaN or infinite values written as null (JSON has no such numbers)",
                        path.name, nonfinite[0])
        written = count_rows(tmp, fmt)
        if written != expected:
            raise TsdsError(f"{path}: the records file came out with {written} rows, not the {expected} "
                            "drawn; it was not kept")
        atomic.commit(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def records_summary(records: list[dict], source_field: str, rows: int | None = None) -> dict:
    """What the manifest and the dataset card say about the records: rows (as counted in the written
    file when given), rows per source, columns (the union of the records' fields)."""
    sources = dict(Counter(str(r.get(source_field)) for r in records).most_common()) \
        if any(source_field in r for r in records) else None
    columns = list(dict.fromkeys(k for r in records for k in r)) if records else None
    return {"rows": len(records) if rows is None else rows, "sources": sources, "columns": columns}


TSDS_DESCRIPTION = ("Training data selected with tsds (TSDS: optimal-transport alignment to the query examples\n"
                    "with a near-duplicate-aware diversity term).")


_SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                 (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
LICENSE_NOTE = ("not set by tsds: the selected rows keep the licences of the pool files they come from; "
                "state them before publishing")


def check_license(license: str | None) -> None:
    """Refuse a licence that is not an identifier (cc-by-4.0, mit, apache-2.0, other, ...)."""
    import re

    if license is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}", license):
        raise ParameterError(f"--license {license!r}: give a licence identifier such as cc-by-4.0, mit or "
                             "apache-2.0")


def size_category(rows: int) -> str:
    """The dataset hubs' size bucket of ``rows`` (n<1K, 1K<n<10K, ... n>1T)."""
    for bound, name in _SIZE_BUCKETS:
        if rows < bound:
            return name
    return "1B<n<10B" if rows < 10_000_000_000 else "n>1T"


def card_metadata(*, title: str, pool: dict, rows: int | None, license: str | None = None) -> str:
    """The YAML block at the top of a dataset card that dataset hubs read. No licence is guessed: without
    one given it is ``other`` with a note that the pool files' licences apply."""
    import yaml

    from pathlib import PurePath

    meta = {"pretty_name": title, "license": license or "other"}
    if not license:
        meta["license_details"] = LICENSE_NOTE
    if rows is not None:
        meta["size_categories"] = [size_category(int(rows))]
    meta["source_datasets"] = [PurePath(f["path"]).name for f in pool.get("files", [])]
    meta["task_categories"] = ["text-generation"]
    meta["tags"] = ["data-selection", "tsds"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n"


def dataset_card(*, title: str, pool: dict, queries: dict, parameters: dict, summary: dict, records: dict,
                 description: str = TSDS_DESCRIPTION, license: str | None = None) -> str:
    """A README.md for the output folder: the hubs' YAML metadata, what was selected, from what, how, and
    the figures. ``records``: {"file", "columns", "sources", "rows"} of the records file (rows: else the
    summary's "rows written (draws)"); ``description``: how it was selected; ``license``: an SPDX id or
    hub licence name, if known."""
    records_file, columns, sources = records["file"], records["columns"], records.get("sources")
    rows = records.get("rows", summary.get("rows written (draws)"))
    lines = [
        card_metadata(title=title, pool=pool, rows=rows, license=license) + f"# {title}",
        "",
        description,
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
        "- `_tsds_row`: row id in the pool store; `_tsds_file`, `_tsds_location`: the source file (its path relative "
        "to the pool's source root, the deepest folder holding all pool files: see the manifest's `pool_store`) and "
        "where the row is in it.",
        "- `_tsds_probability`: its probability under the selection distribution.",
        "- `_tsds_times_drawn`: how often it was drawn (each draw is one row in the file).",
        "- `_tsds_nearest_query`, `_tsds_query_distance`: the nearest query example that reaches it, and the distance.",
        "- `_tsds_density`, `_tsds_cluster_size`: its kernel density and the number of pool rows within sigma (itself included).",
        "",
        f"Columns: {', '.join(f'`{c}`' for c in columns)}",
        "",
    ]
    if not license:
        lines += ["## Licence", "", f"The metadata says `license: other`: {LICENSE_NOTE}.", ""]
    return "\n".join(lines)
