"""Formats, and the bounds of a read: what one row may cost, how JSON Lines is cut into blocks.

The sizes that bound a read are looked up as ``limits.NAME`` when used, so one setting holds for every
reader (and a test may lower it)."""

from __future__ import annotations

import os
import zlib
from typing import Union

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
_READ_ERRORS = (OSError, EOFError, zlib.error)      # gzip.BadGzipFile is an OSError
_JSONL_BLOCK = 1 << 22          # bytes of (uncompressed) JSON Lines parsed by pyarrow at a time
_JSONL_MIN_SPLIT = 1 << 18      # a block pyarrow cannot take is halved down to this size (see _block_items)
_JSONL_GIVE_UP = 4              # blocks in a row of which pyarrow took nothing: read the rest row by row
_JSON_SAFE_DEPTH = 200          # brackets open at once in a block below which Python's json never recurses too deep
