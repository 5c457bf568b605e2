"""The pool store on real text: build, SIGKILL and resume, refusal, append, and text-in records-out selection."""

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tsds.config import make_config
from tsds.errors import InputError
from tsds.api import select_text
from tsds.pipeline.text import PROVENANCE
from tsds.store import PoolStore, build_store

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"


def _rows(n, start=0):
    out = []
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= start + n:
                break
            if i >= start:
                out.append(json.loads(line))
    return out


def _write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    rows = _rows(6000)
    return _write(d / "a.jsonl", rows[:4000]), _write(d / "b.jsonl", rows[4000:])


@pytest.fixture(scope="module")
def store(small_pool, tmp_path_factory, static_embedder):
    out = tmp_path_factory.mktemp("stores") / "full"
    return build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500)


def _shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted((Path(root) / "shards").glob("[0-9]*.npy"))
            if not p.name.endswith(".loc.npy")}


def test_store_layout_and_contents(store, small_pool):
    assert store.complete and store.n_rows == 4000
    assert len(store.shard_meta()) == 8
    v = store.vectors()
    x = v.take(np.array([0, 499, 500, 3999]))
    assert x.shape == (4, store.meta["dim"]) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    files, locs = store.locations()
    assert files.shape == (4000,) and locs[0] == 0 and np.all(np.diff(locs) > 0)
    assert store.meta["files"][0]["sha256"] and store.meta["embedder"]["weights_sha256"]
    assert (store.root / "index" / "euclidean.faiss").is_file()


def test_sigkill_then_resume_is_byte_identical(small_pool, tmp_path, static_embedder):
    # 40 small shards: after the third is reported, the build still has most of its work (and fsyncs)
    # ahead, so the kill lands mid-build even on a busy machine
    shards = 40
    reference = build_store([small_pool[0]], tmp_path / "reference", embedder=static_embedder, shard_rows=100)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tsds.cli", "pool", "build", str(small_pool[0]), "--out", str(out),
           "--shard-rows", "100", "--log-json", "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    done = 0
    for line in proc.stderr:
        if '"shard_done"' in line:
            done += 1
            if done == 3:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = len(list((out / "shards").glob("*.json")))
    assert 3 <= finished < shards
    assert not PoolStore(out).complete
    with pytest.raises(InputError, match="did not finish"):
        PoolStore(out).require_complete()
    r = subprocess.run(cmd[:-2] + ["--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    resumed = PoolStore(out)
    assert resumed.complete
    assert resumed.meta["last_build"]["reused_shards"] == finished
    assert resumed.meta["last_build"]["embedded_shards"] == shards - finished
    assert _shard_bytes(out) == _shard_bytes(reference.root)
    assert not list((out / "shards").glob(".*"))
    # the index too is a function of the store alone, resumed or not
    assert (out / "index" / "euclidean.faiss").read_bytes() == (reference.root / "index" / "euclidean.faiss").read_bytes()


def test_shards_written_in_background_report_only_finished_shards(small_pool, store, tmp_path, static_embedder):
    """Shard files are written while the next shard is embedded: on_shard(i) comes once shard i is finished,
    in order, and every shard reported is finished when it is reported."""
    out = tmp_path / "bg"
    seen = []

    def on_shard(i):
        assert (out / "shards" / f"{i:06d}.json").is_file()
        seen.append(i)

    build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500, on_shard=on_shard)
    assert seen == list(range(8))
    assert _shard_bytes(out) == _shard_bytes(store.root)


def test_failed_shard_write_stops_the_build_and_resume_finishes_it(small_pool, store, tmp_path, static_embedder,
                                                                     monkeypatch):
    """A write that fails in the background thread fails the build (no later shard is written), and the
    same command then resumes from the shards that were finished."""
    from tsds.store import build as pool

    out = tmp_path / "failing"
    real = pool._atomic_npy

    def failing(path, array):
        if path.name == "000002.npy":
            raise OSError(28, "No space left on device")
        return real(path, array)

    monkeypatch.setattr(pool, "_atomic_npy", failing)
    with pytest.raises(OSError, match="No space left"):
        build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500)
    assert sorted(p.name for p in (out / "shards").glob("*.json")) == ["000000.json", "000001.json"]
    assert not PoolStore(out).complete
    monkeypatch.setattr(pool, "_atomic_npy", real)
    resumed = build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500)
    assert resumed.meta["last_build"]["reused_shards"] == 2
    assert _shard_bytes(out) == _shard_bytes(store.root)


def test_store_refuses_changed_text(small_pool, tmp_path, static_embedder):
    src = tmp_path / "p.jsonl"
    src.write_bytes(small_pool[0].read_bytes())
    out = tmp_path / "s"
    build_store([src], out, embedder=static_embedder, shard_rows=1000)
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    rows[10]["text"] = "something else entirely"
    _write(src, rows)
    with pytest.raises(InputError, match="content changed"):
        build_store([src], out, embedder=static_embedder, shard_rows=1000)


def test_store_refuses_other_embedder(store, small_pool, minilm_embedder):
    with pytest.raises(InputError, match="built with embedder"):
        build_store([small_pool[0]], store.root, embedder=minilm_embedder, shard_rows=500)


def test_append_embeds_only_new_rows(small_pool, tmp_path, static_embedder):
    out = tmp_path / "s"
    build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500)
    grown = build_store(list(small_pool), out, embedder=static_embedder, shard_rows=500)
    assert grown.n_rows == 6000
    assert grown.meta["last_build"] == {"embedded_shards": 4, "reused_shards": 8, "rows": 6000}
    assert grown.index("euclidean").ntotal == 6000


def test_text_selection_writes_records_with_provenance(store, tmp_path, static_embedder):
    config = make_config(size=40, alpha=0.5, C=1.0, sigma=0.3, metric="cosine", sampling="without-replacement")
    out = tmp_path / "sel"
    sel = select_text(store, FOOD, out=out, config=config, records_name="picked.parquet", embedder=static_embedder)
    table = pq.read_table(out / "picked.parquet").to_pylist()
    assert len(table) == 40 == sel.distinct_selected
    original = {r["id"]: r for r in _rows(4000)}
    for rec in table:
        assert set(PROVENANCE) <= set(rec)
        src = original[rec["id"]]
        assert all(rec[k] == v for k, v in src.items())
        assert all(rec[k] is None for k in set(rec) - set(src) - set(PROVENANCE))
        assert rec["_tsds_probability"] > 0 and rec["_tsds_nearest_query"]
        assert rec["_tsds_density"] >= 1 and rec["_tsds_cluster_size"] >= 1
    card = (out / "README.md").read_text()
    assert "## Source pool" in card and "## Parameters" in card and "food" in card
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"]["rows"] == 40 and manifest["queries"]["count"] == 20
    assert (store.root / "densities").is_dir()


def test_with_replacement_writes_one_row_per_draw(store, tmp_path, static_embedder):
    config = make_config(size=60, alpha=0.9, C=1.0, sigma=0.0, metric="cosine")
    out = tmp_path / "sel"
    sel = select_text(store, FOOD, out=out, config=config, embedder=static_embedder)
    lines = (out / "selected.jsonl").read_text().splitlines()
    assert len(lines) == 60
    draws = {}
    for line in lines:
        rec = json.loads(line)
        draws[rec["_tsds_row"]] = rec["_tsds_times_drawn"]
    assert sum(draws.values()) == 60 and len(draws) == sel.distinct_selected


def test_near_duplicates_get_no_more_than_one_text(tmp_path, static_embedder, capsys):
    """200 copies (exact and lightly edited) of one on-topic text: KDE spends on them what it spends on one."""
    rows = _rows(3000)
    queries = [json.loads(line) for line in FOOD.read_text().splitlines()]
    clean = _write(tmp_path / "clean.jsonl", rows)
    qfile = _write(tmp_path / "q.jsonl", queries)
    clean_store = build_store([clean], tmp_path / "clean", embedder=static_embedder)
    configs = {sigma: make_config(size=100, alpha=0.5, C=1.0, sigma=sigma, metric="cosine") for sigma in (0.0, 0.2)}
    first = select_text(clean_store, qfile, out=tmp_path / "first", config=configs[0.0], embedder=static_embedder)
    target_row = int(np.argmax(first.probabilities))
    target = rows[target_row]
    copies = []
    for i in range(200):
        text = target["text"]
        if i % 2:
            text = [text.upper(), text + ".", text.replace(":", " -"), "  " + text][i % 4]
        copies.append({**target, "id": f"copy-{i}", "text": text})
    dup_store = build_store([_write(tmp_path / "dup.jsonl", rows + copies)], tmp_path / "dup",
                            embedder=static_embedder)
    group = np.r_[target_row, np.arange(3000, 3200)]
    spent = {}
    for sigma, config in configs.items():
        one = select_text(clean_store, qfile, out=tmp_path / f"oc{sigma}", config=config, embedder=static_embedder)
        many = select_text(dup_store, qfile, out=tmp_path / f"od{sigma}", config=config, embedder=static_embedder)
        spent[sigma] = (one.probabilities[target_row], many.probabilities[group].sum())
    with capsys.disabled():
        print(f"\nmass on one text / on it plus 200 near-copies: sigma=0: {spent[0.0][0]:.5f} / {spent[0.0][1]:.5f};"
              f" sigma=0.2: {spent[0.2][0]:.5f} / {spent[0.2][1]:.5f}")
    assert spent[0.2][1] <= spent[0.2][0] * 1.05 + 1e-9
    assert spent[0.0][1] > 5 * spent[0.0][0]


@pytest.mark.parametrize("method", ["knn", "random", "dsir"])
def test_select_method_cli_writes_the_same_format(store, tmp_path, method):
    out = tmp_path / method
    r = subprocess.run([sys.executable, "-m", "tsds.cli", "select", "--pool", str(store.root), "--queries", str(FOOD),
                        "--size", "30", "--method", method, "--without-replacement", "--out", str(out), "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = (out / "selected.jsonl").read_text().splitlines()
    assert len(lines) == 30 and set(PROVENANCE) <= set(json.loads(lines[0]))
    assert json.loads((out / "manifest.json").read_text())["method"] == method


def test_row_estimate_for_progress_bars(small_pool):
    from tsds.io.readers import estimate_rows

    assert estimate_rows(list(small_pool)) == 6000
    assert estimate_rows(POOL) == sum(1 for _ in gzip.open(POOL, "rt", encoding="utf-8"))


def test_ivf_index_is_a_function_of_the_store_with_exact_list_radii(small_pool, tmp_path, static_embedder):
    """The index saved by a build is byte-identical to one rebuilt later from the stored shards, and each
    list's radius is its largest member-to-centroid distance (exact density pruning relies on it)."""
    import faiss

    out = tmp_path / "ivf"
    built = build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500, index_kind="ivf")
    first = {p.name: p.read_bytes() for p in (out / "index").iterdir()}
    for p in (out / "index").iterdir():
        p.unlink()
    again = PoolStore(out).index("euclidean", "ivf")
    assert {p.name: p.read_bytes() for p in (out / "index").iterdir()} == first
    ivf = faiss.extract_index_ivf(again.index)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    x = built.vectors().take(np.arange(built.n_rows))
    radius = np.zeros(ivf.nlist)
    invlists = ivf.invlists
    for lst in range(ivf.nlist):
        ids = faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
        if ids.size:
            radius[lst] = np.sqrt(((x[ids] - centroids[lst]) ** 2).sum(axis=1)).max()
    assert np.allclose(again.list_radius, radius, rtol=1e-5, atol=1e-6)
    assert sum(invlists.list_size(lst) for lst in range(ivf.nlist)) == built.n_rows


def test_a_stored_ivf_index_is_loaded_mapped_with_the_answers_of_one_read_into_memory(small_pool, tmp_path,
                                                                                      static_embedder):
    """Loading a store's IVF index copies its lists into a mapped file (removed at once, nothing left in the
    store) instead of reading them into memory; searches, vectors and densities are the same bit for bit."""
    import faiss

    from tsds.retrieval import SearchIndex
    from tsds.retrieval.mapped import MAPS_PAGES

    out = tmp_path / "ivf"
    build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500, index_kind="ivf")
    before = sorted(p.name for p in (out / "index").iterdir())
    loaded = PoolStore(out).index("euclidean", "ivf")
    assert sorted(p.name for p in (out / "index").iterdir()) == before
    if MAPS_PAGES:
        assert loaded.pages is not None
    plain = faiss.read_index(str(out / "index" / "euclidean.faiss"))
    faiss.extract_index_ivf(plain).make_direct_map()
    memory = SearchIndex(index=plain, kind="ivf", metric="euclidean", list_radius=loaded.list_radius)
    x = memory.reconstruct(np.arange(0, 4000, 7))
    assert np.array_equal(loaded.reconstruct(np.arange(0, 4000, 7)), x)
    q = x[:20] + 0.01
    for k in (10, 300):
        for a, b in zip(memory.search(q, k), loaded.search(q, k)):
            assert np.array_equal(a, b)
    pts = np.arange(0, 4000, 13)
    assert np.array_equal(memory.densities(pts, 0.3), loaded.densities(pts, 0.3))


def test_one_build_at_a_time_and_a_killed_builds_temporaries_are_removed(small_pool, store, tmp_path, static_embedder):
    """A second build of a store while one runs is refused; the next build removes the temporaries a killed
    build left (its atomic writes' files) and nothing else."""
    import fcntl
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(store.root, out)
    leftovers = [out / "shards" / ".000003.npy.k2x9_qa1.npy", out / "shards" / ".000003.loc.npy.abcdefgh.npy",
                 out / "index" / ".euclidean.faiss.zz00yy11", out / ".store.json.q1w2e3r4"]
    for path in leftovers:
        path.write_bytes(b"half-written")
    mine = out / "shards" / ".notes"
    mine.write_text("not ours")
    with open(out / ".build.lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="another build of this store is running"):
            build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500)
        assert all(path.exists() for path in leftovers)
    again = build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500)
    assert again.meta["last_build"]["reused_shards"] == 8
    assert not any(path.exists() for path in leftovers)
    assert mine.read_text() == "not ours"


def test_a_build_that_fails_on_its_input_leaves_no_folder(tmp_path, static_embedder):
    out = tmp_path / "never"
    with pytest.raises(InputError, match="no such file"):
        build_store([tmp_path / "missing.jsonl"], out, embedder=static_embedder)
    assert not out.exists()


def test_a_store_from_before_texts_were_clipped_resumes(small_pool, tmp_path, static_embedder):
    """store.json of an older store has no max_chars in its text spec (nor checksums): the same command
    goes on with it instead of refusing a "different" text spec."""
    out = tmp_path / "s"
    build_store([small_pool[0]], out, embedder=static_embedder, shard_rows=500)
    meta = json.loads((out / "store.json").read_text())
    del meta["text_spec"]["max_chars"], meta["checksum"]
    (out / "store.json").write_text(json.dumps(meta))
    grown = build_store(list(small_pool), out, embedder=static_embedder, shard_rows=500)
    assert grown.n_rows == 6000 and grown.meta["last_build"]["reused_shards"] == 8
