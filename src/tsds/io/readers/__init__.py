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

One module per format (jsonl, json_array, delimited for CSV/TSV, txt, parquet, arrow), the text spec in
`spec` (its templates in `template`), line machinery in `lines`, formats and bounds in `limits`; `read` holds
the entry points.
"""

from tsds.io.readers.limits import (
    BAD_ROW_POLICIES,
    DEFAULT_MAX_CHARS,
    DEFAULT_TEXT_FIELD,
    FORMATS,
    LINE_FORMATS,
    MAX_BAD_EXAMPLES,
    MAX_FORMAT_NUMBER,
    MAX_ROW_BYTES,
    PathLike,
)
from tsds.io.readers.lines import refuse_pipe
from tsds.io.readers.read import (
    Batch,
    ReadStats,
    detect_format,
    estimate_rows,
    iter_batches,
    read_records,
    read_texts,
)
from tsds.io.readers.spec import DEFAULT_ROLES, RowError, TextSpec
from tsds.io.readers.template import decode_escapes

__all__ = [
    "BAD_ROW_POLICIES", "DEFAULT_MAX_CHARS", "DEFAULT_TEXT_FIELD", "FORMATS", "LINE_FORMATS", "MAX_BAD_EXAMPLES",
    "DEFAULT_ROLES", "MAX_FORMAT_NUMBER", "decode_escapes", "MAX_ROW_BYTES", "Batch", "PathLike", "ReadStats", "RowError", "TextSpec",
    "detect_format", "estimate_rows", "iter_batches", "read_records", "read_texts", "refuse_pipe",
]
