"""JSON Lines: row by row, or block-wise through pyarrow (texts without a dict per row, same results)."""

from __future__ import annotations

import io
import json
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tsds.io.readers.limits as limits
from tsds.io.readers.limits import _BOM, _JSON_SAFE_DEPTH, _JSONL_GIVE_UP, _READ_ERRORS, DEFAULT_TEXT_FIELD
from tsds.io.readers.lines import (
    Row,
    _check_surrogates,
    _decode,
    _iter_lines,
    _json_kind,
    _LongLine,
    _one_line,
    _open_binary,
)
from tsds.io.readers.spec import RowError, TextSpec


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


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
            self.required = spec.required_fields()
            self.pieces = list(string.Formatter().parse(spec.template or ""))
            # a template of literal text and plain {field}s, without optional sections, is a concatenation;
            # else each row is filled in Python from the column values
            self.concat = "[[" not in (spec.template or "") and all(
                not fmt_spec and not conv for _, name, fmt_spec, conv in self.pieces if name is not None)
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
        required = self.required if self.mode == "template" else self.names
        if any(col.null_count for name, col in zip(self.names, cols) if name in required):
            return None
        if self.mode == "field":
            out = cols[0]
        elif self.mode == "template":
            if not self.concat:
                values = [col.to_pylist() for col in cols]
                try:
                    return self._finish([self.spec.fill_template(dict(zip(self.names, row)))
                                         for row in zip(*values)])
                except RowError:
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
            offsets = turns.offsets
            if self.spec.roles is not None:         # only the turns of these roles, as TextSpec.extract
                import numpy as np

                keep = pc.is_in(role, value_set=pa.array(self.spec.roles, pa.string()))
                kept = np.concatenate(([0], np.cumsum(keep.to_numpy(zero_copy_only=False), dtype=np.int32)))
                offsets = pa.array(kept[offsets.to_numpy()], pa.int32())
                if len(turns) and int(np.min(np.diff(offsets.to_numpy()))) == 0:
                    return None
                lines = lines.filter(keep)
            out = pc.binary_join(pa.ListArray.from_arrays(offsets, lines), pa.scalar("\n", pa.string()))
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

    if block.startswith(_BOM) and (offset != 0 or block.startswith(_BOM, len(_BOM))):
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
    if int(np.max(stops - starts)) > limits.MAX_ROW_BYTES or _beyond_python_json(a, starts):
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
    newline) the same way, down to ``limits._JSONL_MIN_SPLIT`` bytes, which are read row by row; so one bad row
    costs the row-by-row reading of a small piece, not of the whole block. ``taken[0]`` counts the
    bytes pyarrow took."""
    run = _arrow_run(block, offset, arrow)
    if run is not None:
        taken[0] += len(block)
        yield run
        return
    cut = block.find(b"\n", len(block) // 2) + 1
    if len(block) <= limits._JSONL_MIN_SPLIT or cut == 0 or cut == len(block):
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

    The file is read in blocks of about ``limits._JSONL_BLOCK`` bytes cut after a newline. A block pyarrow
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
                chunk = fh.read(limits._JSONL_BLOCK)
            except _READ_ERRORS:
                yield from _rows_jsonl(path, resume_at=offset)
                return
            if chunk:
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:
                    pending.append(chunk)
                    if sum(map(len, pending)) > limits.MAX_ROW_BYTES:     # a line too long: the rest row by row
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
