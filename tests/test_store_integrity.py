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
from tsds.methods import select_from_store
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


def _scale_file(root):
    """The pool-scale cache a selection on the flat index left (its name ends in a hash of its key)."""
    return next(str(p.relative_to(root)) for p in (root / "scale").glob("cosine-flat-*.npz"))


def test_the_store_holds_the_files_the_matrix_covers(pristine):
    _, root, _ = pristine
    assert _files(root) == ["densities/cosine-sigma0.3.npz", "index/cosine.faiss", "index/cosine.json",
                            _scale_file(root), *[f"shards/{i:06d}{s}" for i in range(3)
                                                 for s in (".hash.npy", ".json", ".loc.npy", ".npy")],
                            "store.json"]
    assert all(f.status == "ok" for f in verify_store(root))


FILES = ["store.json", *[f"shards/{i:06d}{s}" for i in range(3) for s in (".npy", ".loc.npy", ".hash.npy", ".json")],
         "index/cosine.faiss", "index/cosine.json", "densities/cosine-sigma0.3.npz", "scale"]
CACHES = ("densities/", "scale/")  # only save time: damaged ones are measured again, with a warning


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
             ("shards/000002.loc.npy", "flip"), ("index/cosine.json", "delete"),
             *((f"shards/{i:06d}.hash.npy", "flip") for i in range(3))}


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
@pytest.mark.parametrize("name", FILES)
def test_corruption_is_found_and_repaired(pristine, tmp_path, static_embedder, name, how, caplog):
    src, original, probabilities = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    name = _scale_file(root) if name == "scale" else name
    _damage(root / name, how)

    found = {f.file: f for f in verify_store(root)}
    if name.startswith(CACHES) and how == "delete":    # a cache that is not there is no damage
        assert name not in found and not any(f.problem for f in found.values())
        assert np.array_equal(_select(root, static_embedder), probabilities)
        return
    assert found[name].problem, found[name]

    if name.startswith(CACHES):
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


@pytest.mark.parametrize("name", ["shards/000001.npy", "shards/000001.loc.npy", "shards/000001.hash.npy",
                                  "shards/000001.json"])
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
    (root / "shards" / "000007.npy").write_bytes(b"left by a write that never finished")
    extra = runner.invoke(app, ["pool", "verify", str(root)])
    assert extra.exit_code == 0 and "extra" in next(l for l in extra.output.splitlines() if "000007.npy" in l)
    missing = runner.invoke(app, ["pool", "verify", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "missing" in missing.output


def test_a_sharded_index_is_checked_and_repaired(pristine, tmp_path, static_embedder):
    src, _, _ = pristine
    root = tmp_path / "store"
    build_store([src], root, embedder=static_embedder, index_shards=2, **BUILD)
    probabilities = _select(root, static_embedder)
    good = (root / "index" / "cosine" / "shard-0001.faiss").read_bytes()
    _damage(root / "index" / "cosine" / "shard-0001.faiss", "flip")
    with pytest.raises(InputError, match=r"shard-0001\.faiss: sha256 mismatch"):
        _select(root, static_embedder)
    assert [f.file for f in verify_store(root) if f.problem] == ["index/cosine/shard-0001.faiss"]
    repair_store(root, embedder=static_embedder)
    assert (root / "index" / "cosine" / "shard-0001.faiss").read_bytes() == good
    assert np.array_equal(_select(root, static_embedder), probabilities)


def test_a_selection_with_another_index_kind_leaves_the_stored_index_alone(pristine, tmp_path, static_embedder):
    _, original, probabilities = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    before = {p.name: p.read_bytes() for p in (root / "index").iterdir()}
    for kind in ("ivf", "ivfpq"):
        _select(root, static_embedder, CONFIG.model_copy(update={"index": kind}))
    after = {p.name: p.read_bytes() for p in (root / "index").iterdir() if p.is_file()}
    assert {k: after[k] for k in before} == before
    assert {"cosine-ivf.faiss", "cosine-ivf.json"} <= set(after) and (root / "index" / "cosine-ivfpq").is_dir()
    assert not (root / "index" / "cosine").exists()
    assert PoolStore(root).index("cosine").kind == "flat"
    assert np.array_equal(_select(root, static_embedder), probabilities)
    assert [f for f in verify_store(root) if f.status != "ok"] == []


def _bad_then_fixed(rows, bad_at):
    lines = _lines(rows)
    return "".join(lines[:bad_at] + ["{not json\n"] + lines[bad_at:]), lines


def test_a_build_that_never_finished_goes_on_after_its_input_is_fixed(tmp_path, static_embedder):
    a = tmp_path / "a.jsonl"
    a.write_text("".join(_lines(1000, 3000)))
    b = tmp_path / "b.jsonl"
    broken, fixed = _bad_then_fixed(1600, 1400)
    b.write_text(broken)
    root = tmp_path / "store"
    with pytest.raises(InputError, match="b.jsonl:1401"):
        build_store([a, b], root, embedder=static_embedder, shard_rows=500)
    finished = sorted(p.name for p in (root / "shards").glob("*.json"))
    assert finished[:3] == [f"{i:06d}.json" for i in range(3)]      # a's 2, and b's first at least
    b.write_text("".join(fixed[:520]))                            # fixed, and shorter than before
    store = build_store([a, b], root, embedder=static_embedder, shard_rows=500)
    assert store.meta["last_build"]["reused_shards"] == 2       # a's; b's were discarded
    fresh = build_store([a, b], tmp_path / "fresh", embedder=static_embedder, shard_rows=500)
    assert _files(root) == _files(fresh.root)
    for p in (fresh.root / "shards").iterdir():
        assert (root / "shards" / p.name).read_bytes() == p.read_bytes()
    assert store.n_rows == fresh.n_rows and len(store.shard_meta()) == len(fresh.shard_meta())
    # a finished store whose input changes is still refused, naming the file
    b.write_text("".join(fixed))
    with pytest.raises(InputError, match=r"b\.jsonl: content changed since the store was built"):
        build_store([a, b], root, embedder=static_embedder, shard_rows=500)


def test_an_unwritable_density_cache_is_skipped_with_one_warning(pristine, tmp_path, static_embedder, caplog):
    _, original, _ = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    shutil.rmtree(root / "densities")
    (root / "densities").write_text("a file where the folder would be")
    config = CONFIG.model_copy(update={"sigma": 0.25})
    with caplog.at_level(logging.WARNING, logger="tsds"):
        got = _select(root, static_embedder, config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot save the density cache" in warnings[0] and "\n" not in warnings[0]
    writable = tmp_path / "writable"
    shutil.copytree(original, writable)
    assert np.array_equal(got, _select(writable, static_embedder, config))
    assert (root / "densities").read_text() == "a file where the folder would be"


def _reseal(path: Path, **changes):
    from tsds.store.verify import seal

    data = json.loads(path.read_text())
    data.pop("checksum", None)
    data.update(changes)
    path.write_text(json.dumps(seal(data)))


def test_a_store_of_a_newer_format_is_refused_and_left_as_it_is(pristine, tmp_path, static_embedder):
    src, original, _ = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    _reseal(root / "store.json", format=2)
    before = (root / "store.json").read_bytes()
    with pytest.raises(InputError, match="store format 2 is newer than this tsds reads"):
        PoolStore(root)
    with pytest.raises(InputError, match="store format 2 is newer"):
        build_store([src], root, embedder=static_embedder, **BUILD)
    assert (root / "store.json").read_bytes() == before
    # a newer format may seal its files otherwise: still the format is named, and no shard is discarded
    data = json.loads(before)
    (root / "store.json").write_text(json.dumps({**data, "checksum": "sealed some other way"}))
    for attempt in (lambda: PoolStore(root), lambda: build_store([src], root, embedder=static_embedder, **BUILD)):
        with pytest.raises(InputError, match="store format 2 is newer"):
            attempt()
    assert len(list((root / "shards").glob("*.json"))) == 3


def test_a_shard_json_whose_rows_disagree_with_its_npy_is_found(pristine, tmp_path, static_embedder):
    _, original, _ = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    _reseal(root / "shards" / "000001.json", rows=499)
    with pytest.raises(InputError, match=r"000001\.npy: holds float32 \(500, 256\), expected float32 \(499, 256\)"):
        _select(root, static_embedder)
    shutil.copy(original / "shards" / "000001.json", root / "shards" / "000001.json")
    _reseal(root / "shards" / "000002.json", file_index=3)
    with pytest.raises(InputError, match=r"000002\.json: says rows from 1000 of pool file 3"):
        _select(root, static_embedder)


def test_files_of_another_store_are_not_taken_for_this_ones(pristine, tmp_path, static_embedder, caplog):
    src, original, probabilities = pristine
    other_src = tmp_path / "other.jsonl"
    other_src.write_text("".join(_lines(1500, 2000)))
    other = build_store([other_src], tmp_path / "other", embedder=static_embedder, **BUILD)
    _select(other.root, static_embedder)

    mixed = tmp_path / "shard"          # a whole shard (.npy, .loc.npy, .json) of the other store
    shutil.copytree(original, mixed)
    for suffix in (".npy", ".loc.npy", ".json"):
        shutil.copy(other.root / "shards" / f"000001{suffix}", mixed / "shards" / f"000001{suffix}")
    with pytest.raises(InputError, match=r"000001\.json: is not the shard store\.json records"):
        _select(mixed, static_embedder)
    assert build_store([src], mixed, embedder=static_embedder, **BUILD).meta["last_build"]["embedded_shards"] == 1
    assert np.array_equal(_select(mixed, static_embedder), probabilities)

    caches = tmp_path / "caches"        # the other store's index and density cache
    shutil.copytree(original, caches)
    for name in ("index/cosine.faiss", "index/cosine.json", "densities/cosine-sigma0.3.npz"):
        shutil.copy(other.root / name, caches / name)
    assert {f.file: f.status for f in verify_store(caches) if f.status != "ok"} == {
        "index/cosine.json": "stale", "densities/cosine-sigma0.3.npz": "stale"}
    with caplog.at_level(logging.WARNING, logger="tsds"):
        assert np.array_equal(_select(caches, static_embedder), probabilities)
    assert any("made from other embeddings" in r.getMessage() for r in caplog.records)
    assert (caches / "index/cosine.faiss").read_bytes() == (original / "index/cosine.faiss").read_bytes()

    metrics = tmp_path / "metrics"      # this store's euclidean index under the cosine index's name
    shutil.copytree(original, metrics)
    PoolStore(metrics).index("euclidean")
    for suffix in (".faiss", ".json"):
        shutil.copy(metrics / "index" / f"euclidean{suffix}", metrics / "index" / f"cosine{suffix}")
    assert {f.file: f.status for f in verify_store(metrics) if f.status != "ok"} == {"index/cosine.json": "stale"}
    assert np.array_equal(_select(metrics, static_embedder), probabilities)
    assert (metrics / "index/cosine.faiss").read_bytes() == (original / "index/cosine.faiss").read_bytes()


def test_damaged_locations_or_text_hashes_stop_the_records_and_a_damaged_ivf_radius_file_the_selection(
        pristine, tmp_path, static_embedder):
    from tsds.api import select_text

    src, original, _ = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    _damage(root / "shards" / "000002.loc.npy", "flip")
    with pytest.raises(InputError, match=r"000002\.loc\.npy: sha256 mismatch"):
        select_text(root, FOOD, out=tmp_path / "sel", config=CONFIG, embedder=static_embedder)
    assert not (tmp_path / "sel").exists()

    shutil.rmtree(root)
    shutil.copytree(original, root)
    for i in range(3):
        _damage(root / "shards" / f"{i:06d}.hash.npy", "flip")
    with pytest.raises(InputError, match=r"\.hash\.npy: sha256 mismatch"):
        select_text(root, FOOD, out=tmp_path / "sel", config=CONFIG, embedder=static_embedder)
    assert not (tmp_path / "sel").exists()

    ivf = tmp_path / "ivf"
    build_store([src], ivf, embedder=static_embedder, index_kind="ivf", **BUILD)
    _damage(ivf / "index" / "cosine.radius.npy", "flip")
    with pytest.raises(InputError, match=r"cosine\.radius\.npy: sha256 mismatch"):
        _select(ivf, static_embedder, CONFIG.model_copy(update={"index": "ivf"}))
    repair_store(ivf, embedder=static_embedder)
    assert [f for f in verify_store(ivf) if f.status != "ok"] == []


def test_verify_repair_finishes_a_build_that_did_not_finish(pristine, tmp_path, static_embedder):
    _, original, probabilities = pristine
    root = tmp_path / "store"
    shutil.copytree(original, root)
    data = json.loads((root / "store.json").read_text())
    keep = {k: data[k] for k in ("format", "embedder", "embedder_spec", "text_spec", "on_bad_row", "shard_rows",
                                 "files", "dim")}
    (root / "store.json").write_text(json.dumps({**keep, "complete": False}))
    (root / "shards" / "000002.json").unlink()
    _reseal(root / "store.json")
    found = {f.file: f.status for f in verify_store(root) if f.status != "ok"}
    assert found == {"store.json": "incomplete", "shards/000002.npy": "extra", "shards/000002.loc.npy": "extra",
                     "shards/000002.hash.npy": "extra"}
    repaired = repair_store(root, embedder=static_embedder)
    assert [f for f in repaired if f.status != "ok"] == []
    assert PoolStore(root).meta["last_build"]["reused_shards"] == 2
    assert np.array_equal(_select(root, static_embedder), probabilities)
