"""Plain text: one example per line, exposed as the field ``"text"``; blank lines are passed over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsds.io.readers.lines import Row, _decode, _iter_lines, _LongLine, _open_binary
from tsds.io.readers.spec import RowError


def _txt_record(line: bytes) -> dict[str, Any]:
    if type(line) is _LongLine:
        raise RowError(line.reason)
    return {"text": _decode(line).rstrip("\r\n")}


def _rows_txt(path: Path) -> Iterator[Row]:
    with _open_binary(path) as fh:
        for offset, number, line in _iter_lines(fh):
            if not line.strip():
                continue
            try:
                yield offset, number, _txt_record(line), None
            except RowError as exc:
                yield offset, number, None, str(exc)
