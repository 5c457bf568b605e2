"""`tsds select` on .npy inputs: outputs, the authors' config file, and bad input."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

TSDS = [sys.executable, "-m", "tsds.cli"]


def run(*args, cwd=None):
    return subprocess.run([*TSDS, *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("npy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(d / "X.npy", x)
    np.save(d / "Q.npy", x[:5] + 0.01)
    return d


def test_select_writes_arrays_and_manifest(data, tmp_path):
    out = tmp_path / "sel"
    r = run("select", "--candidate-embeddings", data / "X.npy", "--query-embeddings", data / "Q.npy",
            "--size", 40, "--alpha", 0.6, "--C", 1, "--sigma", 0.5, "--seed", 3, "--out", out)
    assert r.returncode == 0, r.stderr
    p = np.load(out / "probabilities.npy", allow_pickle=False)
    assert p.dtype == np.float64 and p.shape == (800,) and abs(p.sum() - 1) < 1e-12
    idx = np.load(out / "selected_indices.npy", allow_pickle=False)
    assert idx.size == 40 and np.all(p[idx] > 0)
    m = json.loads((out / "manifest.json").read_text())
    assert m["parameters"]["alpha"] == 0.6 and m["parameters"]["seed"] == 3
    assert len(m["inputs"]["candidates"]["sha256"]) == 64
    assert m["result"]["truncated"] is False and m["result"]["recall_at_k"] == 1.0
    for key in ("objective", "alignment_term", "diversity_term", "level_s", "k_used"):
        assert key in m["result"]
    assert {"read", "index", "neighbours", "density", "solve", "sample"} <= set(m["timings"])
    assert m["environment"]["faiss-cpu"]

    again = tmp_path / "sel2"
    run("select", "--candidate-embeddings", data / "X.npy", "--query-embeddings", data / "Q.npy",
        "--size", 40, "--alpha", 0.6, "--C", 1, "--sigma", 0.5, "--seed", 3, "--out", again)
    assert np.array_equal(np.load(again / "selected_indices.npy"), idx)
    assert np.array_equal(np.load(again / "probabilities.npy"), p)


def test_authors_config_file(data, tmp_path):
    cfg = {"query_embedding_path": str(data / "Q.npy"), "candidate_embedding_path": str(data / "X.npy"),
           "output_folder": str(tmp_path / "out"), "sample_size": 30, "alpha": 0.5, "C": 5.0,
           "sigma": 0.75, "max_K": 100, "kde_K": 1000}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run("select", "--config", tmp_path / "config.yaml")
    assert r.returncode == 0, r.stderr
    assert "kde_K" in r.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["parameters"]["size"] == 30 and m["parameters"]["initial_k"] == 100


def test_api_matches_cli(data, tmp_path):
    import tsds

    sel = tsds.select_embeddings(data / "X.npy", data / "Q.npy", size=40, alpha=0.6, C=1, sigma=0.5, seed=3)
    r = run("select", "--candidate-embeddings", data / "X.npy", "--query-embeddings", data / "Q.npy",
            "--size", 40, "--alpha", 0.6, "--C", 1, "--sigma", 0.5, "--seed", 3, "--out", tmp_path / "o")
    assert r.returncode == 0
    assert np.array_equal(np.load(tmp_path / "o" / "probabilities.npy"), sel.probabilities)


def _bad_files(d: Path, good: Path):
    np.save(d / "one_d.npy", np.zeros(10, dtype=np.float32))
    np.save(d / "dim8.npy", np.ones((4, 8), dtype=np.float32))
    x = np.load(good)
    x[17, 3] = np.nan
    np.save(d / "nan.npy", x)
    y = np.load(good)
    y[5, 0] = np.inf
    np.save(d / "inf.npy", y)
    (d / "empty.npy").write_bytes(b"")
    np.save(d / "zero_rows.npy", np.zeros((0, 16), dtype=np.float32))
    np.save(d / "pickled.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (d / "raw_pickle.npy").write_bytes(pickle.dumps([1, 2, 3]))


BAD = [
    (["--candidate-embeddings", "{bad}/one_d.npy"], "one_d.npy: expected a 2-D matrix"),
    (["--query-embeddings", "{bad}/dim8.npy"], "dimension mismatch"),
    (["--candidate-embeddings", "{bad}/nan.npy"], "nan.npy: row 17 holds NaN"),
    (["--candidate-embeddings", "{bad}/inf.npy"], "inf.npy: row 5 holds NaN or infinite"),
    (["--candidate-embeddings", "{bad}/empty.npy"], "empty.npy: empty file"),
    (["--candidate-embeddings", "{bad}/zero_rows.npy"], "zero_rows.npy: empty matrix"),
    (["--candidate-embeddings", "{bad}/pickled.npy"], "pickled.npy: holds pickled Python objects"),
    (["--candidate-embeddings", "{bad}/raw_pickle.npy"], "raw_pickle.npy: holds pickled"),
    (["--candidate-embeddings", "{bad}/missing.npy"], "missing.npy: no such file"),
    (["--alpha", "1.5"], "alpha"),
    (["--alpha", "-0.1"], "alpha"),
    (["--C", "0"], "C:"),
    (["--C", "-2"], "C:"),
    (["--sigma", "-0.1"], "sigma"),
    (["--size", "0"], "size"),
    (["--size", "801", "--without-replacement"], "larger than the 800 candidates"),
    (["--size", "50", "--without-replacement", "--alpha", "1"], "larger than the 5 candidates with positive probability"),
    (["--metric", "manhattan"], "metric"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_input_one_line_error_and_no_output(data, tmp_path, override, message):
    bad = tmp_path / "bad"
    bad.mkdir()
    _bad_files(bad, data / "X.npy")
    args = {"--candidate-embeddings": str(data / "X.npy"), "--query-embeddings": str(data / "Q.npy"),
            "--size": "10", "--sigma": "0.5"}
    extra = []
    it = iter(override)
    for key in it:
        if key.startswith("--") and key not in ("--without-replacement",):
            args[key] = next(it).format(bad=bad)
        else:
            extra.append(key)
    out = tmp_path / "out"
    flat = [item for kv in args.items() for item in kv] + extra
    r = run("select", *flat, "--out", out)
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_existing_output_refused_unless_overwrite(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["select", "--candidate-embeddings", data / "X.npy", "--query-embeddings", data / "Q.npy",
            "--size", 5, "--out", out]
    r = run(*args)
    assert r.returncode != 0 and "exists" in r.stderr and "--overwrite" in r.stderr
    assert (out / "keep.txt").read_text() == "mine"
    r = run(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()
