"""Property tests of the readers on hostile input.

Random bytes, and JSON Lines / JSON arrays / CSV / TSV / text built to be awkward (quotes, embedded
newlines, CR, NUL, BOMs, lone surrogates, integers Python refuses, huge fields), are read sequentially
(the pyarrow block reader included) and as the engines read pool files in ranges and shards
(tsds.store.shards). Each read either gives exactly the rows that the standard library's strict
``json`` / ``csv`` find, under the readers' documented rules (a line over ``MAX_ROW_BYTES`` is a bad
row, texts are clipped to ``max_chars``), or stops with an `InputError` of one line ``file:line: reason``;
with ``on_bad_row="skip"`` the bad rows are counted, never silently dropped.
"""

import csv
import gzip
import io
import json
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tsds.errors import InputError
from tsds.io.readers import limits as R
from tsds.io.readers import ReadStats, TextSpec, iter_batches

ROW_LIMIT = 3000        # MAX_ROW_BYTES during these tests, so that "huge" stays small
MAX_CHARS = 40          # the spec's clipping, so that clipping happens
SPEC = TextSpec(max_chars=MAX_CHARS)

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def limits(monkeypatch):
    """A small row limit and small pyarrow blocks, so that a file of a few KB has several of each."""
    monkeypatch.setattr(R, "MAX_ROW_BYTES", ROW_LIMIT)
    monkeypatch.setattr(R, "_JSONL_BLOCK", 1024)
    monkeypatch.setattr(R, "_JSONL_MIN_SPLIT", 128)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# ---- what the readers return, three ways --------------------------------------------------------

def read(path, on_bad_row, fmt):
    """(texts, stats) or the InputError's message; any other exception fails the test."""
    stats = ReadStats()
    try:
        texts = [t for b in iter_batches(path, SPEC, batch_size=3, fmt=fmt, on_bad_row=on_bad_row, stats=stats)
                 for t in b.texts]
    except InputError as exc:
        return check_message(str(exc), path)
    assert stats.rows == len(texts)
    return texts, stats


def ranged(path, on_bad_row, fmt):
    """The same read as an engine's workers do it: scan in byte ranges, then one shard at a time."""
    from tsds.store.shards import PoolShards, read_unit, scan

    stats = ReadStats()
    try:
        shards = PoolShards([(str(path), fmt)], SPEC, on_bad_row, 2, stats, jobs=None, seen=None, done={})
        units = shards.scan_units(range_bytes=200)
        plans = shards.read_units(units, [scan(u, SPEC, on_bad_row == "fail") for u in units])
        texts = [t for plan in plans for shard in read_unit(plan, SPEC, on_bad_row, 2) for t in shard.texts]
    except InputError as exc:
        return check_message(str(exc), path)
    return texts, stats


def check_message(message, path):
    """One line, ``file:line: reason``; only Parquet and Arrow files may be refused as a whole
    (``file: reason``), having no lines."""
    assert "\n" not in message and "\r" not in message, message
    line = "" if path.suffix in (".parquet", ".arrow") else ":"
    assert re.match(re.escape(str(path)) + rf"(:\d+){'' if line else '?'}: \S", message), message
    return message


# ---- the reference: the standard library, strictly, under the documented rules -----------------

def lines_of(data):
    lines = io.BytesIO(data).readlines()
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    return lines


def good_text(value):
    """The text of a field value, or None when the row is bad."""
    if not isinstance(value, str):
        return None
    value = value[:MAX_CHARS]
    if not value.strip():
        return None
    return value


def unicode_ok(value) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def reference_jsonl(data):
    """(texts, line numbers of bad rows)."""
    texts, bad = [], []
    for number, line in enumerate(io.BytesIO(data).readlines(), 1):
        size = len(line)
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if size <= ROW_LIMIT and not line.strip():
            continue
        text = None
        if size <= ROW_LIMIT:
            try:
                value = json.loads(line.rstrip(b"\r\n").decode("utf-8"))
            except (ValueError, RecursionError):
                value = None
            if isinstance(value, dict) and unicode_ok(value):
                text = good_text(value.get("text"))
        if text is None:
            bad.append(number)
        else:
            texts.append(text)
    return texts, bad


def reference_txt(data):
    texts, bad = [], []
    for number, line in enumerate(io.BytesIO(data).readlines(), 1):
        size = len(line)
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if size <= ROW_LIMIT and not line.strip():
            continue
        try:
            text = good_text(line.decode("utf-8").rstrip("\r\n")) if size <= ROW_LIMIT else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            bad.append(number)
        else:
            texts.append(text)
    return texts, bad


def reference_json(data):
    """(texts, row numbers of bad rows), or None when the file as a whole is not a JSON array."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    texts, bad = [], []
    for number, item in enumerate(value, 1):
        text = good_text(item.get("text")) if isinstance(item, dict) and unicode_ok(item) else None
        if text is None:
            bad.append(number)
        else:
            texts.append(text)
    return texts, bad


def reference_csv(data, delimiter):
    """The texts when the whole file is good, else None (the first problem, anywhere, fails it)."""
    lines = lines_of(data)
    if any(len(line) > ROW_LIMIT for line in lines):
        return None
    try:
        reader = csv.reader([line.decode("utf-8") for line in lines], delimiter=delimiter, strict=True)
        records, seen = [], 0
        for r in reader:
            if sum(map(len, lines[seen:reader.line_num])) > ROW_LIMIT:
                return None                                 # a record longer than the row limit
            seen = reader.line_num
            if r:
                records.append(r)
    except (UnicodeDecodeError, csv.Error):
        return None
    if not records:
        return []
    header = [c.strip() for c in records[0]]
    if len(set(header)) != len(header) or not all(header):
        return None
    texts = []
    for cells in records[1:]:
        if len(cells) != len(header) or "text" not in header:
            return None
        text = good_text(cells[header.index("text")])
        if text is None:
            return None
        texts.append(text)
    return texts


def reference_csv_skipping(data, delimiter):
    """(texts, bad rows) with bad rows skipped, or None when the header is bad: strict csv, record by
    record, and after a record whose quote never closes (the data ends, or the record passes the row
    limit, inside it) on from the line after its first. Only for files without a line over the limit."""
    lines = lines_of(data)
    decoded = [line.decode("utf-8", errors="replace") for line in lines]
    valid = [line.decode("utf-8", errors="replace").encode("utf-8") == line for line in lines]
    records, i = [], 0                      # (good, cells) per non-blank record
    while i < len(lines):
        reader = csv.reader(decoded[i:], delimiter=delimiter, strict=True)
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            used = reader.line_num
            if sum(map(len, lines[i:i + used])) > ROW_LIMIT or str(exc) == "unexpected end of data":
                records.append((False, None))
                i += 1
            else:
                records.append((False, None))
                i += used
            continue
        used = reader.line_num
        if sum(map(len, lines[i:i + used])) > ROW_LIMIT:
            records.append((False, None))
            i += 1
            continue
        if cells:
            records.append((all(valid[i:i + used]), cells))
        i += used
    if not records:
        return [], 0
    good, header = records[0]
    if not good:
        return None
    header = [c.strip() for c in header]
    if len(set(header)) != len(header) or not all(header):
        return None
    texts, bad = [], 0
    for good, cells in records[1:]:
        text = None
        if good and len(cells) == len(header) and "text" in header:
            text = good_text(cells[header.index("text")])
        if text is None:
            bad += 1
        else:
            texts.append(text)
    return texts, bad


# ---- strategies ---------------------------------------------------------------------------------

# every code point, lone surrogates included; a few awkward ones often
chars = st.one_of(st.characters(blacklist_categories=()), st.sampled_from('"\',\t\n\r\x00\ufeff\xa0 \\'))
short_text = st.text(chars, max_size=12)
huge_text = st.integers(ROW_LIMIT - 20, ROW_LIMIT + 40).map(lambda n: "w" * n)
text_value = st.one_of(short_text, short_text, st.integers(), st.none(), huge_text,
                       st.text(st.sampled_from("ab \n"), min_size=MAX_CHARS - 2, max_size=MAX_CHARS + 30))
json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), short_text),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
                          max_leaves=6)
record = st.builds(lambda text, extra, drop: ({} if drop else {"text": text}) | extra,
                   text_value, st.dictionaries(st.sampled_from(["id", "meta", "\ud800"]), json_value, max_size=2),
                   st.sampled_from([False] * 5 + [True]))


def encode_json(value, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


odd_lines = st.sampled_from([
    b"", b"   ", b"\x00", b'{"text": "nul\x00raw"}', b'{"text": "a"} {"text": "b"}', b'{"text": "c"}\r',
    b'{"text": "cr\rinside"}', b"[1, 2]", b'"str"', b"{", b'{"text": "x", "n": ' + b"9" * 4400 + b"}",
    b'{"text": "x", "n": ' + b"9" * 40 + b"}", b'{"text": "x", "d": ' + b"[" * 1400 + b"]" * 1400 + b"}",
    b'{"text": "deep", "d": ' + b"[" * 40 + b"]" * 40 + b"}", b'{"text": "\\ud83d\\ude00 pair"}',
    b'{"text": "\\udc00 lone"}', b'{"text": "ok", "k": "\\ud83d"}', b'{"text": "\xed\xa0\x80"}',
    b'{"text": "\xff"}', b"\xef\xbb\xbf" + b'{"text": "bom"}', b'{"text": NaN}', b'{"text": "e", "v": 1e999}',
])


@st.composite
def jsonl_files(draw):
    lines = draw(st.lists(st.one_of(st.builds(encode_json, record, st.booleans()), odd_lines), max_size=14))
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    data = b"".join(line + end for line, end in zip(lines, ends))
    if draw(st.booleans()) and data:
        data = data[:-1]                                   # no newline at the end
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + data


plain = st.text(st.sampled_from("abc xyz"), min_size=1, max_size=10)
quoting = st.sampled_from(['"open', '"closed" late', 'mid"quote', '"', '""', '"two\nlines"', '"a""b"'])
cell = st.one_of(plain, plain, plain, quoting, short_text, st.text(st.sampled_from('ab"\n\r,\t '), max_size=8),
                 st.text(st.sampled_from("ab \n"), min_size=MAX_CHARS - 2, max_size=MAX_CHARS + 30), huge_text)
headers = st.one_of(st.just(["id", "text"]), st.just(["text"]), st.just(["text", "x", "id"]),
                    st.lists(st.sampled_from(["text", "id", "x", " text", ""]), min_size=1, max_size=3))


@st.composite
def delimited_files(draw, delimiter):
    header = draw(headers)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    for _ in range(draw(st.integers(0, 8))):
        width = draw(st.sampled_from([len(header)] * 6 + [0, 1, 4]))
        cells = draw(st.lists(cell, min_size=width, max_size=width))
        if draw(st.sampled_from([True] * 3 + [False])):
            writer.writerow(cells)                              # quoted as it should be
        else:
            out.write(delimiter.join(cells) + "\n")             # raw: quotes left open, newlines inside
    data = out.getvalue().encode("utf-8", "surrogatepass")
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + data


# ---- the properties -----------------------------------------------------------------------------

def write(folder, name, data, gz=False):
    path = folder / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def check_line_format(path, fmt, texts, bad):
    failed = read(path, "fail", fmt)
    if bad:
        assert isinstance(failed, str) and failed.startswith(f"{path}:{bad[0]}: "), (failed, bad)
    else:
        assert failed[0] == texts, failed
    got, stats = read(path, "skip", fmt)
    assert got == texts and stats.skipped == len(bad), (got, stats, bad)
    event(f"bad rows: {min(len(bad), 2)}, good rows: {min(len(texts), 2)}, clipped: {stats.clipped > 0}")
    return stats


@FUZZ
@given(data=jsonl_files(), gz=st.booleans())
def test_json_lines_read_exactly_or_fail_on_the_right_line(folder, limits, data, gz):
    path = write(folder, "pool.jsonl", data, gz)
    texts, bad = reference_jsonl(data)
    stats = check_line_format(path, "jsonl", texts, bad)
    assert ranged(path, "skip", "jsonl") == (texts, stats)
    failed = ranged(path, "fail", "jsonl")
    assert failed == read(path, "fail", "jsonl") if bad else failed[0] == texts


@FUZZ
@given(lines=st.lists(st.one_of(st.text(chars, max_size=10).map(lambda t: t.encode("utf-8", "surrogatepass")),
                                huge_text.map(str.encode), odd_lines), max_size=10),
       bom=st.booleans())
def test_text_lines_read_exactly_or_fail_on_the_right_line(folder, limits, lines, bom):
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines)
    path = write(folder, "pool.txt", data)
    texts, bad = reference_txt(data)
    stats = check_line_format(path, "txt", texts, bad)
    assert ranged(path, "skip", "txt") == (texts, stats)


@FUZZ
@given(items=st.lists(st.one_of(record, json_value), max_size=8), ascii_only=st.booleans(),
       tail=st.sampled_from([b"", b" ", b",", b"]", b"\x00"]))
def test_json_arrays_read_exactly_or_fail(folder, limits, items, ascii_only, tail):
    data = encode_json(items, ascii_only) + tail
    path = write(folder, "pool.json", data)
    expected = reference_json(data)
    if expected is None:
        assert isinstance(read(path, "skip", "json"), str)
        return
    texts, bad = expected
    check_line_format(path, "json", texts, bad)


@FUZZ
@given(drawn=st.sampled_from([",", "\t"]).flatmap(lambda d: st.tuples(st.just(d), delimited_files(d))),
       gz=st.booleans())
def test_csv_and_tsv_read_exactly_or_fail(folder, limits, drawn, gz):
    delimiter, data = drawn
    fmt = "csv" if delimiter == "," else "tsv"
    path = write(folder, f"pool.{fmt}", data, gz)
    expected = reference_csv(data, delimiter)
    failed = read(path, "fail", fmt)
    skipped = read(path, "skip", fmt)
    event("refused by strict csv" if expected is None else f"clean, {min(len(expected), 2)} rows")
    if expected is None:
        assert isinstance(failed, str)
        # with bad rows skipped, a file the strict reader refuses never reads as complete and clean
        assert isinstance(skipped, str) or skipped[1].skipped > 0, skipped
        if all(len(line) <= ROW_LIMIT for line in lines_of(data)):
            kept = reference_csv_skipping(data, delimiter)
            if kept is None:
                assert isinstance(skipped, str)
            else:
                assert (skipped[0], skipped[1].skipped) == kept, (skipped, kept)
    else:
        assert failed[0] == expected and skipped == (expected, ReadStats(rows=len(expected),
                                                                         clipped=skipped[1].clipped))
    assert ranged(path, "skip", fmt) == skipped


@FUZZ
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["jsonl", "json", "csv", "tsv", "txt", "parquet", "arrow"]),
       wrap=st.sampled_from(["plain", "gzip", "cut gzip", "damaged gzip", "parquet magic"]))
def test_random_bytes_never_raise_anything_but_one_line(folder, limits, data, fmt, wrap):
    if wrap == "gzip":
        data = gzip.compress(data, mtime=0)
    elif wrap == "cut gzip":
        data = gzip.compress(data, mtime=0)[: max(2, len(data) // 2)]
    elif wrap == "damaged gzip":
        packed = bytearray(gzip.compress(data * 20, mtime=0))
        packed[len(packed) // 2:len(packed) // 2 + 4] = b"\xff\x00\xff\x00"
        data = bytes(packed)
    elif wrap == "parquet magic":
        data = b"PAR1" + data + b"PAR1"
    path = write(folder, f"bytes.{fmt}", data)
    for policy in ("fail", "skip"):
        result = read(path, policy, fmt)
        event(f"{policy}: {'error' if isinstance(result, str) else 'rows'}")
        if isinstance(result, str):
            continue
        texts, stats = result
        if policy == "fail":
            assert stats.skipped == 0
        if fmt in ("jsonl", "txt") and wrap == "plain":
            reference = (reference_jsonl if fmt == "jsonl" else reference_txt)(data)
            assert (texts, stats.skipped) == (reference[0], len(reference[1]))
