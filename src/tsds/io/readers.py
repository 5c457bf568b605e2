"""Readers for the candidate pool and the query set.

Every supported format is turned into a stream of rows (a dict of the original
fields per row), from which one text per row is extracted according to a
`TextSpec`. Rows are read in batches so that a pool larger than memory never
has to be held at once; each row keeps a *location* (byte offset of its line for
line formats, row number otherwise) so that `read_records` can fetch the
original record again after selection without the pool being kept in memory.

Formats (detected from the extension, a trailing ``.gz`` allowed for the text
formats, or from a directory's layout; ``fmt=`` overrides the detection):

* ``jsonl``   - JSON Lines (``.jsonl``, ``.ndjson``), one object per line.
* ``json``    - a JSON array of objects (``.json``; Alpaca-style lists). The
  whole file is loaded into memory, so use JSON Lines for large pools.
* ``parquet`` - read in record batches with ``pyarrow.parquet``.
* ``csv`` / ``tsv`` - a header row, then one record per row (quoted fields may
  span lines); all values are strings. Parsed as strictly as
  ``csv.reader(strict=True)``; a record whose quote never closes is a bad row,
  and the read goes on from the line after the one it starts on.
* ``txt``     - one example per line, exposed as the field ``"text"``; blank
  lines are not examples and are passed over.
* ``hf``      - a Hugging Face dataset directory written by ``save_to_disk``
  (its ``.arrow`` files are read with pyarrow; ``datasets`` is not needed).
* ``arrow``   - a single Arrow IPC file (stream or file format).

Malformed rows are reported as ``path:N: reason`` where N is the 1-based line
number for line formats (jsonl, csv, tsv, txt) and the 1-based row number for
the others. Locations are 0-based: a byte offset into the (uncompressed) file,
or a row index.

What one row may cost is bounded: a line (or a CSV record) longer than
``MAX_ROW_BYTES`` is a bad row, and the text of a row is clipped to
``TextSpec.max_chars`` characters (``DEFAULT_MAX_CHARS``, far more than any
embedder reads), counted in ``ReadStats.clipped``. A string holding a lone UTF-16
surrogate (``"\\ud83d"`` escaped in JSON) is not valid Unicode: its row is a bad
row. Inputs must be regular files (or dataset directories): a pipe is refused,
since tsds may read a file more than once.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import stat
import string
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

from tsds.errors import InputError, ParameterError

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("jsonl", "json", "parquet", "csv", "tsv", "txt", "hf", "arrow")
LINE_FORMATS = frozenset({"jsonl", "csv", "tsv", "txt"})
BAD_ROW_POLICIES = ("fail", "skip")
MAX_BAD_EXAMPLES = 5
DEFAULT_TEXT_FIELD = "text"

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "txt",
    ".arrow": "arrow",
}
_GZIP_OK = frozenset({"jsonl", "json", "csv", "tsv", "txt"})
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_CSV_FIELD_LIMIT = 2**31 - 1
_ARROW_READ_ROWS = 4096
MAX_ROW_BYTES = 64 << 20        # a longer line (CSV: record) is a bad row, never read whole into memory
DEFAULT_MAX_CHARS = 200_000     # texts are clipped to this many characters (embedders read far fewer)
MAX_FORMAT_NUMBER = 10_000      # the largest width or precision a template may ask for
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_READ_ERRORS = (OSError, EOFError, zlib.error)      # gzip.BadGzipFile is an OSError


class RowError(ValueError):
    """One row that cannot be used; carries the reason, the caller adds ``path:line``."""


@dataclass(frozen=True)
class TextSpec:
    """How to turn one record into the text that is embedded.

    Exactly one mode may be given: a field name, a template over fields
    (``str.format`` syntax with plain field names only), or a field holding a
    list of chat turns ``{"role": ..., "content": ...}`` rendered as
    ``role: content`` lines. With none given the field ``"text"`` is used.

    ``max_chars``: a longer text is clipped to its first ``max_chars`` characters
    (`extract` does it, so the text embedded is always the one it returns).
    """

    text_field: str | None = None
    template: str | None = None
    messages_field: str | None = None
    max_chars: int = DEFAULT_MAX_CHARS

    def __post_init__(self) -> None:
        given = [
            name
            for name, value in (
                ("text_field", self.text_field),
                ("template", self.template),
                ("messages_field", self.messages_field),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ParameterError(
                f"give only one of text_field, template, messages_field (got {', '.join(given)})"
            )
        for name in ("text_field", "messages_field"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ParameterError(f"{name} must be a non-empty string, got {value!r}")
        if type(self.max_chars) is not int or self.max_chars < 1:
            raise ParameterError(f"max_chars must be a positive integer, got {self.max_chars!r}")
        if self.template is not None:
            object.__setattr__(self, "_fields", self.template_fields())

    @property
    def mode(self) -> str:
        """``"field"``, ``"template"`` or ``"messages"``."""
        if self.template is not None:
            return "template"
        if self.messages_field is not None:
            return "messages"
        return "field"

    def template_fields(self) -> tuple[str, ...]:
        """The field names a template refers to, in order of first use."""
        if not isinstance(self.template, str):
            raise ParameterError(f"template must be a string, got {self.template!r}")
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            raise ParameterError(f"template {self.template!r} is not valid: {exc}") from None
        names: list[str] = []
        for _, name, spec, _ in parsed:
            if name is None:
                continue
            if not name or name.isdigit() or "." in name or "[" in name:
                raise ParameterError(
                    f"template field {{{name}}} must be a plain field name "
                    "(no positional, attribute or index fields)"
                )
            if spec and ("{" in spec):
                raise ParameterError(f"template field {{{name}}} may not nest fields in its format spec")
            if spec and any(int(n) > MAX_FORMAT_NUMBER for n in re.findall(r"\d+", spec)):
                raise ParameterError(f"template {self.template!r}: the width or precision in {{{name}:{spec}}} "
                                     f"is larger than {MAX_FORMAT_NUMBER}")
            if name not in names:
                names.append(name)
        if not names:
            raise ParameterError(f"template {self.template!r} names no field")
        return tuple(names)

    def extract(self, record: dict[str, Any]) -> str:
        """The text embedded for one record (clipped to ``max_chars``); raises `RowError` when it cannot
        be made. The one function that makes it: every reader's texts are exactly its results."""
        return self.extract_clipped(record)[0]

    def extract_clipped(self, record: dict[str, Any]) -> tuple[str, bool]:
        """`extract`'s text, and whether it was clipped."""
        mode = self.mode
        if mode == "template":
            text = self._from_template(record)
        elif mode == "messages":
            text = self._from_messages(record)
        else:
            name = self.text_field or DEFAULT_TEXT_FIELD
            if name not in record:
                raise RowError(f"missing field {name!r}")
            text = record[name]
            if not isinstance(text, str):
                raise RowError(f"field {name!r} is {_kind(text)}, not a string")
        clipped = len(text) > self.max_chars
        if clipped:
            text = self.clip(text)
        if not text.strip():
            raise RowError("empty text")
        match = _SURROGATE.search(text)
        if match:
            raise RowError(_surrogate_reason(match.group()))
        return text, clipped

    def clip(self, text: str) -> str:
        """The clipping rule of `extract`: the first ``max_chars`` characters."""
        return text[: self.max_chars]

    def _from_template(self, record: dict[str, Any]) -> str:
        values: dict[str, Any] = {}
        for name in self._fields:  # type: ignore[attr-defined]
            if name not in record:
                raise RowError(f"missing field {name!r} for the template")
            value = record[name]
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise RowError(f"field {name!r} is {_kind(value)}, not a string or number")
            values[name] = value
        try:
            return string.Formatter().vformat(self.template or "", (), values)
        except (ValueError, TypeError, OverflowError) as exc:
            raise RowError(f"template cannot be filled: {exc}") from None

    def _from_messages(self, record: dict[str, Any]) -> str:
        name = self.messages_field or ""
        if name not in record:
            raise RowError(f"missing field {name!r}")
        turns = record[name]
        if not isinstance(turns, list):
            raise RowError(f"field {name!r} is {_kind(turns)}, not a list of messages")
        if not turns:
            raise RowError(f"field {name!r} has no messages")
        lines = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise RowError(f"message {i} in {name!r} is {_kind(turn)}, not an object")
            role, content = turn.get("role"), turn.get("content")
            if not isinstance(role, str) or not role:
                raise RowError(f"message {i} in {name!r} has no string 'role'")
            if not isinstance(content, str):
                raise RowError(f"message {i} in {name!r} has no string 'content'")
            lines.append(f"{role}: {content}")
        return "\n".join(lines)


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


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


Row = tuple[int, int, "dict[str, Any] | None", "str | None"]


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
    """Stands for a line longer than ``MAX_ROW_BYTES`` (which is not kept): its row is a bad row."""

    reason = ""


def _long_line(size: int) -> _LongLine:
    line = _LongLine(b"<line too long>\n")
    line.reason = f"line longer than {MAX_ROW_BYTES} bytes ({size} bytes)"
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
    than ``MAX_ROW_BYTES`` comes as a `_LongLine` without its bytes."""
    offset, number = start, first_line
    limit = MAX_ROW_BYTES
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


def _parse_json_line(line: bytes) -> dict[str, Any]:
    if type(line) is _LongLine:
        raise RowError(line.reason)
    text = _decode(line.rstrip(b"\r\n"))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:     # an integer of too many digits, nesting too deep
        raise RowError(f"invalid JSON ({_one_line(exc)})") from None
    if not isinstance(value, dict):
        raise RowError(f"expected a JSON object, got {_json_kind(value)}")
    if _SURROGATE_ESCAPE.search(text):
        _check_surrogates(value)
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _surrogate_reason(char: str) -> str:
    return f"lone surrogate \\u{ord(char):04x} in a string (not valid Unicode)"


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


def _rows_jsonl(path: Path, resume_at: int = 0) -> Iterator[Row]:
    """Rows line by line; ``resume_at``: yield only rows from that byte offset on (the file is still read
    from its start, so a read error happens exactly where it does for a whole read)."""
    with _open_binary(path) as fh:
        yield from _json_rows(_iter_lines(fh), resume_at)


def _json_rows(lines: Iterator[tuple[int, int, bytes]], resume_at: int = 0) -> Iterator[Row]:
    """The rows of (offset, number, line) lines of JSON Lines: blank lines skipped, bad rows with their reason."""
    for offset, number, line in lines:
        if offset < resume_at or not line.strip():
            continue
        try:
            yield offset, number, _parse_json_line(line), None
        except RowError as exc:
            yield offset, number, None, str(exc)


_JSONL_BLOCK = 1 << 22          # bytes of (uncompressed) JSON Lines parsed by pyarrow at a time
_JSONL_MIN_SPLIT = 1 << 18      # a block pyarrow cannot take is halved down to this size (see _block_items)
_JSONL_GIVE_UP = 4              # blocks in a row of which pyarrow took nothing: read the rest row by row


class _LineRecords(Sequence):
    """The records of a batch, parsed from their lines only when asked for.

    The block reader (`_jsonl_items`) extracts texts without making a dict per row; a batch keeps the
    raw lines and parses them with the same `_parse_json_line` as the row-by-row reader when its
    records are read, so they are the same dicts. Rows read row by row are kept as dicts.
    """

    def __init__(self) -> None:
        self._parts: list = []          # dicts, or (block, starts, stops) of consecutive lines
        self._n = 0
        self._cache: list | None = None

    def append(self, record: dict[str, Any]) -> None:
        self._parts.append(record)
        self._n += 1
        self._cache = None

    def add_lines(self, block: bytes, starts, stops) -> None:
        if len(starts):
            self._parts.append((block, starts, stops))
            self._n += len(starts)
            self._cache = None

    def _list(self) -> list[dict[str, Any]]:
        if self._cache is None:
            out: list[dict[str, Any]] = []
            for part in self._parts:
                if isinstance(part, dict):
                    out.append(part)
                else:
                    block, starts, stops = part
                    out.extend(_parse_json_line(block[a:b]) for a, b in zip(starts.tolist(), stops.tolist()))
            self._cache = out
        return self._cache

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        return self._list()[i]

    def __iter__(self):
        return iter(self._list())

    def __eq__(self, other) -> bool:
        if isinstance(other, (_LineRecords, list)):
            return self._list() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._list())


@dataclass(frozen=True)
class _Run:
    """Consecutive good rows of one block: texts, locations, and where each row's line is in ``block``."""

    texts: list[str]
    locations: list[int]
    block: bytes
    starts: Any      # numpy int64 arrays: line content [start, stop) within block
    stops: Any
    clipped: int = 0


class _ArrowTexts:
    """Texts of a block of JSON Lines parsed by pyarrow (C++, without the GIL), for the text specs whose
    result pyarrow gives exactly: a string field, a template over string fields, chat messages with
    string roles and contents. ``texts`` returns None whenever a row would not be a good row for
    `TextSpec.extract` (missing or null field, a value of another type, no messages, empty role) or might
    not be: the caller then reads the block row by row, which gives the reasons."""

    def __init__(self, spec: TextSpec):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.json as pj

        self.pa, self.pc, self.pj = pa, pc, pj
        self.spec = spec
        self.clipped = 0                # texts clipped by the last `texts` call
        self.mode = spec.mode
        if self.mode == "field":
            self.names = (spec.text_field or DEFAULT_TEXT_FIELD,)
            schema = pa.schema([(self.names[0], pa.string())])
        elif self.mode == "template":
            self.names = spec.template_fields()
            self.pieces = list(string.Formatter().parse(spec.template or ""))
            # a template of literal text and plain {field}s is a concatenation; with format specs or
            # conversions each row is formatted in Python from the column values
            self.concat = all(not fmt_spec and not conv for _, name, fmt_spec, conv in self.pieces if name is not None)
            self.template = spec.template or ""
            schema = pa.schema([(name, pa.string()) for name in self.names])
        else:
            self.names = (spec.messages_field or "",)
            schema = pa.schema([(self.names[0], pa.list_(pa.struct([("role", pa.string()),
                                                                    ("content", pa.string())])))])
        self.parse_options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore",
                                             newlines_in_values=False)

    def table(self, body):
        read_options = self.pj.ReadOptions(use_threads=False, block_size=max(len(body), 1) + 1)
        return self.pj.read_json(self.pa.BufferReader(body), read_options=read_options,
                                 parse_options=self.parse_options)

    def texts(self, table) -> list[str] | None:
        pa, pc = self.pa, self.pc
        cols = [table.column(name).combine_chunks() for name in self.names]
        if any(col.null_count for col in cols):
            return None
        if self.mode == "field":
            out = cols[0]
        elif self.mode == "template":
            if not self.concat:
                values = [col.to_pylist() for col in cols]
                fmt = string.Formatter()
                try:
                    return self._finish([fmt.vformat(self.template, (), dict(zip(self.names, row)))
                                         for row in zip(*values)])
                except (ValueError, TypeError, OverflowError):
                    return None
            parts = []
            for literal, name, _, _ in self.pieces:
                if literal:
                    parts.append(pa.scalar(literal, pa.string()))
                if name is not None:
                    parts.append(cols[self.names.index(name)])
            out = pc.binary_join_element_wise(*parts, pa.scalar("", pa.string()))
        else:
            turns = cols[0]
            if len(turns) and pc.min(pc.list_value_length(turns)).as_py() == 0:
                return None
            values = turns.values
            role, content = values.field("role"), values.field("content")
            if values.null_count or role.null_count or content.null_count:
                return None
            if len(role) and pc.min(pc.binary_length(role)).as_py() == 0:
                return None
            lines = pc.binary_join_element_wise(role, content, pa.scalar(": ", pa.string()))
            out = pc.binary_join(pa.ListArray.from_arrays(turns.offsets, lines), pa.scalar("\n", pa.string()))
        return self._finish(out.to_pylist())

    def _finish(self, texts: list[str]) -> list[str] | None:
        """``texts`` clipped as `TextSpec.extract` clips them; None if one is then blank."""
        limit = self.spec.max_chars
        self.clipped = 0
        if texts and max(map(len, texts)) > limit:
            self.clipped = sum(len(t) > limit for t in texts)
            texts = [self.spec.clip(t) if len(t) > limit else t for t in texts]
        return texts if all(map(str.strip, texts)) else None


def _arrow_run(block: bytes, offset: int, arrow: _ArrowTexts) -> _Run | None:
    """The rows of ``block`` (whole lines; ``offset`` its place in the file) when every non-blank line
    is a good row and pyarrow extracts the same texts as `TextSpec.extract` would; else None."""
    import numpy as np

    if offset != 0 and block.startswith(_BOM):
        return None                     # pyarrow skips a BOM that starts its input; only the file's own is
    pa = arrow.pa
    body = pa.py_buffer(block)
    try:                                # invalid UTF-8 anywhere: row by row (pyarrow skips unused fields);
        pa.Array.from_buffers(pa.large_string(), 1, [None, pa.py_buffer(np.array([0, len(block)], np.int64)),
                                                     body]).validate(full=True)     # as strict as bytes.decode
    except pa.ArrowInvalid:
        return None
    a = np.frombuffer(block, np.uint8)
    if b"\r" in block:
        cr = np.flatnonzero(a == 13)    # pyarrow ends a row at a lone CR, JSON Lines does not
        if cr[-1] + 1 == len(block) or np.any(a[cr + 1] != 10):
            return None
    starts = np.flatnonzero(a == 10) + 1
    starts = np.concatenate(([0], starts[starts < len(block)]))
    stops = np.append(starts[1:], len(block))
    if int(np.max(stops - starts)) > MAX_ROW_BYTES or _beyond_python_json(a, starts):
        return None                     # a bad row for Python's json that pyarrow might take: row by row
    first = starts.copy()
    if offset == 0 and block.startswith(_BOM):
        first[0] = len(_BOM)
    # a line is blank when bytes.strip() leaves nothing; a line whose first byte is not whitespace is not
    # blank, the few others are checked one by one
    lead = a[np.minimum(first, len(a) - 1)]
    maybe_blank = np.flatnonzero((first >= stops) | np.isin(lead, np.frombuffer(b" \t\n\r\x0b\x0c", np.uint8)))
    keep = np.ones(len(starts), dtype=bool)
    for i in maybe_blank.tolist():
        if not block[first[i]:stops[i]].strip():
            keep[i] = False
    first, stops = first[keep], stops[keep]
    if offset == 0 and block.startswith(_BOM):
        body = body.slice(len(_BOM))
    try:
        table = arrow.table(body)
        if table.num_rows != len(first):    # e.g. two objects on one line: pyarrow makes two rows
            return None
        texts = arrow.texts(table)
    except (pa.ArrowException, UnicodeDecodeError):
        return None
    if texts is None:
        return None
    return _Run(texts, (starts[keep] + offset).tolist(), block, first, stops, arrow.clipped)


_JSON_SAFE_DEPTH = 200          # brackets open at once in a block below which Python's json never recurses too deep


def _beyond_python_json(a, starts) -> bool:
    """Whether the bytes ``a`` (lines starting at ``starts``) might hold JSON that Python's json refuses
    and pyarrow takes: an integer of more digits than ``sys.get_int_max_str_digits()``, or brackets
    nested deeper in one line than Python's recursion limit may allow. Counted without regard to
    strings, so it errs only towards reading row by row."""
    import sys

    import numpy as np

    folded = a | 32                                     # '[' -> '{', ']' -> '}'
    opens, closes = folded == 123, folded == 125
    at = np.flatnonzero(opens | closes)
    if at.size > _JSON_SAFE_DEPTH:
        steps = np.where(opens[at], 1, -1)
        depth = np.cumsum(steps)
        line = np.searchsorted(starts, at, side="right")
        first = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])     # each line's first bracket
        base = (depth - steps)[first]
        if int((depth - np.repeat(base, np.diff(np.r_[first, at.size]))).max()) > _JSON_SAFE_DEPTH:
            return True
    width = getattr(sys, "get_int_max_str_digits", int)() // 2     # a run of 2w digits covers a w-aligned window
    if width and a.size >= width:
        digit = (a - np.uint8(48)) < 10
        windows = digit[: a.size - a.size % width].reshape(-1, width)
        if bool(windows.all(axis=1).any()):
            return True
    return False


def _block_items(block: bytes, offset: int, number: int, arrow: _ArrowTexts, taken: list) -> Iterator[Row | _Run]:
    """The rows of ``block``: one `_Run` when pyarrow takes it whole, else its two halves (cut at a
    newline) the same way, down to ``_JSONL_MIN_SPLIT`` bytes, which are read row by row; so one bad row
    costs the row-by-row reading of a small piece, not of the whole block. ``taken[0]`` counts the
    bytes pyarrow took."""
    run = _arrow_run(block, offset, arrow)
    if run is not None:
        taken[0] += len(block)
        yield run
        return
    cut = block.find(b"\n", len(block) // 2) + 1
    if len(block) <= _JSONL_MIN_SPLIT or cut == 0 or cut == len(block):
        yield from _block_rows(block, offset, number)
        return
    yield from _block_items(block[:cut], offset, number, arrow, taken)
    yield from _block_items(block[cut:], offset + cut, number + block.count(b"\n", 0, cut), arrow, taken)


def _block_rows(block: bytes, offset: int, number: int) -> Iterator[Row]:
    """The rows of ``block`` (whole lines) exactly as `_rows_jsonl` yields them."""
    yield from _json_rows(_iter_lines(io.BytesIO(block), offset, number))


def _jsonl_items(path: Path, spec: TextSpec) -> Iterator[Row | _Run]:
    """The rows of a JSON Lines file as `_rows_jsonl` yields them, except that blocks of lines whose
    texts pyarrow extracts (`_ArrowTexts`) come as one `_Run` of good rows, without a dict per row.

    The file is read in blocks of about ``_JSONL_BLOCK`` bytes cut after a newline. A block pyarrow
    cannot take whole (a bad row, a value of another type, invalid UTF-8) is halved until the pieces
    are taken or small enough to be read row by row (`_block_items`), so bad rows get the same line
    numbers and reasons; after ``_JSONL_GIVE_UP`` blocks in a row of which pyarrow took nothing (say,
    a template over a numeric field) the rest of the file is read row by row without trying. A read
    error (truncated gzip, ...) re-reads the file line by line from the start, yielding only the rows
    not yet yielded, so it stops where and how the line reader would.

    In this process's read-ahead thread this matters for the pool build: pyarrow parses without the
    GIL, which the embedder in the main thread needs (docs/benchmarks.md, pool building).
    """
    try:
        import numpy as np

        arrow = _ArrowTexts(spec)
    except ImportError:
        yield from _rows_jsonl(path)
        return
    with _open_binary(path) as fh:
        offset, number, misses = 0, 1, 0
        pending: list[bytes] = []
        while True:
            try:
                chunk = fh.read(_JSONL_BLOCK)
            except _READ_ERRORS:
                yield from _rows_jsonl(path, resume_at=offset)
                return
            if chunk:
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:
                    pending.append(chunk)
                    if sum(map(len, pending)) > MAX_ROW_BYTES:     # a line too long: the rest row by row
                        yield from _json_rows(_iter_lines(_Prefixed(pending, fh), offset, number))
                        return
                    continue
                block = b"".join(pending) + chunk[:cut] if pending else chunk[:cut]
                pending = [chunk[cut:]] if cut < len(chunk) else []
            else:
                if not pending:
                    return
                block, pending = b"".join(pending), []
            if misses < _JSONL_GIVE_UP:
                taken = [0]
                yield from _block_items(block, offset, number, arrow, taken)
                misses = 0 if taken[0] else misses + 1
            else:
                yield from _block_rows(block, offset, number)
            offset += len(block)
            number += int(np.count_nonzero(np.frombuffer(block, np.uint8) == 10))
            if not chunk:
                return


class _Prefixed:
    """``fh`` read by lines, after the bytes of ``parts`` (already read from it)."""

    def __init__(self, parts: list[bytes], fh):
        self._head = io.BytesIO(b"".join(parts))
        self._fh = fh
        self.name = getattr(fh, "name", "?")

    def readline(self, limit: int = -1) -> bytes:
        line = self._head.readline(limit)
        if line.endswith(b"\n") or (limit >= 0 and len(line) >= limit):
            return line
        return line + self._fh.readline(-1 if limit < 0 else limit - len(line))


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


class _RecordTooLong(Exception):
    """A CSV record's lines passed ``MAX_ROW_BYTES`` (most likely a quote that is never closed)."""


class _LineFeed:
    """Feeds decoded lines to `csv.reader`, noting where the current record began.

    Invalid UTF-8 is replaced and noted in ``error`` so the row can be reported
    instead of stopping the read. The lines of the current record are kept (at most
    ``MAX_ROW_BYTES``) so that after a quote that never closes, the read can go on
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
        if self._kept_bytes > MAX_ROW_BYTES and len(self._kept) > 1:
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
    ``MAX_ROW_BYTES``, inside it) is a bad row, and the read goes on from the line after its first."""
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
                reason = f"record longer than {MAX_ROW_BYTES} bytes (a quote that is never closed?)"
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


def _load_json_array(path: Path) -> list[Any]:
    with _open_binary(path) as fh:
        try:
            data = fh.read()
        except _READ_ERRORS as exc:
            raise InputError(f"{path}:1: {_read_problem(exc)}") from None
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}:1: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:     # an integer of too many digits, nesting too deep
        raise InputError(f"{path}:1: invalid JSON ({_one_line(exc)})") from None
    if not isinstance(value, list):
        raise InputError(f"{path}:1: expected a JSON array of objects, got {_json_kind(value)}")
    # every item is looked at: json.loads of bytes lets even encoded surrogates through ("surrogatepass")
    for index, item in enumerate(value):
        if isinstance(item, dict):
            try:
                _check_surrogates(item)
            except RowError as exc:
                value[index] = _BadItem(str(exc))
    return value


class _BadItem(str):
    """An item of a JSON array that is a bad row for a reason other than its type."""


def _json_item_problem(value: Any) -> str | None:
    if isinstance(value, _BadItem):
        return str(value)
    if not isinstance(value, dict):
        return f"expected a JSON object, got {_json_kind(value)}"
    return None


def _object_or_raise(path: Path, number: int, value: Any) -> dict[str, Any]:
    problem = _json_item_problem(value)
    if problem is not None:
        raise InputError(f"{path}:{number}: {problem}")
    return value


def _rows_json(path: Path) -> Iterator[Row]:
    for index, value in enumerate(_load_json_array(path)):
        problem = _json_item_problem(value)
        if problem is None:
            yield index, index + 1, value, None
        else:
            yield index, index + 1, None, problem


def _parquet_file(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        raise InputError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None


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
    line = fh.readline(MAX_ROW_BYTES + 1)
    if len(line) > MAX_ROW_BYTES:
        raise InputError(f"{where}: line longer than {MAX_ROW_BYTES} bytes")
    if offset == 0 and line.startswith(_BOM):
        line = line[len(_BOM):]
    if not line.strip():
        raise InputError(f"{path}: location {offset} is past the end or a blank line")
    return _line_record(where, fmt, header, line)
