"""Arrow IPC files and Hugging Face ``save_to_disk`` directories, read with pyarrow in record batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsds.errors import InputError
from tsds.io.readers.limits import _ARROW_READ_ROWS
from tsds.io.readers.lines import Row, _one_line


def _columnar_rows(path: Path, what: str, batches: Iterator) -> Iterator[Row]:
    """Rows of record batches; an error while reading or converting one names the file and row."""
    index = 0
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            records = batch.to_pylist()
        except InputError:
            raise
        except Exception as exc:    # pyarrow raises several unrelated types for unreadable data
            raise InputError(f"{path}:{index + 1}: not a readable {what} file past row {index} "
                             f"({_one_line(exc)})") from None
        for record in records:
            yield index, index + 1, record, None
            index += 1


def _arrow_files(path: Path, fmt: str) -> list[Path]:
    """The .arrow files of a save_to_disk directory, in the order the dataset lists them."""
    if fmt == "arrow":
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: a Hugging Face dataset must be a directory")
    state_path = path / "state.json"
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            names = [entry["filename"] for entry in state["_data_files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{state_path}: no usable '_data_files' list ({exc})") from None
        if state.get("_indices_data_files"):
            raise InputError(f"{state_path}: datasets with an indices mapping are not supported; save a flattened copy")
        files = [path / name for name in names]
    else:
        files = sorted(path.glob("*.arrow"))
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: listed in the dataset but missing")
    if not files:
        raise InputError(f"{path}: no .arrow files in the dataset directory")
    return files


def _arrow_batches(path: Path):
    import pyarrow as pa

    source = pa.memory_map(str(path), "r")
    try:
        reader = pa.ipc.open_stream(source)
        yield from reader
        return
    except pa.ArrowInvalid:
        source.seek(0)
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: not an Arrow IPC file ({_one_line(exc)})") from None
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)


def _rows_arrow(path: Path, fmt: str) -> Iterator[Row]:
    index = 0
    for file in _arrow_files(path, fmt):
        pieces = (batch.slice(start, _ARROW_READ_ROWS) for batch in _arrow_batches(file)
                  for start in range(0, batch.num_rows, _ARROW_READ_ROWS))
        for _, _, record, _ in _columnar_rows(file, "Arrow", pieces):
            yield index, index + 1, record, None
            index += 1


def _fetch_arrow(path: Path, fmt: str, wanted: set[int]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    ordered = sorted(wanted)
    start = 0
    for file in _arrow_files(path, fmt):
        for batch in _arrow_batches(file):
            end = start + batch.num_rows
            inside = [loc for loc in ordered if start <= loc < end]
            if inside:
                rows = batch.take([loc - start for loc in inside]).to_pylist()
                found.update(zip(inside, rows))
            start = end
    past = [loc for loc in ordered if loc not in found]
    if past:
        raise InputError(f"{path}: row {past[0]} is past the end ({start} rows)")
    return found
