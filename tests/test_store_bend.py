"""Stores that bend: rebuilt with --overwrite, appended to with only the new file, used after their pool files
moved (with the store, or found under --source-root, checked by content), summarised by `tsds pool info`;
`tsds --version`."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tsds
from tsds.errors import InputError, ParameterError
from tsds.store import PoolStore, build_store

ROOT = Path(__file__).resolve().parent.parent
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _demo(start: int, n: int) -> list[dict]:
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, start, start + n)]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsds.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=120)


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def pool(tmp_path):
    """Two small pool files in a folder of their own: a.jsonl (300 rows), sub/b.jsonl (200 rows)."""
    a = _write(tmp_path / "pool" / "a.jsonl", _demo(0, 300))
    b = _write(tmp_path / "pool" / "sub" / "b.jsonl", _demo(300, 200))
    return a, b


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in open(path, encoding="utf-8")]


# ---- --version ------------------------------------------------------------------------------------------
def test_version_prints_the_package_version_and_exits_0():
    from importlib.metadata import version

    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"tsds {version('tsds')}" and r.stderr == ""


# ---- --overwrite --------------------------------------------------------------------------------------
def test_overwrite_rebuilds_from_the_new_files_only(pool, tmp_path, static_embedder):
    a, b = pool
    out = tmp_path / "stores" / "s"
    build_store([a], out, embedder=static_embedder, shard_rows=128)
    with pytest.raises(InputError, match="pool file 1 of the store must be"):
        build_store([b], out, embedder=static_embedder, shard_rows=128)
    store = build_store([b], out, embedder=static_embedder, shard_rows=128, overwrite=True)
    again = PoolStore(out)
    assert again.complete and again.n_rows == 200 == store.n_rows
    assert [f["path"] for f in again.files] == [str(b.resolve())]
    assert again.meta["last_build"]["reused_shards"] == 0
    assert sorted(p.name for p in (out / "shards").glob("*.json")) == ["000000.json", "000001.json"]
    assert _siblings(out) == []                       # no temporary or old folder left beside it
    assert np.load(out / "shards" / "000000.npy").shape == (128, again.meta["dim"])


def test_a_failed_overwrite_leaves_the_old_store_as_it_was(pool, tmp_path, static_embedder):
    a, _ = pool
    out = tmp_path / "stores" / "s"
    build_store([a], out, embedder=static_embedder)
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir()} | {"store.json": (out / "store.json").read_bytes()}
    bad = _write(tmp_path / "bad.jsonl", [{"text": "fine"}, {"no_text": 1}])
    with pytest.raises(InputError, match="bad.jsonl"):
        build_store([bad], out, embedder=static_embedder, overwrite=True)
    after = {p.name: p.read_bytes() for p in (out / "shards").iterdir()} | {"store.json": (out / "store.json").read_bytes()}
    assert after == before and PoolStore(out).n_rows == 300 and _siblings(out) == []


def test_overwrite_refuses_a_folder_of_other_files_and_a_store_holding_its_input(pool, tmp_path, static_embedder):
    a, _ = pool
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    r = _cli("pool", "build", a, "--out", other, "--overwrite", "-q")
    assert r.returncode == 2 and "not a pool store" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (other / "notes.txt").read_text() == "keep me" and sorted(os.listdir(other)) == ["notes.txt"]
    r = _cli("pool", "build", a, "--out", a.parent, "--overwrite", "-q")
    assert r.returncode == 2 and "holds the input" in r.stderr and a.is_file()


def test_overwrite_with_texts_in_memory_replaces_the_store_and_its_copy(tmp_path, static_embedder):
    out = tmp_path / "s"
    tsds.Pool.build([r["text"] for r in _demo(0, 120)], out=out, embedder=static_embedder)
    with pytest.raises(ParameterError, match="holds a store of other texts"):
        tsds.Pool.build([r["text"] for r in _demo(500, 80)], out=out, embedder=static_embedder)
    p = tsds.Pool.build([r["text"] for r in _demo(500, 80)], out=out, embedder=static_embedder, overwrite=True)
    assert len(p) == 80 == PoolStore(out).n_rows
    assert _texts(out / "source.jsonl") == [r["text"] for r in _demo(500, 80)]
    assert PoolStore(out).files[0]["state"] == "ok" and _siblings(out) == []


# ---- --append -----------------------------------------------------------------------------------------
def test_append_embeds_only_the_new_file(pool, tmp_path, static_embedder):
    a, b = pool
    out = tmp_path / "s"
    build_store([a], out, embedder=static_embedder, shard_rows=100)
    store = build_store([b], out, embedder=static_embedder, shard_rows=100, append=True)
    assert store.n_rows == 500
    assert store.meta["last_build"] == {"embedded_shards": 2, "reused_shards": 3, "rows": 500}
    assert [f["source_path"] for f in store.files] == ["a.jsonl", "sub/b.jsonl"]
    full = build_store([a, b], tmp_path / "full", embedder=static_embedder, shard_rows=100)
    assert np.array_equal(store.vectors().take(np.arange(500)), full.vectors().take(np.arange(500)))
    with pytest.raises(InputError, match="b.jsonl: is already in the store"):
        build_store([b], out, embedder=static_embedder, shard_rows=100, append=True)
    assert PoolStore(out).n_rows == 500


def test_append_refuses_a_folder_that_is_no_store_and_a_store_whose_file_changed(pool, tmp_path, static_embedder):
    a, b = pool
    r = _cli("pool", "build", b, "--out", tmp_path / "none", "--append", "-q")
    assert r.returncode == 2 and "not a pool store to append to" in r.stderr and not (tmp_path / "none").exists()
    out = tmp_path / "s"
    build_store([a], out, embedder=static_embedder)
    meta = (out / "store.json").read_bytes()
    a.write_text(a.read_text().replace("a", "e", 1))
    with pytest.raises(InputError, match="a.jsonl: pool file changed since the store was built"):
        build_store([b], out, embedder=static_embedder, append=True)
    assert (out / "store.json").read_bytes() == meta


def test_append_through_the_cli_prints_what_it_embedded(pool, tmp_path):
    a, b = pool
    out = tmp_path / "s"
    assert _cli("pool", "build", a, "--out", out, "--shard-rows", "100", "-q").returncode == 0
    r = _cli("pool", "build", b, "--out", out, "--shard-rows", "100", "--append")
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())
    assert "500 rows" in said and "embedded 2 shard(s), reused 3" in said and "500/500" in r.stderr


# ---- moved pool files ---------------------------------------------------------------------------------
def _select_records(pool_obj) -> list[dict]:
    result = tsds.Selector(size=30, sigma=0.3, C=1.0).select(pool_obj, [json.loads(x)["text"] for x in open(FOOD)])
    recs = result.records()
    return [dict(zip(recs.keys(), vals)) for vals in zip(*recs.values())] if isinstance(recs, dict) else list(recs)


def test_records_name_their_file_relative_to_the_pool(pool, tmp_path, static_embedder):
    a, b = pool
    build_store([a, b], tmp_path / "s", embedder=static_embedder)
    recs = tsds.Selector(size=40, sigma=0.3, C=1.0).select(tsds.Pool.open(tmp_path / "s"),
                                                          [json.loads(x)["text"] for x in open(FOOD)]).records()
    assert set(recs["_tsds_file"]) <= {"a.jsonl", "sub/b.jsonl"} and len(recs["_tsds_file"]) == 40
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert meta["source_root"] == str(a.parent.resolve())
    assert [f["path"] for f in meta["files"]] == [str(a.resolve()), str(b.resolve())]   # provenance: absolute
    assert [f["relpath"] for f in meta["files"]] == ["../pool/a.jsonl", "../pool/sub/b.jsonl"]


def test_a_pool_moved_with_its_store_is_found_relative_to_it(pool, tmp_path, static_embedder):
    a, b = pool
    build_store([a, b], tmp_path / "s", embedder=static_embedder)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(str(tmp_path / "s"), moved / "s")
    shutil.move(str(tmp_path / "pool"), moved / "pool")
    p = tsds.Pool.open(moved / "s")
    assert [f["state"] for f in p.store.files] == ["moved", "moved"]
    assert [f["path"] for f in p.store.files] == [str(moved / "pool" / "a.jsonl"), str(moved / "pool" / "sub" / "b.jsonl")]
    recs = tsds.Selector(size=20, sigma=0.3, C=1.0).select(p, [json.loads(x)["text"] for x in open(FOOD)]).records()
    texts = _texts(moved / "pool" / "a.jsonl") + _texts(moved / "pool" / "sub" / "b.jsonl")
    assert all(texts[r] == t for r, t in zip(recs["_tsds_row"], recs["text"]))


def test_source_root_finds_moved_files_and_refuses_one_whose_content_differs(pool, tmp_path, static_embedder):
    a, b = pool
    build_store([a, b], tmp_path / "s", embedder=static_embedder)
    new = tmp_path / "far" / "away"
    shutil.copytree(tmp_path / "pool", new)
    shutil.rmtree(tmp_path / "pool")
    queries = [json.loads(x)["text"] for x in open(FOOD)]
    with pytest.raises(InputError, match="a.jsonl: pool file of the store is missing"):
        tsds.Selector(size=20, sigma=0.3, C=1.0).select(tsds.Pool.open(tmp_path / "s"), queries).records()
    p = tsds.Pool.open(tmp_path / "s", source_root=new)
    assert [f["path"] for f in p.store.files] == [str(new / "a.jsonl"), str(new / "sub" / "b.jsonl")]
    recs = tsds.Selector(size=20, sigma=0.3, C=1.0).select(p, queries).records()
    texts = _texts(new / "a.jsonl") + _texts(new / "sub" / "b.jsonl")
    assert all(texts[r] == t for r, t in zip(recs["_tsds_row"], recs["text"]))
    # same size, other content (one letter), mtime changed by the copy: the sha256 tells
    rows = _demo(300, 200)
    rows[0]["text"] = rows[0]["text"].swapcase()
    _write(new / "sub" / "b.jsonl", rows)
    with pytest.raises(InputError, match=r"far/away/sub/b.jsonl: pool file changed since the store was built"):
        tsds.Selector(size=400, sigma=0.3, C=1.0).select(tsds.Pool.open(tmp_path / "s", source_root=new),
                                                         queries).records()
    with pytest.raises(ParameterError, match="not a folder"):
        tsds.Pool.open(tmp_path / "s", source_root=tmp_path / "nope")


def test_source_root_finds_a_file_by_name_and_append_takes_it_from_there(pool, tmp_path, static_embedder):
    a, b = pool
    out = tmp_path / "s"
    build_store([a], out, embedder=static_embedder)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.move(str(a), flat / "a.jsonl")
    with pytest.raises(InputError, match="a.jsonl: pool file of the store is missing"):
        build_store([b], out, embedder=static_embedder, append=True)
    store = build_store([b], out, embedder=static_embedder, append=True, source_root=str(flat))
    assert store.n_rows == 500 and store.meta["last_build"]["reused_shards"] == 1
    assert [f["path"] for f in store.meta["files"]] == [str(flat / "a.jsonl"), str(b.resolve())]


def test_a_moved_pool_still_resumes_a_build_given_its_new_paths(pool, tmp_path, static_embedder):
    a, _ = pool
    out = tmp_path / "s"
    build_store([a], out, embedder=static_embedder, shard_rows=100)
    moved = shutil.move(str(a), tmp_path / "a2.jsonl")
    store = build_store([moved], out, embedder=static_embedder, shard_rows=100)
    assert store.meta["last_build"]["embedded_shards"] == 0 and store.files[0]["path"] == str(Path(moved).resolve())


# ---- tsds pool info -----------------------------------------------------------------------------------
def test_pool_info_prints_what_the_store_holds(pool, tmp_path):
    a, b = pool
    out = tmp_path / "s"
    assert _cli("pool", "build", a, b, "--out", out, "--metric", "cosine", "-q").returncode == 0
    r = _cli("pool", "info", out, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["rows"] == 500 and info["complete"] and info["embedder"]["spec"] == "static"
    assert [(f["source_path"], f["rows"], f["state"], f["format"]) for f in info["files"]] == \
        [("a.jsonl", 300, "ok", "jsonl"), ("sub/b.jsonl", 200, "ok", "jsonl")]
    assert info["files"][0]["bytes"] == a.stat().st_size
    assert [(x["metric"], x["kind"]) for x in info["indexes"]] == [("cosine", "flat")]
    assert info["densities"] == [] and info["zero_rows"] == 0 and info["skipped_rows"] == 0
    on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert info["bytes"]["total"] == on_disk and info["bytes"]["index"] == (out / "index" / "cosine.faiss").stat().st_size \
        + (out / "index" / "cosine.json").stat().st_size
    text = _cli("pool", "info", out)
    said = " ".join(text.stdout.split())
    assert text.returncode == 0 and "500 rows" in said and f"ok {a.resolve()} jsonl, 300 rows" in said
    assert "cosine (cosine, flat" in said and "density caches: none" in said


def test_pool_info_tells_moved_touched_changed_and_missing_files(pool, tmp_path, static_embedder):
    a, b = pool
    out = tmp_path / "s"
    build_store([a, b], out, embedder=static_embedder)
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))          # touched, same content
    rows = _demo(300, 200)
    rows[0]["text"] = rows[0]["text"].swapcase()                                  # same size, other content
    st = b.stat()
    _write(b, rows)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    info = json.loads(_cli("pool", "info", out, "--json").stdout)
    assert [f["state"] for f in info["files"]] == ["touched", "ok"]               # cheap: size and mtime only
    info = json.loads(_cli("pool", "info", out, "--json", "--check").stdout)
    assert [f["state"] for f in info["files"]] == ["ok", "changed"]
    new = tmp_path / "new"
    shutil.move(str(a.parent), new)
    info = json.loads(_cli("pool", "info", out, "--json").stdout)
    assert [f["state"] for f in info["files"]] == ["missing", "missing"]
    info = json.loads(_cli("pool", "info", out, "--json", "--check", "--source-root", new).stdout)
    assert [(f["state"], f["path"]) for f in info["files"]] == [("moved", str(new / "a.jsonl")),
                                                                ("changed", str(new / "sub" / "b.jsonl"))]
    r = _cli("pool", "info", tmp_path / "pool-not-there")
    assert r.returncode == 2 and "not a tsds pool store" in r.stderr


def test_select_and_verify_take_source_root_from_the_command_line(pool, tmp_path, static_embedder):
    a, b = pool
    out = tmp_path / "s"
    build_store([a, b], out, embedder=static_embedder, shard_rows=100)
    new = tmp_path / "new"
    shutil.move(str(a.parent), new)
    sel = ["select", "--pool", out, "--queries", FOOD, "--size", 25, "--sigma", 0.3, "--C", 1, "-q"]
    r = _cli(*sel, "--out", tmp_path / "o1")
    assert r.returncode == 2 and "a.jsonl: pool file of the store is missing" in r.stderr
    assert not (tmp_path / "o1").exists()
    r = _cli(*sel, "--out", tmp_path / "o2", "--source-root", new)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in open(tmp_path / "o2" / "selected.jsonl", encoding="utf-8")]
    texts = {"a.jsonl": _texts(new / "a.jsonl"), "sub/b.jsonl": _texts(new / "sub" / "b.jsonl")}
    assert len(rows) == 25 and all(r["text"] in texts[r["_tsds_file"]] for r in rows)
    (out / "shards" / "000004.npy").unlink()
    r = _cli("pool", "verify", out, "--repair", "-q")
    assert r.returncode == 2 and "a.jsonl: no such file" in r.stderr and not (out / "shards" / "000004.npy").exists()
    r = _cli("pool", "verify", out, "--repair", "-q", "--source-root", new)
    assert r.returncode == 0, r.stdout + r.stderr
    assert np.load(out / "shards" / "000004.npy").shape == (100, PoolStore(out).meta["dim"])
    r = _cli("select", "--candidate-embeddings", "x.npy", "--query-embeddings", "q.npy", "--size", 5,
             "--out", tmp_path / "o3", "--source-root", new)
    assert r.returncode == 2 and "--source-root needs a pool store" in r.stderr


def test_a_killed_overwrite_leaves_nothing_the_next_build_does_not_clear(pool, tmp_path, static_embedder):
    from tsds import atomic

    a, b = pool
    out = tmp_path / "s"
    build_store([a], out, embedder=static_embedder)
    host = atomic._owner().split("-", 1)[1]
    dead = 2 ** 22 + 4321                               # above the usual pid_max: no such process
    half = tmp_path / f".s.tmp-{dead}-{host}-abc123"    # the new store a killed --overwrite was building
    (half / "shards").mkdir(parents=True)
    shutil.move(str(out), tmp_path / f".s.old-{dead}-{host}")   # killed between its two renames
    store = build_store([a], out, embedder=static_embedder)     # the old store is put back and resumed
    assert store.meta["last_build"]["embedded_shards"] == 0 and store.n_rows == 300
    assert _siblings(out) == []
    with pytest.raises(ParameterError, match="--source-root applies to --append"):
        build_store([b], out, embedder=static_embedder, source_root=str(tmp_path))


def test_the_facade_appends_files_and_refuses_what_cannot_be_appended(pool, tmp_path, static_embedder):
    a, b = pool
    out = tmp_path / "s"
    tsds.Pool.build(a, out, embedder=static_embedder)
    p = tsds.Pool.build([b], out, embedder=static_embedder, append=True)
    assert len(p) == 500 and [f["source_path"] for f in tsds.Pool.inspect(out)["files"]] == ["a.jsonl", "sub/b.jsonl"]
    with pytest.raises(ParameterError, match="texts in memory make a store of their own"):
        tsds.Pool.build(["more", "texts"], out, embedder=static_embedder, append=True)
    r = _cli("pool", "build", b, "--out", out, "--append", "--overwrite", "-q")
    assert r.returncode == 2 and "--overwrite and --append exclude each other" in r.stderr
    assert PoolStore(out).n_rows == 500
