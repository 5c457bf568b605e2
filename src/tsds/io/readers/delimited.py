"""CSV and TSV: a header row, then records parsed as strictly as ``csv.reader(strict=True)``."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsds.errors import InputError
import tsds.io.readers.limits as limits
from tsds.io.readers.limits import _CSV_FIELD_LIMIT
from tsds.io.readers.lines import Row, _iter_lines, _LongLine, _open_binary
from tsds.io.readers.spec import RowError


class _RecordTooLong(Exception):
    """A CSV record's lines passed ``limits.MAX_ROW_BYTES`` (most likely a quote that is never closed)."""


class _LineFeed:
    """Feeds decoded lines to `csv.reader`, noting where the current record began.

    Invalid UTF-8 is replaced and noted in ``error`` so the row can be reported
    instead of stopping the read. The lines of the current record are kept (at most
    ``limits.MAX_ROW_BYTES``) so that after a quote that never closes, the read can go on
    from the line after the one the bad record starts on (`replay_after_start`).
    """

    def __init__(self, lines: Iterator[tuple[int, int, bytes]]):
        self._lines = lines
        self._replay: list[tuple[int, int, bytes]] = []     # lines to feed again, last one first
        self._kept: list[tuple[int, int, bytes]] = []
        self._kept_bytes = 0
        self.start: tuple[int, int] = (0, 0)
        self.error: str | None = None
        self.ended = False
        self._fresh = True

    def new_record(self) -> None:
        self._fresh = True
        self.error = None
        self._kept, self._kept_bytes = [], 0

    def replay_after_start(self) -> None:
        """Feed again every line of the current record except its first."""
        self._replay.extend(reversed(self._kept[1:]))
        self.ended = False

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self._replay:
            item = self._replay.pop()
        else:
            try:
                item = next(self._lines)
            except StopIteration:
                self.ended = True
                raise
        offset, number, raw = item
        if self._fresh:
            self.start, self._fresh = (offset, number), False
        self._kept.append(item)
        self._kept_bytes += len(raw)
        if self._kept_bytes > limits.MAX_ROW_BYTES and len(self._kept) > 1:
            raise _RecordTooLong
        if type(raw) is _LongLine:
            self.error = self.error or raw.reason
            return "<line too long>\n"
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.error = self.error or f"invalid UTF-8 at byte {exc.start}"
            return raw.decode("utf-8", errors="replace")


def _csv_records(lines: Iterator[tuple[int, int, bytes]], delimiter: str):
    """(offset, line, cells or None, reason or None) per non-blank record, parsed as strictly as
    ``csv.reader(strict=True)``. A record whose quote never closes (the file ends, or the record passes
    ``limits.MAX_ROW_BYTES``, inside it) is a bad row, and the read goes on from the line after its first."""
    feed = _LineFeed(lines)
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    kind = "CSV" if delimiter == "," else "TSV"
    while True:
        feed.new_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (csv.Error, _RecordTooLong) as exc:
            if isinstance(exc, _RecordTooLong):
                reason = f"record longer than {limits.MAX_ROW_BYTES} bytes (a quote that is never closed?)"
            elif feed.ended:
                reason = "unterminated quote (the quoted field never ends)"
            else:
                yield *feed.start, None, f"malformed {kind} ({exc})"
                continue
            yield *feed.start, None, reason
            feed.replay_after_start()
            reader = csv.reader(feed, delimiter=delimiter, strict=True)
            continue
        if cells:
            yield *feed.start, cells, feed.error


def _csv_header(path: Path, records) -> list[str] | None:
    for _, number, cells, reason in records:
        if reason is not None or cells is None:
            raise InputError(f"{path}:{number}: cannot read the header: {reason}")
        header = [c.strip() for c in cells]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise InputError(f"{path}:{number}: duplicate column name(s) in the header: {', '.join(dupes)}")
        if any(not h for h in header):
            raise InputError(f"{path}:{number}: empty column name in the header")
        return header
    return None


def _csv_row(header: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) != len(header):
        raise RowError(f"expected {len(header)} columns, got {len(cells)}")
    return dict(zip(header, cells))


def _rows_csv(path: Path, delimiter: str) -> Iterator[Row]:
    with _open_binary(path) as fh:
        records = _csv_records(_iter_lines(fh), delimiter)
        header = _csv_header(path, records)
        if header is None:
            return
        for offset, number, cells, reason in records:
            if reason is None:
                try:
                    yield offset, number, _csv_row(header, cells), None  # type: ignore[arg-type]
                    continue
                except RowError as exc:
                    reason = str(exc)
            yield offset, number, None, reason
