"""Selected records fetched back from the pool files and written: every draw, the right texts, any schema.

- more than 2,048 drawn rows of one gzip JSON Lines, JSON array or save_to_disk file are all written;
- every writer counts the rows in the file it wrote and refuses a file that is not one row per draw;
- a pool file changed since the build (edited in place, rewritten) is refused, by its sha256 or by the
  hash of each fetched record's text; a touched file is accepted; stores without text hashes fall back
  to the sha256;
- records of mixed schemas, Parquet-only value types, and fields named like the provenance columns are
  written correctly or refused in one line.
"""

import datetime
import decimal
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsds.config import make_config
from tsds.errors import InputError, TsdsError
from tsds.io.writers import write_records
from tsds.api import select_text
from tsds.store import PoolStore, build_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"
TSDS = [sys.executable, "-m", "tsds.cli"]
PER_FILE = 2300        # more than one fetch group's 2,048 rows


def demo_records(n: int, skip: int = 0) -> list[dict]:
    out = []
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= skip + n:
                break
            if i >= skip:
                out.append(json.loads(line))
    return out


def cfg(**kw):
    return make_config(**{"size": 40, "seed": 0, "sampling": "without-replacement", "C": 1.0, "sigma": 0.3,
                          "alpha": 0.5, "metric": "cosine", **kw})


def base_cfg(**kw):
    """A baseline's config: no TSDS-only parameter (baselines refuse them)."""
    return make_config(**{"size": 40, "seed": 0, "metric": "cosine", **kw})


def rows_of(path: Path) -> list[dict]:
    if path.name.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory, static_embedder):
    """A store of three files of PER_FILE rows each that are read in one pass: .jsonl.gz, a JSON array
    and a save_to_disk dataset; and the records by file, in row order."""
    import datasets

    d = tmp_path_factory.mktemp("three")
    parts = [demo_records(PER_FILE, k * PER_FILE) for k in range(3)]
    with gzip.open(d / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in parts[0])
    (d / "b.json").write_text(json.dumps(parts[1]))
    cols = ("id", "text", "source", "label")
    datasets.Dataset.from_dict({c: [r.get(c) for r in parts[2]] for c in cols}).save_to_disk(str(d / "c_hf"))
    parts[2] = [{c: r.get(c) for c in cols} for r in parts[2]]
    store = build_store([d / "a.jsonl.gz", d / "b.json", d / "c_hf"], d / "store", embedder=static_embedder)
    return store, [r for p in parts for r in p]


@pytest.mark.parametrize("records_name", ["selected.jsonl", "selected.parquet"])
def test_full_pool_writes_every_row_of_one_pass_files(three_formats, static_embedder, tmp_path, records_name):
    store, records = three_formats
    out = tmp_path / "full"
    select_text(store, FOOD, out=out, config=base_cfg(), method="full", embedder=static_embedder,
                records_name=records_name)
    rows = rows_of(out / records_name)
    assert len(rows) == store.n_rows == 3 * PER_FILE
    assert [r["_tsds_row"] for r in rows] == list(range(store.n_rows))
    assert [r["text"] for r in rows] == [r["text"] for r in records]
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"]["rows"] == store.n_rows


def test_draws_with_repeats_are_all_written(three_formats, static_embedder, tmp_path):
    store, records = three_formats
    out = tmp_path / "rand"
    sel = select_text(store, FOOD, out=out, config=base_cfg(size=6900, sampling="with-replacement"), method="random",
                      embedder=static_embedder, records_name="selected.jsonl.gz")
    rows = rows_of(out / "selected.jsonl.gz")
    assert len(rows) == 6900 and sel.counts.max() > 1
    assert sorted(r["_tsds_row"] for r in rows) == np.sort(sel.selected_indices).tolist()
    assert all(r["text"] == records[r["_tsds_row"]]["text"] for r in rows)
    assert all(r["_tsds_times_drawn"] == sel.counts[r["_tsds_row"]] for r in rows)


def test_tsds_selection_of_more_than_a_group_from_one_gzip_file(three_formats, static_embedder, tmp_path):
    store, records = three_formats
    out = tmp_path / "tsds"
    sel = select_text(store, FOOD, out=out, config=cfg(size=6600, alpha=0.0), embedder=static_embedder)
    rows = rows_of(out / "selected.jsonl")
    first_file = [r for r in rows if r["_tsds_file"].endswith("a.jsonl.gz")]
    assert len(rows) == 6600 == sel.counts.sum() and len(first_file) > 2048
    assert all(r["text"] == records[r["_tsds_row"]]["text"] for r in rows)


@pytest.mark.parametrize("name", ["x.jsonl", "x.jsonl.gz", "x.parquet"])
def test_writer_refuses_a_file_that_is_not_one_row_per_draw(tmp_path, name):
    recs = [{"text": f"row {i}", "n": i} for i in range(5)]
    with pytest.raises(TsdsError, match="5 rows, not the 6 drawn"):
        write_records(tmp_path / name, recs, expected=6)
    assert list(tmp_path.iterdir()) == []
    assert write_records(tmp_path / name, recs, expected=5) == 5
    assert rows_of(tmp_path / name) == recs


# ---- pool files changed after the build ---------------------------------------------------------------

@pytest.fixture
def small_pool(tmp_path, static_embedder):
    """A fresh store of 300 demo rows as plain JSON Lines and as Parquet (one store each)."""
    recs = demo_records(300)
    jl = tmp_path / "pool.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    pqf = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(recs), pqf)
    return {"records": recs, "jsonl": jl, "parquet": pqf,
            "jsonl_store": build_store([jl], tmp_path / "st_jl", embedder=static_embedder),
            "parquet_store": build_store([pqf], tmp_path / "st_pq", embedder=static_embedder)}


def select_cli(store, out, *extra):
    args = ["select", "--pool", store.root, "--queries", FOOD, "--size", 50, "--alpha", 0.5, "--C", 1,
            "--sigma", 0.3, "--metric", "cosine", "--without-replacement", "--quiet", "--out", out, *extra]
    return subprocess.run([*TSDS, *map(str, args)], capture_output=True, text=True)


def edit_in_place(path: Path, row_text: str, keep_mtime: bool) -> None:
    """Replace a row's text by another of the same length, the file's size (and mtime) unchanged."""
    st = path.stat()
    data = path.read_bytes()
    old = json.dumps(row_text)[1:-1].encode()
    new = re.sub(rb"(?<!\\)[a-z]", lambda m: m.group().upper(), old)     # escapes kept: still valid JSON
    assert new != old
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_jsonl_edited_in_place_is_refused(small_pool, static_embedder, tmp_path, keep_mtime):
    store = small_pool["jsonl_store"]
    first = select_text(store, FOOD, out=tmp_path / "before", config=cfg(size=50), embedder=static_embedder)
    row = int(np.flatnonzero(first.counts)[0])
    edit_in_place(small_pool["jsonl"], small_pool["records"][row]["text"], keep_mtime)
    r = select_cli(store, tmp_path / "after")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(small_pool["jsonl"]) in r.stderr
    assert (f"row {row} " in r.stderr) if keep_mtime else ("sha256 differs" in r.stderr)
    assert not (tmp_path / "after").exists()


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_dsir_reading_a_changed_pool_file_is_refused(small_pool, static_embedder, tmp_path, keep_mtime):
    """DSIR reads every pool text again: a file edited since the build is refused, not scored."""
    store = small_pool["jsonl_store"]
    edit_in_place(small_pool["jsonl"], small_pool["records"][7]["text"], keep_mtime)
    with pytest.raises(InputError, match="row 7 of the pool files" if keep_mtime else "sha256 differs"):
        select_text(store, FOOD, out=tmp_path / "o", config=base_cfg(), method="dsir", embedder=static_embedder)
    assert not (tmp_path / "o").exists()


def test_parquet_rewritten_without_its_first_row_is_refused(small_pool, static_embedder, tmp_path):
    store = small_pool["parquet_store"]
    pq.write_table(pa.Table.from_pylist(small_pool["records"][1:]), small_pool["parquet"])
    with pytest.raises(InputError, match="pool.parquet: pool file changed since the store was built"):
        select_text(store, FOOD, out=tmp_path / "after", config=cfg(size=50), embedder=static_embedder)
    assert not (tmp_path / "after").exists()


def test_touched_file_is_accepted(small_pool, static_embedder, tmp_path):
    store = small_pool["parquet_store"]
    a = select_text(store, FOOD, out=tmp_path / "a", config=cfg(size=50), embedder=static_embedder,
                    records_name="s.parquet")
    os.utime(small_pool["parquet"], ns=(1, 10**18))
    b = select_text(PoolStore(store.root), FOOD, out=tmp_path / "b", config=cfg(size=50), embedder=static_embedder,
                    records_name="s.parquet")
    assert np.array_equal(a.counts, b.counts)
    rows = rows_of(tmp_path / "b" / "s.parquet")
    assert len(rows) == 50 and rows == rows_of(tmp_path / "a" / "s.parquet")
    assert all(r["text"] == small_pool["records"][r["_tsds_row"]]["text"] for r in rows)


def test_store_without_text_hashes_falls_back_to_the_sha256(small_pool, static_embedder, tmp_path):
    """A store built before the text hashes: no hash files, no mtime in its file entries."""
    store = small_pool["jsonl_store"]
    hashes = sorted((store.root / "shards").glob("*.hash.npy"))
    assert hashes
    for p in hashes:
        p.unlink()
    meta = json.loads((store.root / "store.json").read_text())
    for entry in meta["files"]:
        del entry["mtime_ns"]
    del meta["checksum"]                     # older stores' json files carry no checksum either
    (store.root / "store.json").write_text(json.dumps(meta))
    for path in (store.root / "shards").glob("[0-9]*.json"):
        shard = json.loads(path.read_text())
        del shard["checksum"], shard["text_hashes_sha256"]
        path.write_text(json.dumps(shard))
    old = PoolStore(store.root)
    sel = select_text(old, FOOD, out=tmp_path / "ok", config=cfg(size=50), embedder=static_embedder)
    rows = rows_of(tmp_path / "ok" / "selected.jsonl")
    assert len(rows) == 50 and all(r["text"] == small_pool["records"][r["_tsds_row"]]["text"] for r in rows)
    edit_in_place(small_pool["jsonl"], small_pool["records"][int(np.flatnonzero(sel.counts)[0])]["text"], True)
    with pytest.raises(InputError, match="sha256 differs"):
        select_text(old, FOOD, out=tmp_path / "after", config=cfg(size=50), embedder=static_embedder)
    assert not (tmp_path / "after").exists()


def test_text_hashes_are_those_of_the_embedded_texts(small_pool):
    from tsds.store.provenance import text_hashes

    store = small_pool["jsonl_store"]
    hashes, known = store.text_hashes(np.arange(store.n_rows))
    assert known.all()
    assert np.array_equal(hashes, text_hashes([r["text"] for r in small_pool["records"]]))


# ---- schemas and values ---------------------------------------------------------------------------------

@pytest.fixture
def mixed_pool(tmp_path, static_embedder):
    """A Parquet file with integer ids, then an appended JSON Lines file with string ids, and Parquet-only
    value types (bytes, timestamp, decimal, nested struct) in the first."""
    recs = demo_records(200)
    t0 = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
    first = [{"id": i, "text": r["text"], "score": i, "blob": bytes([i % 256, 0, 255]),
              "when": t0 + datetime.timedelta(minutes=i), "price": decimal.Decimal(f"{i}.25"),
              "meta": {"source": r["source"], "n": i}} for i, r in enumerate(recs[:100])]
    pqf = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(first), pqf)
    second = [{"id": r["id"], "text": r["text"], "score": 0.5 + i, "meta": "plain"} for i, r in enumerate(recs[100:])]
    jl = tmp_path / "b.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in second))
    store = build_store([pqf], tmp_path / "store", embedder=static_embedder)
    store = build_store([pqf, jl], tmp_path / "store", embedder=static_embedder)      # the JSON Lines appended
    return store, first, second


def test_mixed_id_types_written_to_parquet(mixed_pool, static_embedder, tmp_path, caplog):
    store, first, second = mixed_pool
    with caplog.at_level("WARNING", logger="tsds"):
        select_text(store, FOOD, out=tmp_path / "o", config=base_cfg(), method="full", embedder=static_embedder,
                    records_name="selected.parquet")
    table = pq.read_table(tmp_path / "o" / "selected.parquet")
    assert table.num_rows == 200
    assert table.schema.field("id").type == pa.string() and table.schema.field("score").type == pa.float64()
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [str(r["id"]) for r in first] + [r["id"] for r in second]
    assert [r["score"] for r in rows] == [float(r["score"]) for r in first + second]
    assert json.loads(rows[3]["meta"]) == first[3]["meta"] and rows[150]["meta"] == "plain"
    assert rows[7]["price"] == decimal.Decimal("7.25") and rows[7]["blob"] == bytes([7, 0, 255])
    assert rows[7]["when"] == first[7]["when"] and rows[150]["when"] is None
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "id (no common type" in warning and "meta (no common type" in warning
    assert "score (float and int: double)" in warning


def test_parquet_only_values_written_to_jsonl(mixed_pool, static_embedder, tmp_path):
    import base64

    store, first, _ = mixed_pool
    select_text(store, FOOD, out=tmp_path / "o", config=base_cfg(), method="full", embedder=static_embedder)
    rows = rows_of(tmp_path / "o" / "selected.jsonl")
    assert len(rows) == 200
    r = rows[7]
    assert base64.b64decode(r["blob"]) == bytes([7, 0, 255])
    assert datetime.datetime.fromisoformat(r["when"]) == first[7]["when"]
    assert decimal.Decimal(r["price"]) == decimal.Decimal("7.25") and r["meta"] == first[7]["meta"]


def test_nonfinite_floats_are_json_null(tmp_path):
    n = write_records(tmp_path / "x.jsonl", [{"text": "a", "v": float("nan"), "w": [1.0, float("inf")]}])
    line = (tmp_path / "x.jsonl").read_text()
    assert n == 1 and json.loads(line) == {"text": "a", "v": None, "w": [1.0, None]} and "NaN" not in line


def test_value_with_no_json_form_is_a_one_line_error(tmp_path):
    rec = {"text": "a", "_tsds_row": 4, "_tsds_file": "/p/pool.arrow", "odd": [complex(1, 2)]}
    with pytest.raises(InputError, match=r"record from /p/pool.arrow \(row 4\): field 'odd': .*complex"):
        write_records(tmp_path / "x.jsonl", [rec])
    assert list(tmp_path.iterdir()) == []


def test_lone_surrogate_is_escaped(tmp_path):
    write_records(tmp_path / "x.jsonl", [{"text": "a\ud800b"}])
    assert json.loads((tmp_path / "x.jsonl").read_text()) == {"text": "a\ud800b"}


def test_field_named_like_a_provenance_column_is_refused(tmp_path, static_embedder):
    recs = demo_records(120)
    for r in recs:
        r["_tsds_row"] = "mine"
    jl = tmp_path / "pool.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    store = build_store([jl], tmp_path / "store", embedder=static_embedder)
    with pytest.raises(InputError, match=r"pool.jsonl: row \d+ \(location \d+\) has a field '_tsds_row'"):
        select_text(store, FOOD, out=tmp_path / "o", config=cfg(size=10), embedder=static_embedder)
    assert not (tmp_path / "o").exists()


def test_parquet_columns_parquet_cannot_type_are_json_text(tmp_path, caplog):
    recs = [{"text": "a", "empty": {}, "deep": [{}], "b": "x"}, {"text": "b", "empty": {}, "deep": [], "b": b"y"}]
    with caplog.at_level("WARNING", logger="tsds"):
        assert write_records(tmp_path / "x.parquet", recs) == 2
    rows = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert [r["empty"] for r in rows] == ["{}", "{}"] and [r["deep"] for r in rows] == ["[{}]", "[]"]
    assert [r["b"] for r in rows] == [b"x", b"y"]
    assert "empty (no common type" in caplog.text and "b (bytes and str: binary)" in caplog.text


def test_every_reader_format_fetches_the_embedded_texts(tmp_path, static_embedder):
    """Each format's records read back by location give the texts the build embedded (no false refusal),
    bad rows skipped at the build included."""
    data = ROOT / "tests" / "data" / "readers"
    names = ["good.jsonl", "good.jsonl.gz", "good.csv", "good.csv.gz", "good.tsv", "good.tsv.gz", "good.txt",
             "good.txt.gz", "good.parquet", "good.arrow", "hf_dataset", "bad.jsonl", "bad.csv", "bad.txt"]
    store = build_store([data / n for n in names], tmp_path / "store", embedder=static_embedder, on_bad_row="skip")
    select_text(store, FOOD, out=tmp_path / "o", config=base_cfg(), method="full", embedder=static_embedder)
    rows = rows_of(tmp_path / "o" / "selected.jsonl")
    assert len(rows) == store.n_rows > 30
    assert {Path(r["_tsds_file"]).name for r in rows} == set(names)


@pytest.mark.parametrize("name,spec", [("chat.jsonl", {"messages_field": "messages"}),
                                       ("alpaca.json", {"template": "{instruction}\n{input}\n{output}"})])
def test_messages_and_template_specs_fetch_the_embedded_texts(tmp_path, static_embedder, name, spec):
    from tsds.io.readers import TextSpec

    path = ROOT / "tests" / "data" / "readers" / name
    store = build_store([path], tmp_path / "store", embedder=static_embedder, spec=TextSpec(**spec),
                        on_bad_row="skip")
    select_text(store, FOOD, out=tmp_path / "o", config=base_cfg(), method="full", embedder=static_embedder,
                query_spec=TextSpec())
    assert len(rows_of(tmp_path / "o" / "selected.jsonl")) == store.n_rows >= 2


def test_rows_moved_within_an_unchanged_size_and_mtime_are_refused(small_pool, static_embedder, tmp_path):
    path = small_pool["jsonl"]
    st = path.stat()
    lines = path.read_bytes().splitlines(keepends=True)
    rec1, rec299 = json.loads(lines[1]), json.loads(lines[299])
    rec1["text"], rec299["text"] = rec1["text"][1:], "x" + rec299["text"]     # rows 2..298 one byte earlier
    lines[1] = (json.dumps(rec1) + "\n").encode()
    lines[299] = (json.dumps(rec299) + "\n").encode()
    path.write_bytes(b"".join(lines))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    with pytest.raises(InputError, match="is not the start of a line; the pool file changed since the store was built"):
        select_text(small_pool["jsonl_store"], FOOD, out=tmp_path / "o", config=base_cfg(), method="full",
                    embedder=static_embedder)
    assert not (tmp_path / "o").exists()


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                          st.text(max_size=8))
_json_values = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3)), max_leaves=6)
_records = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "text"]), _json_values, max_size=4),
                    min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records)
def test_any_json_records_round_trip_through_jsonl_and_parquet(tmp_path, records):
    """Whatever mix of JSON values the records hold: JSON Lines gives them back as they were; Parquet holds
    one row per record and, per column, the values or (coerced columns) their JSON text. (Written
    records always have fields: the provenance columns; here a row number.)"""
    records = [{**r, "_n": i} for i, r in enumerate(records)]
    assert write_records(tmp_path / "x.jsonl", records) == len(records)
    assert rows_of(tmp_path / "x.jsonl") == records
    assert write_records(tmp_path / "x.parquet", records) == len(records)
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.num_rows == len(records)
    for name in table.column_names:
        got = table.column(name).to_pylist()
        want = [r.get(name) for r in records]
        if table.schema.field(name).type == pa.string() and got != want:
            got = [v if v is None or isinstance(w, str) else json.loads(v) for v, w in zip(got, want)]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g == w or (isinstance(w, (dict, list)) and _without_nulls(g) == _without_nulls(w))


def _without_nulls(value):
    """Parquet structs gain the other rows' keys (as null); compare without them."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
