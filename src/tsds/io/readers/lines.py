"""What every line format shares: opening (gzip or plain, pipes refused), reading bounded lines with their
byte offsets and numbers, decoding, and the wording of read errors."""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tsds.errors import InputError
import tsds.io.readers.limits as limits
from tsds.io.readers.limits import _BOM, _GZIP_MAGIC, _READ_ERRORS, PathLike
from tsds.io.readers.spec import _SURROGATE, RowError, _surrogate_reason


Row = tuple[int, int, "dict[str, Any] | None", "str | None"]


def refuse_pipe(path: PathLike, needs: str = "tsds needs a regular file it can read again") -> None:
    """Raise at once for a named pipe, ``/dev/fd/N`` or other special file (opening or reading one could
    wait forever, and it cannot be read twice)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return                          # the caller says what is missing
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode) or stat.S_ISBLK(mode):
        kind = "a pipe" if stat.S_ISFIFO(mode) else "not a regular file"
        raise InputError(f"{path}: is {kind}; {needs}: save it to a file first")


def _read_problem(exc: BaseException) -> str:
    """What a read error means, in words (truncated or corrupt compressed data, an I/O error)."""
    if isinstance(exc, EOFError):
        return "truncated gzip data (the compressed stream ends early)"
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)):
        return f"corrupt gzip data ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read ({exc.strerror})"
    return f"cannot read ({exc})"


def _open_binary(path: Path) -> IO[bytes]:
    refuse_pipe(path)
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a file")
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror})") from None
    if raw.read(2) == _GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


class _LongLine(bytes):
    """Stands for a line longer than ``limits.MAX_ROW_BYTES`` (which is not kept): its row is a bad row."""

    reason = ""


def _long_line(size: int) -> _LongLine:
    line = _LongLine(b"<line too long>\n")
    line.reason = f"line longer than {limits.MAX_ROW_BYTES} bytes ({size} bytes)"
    return line


def _skip_line(fh) -> int:
    """Read past the end of the current line, a piece at a time; the number of bytes passed."""
    passed = 0
    while True:
        piece = fh.readline(1 << 20)
        passed += len(piece)
        if not piece or piece.endswith(b"\n"):
            return passed


def _iter_lines(fh: IO[bytes], start: int = 0, first_line: int = 1) -> Iterator[tuple[int, int, bytes]]:
    """(byte offset, 1-based line number, raw line) for each line, BOM removed at offset 0; a line longer
    than ``limits.MAX_ROW_BYTES`` comes as a `_LongLine` without its bytes."""
    offset, number = start, first_line
    limit = limits.MAX_ROW_BYTES
    try:
        while True:
            line = fh.readline(limit + 1)
            if not line:
                return
            size = len(line)
            if size > limit:
                if not line.endswith(b"\n"):
                    size += _skip_line(fh)
                line = _long_line(size)
            elif offset == 0 and line.startswith(_BOM):
                line = line[len(_BOM):]
            yield offset, number, line
            offset += size
            number += 1
    except _READ_ERRORS as exc:
        raise InputError(f"{getattr(fh, 'name', '?')}:{number}: {_read_problem(exc)}; "
                         f"cannot read past line {number - 1}") from None


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RowError(f"invalid UTF-8 at byte {exc.start}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_surrogates(value: Any) -> None:
    """Raise `RowError` if a string (key or value) anywhere in ``value`` holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            match = _SURROGATE.search(item)
            if match:
                raise RowError(_surrogate_reason(match.group()))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
