"""Every option of select, sweep, report and pool build: a nonsense value is a one-line error naming the option,
exit status 2, before any work and with nothing written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tsds.cli import app

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line(res, *needles):
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    d = tmp_path_factory.mktemp("val")
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    np.save(d / "X.npy", x)
    np.save(d / "Q.npy", x[:4])
    return d


SELECT_NPY = [
    (["--size", "100000000000000000000"], "size"),
    (["--size", "-3"], "size"),
    (["--seed", "-1"], "seed"),
    (["--initial-k", "0"], "initial_k"),
    (["--alpha", "nan"], "alpha"),
    (["--sigma", "nan"], "sigma"),
    (["--sigma", "inf"], "sigma"),
    (["--C", "nan"], "C"),
    (["--C", "inf"], "C"),
    (["--exclude-radius", "nan"], "--exclude-radius"),
    (["--exclude-radius", "-1"], "--exclude-radius"),
    (["--support-multiple", "inf"], "--support-multiple"),
    (["--support-multiple", "0.5"], "--support-multiple"),
    (["--engine", "spark"], "--engine"),
    (["--method", "magic"], "--method"),
    (["--records", "out.txt"], "records file"),
    (["--index", "hnsw"], "index"),
    (["--metric", "manhattan"], "metric"),
]


@pytest.mark.parametrize("extra,needle", SELECT_NPY)
def test_select_options(npy, tmp_path, extra, needle):
    args = {"--candidate-embeddings": npy / "X.npy", "--query-embeddings": npy / "Q.npy", "--size": 5}
    for k, v in zip(extra[::2], extra[1::2]):
        args[k] = v
    out = tmp_path / "out"
    assert_one_line(invoke("select", *[x for kv in args.items() for x in kv], "--out", out), needle)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_option_that_is_not_a_number_is_one_line(npy, tmp_path):
    r = subprocess.run([sys.executable, "-m", "tsds.cli", "select", "--candidate-embeddings", str(npy / "X.npy"),
                        "--query-embeddings", str(npy / "Q.npy"), "--size", "1e20", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--size" in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_one_row_query_file_is_accepted(npy, tmp_path):
    x = np.load(npy / "X.npy")
    np.save(tmp_path / "one.npy", x[7:8])
    res = invoke("select", "--candidate-embeddings", npy / "X.npy", "--query-embeddings", tmp_path / "one.npy",
                 "--size", 3, "--out", tmp_path / "o", "-q")
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "o" / "selected_indices.npy").size == 3


@pytest.mark.parametrize("extra,needle", [
    (["--queries", f"{QUERIES}:nan"], "weight"),
    (["--queries", f"{QUERIES}:-1"], "weight"),
    (["--exclude-radius", "nan", "--exclude", QUERIES], "--exclude-radius"),
    (["--size", "1501", "--without-replacement"], "1500 rows"),
    (["--size", "1501", "--method", "random"], "1500 rows"),
    (["--alpha", "auto", "--support-multiple", "nan"], "--support-multiple"),
])
def test_select_text_options(small_store, tmp_path, extra, needle):
    args = ["select", "--pool", small_store.root, "--size", 5, "--out", tmp_path / "out"]
    if "--queries" not in extra:
        args += ["--queries", QUERIES]
    assert_one_line(invoke(*args, *extra), needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra,needle", [
    (["--C", "nan"], "--C"), (["--C", "0"], "--C"), (["--sigma", "nan"], "--sigma"), (["--sigma", "-1"], "--sigma"),
    (["--metric", "dot"], "--metric"), (["--size", "0"], "--size"), (["--alpha", "0.5,nan"], "--alpha"),
])
def test_sweep_options(small_store, tmp_path, extra, needle):
    res = invoke("sweep", "--pool", small_store.root, "--queries", QUERIES, "--json", tmp_path / "s.json", *extra)
    assert_one_line(res, needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra,needle", [(["--sample", "0"], "--sample"), (["--seed", "-1"], "--seed")])
def test_report_options(tmp_path, extra, needle):
    sel = tmp_path / "sel"
    sel.mkdir()
    (sel / "manifest.json").write_text("{}")
    assert_one_line(invoke("report", sel, *extra), needle)
    assert [p.name for p in sel.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize("extra,needle", [
    (["--metric", "manhattan"], "--metric"), (["--index", "hnsw"], "--index"), (["--shard-rows", "0"], "--shard-rows"),
    (["--on-bad-row", "ignore"], "--on-bad-row"), (["--format", "xml"], "--format"),
    (["--index-shards", "0"], "--index-shards"), (["--engine", "spark"], "--engine"),
    (["--embedder", "no-such-model"], "--embedder"),
])
def test_pool_build_options_before_embedding(tmp_path, extra, needle):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(50)))
    assert_one_line(invoke("pool", "build", pool, "--out", tmp_path / "store", *extra), needle)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("option", [["--density", "approx"], ["--alpha", "0.3"]])
def test_a_baseline_refuses_tsds_options_in_one_line_before_anything_starts(small_store, tmp_path, option):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "tsds.cli", "select", "--pool", str(small_store.root), "--queries",
                          str(QUERIES), "--size", "20", "--method", "knn", *option, "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "is a parameter of method tsds; method 'knn' does not use it" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # no empty progress bar before it
    assert not out.exists()


def test_an_error_inside_the_progress_bar_leaves_one_line_and_no_bar(small_store, tmp_path):
    bad = tmp_path / "queries.jsonl"
    bad.write_text('{"text": "bread"}\n{broken\n')
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "tsds.cli", "select", "--pool", str(small_store.root), "--queries",
                          str(bad), "--size", "20", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode != 0
    assert res.stderr.splitlines() == [res.stderr.strip()] and f"{bad}:2" in res.stderr, res.stderr
    assert not out.exists()
