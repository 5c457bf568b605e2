"""Readers: every format, the three text modes, bad rows, streaming and re-reading by location."""

import gzip
import json
import shutil
from pathlib import Path

import pytest

from tsds.errors import InputError, ParameterError
from tsds.io.readers import (
    Batch,
    ReadStats,
    TextSpec,
    detect_format,
    iter_batches,
    read_records,
    read_texts,
)

DATA = Path(__file__).parent / "data" / "readers"

GOOD_TEXTS = [
    "Add two and three.",
    "Name a colour, say \u00e9cru.",
    "Translate 'cat' to French.",
    "Sort 3, 1, 2.",
    "Spell 'tsds' backwards.",
]
CSV_TEXTS = ["Hello, world", "A text that\r\nspans two lines", "plain row", 'He said "hi"']
TSV_TEXTS = ["Hello, world", "A text that\nspans two lines", "plain row"]
TXT_TEXTS = ["First example line.", "Second example, with \u00e9.", "Third after a blank line.", "Fourth."]

GOOD_FILES = {
    "good.jsonl": GOOD_TEXTS,
    "good.jsonl.gz": GOOD_TEXTS,
    "good.parquet": GOOD_TEXTS,
    "good.arrow": GOOD_TEXTS,
    "hf_dataset": GOOD_TEXTS,
    "good.csv": CSV_TEXTS,
    "good.csv.gz": CSV_TEXTS,
    "good.tsv": TSV_TEXTS,
    "good.tsv.gz": TSV_TEXTS,
    "good.txt": TXT_TEXTS,
    "good.txt.gz": TXT_TEXTS,
}

BAD_JSONL = [
    "2: invalid JSON (Expecting property name enclosed in double quotes at column 20)",
    "3: missing field 'text'",
    "4: field 'text' is int, not a string",
    "5: empty text",
    "6: expected a JSON object, got array",
]
BAD_CSV = ["3: expected 2 columns, got 3", "4: expected 2 columns, got 1", "5: empty text"]
BAD_TSV = ["3: expected 2 columns, got 1", "4: expected 2 columns, got 3"]
BAD_TXT = ["2: invalid UTF-8 at byte 7"]
BAD_FILES = {
    "bad.jsonl": (["first good row", "last good row"], BAD_JSONL),
    "bad.jsonl.gz": (["first good row", "last good row"], BAD_JSONL),
    "bad.csv": (["first", "second\nrow"], BAD_CSV),
    "bad.csv.gz": (["first", "second\nrow"], BAD_CSV),
    "bad.tsv": (["first", "last"], BAD_TSV),
    "bad.tsv.gz": (["first", "last"], BAD_TSV),
    "bad.txt": (["Good line one.", "Good line three."], BAD_TXT),
    "bad.txt.gz": (["Good line one.", "Good line three."], BAD_TXT),
    "bad.json": (["good one", "good two"], ["2: expected a JSON object, got string", "3: missing field 'text'"]),
    "bad.parquet": (["fine row", "another fine row"], ["2: field 'text' is null, not a string", "3: empty text"]),
}


def read_all(paths, spec=None, **kwargs) -> tuple[list[Batch], ReadStats]:
    stats = ReadStats()
    return list(iter_batches(paths, spec, stats=stats, **kwargs)), stats


def flat(batches: list[Batch], name: str) -> list:
    return [item for batch in batches for item in getattr(batch, name)]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("good.jsonl", "jsonl"),
        ("good.jsonl.gz", "jsonl"),
        ("alpaca.json", "json"),
        ("good.parquet", "parquet"),
        ("good.csv", "csv"),
        ("good.csv.gz", "csv"),
        ("good.tsv.gz", "tsv"),
        ("good.txt", "txt"),
        ("good.txt.gz", "txt"),
        ("good.arrow", "arrow"),
        ("hf_dataset", "hf"),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(DATA / name) == fmt


def test_detect_format_rejects_unknown_names(tmp_path):
    for name in ("pool.xlsx", "pool", "pool.parquet.gz"):
        (tmp_path / name).write_text("x")
        with pytest.raises(InputError, match="cannot tell the format"):
            detect_format(tmp_path / name)
    with pytest.raises(InputError, match="not a Hugging Face"):
        detect_format(tmp_path)
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(InputError, match="DatasetDict"):
        detect_format(tmp_path / "dd")


@pytest.mark.parametrize("name", sorted(GOOD_FILES))
def test_each_reader_reads_texts_and_records(name):
    batches, stats = read_all(DATA / name)
    assert flat(batches, "texts") == GOOD_FILES[name]
    assert stats == ReadStats(rows=len(GOOD_FILES[name]), skipped=0, bad_examples=[])
    records = flat(batches, "records")
    if name.startswith("good.txt"):
        assert records == [{"text": t} for t in TXT_TEXTS]
    elif name.startswith(("good.csv", "good.tsv")):
        assert [r["label"] for r in records] == ["greeting", "multi", "plain", "quote"][: len(records)]
    else:
        assert [r["id"] for r in records] == [0, 1, 2, 3, 4]
        assert records[1]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_line_locations_are_byte_offsets_of_line_starts():
    raw = (DATA / "good.jsonl").read_bytes()
    expected = [0] + [i + 1 for i, b in enumerate(raw[:-1]) if b == ord("\n") and raw[i + 1 : i + 2] not in (b"\n", b"")]
    for name in ("good.jsonl", "good.jsonl.gz"):
        batches, _ = read_all(DATA / name)
        assert flat(batches, "locations") == expected
    csv_raw = (DATA / "good.csv").read_bytes()
    batches, _ = read_all(DATA / "good.csv")
    starts = flat(batches, "locations")
    assert [csv_raw[s : s + 5] for s in starts] == [b'"Hell', b'"A te', b"plain", b'"He s']


def test_row_formats_locate_by_row_number():
    batches, _ = read_all(DATA / "bad.parquet", on_bad_row="skip")
    assert flat(batches, "locations") == [0, 3]
    batches, _ = read_all(DATA / "hf_dataset")
    assert flat(batches, "locations") == [0, 1, 2, 3, 4]


def test_text_field_mode():
    texts, _ = read_texts(DATA / "alpaca.json", TextSpec(text_field="instruction"))
    assert texts == ["Add the numbers.", "Name a colour.", "Translate to French.", "Sort the list."]


def test_template_mode():
    spec = TextSpec(template="{instruction}\n{input}\n{output}")
    texts, _ = read_texts(DATA / "alpaca.json", spec)
    assert texts[0] == "Add the numbers.\n2 and 3\n5"
    assert texts[1] == "Name a colour.\n\n\u00e9cru"
    texts, _ = read_texts(DATA / "good.parquet", TextSpec(template="#{id}: {text}"))
    assert texts[4] == "#4: Spell 'tsds' backwards."


def test_template_missing_field_is_a_bad_row():
    spec = TextSpec(template="{instruction} -> {answer}")
    with pytest.raises(InputError) as err:
        read_texts(DATA / "alpaca.json", spec)
    assert str(err.value) == f"{DATA / 'alpaca.json'}:1: missing field 'answer' for the template"


def test_messages_mode():
    texts, stats = read_texts(DATA / "chat.jsonl", TextSpec(messages_field="messages"), on_bad_row="skip")
    assert texts == ["user: Hi\nassistant: Hello!", "user: Bye\nassistant: "]
    path = DATA / "chat.jsonl"
    assert stats.skipped == 3
    assert stats.bad_examples == [
        f"{path}:2: message 0 in 'messages' has no string 'content'",
        f"{path}:3: field 'messages' has no messages",
        f"{path}:4: field 'messages' is str, not a list of messages",
    ]
    texts, _ = read_texts(DATA / "hf_dataset", TextSpec(messages_field="messages", roles=None))
    assert texts[1] == "system: Be brief.\nuser: A colour?\nassistant: Blue."
    texts, _ = read_texts(DATA / "hf_dataset", TextSpec(messages_field="messages"))     # by default no system turn
    assert texts[1] == "user: A colour?\nassistant: Blue."


def test_default_mode_is_the_text_field():
    assert TextSpec().mode == "field"
    assert read_texts(DATA / "good.jsonl")[0] == read_texts(DATA / "good.jsonl", TextSpec(text_field="text"))[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text_field": "a", "template": "{a}"},
        {"text_field": "a", "messages_field": "m"},
        {"template": "{a}", "messages_field": "m", "text_field": "t"},
    ],
)
def test_more_than_one_text_mode_is_refused(kwargs):
    with pytest.raises(ParameterError) as err:
        TextSpec(**kwargs)
    assert "\n" not in str(err.value)
    assert "give only one of" in str(err.value)


@pytest.mark.parametrize("template", ["no fields", "{}", "{0}", "{a.b}", "{a[0]}", "{a", "{a:{b}}"])
def test_bad_templates_are_refused(template):
    with pytest.raises(ParameterError):
        TextSpec(template=template)


def test_empty_field_names_are_refused():
    with pytest.raises(ParameterError):
        TextSpec(text_field="")
    with pytest.raises(ParameterError):
        TextSpec(messages_field="")


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_rows_fail_with_file_and_line(name):
    first = BAD_FILES[name][1][0]
    with pytest.raises(InputError) as err:
        read_all(DATA / name)
    assert str(err.value) == f"{DATA / name}:{first}"


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_rows_are_skipped_and_counted(name):
    texts, messages = BAD_FILES[name]
    batches, stats = read_all(DATA / name, on_bad_row="skip")
    assert flat(batches, "texts") == texts
    assert flat(batches, "row_ids") == list(range(len(texts)))
    assert stats.rows == len(texts)
    assert stats.skipped == len(messages)
    assert stats.bad_examples == [f"{DATA / name}:{m}" for m in messages]


def test_only_the_first_few_bad_rows_are_kept(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join('{"text": ""}\n' for _ in range(20)) + '{"text": "ok"}\n')
    batches, stats = read_all(path, on_bad_row="skip")
    assert flat(batches, "texts") == ["ok"]
    assert stats.skipped == 20
    assert len(stats.bad_examples) == 5
    assert stats.bad_examples[-1] == f"{path}:5: empty text"


def test_running_skipped_count_in_batches():
    batches, stats = read_all(DATA / "bad.jsonl", on_bad_row="skip", batch_size=1)
    assert [b.skipped for b in batches] == [0, 5]
    assert stats.skipped == 5


def test_whole_file_errors_are_not_row_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "a"},\n {"text": ]')
    with pytest.raises(InputError, match=r"broken\.json:2: invalid JSON"):
        read_all(broken, on_bad_row="skip")
    not_array = tmp_path / "obj.json"
    not_array.write_text('{"text": "a"}')
    with pytest.raises(InputError, match="expected a JSON array"):
        read_all(not_array, on_bad_row="skip")
    with pytest.raises(InputError, match="no such file"):
        read_all(tmp_path / "missing.jsonl")
    dup = tmp_path / "dup.csv"
    dup.write_text("text,text\na,b\n")
    with pytest.raises(InputError, match=r"dup\.csv:1: duplicate column"):
        read_all(dup)


@pytest.mark.parametrize("name", sorted(GOOD_FILES) + ["alpaca.json"])
def test_batches_of_two_match_one_big_batch(name):
    spec = TextSpec(text_field="instruction") if name == "alpaca.json" else None
    small, small_stats = read_all(DATA / name, spec, batch_size=2)
    (big,), big_stats = read_all(DATA / name, spec, batch_size=1000)
    assert all(len(b) == 2 for b in small[:-1]) and 1 <= len(small[-1]) <= 2
    for field in ("texts", "records", "row_ids", "locations"):
        assert flat(small, field) == getattr(big, field)
    assert small_stats == big_stats


@pytest.mark.parametrize("name", sorted(GOOD_FILES) + ["alpaca.json", "bad.jsonl", "bad.csv.gz", "bad.parquet"])
def test_read_records_round_trip(name):
    spec = TextSpec(text_field="instruction") if name == "alpaca.json" else None
    batches, _ = read_all(DATA / name, spec, on_bad_row="skip")
    records, locations = flat(batches, "records"), flat(batches, "locations")
    assert read_records(DATA / name, locations) == records
    order = list(reversed(range(len(locations)))) + [0]
    assert read_records(DATA / name, [locations[i] for i in order]) == [records[i] for i in order]
    assert read_records(DATA / name, []) == []


def test_read_records_rejects_bad_locations():
    with pytest.raises(InputError, match="not the start of a line"):
        read_records(DATA / "good.jsonl", [5])
    with pytest.raises(InputError, match="not the start of a row"):
        read_records(DATA / "good.jsonl.gz", [5])
    with pytest.raises(InputError, match="past the end"):
        read_records(DATA / "good.parquet", [5])
    with pytest.raises(InputError, match="past the end"):
        read_records(DATA / "hf_dataset", [7])
    with pytest.raises(InputError, match="header"):
        read_records(DATA / "good.csv", [0])
    with pytest.raises(InputError, match=r"bad\.jsonl: location \d+: invalid JSON"):
        read_records(DATA / "bad.jsonl", [27])
    with pytest.raises(InputError):
        read_records(DATA / "good.parquet", [-1])


def test_multiple_files_continue_row_ids():
    paths = [DATA / "good.jsonl", DATA / "bad.csv", DATA / "good.parquet"]
    batches, stats = read_all(paths, batch_size=2, on_bad_row="skip")
    assert flat(batches, "row_ids") == list(range(12))
    assert flat(batches, "texts") == GOOD_TEXTS + ["first", "second\nrow"] + GOOD_TEXTS
    assert [b.file_index for b in batches] == [0, 0, 0, 1, 2, 2, 2]
    assert [b.path for b in batches][3] == str(DATA / "bad.csv")
    assert stats.rows == 12 and stats.skipped == 3
    for batch in batches:
        assert read_records(paths[batch.file_index], batch.locations) == batch.records


def test_fmt_override(tmp_path):
    odd = tmp_path / "pool.data"
    shutil.copy(DATA / "good.jsonl", odd)
    texts, _ = read_texts(odd, fmt="jsonl")
    assert texts == GOOD_TEXTS
    assert read_records(odd, [0], fmt="jsonl")[0]["id"] == 0
    texts, _ = read_texts(DATA / "good.jsonl", fmt="txt")
    assert texts[0].startswith('{"id": 0')
    with pytest.raises(ParameterError):
        read_texts(odd, fmt="xlsx")


def test_parameters_are_checked_at_the_call():
    with pytest.raises(ParameterError):
        iter_batches(DATA / "good.jsonl", on_bad_row="ignore")
    with pytest.raises(ParameterError):
        iter_batches(DATA / "good.jsonl", batch_size=0)
    with pytest.raises(ParameterError):
        iter_batches([])
    with pytest.raises(InputError, match="no such file"):
        iter_batches([DATA / "good.jsonl", DATA / "missing.jsonl"])


def test_gzip_is_recognised_by_content_and_offsets_are_uncompressed(tmp_path):
    path = tmp_path / "pool.jsonl.gz"
    lines = [json.dumps({"text": f"row {i}", "pad": "x" * i}) + "\n" for i in range(50)]
    with gzip.open(path, "wt") as fh:
        fh.writelines(lines)
    batches, _ = read_all(path, batch_size=7)
    offsets = flat(batches, "locations")
    assert offsets[:3] == [0, len(lines[0]), len(lines[0]) + len(lines[1])]
    assert read_records(path, [offsets[49], offsets[3]]) == [json.loads(lines[49]), json.loads(lines[3])]


def test_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "one"}\r\n{"text": "two"}\r\n')
    batches, _ = read_all(path)
    assert flat(batches, "texts") == ["one", "two"]
    assert read_records(path, flat(batches, "locations")) == [{"text": "one"}, {"text": "two"}]
    txt = tmp_path / "bom.txt"
    txt.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert read_texts(txt)[0] == ["one", "two"]


def test_a_second_byte_order_mark_is_a_bad_first_row(tmp_path):
    """Only the file's own BOM is skipped: strict JSON refuses a second one, so row 1 is bad, not "one"."""
    path = tmp_path / "bom2.jsonl"
    path.write_bytes(b'\xef\xbb\xbf\xef\xbb\xbf{"text": "one"}\n{"text": "two"}\n')
    with pytest.raises(InputError, match=r"bom2\.jsonl:1: .*BOM"):
        read_all(path)
    batches, stats = read_all(path, on_bad_row="skip")
    assert flat(batches, "texts") == ["two"] and stats.skipped == 1


def test_hf_dataset_made_by_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"text": f"example {i}", "n": i, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(9)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"), num_shards=3)
    assert detect_format(tmp_path / "ds") == "hf"
    batches, _ = read_all(tmp_path / "ds", batch_size=4)
    assert flat(batches, "texts") == [r["text"] for r in rows]
    assert flat(batches, "records") == rows
    assert read_records(tmp_path / "ds", [8, 0, 4]) == [rows[8], rows[0], rows[4]]
    texts, _ = read_texts(tmp_path / "ds", TextSpec(messages_field="messages"))
    assert texts[2] == "user: q2"


def test_hf_dataset_follows_state_json_order(tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(DATA / "hf_dataset", copy)
    state = json.loads((copy / "state.json").read_text())
    state["_data_files"].reverse()
    (copy / "state.json").write_text(json.dumps(state))
    texts, _ = read_texts(copy)
    assert texts == GOOD_TEXTS[3:] + GOOD_TEXTS[:3]


# ---- JSON Lines read in blocks by pyarrow, against the row-by-row reader ----------------------------

from tsds.io.readers import jsonl as _readers  # noqa: E402
from tsds.io.readers import limits as _limits  # noqa: E402

TRICKY_LINES = [
    b'{"text": "a", "id": 1}',
    b'{"text": "b"} {"text": "c"}',               # two objects on one line: pyarrow would make two rows
    b'{"text": "d"}\r{"text": "e"}',              # a lone CR: pyarrow ends a row there
    b'{"text": "f", "text": "g"}',                # duplicate key: the last one wins in Python
    b'{"text": 5}',
    b'{"text": true}',
    b'{"text": null}',
    b'{"other": "h"}',
    b'{}',
    b'',
    b'   ',
    b'\x0b',
    b'{"text": "i\x01j"}',
    b'{"text": "lone \\udc00 low"}',
    b'{"text": "lone \\ud800 high"}',
    b'{"text": "pair \\ud83d\\ude00 ok"}',
    b'[1, 2]',
    b'"just a string"',
    b'{"text": "k", "big": 123456789012345678901234567890}',
    b'{"text": "l", "bad": "\xff"}',
    b'{"text": "m\xc3"}',
    b'{"text": "surrogate in UTF-8", "x": "\xed\xa0\x80"}',
    b'{"text": "overlong", "x": "\xc0\xaf"}',
    b'{"text": {"nested": 1}}',
    b'{"text": "n", "v": NaN}',
    b'{"text": "o", "v": 1e400}',
    b'{"text": ""}',
    b'{"text": "  \\u00a0 "}',
    b'{"te\\u0078t": "p"}',
    b'{"text": "q"}\r',
    b'\xef\xbb\xbf{"text": "BOM in the middle"}',
    b'{"text": "r", "x": 01}',
    b'{"text": "s"} // comment',
    b'{"text": "t",}',
    b'{"text": "u", "id": "mixed type"}',
    b'  {"text": "v"}  ',
    b'{"text": "w\\u0000x"}',
    b'{"instruction": "do", "output": "done", "n": 3}',
    b'{"instruction": "do", "output": 7}',
    b'{"instruction": "", "output": ""}',
    b'{"messages": [{"role": "user", "content": "hi", "extra": 1}, {"role": "assistant", "content": ""}]}',
    b'{"messages": [{"role": "user"}]}',
    b'{"messages": [null]}',
    b'{"messages": []}',
    b'{"messages": [{"role": "", "content": "x"}]}',
    b'{"messages": [{"role": 1, "content": "x"}]}',
    b'{"messages": {"role": "user", "content": "x"}}',
    b'{"messages": [{"role": "user", "role": "other", "content": "x"}]}',
]

GOOD_LINE = b'{"text": "good row %d", "instruction": "say %d", "output": "ok", ' \
            b'"messages": [{"role": "user", "content": "row %d"}], "pad": "%s"}'

SPECS = [TextSpec(), TextSpec(template="{instruction} -> {output}"),
         TextSpec(template="{instruction!r}: {output:>6}"), TextSpec(messages_field="messages")]


def _read_both(path, spec, monkeypatch, on_bad_row="skip", batch_size=5):
    """(batches, stats or error) read in blocks, and the same read row by row."""
    def read():
        stats = ReadStats()
        try:
            batches = list(iter_batches(path, spec, batch_size=batch_size, on_bad_row=on_bad_row, stats=stats))
        except InputError as exc:
            return None, str(exc)
        return [(b.texts, list(b.records), b.row_ids, b.locations, b.skipped) for b in batches], \
            (stats.rows, stats.skipped, stats.bad_examples)

    runs = []
    real_run = _readers._arrow_run

    def counting_run(*a):
        run = real_run(*a)
        runs.append(run is not None)
        return run

    with monkeypatch.context() as m:
        m.setattr(_readers, "_arrow_run", counting_run)
        blocks = read()
    with monkeypatch.context() as m:
        def no_arrow(spec):
            raise ImportError("row by row")
        m.setattr(_readers, "_ArrowTexts", no_arrow)
        rows = read()
    return blocks, rows, runs


def _pool_lines(seed, n=400):
    import random

    rng = random.Random(seed)
    lines = []
    for i in range(n):
        if rng.random() < 0.08:
            lines.append(rng.choice(TRICKY_LINES))
        else:
            lines.append(GOOD_LINE % (i, i, i, b"x" * rng.randrange(0, 80)))
    return lines


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_reader_matches_row_reader_on_tricky_lines(tmp_path, monkeypatch, seed, gz):
    # small blocks, so that a file is many blocks and bad rows force halving down to row-by-row pieces
    monkeypatch.setattr(_limits, "_JSONL_BLOCK", 4096)
    monkeypatch.setattr(_limits, "_JSONL_MIN_SPLIT", 512)
    lines = _pool_lines(seed)
    data = (b"\xef\xbb\xbf" if seed == 1 else b"") + b"\n".join(lines) + (b"\n" if seed != 2 else b"")
    path = tmp_path / ("pool.jsonl.gz" if gz else "pool.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    for spec in SPECS:
        for policy in ("skip", "fail"):
            blocks, rows, runs = _read_both(path, spec, monkeypatch, policy)
            assert blocks == rows, (spec, policy)
            if policy == "skip":
                assert any(runs), spec          # pyarrow took some blocks: the fast path was compared
                assert rows[1][1] > 0           # and bad rows were found
    # every good row's location gives its record back
    blocks, _, _ = _read_both(path, TextSpec(), monkeypatch)
    for texts, records, _, locations, _ in blocks[0]:
        assert read_records(path, locations) == records


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf", b"\xef\xbb\xbf\n", b"\n\n  \n", b"\xef\xbb\xbf\n\n{\"text\": \"x\"}",
                                  b"\xef\xbb\xbf  \r\n{\"text\": \"y\"}\r\n\t\n", b""])
def test_block_reader_matches_row_reader_on_blank_and_bom_only_files(tmp_path, monkeypatch, data):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(data)
    for policy in ("skip", "fail"):
        blocks, rows, _ = _read_both(path, TextSpec(), monkeypatch, policy)
        assert blocks == rows


@pytest.mark.parametrize("name", ["good.jsonl", "good.jsonl.gz", "bad.jsonl", "bad.jsonl.gz", "chat.jsonl"])
def test_block_reader_matches_row_reader_on_test_files(name, monkeypatch):
    for spec in SPECS:
        for policy in ("skip", "fail"):
            blocks, rows, _ = _read_both(DATA / name, spec, monkeypatch, policy)
            assert blocks == rows


def test_block_reader_takes_clean_blocks_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(_limits, "_JSONL_BLOCK", 4096)
    path = tmp_path / "clean.jsonl"
    path.write_bytes(b"".join(GOOD_LINE % (i, i, i, b"y" * (i % 50)) + b"\n" for i in range(300)))
    for spec in SPECS:
        blocks, rows, runs = _read_both(path, spec, monkeypatch, batch_size=64)
        assert blocks == rows
        assert runs and all(runs)
        assert rows[1] == (300, 0, [])


def test_block_reader_gives_up_on_files_pyarrow_cannot_take(tmp_path, monkeypatch):
    monkeypatch.setattr(_limits, "_JSONL_BLOCK", 1024)
    monkeypatch.setattr(_limits, "_JSONL_MIN_SPLIT", 256)
    path = tmp_path / "numbers.jsonl"
    path.write_bytes(b"".join(b'{"a": "row %d", "b": %d}\n' % (i, i) for i in range(2000)))
    blocks, rows, runs = _read_both(path, TextSpec(template="{a} {b}"), monkeypatch)
    assert blocks == rows and rows[1][0] == 2000
    # the first _JSONL_GIVE_UP blocks are tried and halved (about 10 tries each), the other ~45 blocks
    # are read row by row without trying pyarrow
    assert not any(runs) and len(runs) <= 12 * _readers._JSONL_GIVE_UP


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_block_reader_truncated_gzip_fails_as_the_row_reader(tmp_path, monkeypatch, cut):
    monkeypatch.setattr(_limits, "_JSONL_BLOCK", 4096)
    data = gzip.compress(b"".join(GOOD_LINE % (i, i, i, b"z" * (i % 70)) + b"\n" for i in range(3000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: int(len(data) * cut)])
    got = []
    for arrow in (True, False):
        with monkeypatch.context() as m:
            if not arrow:
                m.setattr(_readers, "_ArrowTexts", lambda spec: (_ for _ in ()).throw(ImportError()))
            texts = []
            with pytest.raises(InputError) as err:
                for batch in iter_batches(path, batch_size=100):
                    texts.extend(batch.texts)
            got.append((texts, str(err.value)))
    assert got[0] == got[1]
    assert "cannot read past line" in got[0][1] and len(got[0][0]) > 0


def test_npy_take_reads_any_rows_in_batches(tmp_path):
    """Rows of a .npy read through its mapping batch by batch (the pages dropped after each) come back in
    the order asked for, repeats included."""
    import numpy as np

    from tsds.io.arrays import NpyVectors

    x = np.random.default_rng(0).normal(size=(5000, 7)).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    src = NpyVectors(tmp_path / "x.npy")
    rows = np.random.default_rng(1).integers(0, 5000, 3000)  # unsorted, repeated, more than one batch
    assert np.array_equal(src.take(rows), x[rows].astype(np.float32))
    assert src.take(np.array([], dtype=np.int64)).shape == (0, 7)
    with pytest.raises(IndexError):
        src.take(np.array([5000]))


# ---- hostile inputs: every one gives the right rows, a counted skipped row, or a one-line error ------

def _ranged(paths, spec=None, on_bad_row="skip", shard_rows=2, range_bytes=1 << 30):
    """Texts and stats as an engine with workers reads them (store/shards.py: scan, plan, read per shard)."""
    from tsds.store.shards import PoolShards, read_unit, scan

    spec = spec or TextSpec()
    stats = ReadStats()
    shards = PoolShards([(str(p), detect_format(p)) for p in paths], spec, on_bad_row, shard_rows, stats,
                        jobs=None, seen=None, done={})
    units = shards.scan_units(range_bytes)
    plans = shards.read_units(units, [scan(u, spec, on_bad_row == "fail") for u in units])
    texts, locations = [], []
    for plan in plans:
        for shard in read_unit(plan, spec, on_bad_row, shard_rows):
            texts.extend(shard.texts)
            locations.extend(shard.locations)
    return texts, locations, stats


@pytest.mark.parametrize("sep", [",", "\t"])
def test_unterminated_quote_is_a_bad_row_not_the_end_of_the_file(tmp_path, sep):
    path = tmp_path / ("x.csv" if sep == "," else "x.tsv")
    path.write_text(f'id{sep}text\n1{sep}"unterminated quote\n2{sep}ok\n3{sep}fine too\n')
    with pytest.raises(InputError) as err:
        read_all(path)
    assert str(err.value) == f"{path}:2: unterminated quote (the quoted field never ends)"
    batches, stats = read_all(path, on_bad_row="skip")
    assert flat(batches, "texts") == ["ok", "fine too"]
    assert (stats.rows, stats.skipped) == (2, 1)
    assert read_records(path, flat(batches, "locations")) == [{"id": "2", "text": "ok"},
                                                              {"id": "3", "text": "fine too"}]
    texts, locations, rstats = _ranged([path], shard_rows=1)
    assert texts == ["ok", "fine too"] and locations == flat(batches, "locations")
    assert (rstats.rows, rstats.skipped, rstats.bad_examples) == (stats.rows, stats.skipped, stats.bad_examples)
    with pytest.raises(InputError, match=":2: unterminated quote"):
        _ranged([path], on_bad_row="fail")


def test_a_quote_open_past_the_row_limit_is_a_bad_row(tmp_path, monkeypatch):
    """The record is given up once its lines pass MAX_ROW_BYTES (not read to the end of the file), and
    the read goes on from the line after its first."""
    monkeypatch.setattr(_limits, "MAX_ROW_BYTES", 1000)
    path = tmp_path / "open.csv"
    path.write_text('id,text\n0,"never closed\n' + "".join(f"{i},row {i}\n" for i in range(1, 300))
                    + '300,"a ""quoted"" end"\n')
    with pytest.raises(InputError, match=r"open\.csv:2: record longer than 1000 bytes"):
        read_all(path)
    batches, stats = read_all(path, on_bad_row="skip")
    assert flat(batches, "texts") == [f"row {i}" for i in range(1, 300)] + ['a "quoted" end']
    assert stats.skipped == 1
    assert _ranged([path], shard_rows=7)[0] == flat(batches, "texts")


def test_unterminated_quote_in_the_header_is_named(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text('id,"text\n1,a\n')
    with pytest.raises(InputError, match=r"h\.csv:1: cannot read the header: unterminated quote"):
        read_all(path, on_bad_row="skip")


@pytest.mark.parametrize("line", [r'{"text": "lone \ud83d"}', r'{"text": "ok", "meta": {"k": ["\udc00"]}}',
                                  r'{"text": "ok", "\ud800": 1}'])
def test_lone_surrogate_is_a_bad_row(tmp_path, line):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "good"}\n' + line + '\n{"text": "pair \\ud83d\\ude00 fine"}\n')
    with pytest.raises(InputError) as err:
        read_all(path)
    assert str(err.value).startswith(f"{path}:2: lone surrogate") and "\n" not in str(err.value)
    batches, stats = read_all(path, on_bad_row="skip")
    assert flat(batches, "texts") == ["good", "pair \U0001f600 fine"] and stats.skipped == 1
    for text in flat(batches, "texts"):
        text.encode("utf-8")
    assert _ranged([path])[0] == flat(batches, "texts")
    array = tmp_path / "s.json"
    array.write_text("[" + ",".join(['{"text": "good"}', line]) + "]")
    batches, stats = read_all(array, on_bad_row="skip")
    assert flat(batches, "texts") == ["good"] and stats.bad_examples[0].startswith(f"{array}:2: lone surrogate")


def test_lone_surrogate_in_a_pool_is_skipped_by_the_cli(tmp_path):
    from typer.testing import CliRunner

    from tsds.cli import app

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"row {i} about cooking"}) + "\n" for i in range(20))
                    + '{"text": "lone \\ud83d"}\n')
    result = CliRunner().invoke(app, ["pool", "build", str(pool), "--out", str(tmp_path / "store"), "-q",
                                      "--on-bad-row", "skip"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    assert (meta["n_rows"], meta["skipped_rows"]) == (20, 1)


def _truncated_gz(path, text):
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) - 12])


@pytest.mark.parametrize("name", ["p.jsonl.gz", "p.json.gz", "p.csv.gz", "p.txt.gz"])
def test_truncated_gzip_is_named(tmp_path, name):
    from tsds.io.readers import estimate_rows

    path = tmp_path / name
    rows = [{"text": f"row number {i} " + "x" * (i % 50)} for i in range(3000)]
    if name.startswith("p.json."):
        body = json.dumps(rows)
    elif name.startswith("p.csv"):
        body = "text\n" + "".join(r["text"] + "\n" for r in rows)
    elif name.startswith("p.txt"):
        body = "".join(r["text"] + "\n" for r in rows)
    else:
        body = "".join(json.dumps(r) + "\n" for r in rows)
    _truncated_gz(path, body)
    reads = [lambda: read_all(path, on_bad_row="skip")]
    if name == "p.json.gz":
        assert estimate_rows(path) is None          # not estimated: JSON arrays are not read for it
    else:
        reads.append(lambda: estimate_rows(path))
    for read in reads:
        with pytest.raises(InputError) as err:
            read()
        assert str(err.value).startswith(f"{path}:") and "truncated" in str(err.value)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["zeros", "zlib"])
def test_corrupt_gzip_is_named(tmp_path, damage):
    from tsds.io.readers import estimate_rows

    path = tmp_path / "c.jsonl.gz"
    data = bytearray(gzip.compress("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(50000)).encode()))
    if damage == "zeros":
        data[len(data) // 2: len(data) // 2 + 40] = b"\x00" * 40
    else:       # zlib.error ("invalid distance too far back"), not a gzip error
        data[1000:1008] = b"\xff" * 8
    path.write_bytes(bytes(data))
    for read in (lambda: read_all(path, on_bad_row="skip"), lambda: estimate_rows(path)):
        with pytest.raises(InputError) as err:
            read()
        assert str(err.value).startswith(f"{path}:") and "corrupt" in str(err.value)


def test_truncated_gzip_pool_gives_one_line_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from tsds.cli import app

    pool = tmp_path / "pool.jsonl.gz"
    _truncated_gz(pool, "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3000)))
    result = CliRunner().invoke(app, ["pool", "build", str(pool), "--out", str(tmp_path / "store")])
    assert result.exit_code == 2, result.output
    assert "Aborted" not in result.output and "truncated" in result.output and str(pool.name) in result.output


def test_corrupt_columnar_files_are_named(tmp_path):
    good = DATA / "good.parquet"
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "g.arrow"
    garbage.write_bytes(b"not arrow at all" * 10)
    half = tmp_path / "half.arrow"
    half.write_bytes((DATA / "good.arrow").read_bytes()[:-100])
    with pytest.raises(InputError) as err:
        read_records(cut, [0])
    assert str(err.value).startswith(str(cut)) and "\n" not in str(err.value)
    hf = tmp_path / "hf"
    shutil.copytree(DATA / "hf_dataset", hf)
    for f in hf.glob("*.arrow"):
        f.write_bytes(f.read_bytes()[:50])
    for path in (cut, garbage, half, hf):
        with pytest.raises(InputError) as err:
            read_all(path, on_bad_row="skip")
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


@pytest.mark.parametrize("template", ["{text:>999999999}", "{text:.50000000}", "{text:0999999999}"])
def test_absurd_template_widths_are_refused(template):
    with pytest.raises(ParameterError) as err:
        TextSpec(template=template)
    assert template in str(err.value)


def test_texts_are_clipped_and_counted(tmp_path, monkeypatch):
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["short", "y" * 50, "z" * 10]))
    spec = TextSpec(max_chars=10)
    assert spec.extract({"text": "y" * 50}) == "y" * 10
    batches, stats = read_all(path, spec)
    assert flat(batches, "texts") == ["short", "y" * 10, "z" * 10] and stats.clipped == 1
    blocks, rows, _ = _read_both(path, spec, monkeypatch)
    assert blocks == rows
    texts, _, rstats = _ranged([path], spec)
    assert texts == flat(batches, "texts") and rstats.clipped == 1
    assert TextSpec(template="{text}!", max_chars=4).extract({"text": "abcdef"}) == "abcd"
    assert TextSpec().max_chars >= 100_000
    with pytest.raises(ParameterError, match="max_chars"):
        TextSpec(max_chars=0)


def test_clipped_texts_are_recorded_in_the_store(tmp_path, static_embedder):
    from tsds.store import build_store

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"row {i} " + "word " * (5 if i % 3 else 40)}) + "\n"
                            for i in range(30)))
    store = build_store([pool], tmp_path / "store", embedder=static_embedder, spec=TextSpec(max_chars=100))
    assert store.meta["clipped_texts"] == 10


def test_a_line_longer_than_the_row_limit_is_a_bad_row(tmp_path, monkeypatch):
    monkeypatch.setattr(_limits, "MAX_ROW_BYTES", 1000)
    monkeypatch.setattr(_limits, "_JSONL_BLOCK", 256)
    monkeypatch.setattr(_limits, "_JSONL_MIN_SPLIT", 64)
    lines = [json.dumps({"text": f"row {i}"}) for i in range(40)]
    lines[20] = json.dumps({"text": "w" * 5000})
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"big\.jsonl:21: line longer than 1000 bytes"):
        read_all(path)
    blocks, rows, _ = _read_both(path, TextSpec(), monkeypatch)
    assert blocks == rows and rows[1][:2] == (39, 1)
    assert _ranged([path], range_bytes=300)[0] == [f"row {i}" for i in range(40) if i != 20]
    csv_path = tmp_path / "big.csv"
    csv_path.write_text("text\n" + "".join(f"row {i}\n" if i != 5 else "v" * 3000 + "\n" for i in range(10)))
    batches, stats = read_all(csv_path, on_bad_row="skip")
    assert flat(batches, "texts") == [f"row {i}" for i in range(10) if i != 5] and stats.skipped == 1
    assert "longer than 1000 bytes" in stats.bad_examples[0]


def test_pipes_are_refused_at_once(tmp_path):
    import os

    from tsds.io.readers import estimate_rows
    from tsds.store import build_store

    fifo = tmp_path / "pool.jsonl"
    os.mkfifo(fifo)
    r, w = os.pipe()
    try:
        for path in (fifo, Path(f"/dev/fd/{r}")):
            for read in (lambda: read_all(path, fmt="jsonl"), lambda: estimate_rows(path, "jsonl"),
                         lambda: read_texts(path, fmt="jsonl")):
                with pytest.raises(InputError, match="is a pipe"):
                    read()
            with pytest.raises(InputError, match="is a pipe; a pool build needs a regular file"):
                build_store([path], tmp_path / "store", embedder="unused", fmt="jsonl")
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("line", ['{"text": "x", "n": ' + "9" * 5000 + "}",
                                  '{"text": "x", "d": ' + "[" * 100000 + "]" * 100000 + "}"])
def test_json_values_python_cannot_take_are_bad_rows(tmp_path, line):
    path = tmp_path / "v.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n")
    batches, stats = read_all(path, on_bad_row="skip")
    assert flat(batches, "texts") == ["ok"] and stats.skipped == 1
    assert stats.bad_examples[0].startswith(f"{path}:2: ")
    array = tmp_path / "v.json"
    array.write_text("[" + line + "]")
    with pytest.raises(InputError) as err:
        read_all(array, on_bad_row="skip")
    assert str(err.value).startswith(f"{array}:") and "\n" not in str(err.value)


def test_a_directory_or_an_empty_file_where_a_file_is_expected(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_all(tmp_path, fmt="jsonl")
    for name in ("e.jsonl", "e.csv", "e.txt", "e.tsv"):
        (tmp_path / name).write_bytes(b"")
        assert read_all(tmp_path / name) == ([], ReadStats())
    (tmp_path / "e.json").write_bytes(b"")
    with pytest.raises(InputError, match=r"e\.json:1: invalid JSON"):
        read_all(tmp_path / "e.json")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftext\r\nfirst\r\n\"two\r\nlines\"\r\n")
    assert read_texts(tmp_path / "bom.csv")[0] == ["first", "two\r\nlines"]


def test_parquet_without_the_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), path)
    with pytest.raises(InputError, match=r"p\.parquet:1: missing field 'text'"):
        read_all(path)


def test_nul_bytes(tmp_path):
    jsonl = tmp_path / "n.jsonl"
    jsonl.write_bytes(b'{"text": "raw\x00nul"}\n{"text": "escaped\\u0000nul"}\n')
    batches, stats = read_all(jsonl, on_bad_row="skip")
    assert flat(batches, "texts") == ["escaped\x00nul"]
    assert stats.bad_examples == [f"{jsonl}:1: invalid JSON (Invalid control character at at column 14)"]
    for name in ("n.txt", "n.csv"):
        path = tmp_path / name
        path.write_bytes((b"text\n" if name.endswith(".csv") else b"") + b"a\x00b\n")
        assert read_texts(path)[0] == ["a\x00b"]


def test_brackets_inside_strings_do_not_stop_the_block_reader(tmp_path, monkeypatch):
    """Nesting is counted per line: a pool whose texts hold many unbalanced brackets is still taken
    block by block by pyarrow."""
    path = tmp_path / "brackets.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i} [[["}) + "\n" for i in range(2000)))
    blocks, rows, runs = _read_both(path, TextSpec(), monkeypatch)
    assert blocks == rows and rows[1][0] == 2000
    assert runs and all(runs)


def test_a_template_that_cannot_format_a_value_is_a_bad_row(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"n": 65}\n{"n": 1000000000000}\n{"n": "x"}\n')
    texts, stats = read_texts(path, TextSpec(template="{n:c}"), on_bad_row="skip")
    assert texts == ["A"] and stats.skipped == 2
    assert stats.bad_examples[0].startswith(f"{path}:2: template cannot be filled")
