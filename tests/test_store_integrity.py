"""A pool store's files are checked, not trusted: every kind of damage to every file is found (on use or by
`tsds pool verify`), repaired by rebuilding just that part, and a selection never changes the store's own files."""

import gzip
import itertools
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tsds.config import make_config
from tsds.errors import InputError
from tsds.pipeline.text import select_from_store
from tsds.store import PoolStore, build_store
from tsds.store.verify import repair_store, verify_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"
CONFIG = make_config(size=40, alpha=0.5, C=1.0, sigma=0.3, metric="cosine", sampling="without-replacement")
BUILD = dict(shard_rows=500, metric="cosine")


def _lines(n, start=0):
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        return list(itertools.islice(f, start, start + n))


def _select(root, embedder, config=CONFIG, **kw):
    return select_from_store(PoolStore(root), FOOD, config, embedder=embedder, **kw)[0].probabilities


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, static_embedder):
    """A complete store of 1,500 rows in 3 shards, with its index and one density cache, and its selection."""
    d = tmp_path_factory.mktemp("integrity")
    src = d / "pool.jsonl"
    src.write_text("".join(_lines(1500)))
    build_store([src], d / "store", embedder=static_embedder, **BUILD)
    probabilities = _select(d / "store", static_embedder)
    return src, d / "store", probabilities


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".build.lock")


def test_the_store_holds_the_files_the_matrix_covers(pristine):
    _, root, _ = pristine
    assert _files(root) == ["densities/cosine-sigma0.3.npz", "index/cosine.faiss", "index/cosine.json",
                            *[f"shards/{i:06d}{s}" for i in range(3) for s in (".json", ".loc.npy", ".npy")],
                            "store.json"]
    assert all(f.status == "ok" for f in verify_store(root))


FILES = ["store.json", *[f"shards/{i:06d}{s}" for i in range(3) for s in (".npy", ".loc.npy", ".json")],
         "index/cosine.faiss", "index/cosine.json", "densities/cosine-sigma0.3.npz"]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif how == "flip":
        at = len(data) // 2
        path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    else:
        path.unlink()


# damage a selection may not notice (it does not read those bytes) or repairs by itself (a cache, an
# unfinished index); `tsds pool verify` finds each of them
UNNOTICED = {("shards/000000.npy", "flip"), ("shards/000001.npy", "flip"), ("shards/000002.npy", "flip"),
             ("shards/000000.loc.npy", "flip"), ("shards/000001.loc.npy", "flip"),
             ("shards/000002.loc.npy", "flip"), ("index/cosine.json", "delete")}


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
@pytest.mark.parametrize("name", FILES)
def test_corruption_is_found_and_repaired(pristine, tmp_path, static_embedder, name, how, caplog):
    src, original, probabilities = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    _damage(root / name, how)

    found = {f.file: f for f in verify_store(root)}
    if (name, how) == ("densities/cosine-sigma0.3.npz", "delete"):    # a cache that is not there is no damage
        assert name not in found and not any(f.problem for f in found.values())
        assert np.array_equal(_select(root, static_embedder), probabilities)
        return
    assert found[name].problem, found[name]

    if name.startswith("densities/"):
        with caplog.at_level(logging.WARNING, logger="tsds"):
            again = _select(root, static_embedder)
        assert np.array_equal(again, probabilities)
        assert any(name.split("/")[1] in r.getMessage() for r in caplog.records)
    elif (name, how) in UNNOTICED:
        assert np.array_equal(_select(root, static_embedder), probabilities)
    else:
        with pytest.raises(InputError, match=Path(name).name.replace(".", r"\.")) as err:
            _select(root, static_embedder)
        assert "\n" not in str(err.value)
        if name != "store.json":
            assert "tsds pool verify --repair" in str(err.value)

    if name == "store.json":     # nothing else records how the store was built: the build command repairs it
        with pytest.raises(InputError, match="store.json"):
            repair_store(root)
        build_store([src], root, embedder=static_embedder, **BUILD)
    else:
        repair_store(root, embedder=static_embedder)
    assert [f for f in verify_store(root) if f.status != "ok"] == []
    assert np.array_equal(_select(root, static_embedder), probabilities)


@pytest.mark.parametrize("name", ["shards/000001.npy", "shards/000001.loc.npy", "shards/000001.json"])
def test_a_plain_build_embeds_a_damaged_shard_again(pristine, tmp_path, static_embedder, name):
    src, original, probabilities = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    _damage(root / name, "flip")
    store = build_store([src], root, embedder=static_embedder, **BUILD)
    assert store.meta["last_build"]["embedded_shards"] == 1 and store.meta["last_build"]["reused_shards"] == 2
    for f in ("shards/000001.npy", "shards/000001.loc.npy", "index/cosine.faiss"):
        assert (root / f).read_bytes() == (original / f).read_bytes()
    assert [f for f in verify_store(root) if f.status != "ok"] == []


def test_a_plain_build_rebuilds_a_damaged_index(pristine, tmp_path, static_embedder):
    src, original, _ = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    _damage(root / "index" / "cosine.faiss", "flip")
    store = build_store([src], root, embedder=static_embedder, **BUILD)
    assert store.meta["last_build"]["embedded_shards"] == 0
    assert (root / "index" / "cosine.faiss").read_bytes() == (original / "index" / "cosine.faiss").read_bytes()


def test_verify_cli_prints_a_table_and_exits_non_zero_until_repaired(pristine, tmp_path):
    from tsds.cli import app

    _, original, _ = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    runner = CliRunner()
    ok = runner.invoke(app, ["pool", "verify", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "store.json" in ok.output and "index/cosine.faiss" in ok.output
    _damage(root / "shards" / "000002.npy", "flip")
    bad = runner.invoke(app, ["pool", "verify", str(root)])
    assert bad.exit_code == 1
    line = next(l for l in bad.output.splitlines() if "shards/000002.npy" in l)
    assert "damaged" in line and "sha256 mismatch" in line
    fixed = runner.invoke(app, ["pool", "verify", "--repair", str(root)])
    assert fixed.exit_code == 0, fixed.output
    assert "repaired" in next(l for l in fixed.output.splitlines() if "shards/000002.npy" in l)
    assert (root / "shards" / "000002.npy").read_bytes() == (original / "shards" / "000002.npy").read_bytes()
    missing = runner.invoke(app, ["pool", "verify", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "missing" in missing.output
