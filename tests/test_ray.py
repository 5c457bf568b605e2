"""The Ray engine on a real local Ray cluster (2 CPUs) started by this module: same store, same selection.

- shards embedded by Ray Data actors are byte-identical to the local engine's;
- on the same store with exact (flat) shard indexes, the Ray engine's probabilities equal the local
  engine's (within 1e-12) and the selected records are the same for the same seed;
- a store built by the local engine (single index) is served by the Ray engine, and vice versa;
- an embedding actor killed (SIGKILL) mid-build is restarted by Ray and the build completes with the
  same bytes; a shard actor killed between selections is restarted and answers the same;
- a Ray build interrupted as a whole resumes from its finished shards.
"""

import gzip
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from tsds.config import make_config
from tsds.engines import LocalEngine, make_engine
from tsds.errors import InputError
from tsds.api import select_text
from tsds.retrieval.sharded import ShardedIndex
from tsds.store import PoolStore, build_store
from test_progress import Recorder  # the same progress recorder as the local engine's tests

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT / "data" / "demo" / "pool.jsonl.gz"
FOOD = ROOT / "data" / "demo" / "tasks" / "food" / "queries.jsonl"
SHARD_ROWS = 250


def _shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted((Path(root) / "shards").glob("[0-9]*.npy"))}


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("raypool") / "pool.jsonl"
    with gzip.open(POOL, "rt", encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i >= 4000:
                break
            out.write(line)
    return path


@pytest.fixture(scope="module")
def engine():
    eng = make_engine("ray", num_cpus=2)
    yield eng
    eng.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_store(pool_file, tmp_path_factory, static_embedder):
    return build_store([pool_file], tmp_path_factory.mktemp("st") / "local", embedder=static_embedder,
                       shard_rows=SHARD_ROWS)


@pytest.fixture(scope="module")
def ray_store(pool_file, tmp_path_factory, static_embedder, engine):
    return build_store([pool_file], tmp_path_factory.mktemp("st") / "ray", embedder=static_embedder,
                       shard_rows=SHARD_ROWS, engine=engine, index_shards=3)


def test_ray_build_writes_the_local_engines_store(local_store, ray_store):
    assert ray_store.n_rows == local_store.n_rows == 4000
    assert _shard_bytes(ray_store.root) == _shard_bytes(local_store.root)
    assert [s["embeddings_sha256"] for s in ray_store.shard_meta()] == \
        [s["embeddings_sha256"] for s in local_store.shard_meta()]
    hashes = sorted(p.name for p in (ray_store.root / "shards").glob("*.hash.npy"))
    assert len(hashes) == 16 and hashes == sorted(p.name for p in (local_store.root / "shards").glob("*.hash.npy"))
    manifest = json.loads((ray_store.root / "index" / "euclidean" / "index.json").read_text())
    assert manifest["layout"] == "sharded" and len(manifest["shards"]) == 3
    assert sum(s["rows"] for s in manifest["shards"]) == 4000


def _select(store, out, static_embedder, **kw):
    config = make_config(size=40, alpha=0.5, C=1.0, sigma=0.3, metric="cosine", index="flat",
                         sampling="without-replacement", seed=7, initial_k=8, **kw)
    return select_text(store, FOOD, out=out, config=config, embedder=static_embedder)


def test_ray_selection_equals_local_on_the_same_store(ray_store, engine, tmp_path, static_embedder):
    on_ray = PoolStore(ray_store.root, engine=engine)
    a = _select(on_ray, tmp_path / "ray", static_embedder)       # builds the cosine index on Ray (2 shards)
    index = on_ray.index("cosine", "flat")
    assert isinstance(index, ShardedIndex) and index.n_shards == 2 and type(index.backend).__name__ == "RayShards"
    b = _select(PoolStore(ray_store.root), tmp_path / "local", static_embedder)   # same shards, in-process
    assert a.k_history == b.k_history and len(a.k_history) > 1      # K was doubled: truncation handled on Ray
    assert np.max(np.abs(a.probabilities - b.probabilities)) <= 1e-12
    assert np.array_equal(a.counts, b.counts)
    assert (tmp_path / "ray" / "selected.jsonl").read_bytes() == (tmp_path / "local" / "selected.jsonl").read_bytes()
    assert a.density_cache is not None and np.isfinite(a.density_cache.values).sum() > 0


def test_sharded_index_matches_one_flat_index(local_store, ray_store, tmp_path, static_embedder):
    """Merging shard top-K lists and summing shard densities gives the single flat index's answer.

    Up to FAISS's float32 distance rounding: the same pair can get a squared distance differing in the
    last float32 bit (e.g. -2e-6 instead of 0 for a point and itself) when FAISS picks a different
    kernel (BLAS or direct) for a different database size; the lists are the same. (On the same store
    the engines agree exactly: see the test above.)
    """
    a = _select(local_store, tmp_path / "single", static_embedder)           # single flat index
    b = _select(PoolStore(ray_store.root), tmp_path / "sharded", static_embedder)
    assert np.max(np.abs(a.probabilities - b.probabilities)) <= 1e-6
    assert np.array_equal(a.neighbour_ids, b.neighbour_ids)


def test_local_store_served_by_ray(local_store, engine, tmp_path, static_embedder):
    single = local_store.index("euclidean")
    served = PoolStore(local_store.root, engine=engine).index("euclidean")
    assert type(single).__name__ == "SearchIndex" and isinstance(served, ShardedIndex) and served.n_shards == 1
    q = static_embedder.embed(["bread and butter", "a fast computer network", "the sea"])
    D1, I1 = single.search(q, 30)
    D2, I2 = served.search(q, 30)
    assert np.array_equal(I1, I2) and np.array_equal(D1, D2)
    ids = I1[:, :10].ravel()
    from tsds.retrieval import densities
    from tsds.retrieval.sharded import ShardSpec
    spec = ShardSpec(0, 0, 4000, "flat", str(local_store.root / "index" / "euclidean.faiss"), None)
    local = ShardedIndex([spec], "euclidean")                               # the same file, in this process
    assert np.array_equal(local.densities(ids, 0.4), served.densities(ids, 0.4))
    # the single-index path sums FAISS's float32 distances; the shards recompute them in float64
    assert np.allclose(densities(single, ids, 0.4), served.densities(ids, 0.4), rtol=0, atol=1e-5)


def test_killed_shard_actor_is_restarted(ray_store, engine, static_embedder):
    index = PoolStore(ray_store.root, engine=engine).index("euclidean")
    q = static_embedder.embed(["soup", "linux kernel", "poetry"])
    before = index.search(q, 50), index.densities(np.arange(0, 4000, 97), 0.35)
    ray.kill(index.backend.actors()[0], no_restart=False)
    after = index.search(q, 50), index.densities(np.arange(0, 4000, 97), 0.35)
    assert all(np.array_equal(x, y) for x, y in zip(before[0], after[0]))
    assert np.array_equal(before[1], after[1])


class SlowStatic:
    """Builds the static embedder in a Ray worker, slowed down and recording its pid, so a test can kill it."""

    def __init__(self, pid_dir, delay):
        self.pid_dir, self.delay = str(pid_dir), delay

    def __call__(self):
        from tsds.embed import load_embedder

        return _Slow(load_embedder("static"), self.pid_dir, self.delay)


class _Slow:
    def __init__(self, inner, pid_dir, delay):
        self.inner, self.pid_dir, self.delay = inner, pid_dir, delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, texts):
        Path(self.pid_dir, str(os.getpid())).touch()
        time.sleep(self.delay)
        return self.inner.embed(texts)


def test_embedding_worker_killed_mid_build_is_retried(engine, pool_file, local_store, tmp_path, static_embedder):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    slow = make_engine("ray", embedder_factory=SlowStatic(pid_dir, 0.4))    # joins the running instance
    result = {}

    def run():
        try:
            result["store"] = build_store([pool_file], tmp_path / "killed", embedder=static_embedder,
                                          shard_rows=SHARD_ROWS, engine=slow, index_shards=2)
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    victim = None
    while victim is None and time.time() < deadline:
        pids = [int(p.name) for p in pid_dir.iterdir()]
        if pids:
            victim = pids[0]
            time.sleep(0.1)          # inside embed()'s sleep: the batch is in flight
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(300)
    assert victim is not None and not thread.is_alive()
    assert "error" not in result, result.get("error")
    store = result["store"]
    assert store.complete and store.meta["last_build"]["embedded_shards"] == 16
    assert _shard_bytes(store.root) == _shard_bytes(local_store.root)
    workers = {int(p.name) for p in pid_dir.iterdir()}
    assert victim in workers and len(workers - {victim}) >= 1     # someone else finished the work


def test_interrupted_ray_build_resumes(engine, pool_file, local_store, tmp_path, static_embedder):
    out = tmp_path / "resumed"
    done = []

    def stop_after_five(i):
        done.append(i)
        if len(done) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_store([pool_file], out, embedder=static_embedder, shard_rows=SHARD_ROWS, engine=engine,
                    on_shard=stop_after_five)
    assert not PoolStore(out).complete
    store = build_store([pool_file], out, embedder=static_embedder, shard_rows=SHARD_ROWS, engine=engine)
    assert store.complete and store.meta["last_build"]["reused_shards"] >= 5
    assert store.meta["last_build"]["embedded_shards"] + store.meta["last_build"]["reused_shards"] == 16
    assert _shard_bytes(store.root) == _shard_bytes(local_store.root)


def test_a_ray_build_advances_per_embedded_batch_with_the_local_bytes(engine, pool_file, local_store, tmp_path,
                                                                        static_embedder):
    from functools import partial

    from tsds.embed import load_embedder

    saved, engine.embedder_factory = engine.embedder_factory, partial(load_embedder, "static", batch_size=64)
    try:
        first = Recorder()
        store = build_store([pool_file], tmp_path / "s", embedder=static_embedder, shard_rows=SHARD_ROWS,
                            engine=engine, progress=first)
        assert sum(first.own) == 4000 and first.reused_calls == []
        assert max(first.own) == 64 and len(first.own) == 16 * -(-SHARD_ROWS // 64)   # per batch, not per shard
        assert _shard_bytes(store.root) == _shard_bytes(local_store.root)

        (tmp_path / "s" / "shards" / "000007.json").unlink()      # one shard unfinished: only it is embedded
        second = Recorder()
        store = build_store([pool_file], tmp_path / "s", embedder=static_embedder, shard_rows=SHARD_ROWS,
                            engine=engine, progress=second)
        assert second.reused_calls == [SHARD_ROWS] * 15
        assert sum(second.own) == SHARD_ROWS and len(second.own) == -(-SHARD_ROWS // 64)
        assert _shard_bytes(store.root) == _shard_bytes(local_store.root)
    finally:
        engine.embedder_factory = saved


def test_local_engine_is_the_default(local_store):
    assert isinstance(make_engine("local"), LocalEngine)
    assert (local_store.root / "index" / "euclidean.faiss").is_file()


def test_select_cli_with_ray_address_equals_local(ray_store, engine, tmp_path):
    """`tsds select --engine ray --ray-address` joins the running cluster and writes the local engine's output."""
    import subprocess

    address = ray.get_runtime_context().gcs_address
    common = ["select", "--pool", str(ray_store.root), "--queries", str(FOOD), "--size", "40", "--alpha", "0.5",
              "--C", "1", "--sigma", "0.3", "--metric", "cosine", "--without-replacement", "-q"]
    r = subprocess.run([sys.executable, "-m", "tsds.cli", *common, "--out", str(tmp_path / "ray"),
                        "--engine", "ray", "--ray-address", address], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "tsds.cli", *common, "--out", str(tmp_path / "local")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ray" / "selected.jsonl").read_bytes() == (tmp_path / "local" / "selected.jsonl").read_bytes()
    assert np.array_equal(np.load(tmp_path / "ray" / "probabilities.npy"), np.load(tmp_path / "local" / "probabilities.npy"))


def test_ray_writes_every_row_of_a_gzip_file_and_refuses_a_changed_file(engine, tmp_path, static_embedder):
    """The Ray engine's records path: more than one fetch group's 2,048 rows of a gzip file all written
    (one row per draw, counted in the file); a record whose text changed since the build refused."""
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(2500)]
    gz = tmp_path / "pool.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as g:
        g.write("".join(lines))
    plain = tmp_path / "pool.jsonl"
    plain.write_text("".join(lines), encoding="utf-8")
    local = build_store([gz, plain], tmp_path / "store", embedder=static_embedder, shard_rows=1000)
    on_ray = PoolStore(local.root, engine=engine)
    config = make_config(size=40, seed=0, sampling="without-replacement")
    select_text(on_ray, FOOD, out=tmp_path / "full", config=config, method="full", embedder=static_embedder)
    rows = [json.loads(line) for line in open(tmp_path / "full" / "selected.jsonl", encoding="utf-8")]
    assert len(rows) == 5000 and [r["_tsds_row"] for r in rows] == list(range(5000))
    assert [r["text"] for r in rows] == [json.loads(line)["text"] for line in lines + lines]

    st = plain.stat()
    old = json.dumps(json.loads(lines[7])["text"])[1:-1].encode()
    new = re.sub(rb"(?<!\\)[a-z]", lambda m: m.group().upper(), old)     # same length, still valid JSON
    plain.write_bytes(plain.read_bytes().replace(old, new, 1))
    os.utime(plain, ns=(st.st_atime_ns, st.st_mtime_ns))           # size and mtime as at the build
    with pytest.raises(InputError, match=r"pool.jsonl: row 2507 \(location \d+\) is not the text the store embedded"):
        select_text(on_ray, FOOD, out=tmp_path / "after", config=config, method="full", embedder=static_embedder)
    assert not (tmp_path / "after").exists()


# ---- reading the pool in Ray: scan tasks plan the shards, read-and-embed actors read them ----

READERS = ROOT / "tests" / "data" / "readers"


def _store_files(root):
    """Every shard file (embeddings, locations, metadata) by name."""
    return {p.name: p.read_bytes() for p in sorted((Path(root) / "shards").iterdir()) if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def messy_pool(tmp_path_factory):
    """Real demo rows with bad and blank lines in a plain JSON Lines file (several scan ranges) and a gzip
    file, then a CSV with a quoted multi-line field and a Parquet file: every read path of the planner."""
    d = tmp_path_factory.mktemp("messy")
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(1700)]
    plain = lines[:1200]
    plain.insert(300, "\n")
    plain.insert(611, '{"text": "broken\n')
    plain.insert(900, '{"label": "no text field"}\n')
    plain.insert(1000, "   \n")
    (d / "a.jsonl").write_text("".join(plain), encoding="utf-8")
    packed = lines[1200:] + ['["not an object"]\n']
    with gzip.open(d / "b.jsonl.gz", "wt", encoding="utf-8") as g:
        g.write("".join(packed))
    return [d / "a.jsonl", d / "b.jsonl.gz", READERS / "good.csv", READERS / "good.parquet"]


def test_ray_reads_the_pool_into_the_local_engines_store(messy_pool, engine, tmp_path, static_embedder):
    """Skipped bad rows, blank lines, byte-range scans, gzip, CSV and Parquet: the same shards, locations,
    hashes, embeddings and skipped-row report as reading in order in this process."""
    local = build_store(messy_pool, tmp_path / "local", embedder=static_embedder, shard_rows=SHARD_ROWS,
                        on_bad_row="skip", index_shards=2)
    ranged = make_engine("ray", scan_bytes=40_000)          # a.jsonl (~300 kB) is scanned in ~8 ranges
    assert len([u for u in ranged_units(ranged, messy_pool) if u.end is not None]) >= 5
    on_ray = build_store(messy_pool, tmp_path / "ray", embedder=static_embedder, shard_rows=SHARD_ROWS,
                         on_bad_row="skip", engine=ranged, index_shards=2)
    assert _store_files(on_ray.root) == _store_files(local.root)
    for key in ("n_rows", "skipped_rows", "bad_row_examples", "truncated_texts"):
        assert on_ray.meta[key] == local.meta[key], key
    assert local.meta["skipped_rows"] == 3 and ":612: invalid JSON" in local.meta["bad_row_examples"][0]
    assert on_ray.meta["last_build"]["embedded_shards"] == len(local.shard_meta())


def ranged_units(engine, paths):
    from tsds.io.readers import ReadStats, TextSpec, detect_format
    from tsds.store.shards import PoolShards

    shards = PoolShards([(str(p), detect_format(p)) for p in paths], TextSpec(), "skip", SHARD_ROWS, ReadStats(),
                        jobs=None, seen=None, done={})
    return shards.scan_units(engine.scan_bytes)


def test_bad_row_through_ray_gives_the_local_error(messy_pool, engine, tmp_path, static_embedder):
    """With bad rows failing the build, the Ray engine stops with the reader's own one-line error for the
    first bad row (file and line, counted across scan ranges), before embedding anything."""
    from tsds.errors import InputError

    with pytest.raises(InputError) as local:
        build_store(messy_pool, tmp_path / "local", embedder=static_embedder, shard_rows=SHARD_ROWS)
    ranged = make_engine("ray", scan_bytes=40_000)
    with pytest.raises(InputError) as on_ray:
        build_store(messy_pool, tmp_path / "ray", embedder=static_embedder, shard_rows=SHARD_ROWS, engine=ranged)
    assert str(on_ray.value) == str(local.value) == \
        f"{messy_pool[0]}:612: invalid JSON (Unterminated string starting at at column 10)"
    assert "\n" not in str(on_ray.value)
    assert not list((tmp_path / "ray" / "shards").glob("*.npy"))
    # the gzip file's bad row (whole-file scan) is found the same way when it is the first
    with pytest.raises(InputError) as local:
        build_store(messy_pool[1:], tmp_path / "local2", embedder=static_embedder, shard_rows=SHARD_ROWS)
    with pytest.raises(InputError) as on_ray:
        build_store(messy_pool[1:], tmp_path / "ray2", embedder=static_embedder, shard_rows=SHARD_ROWS, engine=ranged)
    assert str(on_ray.value) == str(local.value) and "b.jsonl.gz:501: expected a JSON object" in str(local.value)


def test_ivfpq_store_index_on_ray_selects_like_exact(ray_store, engine, tmp_path, static_embedder):
    """An IVF-PQ sharded index of a real store, served by Ray actors that re-rank with the store's
    memory-mapped embedding shards: at measured recall 1 the selection is the exact (flat) one."""
    import shutil

    root = tmp_path / "store"
    shutil.copytree(ray_store.root, root)
    index = PoolStore(root, engine=engine).index("euclidean", "ivfpq", shards=2)
    assert index.kind == "ivfpq" and type(index.backend).__name__ == "RayShards"
    # kept beside the store's own (flat) index, under its kind
    manifest = json.loads((root / "index" / "euclidean-ivfpq" / "index.json").read_text())
    assert manifest["kinds"] == ["ivfpq"] and manifest["shards"][0]["vectors"][0] == "../../shards/000000.npy"
    config = make_config(size=40, alpha=0.5, C=1.0, sigma=0.3, sampling="without-replacement", seed=7,
                         initial_k=8, recall_target=1.0)
    a = select_text(PoolStore(root, engine=engine), FOOD, out=tmp_path / "pq",
                    config=config.model_copy(update={"index": "ivfpq"}), embedder=static_embedder)
    b = select_text(PoolStore(ray_store.root), FOOD, out=tmp_path / "flat",
                    config=config.model_copy(update={"index": "flat"}), embedder=static_embedder)
    assert a.recall == 1.0 and np.array_equal(a.neighbour_ids, b.neighbour_ids)
    assert np.max(np.abs(a.probabilities - b.probabilities)) <= 1e-12
    # the same records; query distances are exact float64 on IVF-PQ, FAISS's float32 on flat shards
    ra = [json.loads(line) for line in (tmp_path / "pq" / "selected.jsonl").open()]
    rb = [json.loads(line) for line in (tmp_path / "flat" / "selected.jsonl").open()]
    assert len(ra) == len(rb) == 40
    assert [{k: v for k, v in r.items() if k != "_tsds_query_distance"} for r in ra] == \
        [{k: v for k, v in r.items() if k != "_tsds_query_distance"} for r in rb]
    assert max(abs(x["_tsds_query_distance"] - y["_tsds_query_distance"]) for x, y in zip(ra, rb)) < 1e-6


@pytest.mark.parametrize("records_name", ["selected.jsonl.gz", "selected.parquet"])
def test_ray_writes_the_local_engines_records(messy_pool, engine, tmp_path, static_embedder, records_name):
    """Records fetched by Ray Data read tasks (plain JSON Lines in groups, gzip/CSV/Parquet whole) and
    written by a Ray Data write task: the same bytes as the local engine's file, draws repeated in place."""
    import pyarrow.parquet as pq

    store = build_store(messy_pool, tmp_path / "store", embedder=static_embedder, shard_rows=SHARD_ROWS,
                        on_bad_row="skip")
    config = make_config(size=300, alpha=0.2, C=1.0, sigma=0.3, seed=3, initial_k=16)
    a = select_text(PoolStore(store.root, engine=engine), FOOD, out=tmp_path / "ray", config=config,
                    embedder=static_embedder, records_name=records_name)
    b = select_text(PoolStore(store.root), FOOD, out=tmp_path / "local", config=config,
                    embedder=static_embedder, records_name=records_name)
    assert np.array_equal(a.counts, b.counts) and a.counts.max() > 1
    ray_file, local_file = tmp_path / "ray" / records_name, tmp_path / "local" / records_name
    assert ray_file.read_bytes() == local_file.read_bytes()
    if records_name.endswith(".parquet"):
        rows = pq.read_table(ray_file).to_pylist()
    else:
        rows = [json.loads(line) for line in gzip.open(ray_file, "rt", encoding="utf-8")]
    assert len(rows) == a.counts.sum() and [r["_tsds_row"] for r in rows] == a.selected_indices.tolist()
    files = {r["_tsds_file"] for r in rows}
    assert len(files) >= 2                      # records come from more than one pool file
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name.startswith(".")]     # no temporary leftovers
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    local_manifest = json.loads((tmp_path / "local" / "manifest.json").read_text())
    assert manifest["records"] == local_manifest["records"]
