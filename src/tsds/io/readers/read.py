"""The readers' entry points: stream a pool's good rows in batches, read a query set, fetch records again."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsds.errors import InputError, ParameterError
from tsds.io.readers.arrow import _fetch_arrow, _rows_arrow
from tsds.io.readers.delimited import _rows_csv
from tsds.io.readers.fetch import _fetch_lines
from tsds.io.readers.json_array import _load_json_array, _object_or_raise, _rows_json
from tsds.io.readers.jsonl import _jsonl_items, _LineRecords, _rows_jsonl, _Run
from tsds.io.readers.limits import (
    _EXTENSIONS,
    _GZIP_OK,
    _READ_ERRORS,
    BAD_ROW_POLICIES,
    FORMATS,
    LINE_FORMATS,
    MAX_BAD_EXAMPLES,
    PathLike,
)
from tsds.io.readers.lines import Row, _one_line, _open_binary, _read_problem, refuse_pipe
from tsds.io.readers.parquet import _fetch_parquet, _parquet_file, _rows_parquet
from tsds.io.readers.spec import RowError, TextSpec
from tsds.io.readers.txt import _rows_txt


@dataclass
class ReadStats:
    """What a read did: good rows, skipped rows, the first few bad-row messages, and how many good
    rows' texts were clipped to the spec's ``max_chars``."""

    rows: int = 0
    skipped: int = 0
    bad_examples: list[str] = field(default_factory=list)
    clipped: int = 0

    def _add_bad(self, message: str) -> None:
        self.skipped += 1
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            self.bad_examples.append(message)


@dataclass(frozen=True)
class Batch:
    """Consecutive good rows from one file.

    ``row_ids`` number good rows 0, 1, 2, ... across all files of one read;
    ``locations`` point back into the file for `read_records`; ``skipped`` is
    the number of rows skipped so far in the whole read.
    """

    texts: list[str]
    records: list[dict[str, Any]]
    row_ids: list[int]
    locations: list[int]
    file_index: int
    path: str
    skipped: int

    def __len__(self) -> int:
        return len(self.texts)


def detect_format(path: PathLike) -> str:
    """The format name for a path, from its extension or directory layout."""
    p = Path(path)
    if p.is_dir():
        if (p / "state.json").is_file() or (p / "dataset_info.json").is_file():
            return "hf"
        if (p / "dataset_dict.json").is_file():
            raise InputError(
                f"{p}: is a Hugging Face DatasetDict; pass one split's directory (e.g. {p / 'train'})"
            )
        raise InputError(f"{p}: a directory that is not a Hugging Face save_to_disk dataset")
    suffixes = [s.lower() for s in p.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    ext = suffixes[-2] if gz and len(suffixes) >= 2 else (suffixes[-1] if suffixes and not gz else "")
    fmt = _EXTENSIONS.get(ext)
    if fmt is None or (gz and fmt not in _GZIP_OK):
        raise InputError(
            f"{p}: cannot tell the format from the name; pass fmt= one of {', '.join(FORMATS)}"
        )
    return fmt


def iter_batches(
    paths: PathLike | Sequence[PathLike],
    spec: TextSpec | None = None,
    *,
    batch_size: int = 1024,
    fmt: str | None = None,
    on_bad_row: str = "fail",
    stats: ReadStats | None = None,
) -> Iterator[Batch]:
    """Stream the good rows of one or more files in batches of ``batch_size``.

    A batch never spans two files. Pass a `ReadStats` to learn the final counts
    (skipped rows after the last batch are only counted there). Paths, formats
    and parameters are checked at the call, before any row is read.
    """
    path_list = _as_path_list(paths)
    _check_choice("on_bad_row", on_bad_row, BAD_ROW_POLICIES)
    if fmt is not None:
        _check_choice("fmt", fmt, FORMATS)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    formats = [fmt or detect_format(p) for p in path_list]
    return _batches(
        path_list, formats, spec or TextSpec(), batch_size, on_bad_row == "fail",
        stats if stats is not None else ReadStats(),
    )


def _batches(
    path_list: list[Path], formats: list[str], spec: TextSpec, batch_size: int, fail: bool, stats: ReadStats
) -> Iterator[Batch]:
    next_id = 0
    for file_index, (p, f) in enumerate(zip(path_list, formats)):
        shown = str(p)
        texts: list[str] = []
        records: list[dict[str, Any]] | _LineRecords = _LineRecords() if f == "jsonl" else []
        locations: list[int] = []
        items = _jsonl_items(p, spec) if f == "jsonl" else _iter_rows(p, f)
        for item in items:
            if type(item) is _Run:
                # good rows whose texts were extracted block-wise (see _jsonl_items): cut into batches
                stats.clipped += item.clipped
                pos, n = 0, len(item.texts)
                while pos < n:
                    take = min(batch_size - len(texts), n - pos)
                    texts.extend(item.texts[pos:pos + take])
                    locations.extend(item.locations[pos:pos + take])
                    records.add_lines(item.block, item.starts[pos:pos + take], item.stops[pos:pos + take])
                    pos += take
                    if len(texts) == batch_size:
                        yield _make_batch(texts, records, locations, next_id, file_index, shown, stats)
                        next_id += len(texts)
                        texts, records, locations = [], _LineRecords(), []
                continue
            location, number, record, reason = item
            if reason is None:
                try:
                    text, clipped = spec.extract_clipped(record)  # type: ignore[arg-type]
                    stats.clipped += clipped
                except RowError as exc:
                    reason = str(exc)
            if reason is not None:
                message = f"{shown}:{number}: {reason}"
                if fail:
                    raise InputError(message)
                stats._add_bad(message)
                continue
            texts.append(text)
            records.append(record)  # type: ignore[arg-type]
            locations.append(location)
            if len(texts) == batch_size:
                yield _make_batch(texts, records, locations, next_id, file_index, shown, stats)
                next_id += len(texts)
                texts, locations = [], []
                records = _LineRecords() if f == "jsonl" else []
        if texts:
            yield _make_batch(texts, records, locations, next_id, file_index, shown, stats)
            next_id += len(texts)


def estimate_rows(paths: PathLike | Sequence[PathLike], fmt: str | None = None) -> int | None:
    """A quick upper estimate of the rows in ``paths`` for progress bars: line counts for line formats,
    metadata for Parquet; None when a file cannot be estimated cheaply (JSON arrays, Arrow)."""
    total = 0
    for p in _as_path_list(paths):
        f = fmt or detect_format(p)
        if f == "parquet":
            total += _parquet_file(p).metadata.num_rows
        elif f in LINE_FORMATS:
            with _open_binary(p) as fh:
                try:
                    total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 22), b""))
                except _READ_ERRORS as exc:
                    raise InputError(f"{p}:1: {_read_problem(exc)}") from None
            total -= 1 if f in ("csv", "tsv") else 0
        else:
            return None
    return max(total, 0)


def read_texts(
    paths: PathLike | Sequence[PathLike],
    spec: TextSpec | None = None,
    *,
    fmt: str | None = None,
    on_bad_row: str = "fail",
) -> tuple[list[str], ReadStats]:
    """All texts of small inputs (the query set) at once, with the read's stats."""
    stats = ReadStats()
    texts: list[str] = []
    for batch in iter_batches(paths, spec, batch_size=4096, fmt=fmt, on_bad_row=on_bad_row, stats=stats):
        texts.extend(batch.texts)
    return texts, stats


def read_records(
    path: PathLike, locations: Iterable[int], *, fmt: str | None = None
) -> list[dict[str, Any]]:
    """The original records at the given locations, in the order asked for.

    Locations are those reported in `Batch.locations` for the same file and
    format. Plain line files are read by seeking; gzip files are decompressed
    in one pass; the other formats are read by row number.
    """
    if fmt is not None:
        _check_choice("fmt", fmt, FORMATS)
    p = Path(path)
    refuse_pipe(p)
    f = fmt or detect_format(p)
    wanted = [_as_location(p, loc) for loc in locations]
    if not wanted:
        return []
    if f in LINE_FORMATS:
        found = _fetch_lines(p, f, wanted)
    elif f == "json":
        rows = _load_json_array(p)
        found = {}
        for loc in set(wanted):
            if loc >= len(rows):
                raise InputError(f"{p}: row {loc} is past the end ({len(rows)} rows)")
            found[loc] = _object_or_raise(p, loc + 1, rows[loc])
    else:
        try:
            found = _fetch_parquet(p, set(wanted)) if f == "parquet" else _fetch_arrow(p, f, set(wanted))
        except InputError:
            raise
        except Exception as exc:    # pyarrow raises several unrelated types for unreadable data
            raise InputError(f"{p}: not a readable {'Parquet' if f == 'parquet' else 'Arrow'} file "
                             f"({_one_line(exc)})") from None
    return [dict(found[loc]) for loc in wanted]


def _make_batch(texts, records, locations, first_id, file_index, path, stats) -> Batch:
    stats.rows += len(texts)
    return Batch(
        texts=texts,
        records=records,
        row_ids=list(range(first_id, first_id + len(texts))),
        locations=locations,
        file_index=file_index,
        path=path,
        skipped=stats.skipped,
    )


def _as_path_list(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        items = [paths]
    else:
        items = list(paths)
    if not items:
        raise ParameterError("no input path given")
    out = []
    for item in items:
        p = Path(item)
        refuse_pipe(p)
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        out.append(p)
    return out


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _as_location(path: Path, loc: Any) -> int:
    try:
        value = int(loc)
    except (TypeError, ValueError):
        raise InputError(f"{path}: location {loc!r} is not an integer") from None
    if value < 0 or value != loc:
        raise InputError(f"{path}: location {loc!r} is not a non-negative integer")
    return value


def _iter_rows(path: Path, fmt: str) -> Iterator[Row]:
    """(location, 1-based number for messages, record or None, reason or None) per row."""
    if fmt == "jsonl":
        return _rows_jsonl(path)
    if fmt == "txt":
        return _rows_txt(path)
    if fmt in ("csv", "tsv"):
        return _rows_csv(path, "," if fmt == "csv" else "\t")
    if fmt == "json":
        return _rows_json(path)
    if fmt == "parquet":
        return _rows_parquet(path)
    return _rows_arrow(path, fmt)
