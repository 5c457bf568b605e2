"""Records of line files fetched again by byte offset (after a selection): seek, or one pass for gzip."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, Any

from tsds.errors import InputError
import tsds.io.readers.limits as limits
from tsds.io.readers.delimited import _csv_header, _csv_records, _csv_row
from tsds.io.readers.jsonl import _parse_json_line
from tsds.io.readers.limits import _BOM
from tsds.io.readers.lines import _iter_lines, _open_binary
from tsds.io.readers.spec import RowError
from tsds.io.readers.txt import _txt_record


def _line_record(where: str, fmt: str, header: list[str] | None, cells_or_line) -> dict[str, Any]:
    try:
        if fmt == "jsonl":
            return _parse_json_line(cells_or_line)
        if fmt == "txt":
            return _txt_record(cells_or_line)
        return _csv_row(header or [], cells_or_line)
    except RowError as exc:
        raise InputError(f"{where}: {exc}") from None


def _fetch_lines(path: Path, fmt: str, wanted: list[int]) -> dict[int, dict[str, Any]]:
    """Records by byte offset: seek for plain files, one streaming pass for gzip."""
    delimiter = "," if fmt == "csv" else "\t"
    targets = set(wanted)
    found: dict[int, dict[str, Any]] = {}
    with _open_binary(path) as fh:
        header = None
        if fmt in ("csv", "tsv"):
            header = _csv_header(path, _csv_records(_iter_lines(fh), delimiter))
            if header is None:
                raise InputError(f"{path}: location {min(targets)} is not the start of a row (the file is empty)")
        if isinstance(fh, gzip.GzipFile):
            fh.seek(0)
            if fmt in ("csv", "tsv"):
                stream = _csv_records(_iter_lines(fh), delimiter)
                next(stream, None)
                items = ((o, n, c) for o, n, c, r in stream if r is None)
            else:
                items = ((o, n, line) for o, n, line in _iter_lines(fh) if line.strip())
            for offset, number, item in items:
                if offset in targets:
                    found[offset] = _line_record(f"{path}:{number}", fmt, header, item)
                    if len(found) == len(targets):
                        break
        else:
            for offset in sorted(targets):
                found[offset] = _fetch_plain_line(path, fh, fmt, header, offset, delimiter)
    missing = sorted(targets - found.keys())
    if missing:
        raise InputError(f"{path}: location {missing[0]} is not the start of a row")
    return found


def _fetch_plain_line(path: Path, fh: IO[bytes], fmt: str, header, offset: int, delimiter: str) -> dict[str, Any]:
    if offset > 0:
        fh.seek(offset - 1)
        if fh.read(1) != b"\n":
            raise InputError(f"{path}: location {offset} is not the start of a line")
    else:
        fh.seek(0)
    where = f"{path}: location {offset}"
    if fmt in ("csv", "tsv"):
        if offset == 0:
            raise InputError(f"{path}: location 0 is the header, not a row")
        record = next(_csv_records(_iter_lines(fh, start=offset), delimiter), None)
        if record is None:
            raise InputError(f"{path}: location {offset} is past the end")
        _, _, cells, reason = record
        if reason is not None:
            raise InputError(f"{where}: {reason}")
        return _line_record(where, fmt, header, cells)
    line = fh.readline(limits.MAX_ROW_BYTES + 1)
    if len(line) > limits.MAX_ROW_BYTES:
        raise InputError(f"{where}: line longer than {limits.MAX_ROW_BYTES} bytes")
    if offset == 0 and line.startswith(_BOM):
        line = line[len(_BOM):]
    if not line.strip():
        raise InputError(f"{path}: location {offset} is past the end or a blank line")
    return _line_record(where, fmt, header, line)
