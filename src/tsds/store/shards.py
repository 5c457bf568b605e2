"""What a shard of the pool is, and how workers read one without the driver parsing any text.

A shard is ``shard_rows`` consecutive good rows of one pool file (a shard never spans two files),
numbered across files in order; a row is good when the reader parses it and the text spec extracts
a text from it (tsds.io.readers). In this process the pipeline reads shards sequentially with
``iter_batches``. An engine that reads in workers (Ray) uses a plan instead, made in two passes:

1. scan: each *scan unit* (a byte range of a plain JSON Lines / text file, or a whole file otherwise)
   is parsed by a worker with the readers' own row functions, returning the location of every good
   row and every bad row (line number, reason). The driver puts the results together in file order:
   shard boundaries (the location of every ``shard_rows``-th good row), the same skipped-row counts
   and examples, and, with ``on_bad_row="fail"``, the first bad row's ``path:line: reason`` error.
2. read: each *read unit* (one shard of a seekable file: plain JSON Lines, text, CSV, TSV; or every
   shard of a file that cannot be entered in the middle: gzip, JSON arrays, Parquet, Arrow, HF) is
   read by a worker starting at its first row's location, with the same parsing and text extraction.

So both ways give the same texts, locations and row ids per shard (tests/test_ray.py checks the stores
byte for byte). The scan parses every row once more than sequential reading does; the price is
measured in benchmarks/bench_ray.py (stage ``scan``) and docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsds.errors import InputError
from tsds.io.readers import BAD_ROW_POLICIES, FORMATS, ReadStats, RowError, TextSpec, iter_batches
from tsds.io.readers.delimited import _csv_header, _csv_records, _csv_row
from tsds.io.readers.jsonl import _parse_json_line
from tsds.io.readers.limits import _GZIP_MAGIC
from tsds.io.readers.lines import _iter_lines, _open_binary, _skip_line
from tsds.io.readers.read import _check_choice, _iter_rows
from tsds.io.readers.txt import _txt_record

SCAN_BYTES = 64 << 20          # a plain JSON Lines / text file is scanned in byte ranges of this size
_RANGED = frozenset({"jsonl", "txt"})      # formats whose rows are single lines: safe to cut anywhere
_SEEKABLE = frozenset({"jsonl", "txt", "csv", "tsv"})   # a row can be read from its byte offset


@dataclass(frozen=True)
class ScanUnit:
    file_index: int
    path: str
    fmt: str
    start: int = 0
    end: int | None = None        # None: the whole file, with the reader's own row iterator


@dataclass
class ScanResult:
    file_index: int
    locations: np.ndarray               # of the good rows, in order
    lines: int                          # lines in a byte range (line numbers of a range start at 1)
    bad: list = field(default_factory=list)    # (line or row number, reason), in order
    error: str | None = None            # a file-level error (cannot open, bad header, ...)
    clipped: int = 0                    # good rows whose text was clipped to the spec's max_chars


@dataclass(frozen=True)
class ReadUnit:
    """Shards a worker reads: ``shards`` is [(shard, rows, first row id, first location)], in order."""

    file_index: int
    path: str
    fmt: str
    shards: tuple
    seek: bool          # True: one shard, read from its location; False: the whole file, every shard


@dataclass
class ShardText:
    shard: int
    file_index: int
    path: str
    first_row: int
    texts: list
    locations: list

    # what the pipeline's ``finish`` reads from a shard (the same names as tsds.io.readers.Batch)
    @property
    def row_ids(self) -> range:
        return range(self.first_row, self.first_row + len(self.locations))

    def __len__(self) -> int:
        return len(self.locations)


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _line_rows(path: str, fmt: str, start: int, end: int | None, counter: list) -> Iterator:
    """Rows of a plain line file whose line starts in [start, end), numbered from 1 at the first line
    (``counter[0]`` counts the lines, blank ones included); the same parsing as the readers' jsonl/txt."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror})") from None
    with fh:
        begin = start
        if start > 0:
            fh.seek(start - 1)
            begin = start - 1 + _skip_line(fh)          # the first line that starts at or after ``start``
        fh.seek(begin)
        for offset, number, line in _iter_lines(fh, begin, 1):
            if end is not None and offset >= end:
                return
            counter[0] += 1
            if not line.strip():
                continue
            try:
                yield offset, number, (_parse_json_line(line) if fmt == "jsonl" else _txt_record(line)), None
            except RowError as exc:
                yield offset, number, None, str(exc)


def _csv_rows_from(path: str, fmt: str, start: int) -> Iterator:
    """Rows of a plain CSV/TSV file from the record starting at byte ``start`` (the header read first)."""
    delimiter = "," if fmt == "csv" else "\t"
    with _open_binary(Path(path)) as fh:
        header = _csv_header(Path(path), _csv_records(_iter_lines(fh), delimiter))
        fh.seek(start)
        for offset, number, cells, reason in _csv_records(_iter_lines(fh, start, 1), delimiter):
            if reason is None:
                try:
                    yield offset, number, _csv_row(header or [], cells), None
                    continue
                except RowError as exc:
                    reason = str(exc)
            yield offset, number, None, reason


def scan(unit: ScanUnit, spec: TextSpec, fail: bool) -> ScanResult:
    """Parse one scan unit (in a worker): good-row locations, bad rows; stops at the first bad row if ``fail``."""
    locations: list[int] = []
    bad: list = []
    counter = [0]
    clipped = 0
    try:
        if unit.end is None:
            rows = _iter_rows(Path(unit.path), unit.fmt)
        else:
            rows = _line_rows(unit.path, unit.fmt, unit.start, unit.end, counter)
        for location, number, record, reason in rows:
            if reason is None:
                try:
                    clipped += spec.extract_clipped(record)[1]
                except RowError as exc:
                    reason = str(exc)
            if reason is not None:
                bad.append((number, reason))
                if fail:
                    break
                continue
            locations.append(location)
    except InputError as exc:
        return ScanResult(unit.file_index, np.asarray(locations, np.int64), counter[0], bad, str(exc), clipped)
    return ScanResult(unit.file_index, np.asarray(locations, np.int64), counter[0], bad, clipped=clipped)


def read_unit(unit: ReadUnit, spec: TextSpec, on_bad_row: str, shard_rows: int) -> Iterator[ShardText]:
    """The shards of one read unit (in a worker), as the sequential reader would cut them."""
    if not unit.seek:
        batches = iter_batches([unit.path], spec, batch_size=shard_rows, fmt=unit.fmt, on_bad_row=on_bad_row)
        plan = iter(unit.shards)
        for batch in batches:
            shard, rows, first_row, _ = next(plan, (None, 0, 0, 0))
            if shard is None or rows != len(batch):
                raise InputError(f"{unit.path}: changed while it was read (a shard has {len(batch)} rows, "
                                 f"the scan found {rows})")
            yield ShardText(shard, unit.file_index, unit.path, first_row, batch.texts, batch.locations)
        return
    (shard, rows, first_row, start), = unit.shards
    if unit.fmt in _RANGED:
        source = _line_rows(unit.path, unit.fmt, start, None, [0])
    else:
        source = _csv_rows_from(unit.path, unit.fmt, start)
    texts: list[str] = []
    locations: list[int] = []
    for location, _, record, reason in source:
        if reason is None:
            try:
                text = spec.extract(record)
            except RowError as exc:
                reason = str(exc)
        if reason is not None:
            if on_bad_row == "fail":    # the scan found none: the file changed since
                raise InputError(f"{unit.path}: location {location}: {reason}")
            continue
        texts.append(text)
        locations.append(location)
        if len(texts) == rows:
            break
    if len(texts) != rows:
        raise InputError(f"{unit.path}: changed while it was read (shard {shard} has {len(texts)} rows, "
                         f"the scan found {rows})")
    yield ShardText(shard, unit.file_index, unit.path, first_row, texts, locations)


class PoolShards:
    """The shards of a pool, for an engine: ``jobs()`` reads them here, in order; ``scan_units`` /
    ``read_units`` plan them for workers (``scan`` and ``read_unit`` run there).

    ``jobs``: the sequential reader (build_store's, which checks finished shards); ``seen(i, rows,
    digest, path)`` counts shard i and says whether it is already in the store (raising if its text
    changed); ``done``: the finished shards, which workers hash but do not embed.
    """

    def __init__(self, files, spec: TextSpec, on_bad_row: str, shard_rows: int, stats: ReadStats, *,
                 jobs, seen, done):
        for _, f in files:
            _check_choice("fmt", f, FORMATS)
        _check_choice("on_bad_row", on_bad_row, BAD_ROW_POLICIES)
        self.files = [(str(Path(p)), f) for p, f in files]
        self.spec, self.on_bad_row, self.shard_rows = spec, on_bad_row, int(shard_rows)
        self.stats = stats
        self.jobs, self.seen, self.done = jobs, seen, frozenset(done)

    def scan_units(self, range_bytes: int = SCAN_BYTES) -> list[ScanUnit]:
        units = []
        for f, (path, fmt) in enumerate(self.files):
            p = Path(path)
            size = p.stat().st_size if p.is_file() else 0
            if fmt in _RANGED and p.is_file() and size > range_bytes and not _is_gzip(path):
                for a in range(0, size, range_bytes):
                    units.append(ScanUnit(f, path, fmt, a, min(size, a + range_bytes)))
            else:
                units.append(ScanUnit(f, path, fmt))
        return units

    def read_units(self, units: list[ScanUnit], results) -> list[ReadUnit]:
        """Shard plans from the scan results (an iterable in ``units`` order); fills ``stats`` as the
        sequential read does and raises its error for the first bad row when bad rows fail the build."""
        fail = self.on_bad_row == "fail"
        per_file: dict[int, list[int]] = {}
        counts: dict[int, int] = {}
        line_base: dict[int, int] = {}
        for unit, res in zip(units, results):
            f = unit.file_index
            base = line_base.get(f, 0) if unit.end is not None else 0
            for number, reason in res.bad:
                message = f"{unit.path}:{number + base}: {reason}"
                if fail:
                    raise InputError(message)
                self.stats._add_bad(message)
            if res.error is not None:
                raise InputError(res.error)
            self.stats.clipped += res.clipped
            line_base[f] = line_base.get(f, 0) + res.lines
            have = counts.get(f, 0)
            # positions (within this result) of the rows that begin a shard
            first = (-have) % self.shard_rows
            per_file.setdefault(f, []).extend(res.locations[first::self.shard_rows].tolist())
            counts[f] = have + res.locations.size
        plans: list[ReadUnit] = []
        shard, row = 0, 0
        for f, (path, fmt) in enumerate(self.files):
            n = counts.get(f, 0)
            starts = per_file.get(f, [])
            entries = []
            for j, start in enumerate(starts):
                rows = min(self.shard_rows, n - j * self.shard_rows)
                entries.append((shard, rows, row, int(start)))
                shard, row = shard + 1, row + rows
            self.stats.rows += n
            if not entries:
                continue
            if fmt in _SEEKABLE and not _is_gzip(path):
                plans.extend(ReadUnit(f, path, fmt, (e,), True) for e in entries)
            else:
                plans.append(ReadUnit(f, path, fmt, tuple(entries), False))
        return plans

