"""Parquet, read in record batches with ``pyarrow.parquet``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsds.errors import InputError
from tsds.io.readers.arrow import _columnar_rows
from tsds.io.readers.limits import _ARROW_READ_ROWS
from tsds.io.readers.lines import Row, _one_line


def _parquet_file(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        raise InputError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None


def _rows_parquet(path: Path) -> Iterator[Row]:
    pf = _parquet_file(path)
    yield from _columnar_rows(path, "Parquet", pf.iter_batches(batch_size=_ARROW_READ_ROWS))


def _fetch_parquet(path: Path, wanted: set[int]) -> dict[int, dict[str, Any]]:
    pf = _parquet_file(path)
    total = pf.metadata.num_rows
    past = sorted(loc for loc in wanted if loc >= total)
    if past:
        raise InputError(f"{path}: row {past[0]} is past the end ({total} rows)")
    found: dict[int, dict[str, Any]] = {}
    start = 0
    for group in range(pf.metadata.num_row_groups):
        size = pf.metadata.row_group(group).num_rows
        inside = sorted(loc for loc in wanted if start <= loc < start + size)
        if inside:
            table = pf.read_row_group(group).take([loc - start for loc in inside])
            found.update(zip(inside, table.to_pylist()))
        start += size
    return found
