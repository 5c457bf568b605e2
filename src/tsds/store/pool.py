"""The persistent pool store: embeddings, row offsets, indexes and densities, computed once per pool.

Layout of a store folder::

    store.json                 embedder identity, text spec, source files with content hashes
    shards/000000.npy          float32 embeddings of one shard (memory-mappable)
    shards/000000.loc.npy      int64 location of each row in its source file (see tsds.io.readers)
    shards/000000.hash.npy     uint64 hash of each row's embedded text (see tsds.store.provenance)
    shards/000000.json         shard metadata; written last, so its presence marks the shard finished
    index/<metric>.faiss       a single FAISS index (+ .json metadata, .radius.npy list radii for IVF)
    index/<metric>/            or a sharded index: shard-0000.faiss/.json/.radius.npy per row range and
                               index.json listing them (see tsds.retrieval.sharded); either engine reads both
    densities/<metric>-sigma<s>.npy   densities computed so far (NaN where not yet needed)

Every file is written to a temporary name and renamed, so a build killed at any point
(even by SIGKILL) leaves only finished shards, and the same command continues from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.config import check_build_options
from tsds.embed.base import zero_vector_rows
from tsds.errors import InputError
from tsds.io.readers import ReadStats, TextSpec, detect_format, iter_batches, refuse_pipe
from tsds.retrieval.index import build_index
from tsds.retrieval.mapped import MAPS_PAGES, local_or_none, to_mapped
from tsds.store.provenance import hash_path, path_sha256, path_state, text_hashes
from tsds.store.shards import PoolShards

FORMAT_VERSION = 1
SHARD_ROWS = 8192


_atomic_write_bytes, _atomic_json, _atomic_npy = atomic.write_bytes, atomic.write_json, atomic.write_npy
atomic_write_index = atomic.write_index


def texts_sha256(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class ShardVectors:
    """The store's embeddings as a vector source (see tsds.io.arrays), one shard at a time."""

    def __init__(self, store: PoolStore, first: int = 0, last: int | None = None):
        self.store = store
        self.name = str(store.root)
        self.shards = store.shard_meta()[first:last]
        self.n = sum(s["rows"] for s in self.shards)
        self.dim = int(store.meta["dim"])
        self._starts = np.cumsum([0] + [s["rows"] for s in self.shards])

    def chunks(self, rows: int | None = None):
        for s, start in zip(self.shards, self._starts):
            yield int(start), np.asarray(np.load(self.store.shard_path(s["shard"]), mmap_mode="r",
                                                 allow_pickle=False), dtype=np.float32)

    def take(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            mm = np.load(self.store.shard_path(self.shards[s]["shard"]), mmap_mode="r", allow_pickle=False)
            out[sel] = mm[rows[sel] - self._starts[s]]
        return out


class PoolStore:
    """A pool store folder. Open with ``PoolStore(path)``; build or extend with ``build_store``."""

    def __init__(self, root: str | os.PathLike, engine=None):
        self.root = Path(root)
        self.engine = engine
        meta_path = self.root / "store.json"
        if not meta_path.is_file():
            raise InputError(f"{self.root}: not a tsds pool store (no store.json); build one with `tsds pool build`")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT_VERSION:
            raise InputError(f"{self.root}: store format {self.meta.get('format')} is not supported (expected {FORMAT_VERSION})")

    # ---- layout ------------------------------------------------------------------------
    def shard_path(self, i: int) -> Path:
        return self.root / "shards" / f"{i:06d}.npy"

    def shard_meta(self) -> list[dict]:
        metas = []
        i = 0
        while (self.root / "shards" / f"{i:06d}.json").is_file():
            metas.append(json.loads((self.root / "shards" / f"{i:06d}.json").read_text()))
            i += 1
        return metas

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    @property
    def n_rows(self) -> int:
        return int(self.meta.get("n_rows", 0))

    @property
    def files(self) -> list[dict]:
        return self.meta["files"]

    @property
    def text_spec(self) -> TextSpec:
        return TextSpec(**self.meta["text_spec"])

    def require_complete(self) -> None:
        if not self.complete:
            raise InputError(f"{self.root}: the store's build did not finish; run `tsds pool build` again to resume it")

    def vectors(self) -> ShardVectors:
        return ShardVectors(self)

    def locations(self) -> tuple[np.ndarray, np.ndarray]:
        """(file index, location) of every row, in row order."""
        files, locs = [], []
        for s in self.shard_meta():
            locs.append(np.load(self.root / "shards" / f"{s['shard']:06d}.loc.npy", allow_pickle=False))
            files.append(np.full(s["rows"], s["file_index"], dtype=np.int32))
        return np.concatenate(files), np.concatenate(locs)

    def text_hashes(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(hash of the embedded text, whether the store has it) of each of ``rows``; shards written
        before the store kept text hashes have none."""
        rows = np.asarray(rows, dtype=np.int64)
        hashes = np.zeros(rows.size, dtype=np.uint64)
        known = np.zeros(rows.size, dtype=bool)
        metas = self.shard_meta()
        starts = np.cumsum([0] + [s["rows"] for s in metas])
        shard_of = np.searchsorted(starts, rows, side="right") - 1
        for s in np.unique(shard_of).tolist():
            path = hash_path(self.shard_path(metas[s]["shard"]))
            if not path.is_file():
                continue
            sel = np.flatnonzero(shard_of == s)
            values = np.load(path, mmap_mode="r", allow_pickle=False)
            if values.shape != (metas[s]["rows"],) or values.dtype != np.uint64:
                raise InputError(f"{path}: not the text hashes of shard {s} ({metas[s]['rows']} uint64 values)")
            hashes[sel] = values[rows[sel] - starts[s]]
            known[sel] = True
        return hashes, known

    def zero_rows(self) -> np.ndarray:
        """Rows whose embedding is all zeros (texts the embedder cannot represent), as recorded per shard at
        build; for shards built before that was recorded, found by reading their embeddings."""
        rows = []
        start = 0
        for s in self.shard_meta():
            if "zero_rows" in s:
                local = np.asarray(s["zero_rows"], dtype=np.int64)
            else:
                local = zero_vector_rows(np.load(self.shard_path(s["shard"]), mmap_mode="r", allow_pickle=False))
            rows.append(start + local)
            start += int(s["rows"])
        return np.concatenate(rows) if rows else np.empty(0, np.int64)

    def zero_rows_recorded(self) -> bool:
        """Whether every shard recorded its zero rows at build (older stores did not)."""
        return all("zero_rows" in s for s in self.shard_meta())

    # ---- index -------------------------------------------------------------------------
    def index(self, metric: str, kind: str = "auto", progress=None, *, engine=None, shards: int | None = None,
              mapped: bool = True):
        """The stored index for ``metric``, built and saved on first use.

        A sharded index (``index/<metric>/``) is used when one is stored, else a single one
        (``index/<metric>.faiss``). With neither, the local engine builds a single index unless
        ``shards`` is given; the Ray engine always builds a sharded one (one shard per worker at
        least); ``kind="ivfpq"`` always builds a sharded one. The Ray engine serves a single index as a
        sharded index of one shard. The result
        is a ``SearchIndex`` or a ``ShardedIndex`` (same interface). IVF-Flat lists are copied into a mapped
        file (tsds.retrieval.mapped) whether loaded or just built here, unless ``mapped`` is False, which
        leaves one just built in memory (``build_store`` only needs the files written).
        """
        from tsds.retrieval.sharded import ShardedIndex, ShardSpec, read_manifest

        self.require_complete()
        engine = engine or self.engine
        folder = self.root / "index"
        folder.mkdir(exist_ok=True)
        manifest = read_manifest(folder / metric)
        if manifest is not None and manifest["n_rows"] == self.n_rows and _kind_ok(kind, manifest["kinds"]) \
                and shards in (None, len(manifest["shards"])):
            specs = [ShardSpec.from_json(folder / metric, d) for d in manifest["shards"]]
            return ShardedIndex(specs, metric, backend=_backend(engine, specs, metric))
        # IVF-PQ exists only as index shards (they re-rank with the store's embedding shards)
        want_sharded = shards is not None or (engine is not None and engine.name != "local") or kind == "ivfpq"
        base = folder / metric
        info_path = base.with_suffix(".json")
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            if info["n_rows"] == self.n_rows and kind in ("auto", info["kind"]):
                spec = ShardSpec(shard=0, start=0, rows=self.n_rows, kind=info["kind"],
                                 path=str(base.with_suffix(".faiss")),
                                 radius_path=str(base.with_suffix(".radius.npy")) if info["kind"] == "ivf" else None)
                if engine is not None and engine.name != "local" and shards is None:
                    return ShardedIndex([spec], metric, backend=_backend(engine, [spec], metric))
                if not want_sharded:
                    from tsds.retrieval.sharded import load_shard
                    return load_shard(spec, metric)
        if want_sharded:
            return self.build_sharded_index(metric, kind, engine=engine, shards=shards)
        built = build_index(self.vectors(), metric=metric, kind=kind, progress=progress, storage="memory")
        atomic_write_index(base.with_suffix(".faiss"), built.index)
        if built.list_radius is not None:
            _atomic_npy(base.with_suffix(".radius.npy"), built.list_radius)
        _atomic_json(info_path, {"kind": built.kind, "metric": metric, "n_rows": self.n_rows})
        if built.kind == "ivf" and MAPS_PAGES and mapped:
            built.pages, built._members = to_mapped(built.index, local_or_none(folder))
        return built

    def build_sharded_index(self, metric: str, kind: str = "auto", *, engine=None, shards: int | None = None):
        """Build (or finish building) one FAISS index per group of embedding shards, in parallel on the engine.

        Finished index shards (their .json present, same rows and kind) are kept, so an interrupted
        build resumes; ``index.json`` is written last.
        """
        from tsds.engines.local import LocalEngine
        from tsds.retrieval.sharded import (
            ShardedIndex,
            ShardSpec,
            default_shards,
            plan_shards,
            shard_kind,
        )

        engine = engine or self.engine or LocalEngine()
        folder = self.root / "index" / metric
        folder.mkdir(parents=True, exist_ok=True)
        emb_rows = [s["rows"] for s in self.shard_meta()]
        n = shards if shards is not None else default_shards(self.n_rows, engine.workers)
        plan = plan_shards(emb_rows, n)
        emb_starts = list(np.cumsum([0] + emb_rows))
        jobs, specs = [], []
        for j, (start, rows) in enumerate(plan):
            k = shard_kind(rows, kind)
            first, last = emb_starts.index(start), emb_starts.index(start + rows)
            spec = ShardSpec(shard=j, start=start, rows=rows, kind=k, path=str(folder / f"shard-{j:04d}.faiss"),
                             radius_path=str(folder / f"shard-{j:04d}.radius.npy") if k != "flat" else None,
                             # IVF-PQ re-ranks with the exact vectors: the store's own embedding shards
                             vectors=tuple(str(self.shard_path(i)) for i in range(first, last)) if k == "ivfpq" else ())
            specs.append(spec)
            meta_path = folder / f"shard-{j:04d}.json"
            if meta_path.is_file():
                old = json.loads(meta_path.read_text())
                if old.get("start") == start and old.get("rows") == rows and old.get("kind") == k \
                        and old.get("metric") == metric:
                    continue
                meta_path.unlink()
            jobs.append((spec, first, last))
        engine.build_index_shards(str(self.root), jobs, metric)
        _atomic_json(folder / "index.json", {
            "layout": "sharded", "metric": metric, "n_rows": self.n_rows,
            "kinds": sorted({s.kind for s in specs}), "shards": [s.to_json() for s in specs]})
        return ShardedIndex(specs, metric, backend=_backend(engine, specs, metric))

    # ---- densities ---------------------------------------------------------------------
    def _density_path(self, metric: str, sigma: float) -> Path:
        return self.root / "densities" / f"{metric}-sigma{sigma!r}.npz"

    def load_densities(self, metric: str, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """(densities, near-duplicate counts) computed so far; NaN / -1 where not yet computed."""
        path = self._density_path(metric, sigma)
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if z["rho"].shape == (self.n_rows,):
                    return z["rho"].copy(), z["count"].copy()
        return np.full(self.n_rows, np.nan), np.full(self.n_rows, -1, dtype=np.int64)

    def save_densities(self, metric: str, sigma: float, rho: np.ndarray, count: np.ndarray) -> None:
        folder = self.root / "densities"
        folder.mkdir(exist_ok=True)
        path = self._density_path(metric, sigma)
        atomic.write_npz(path, rho=rho, count=count)


def _kind_ok(kind: str, kinds: list[str]) -> bool:
    return kind == "auto" or kinds == [kind]


def _backend(engine, specs, metric):
    """Where the shards of an index are served: the engine's backend, or this process."""
    if engine is None or engine.name == "local":
        return None
    return engine.shard_backend(specs, metric)


def build_index_shard(root: str, spec, metric: str, first: int, last: int) -> dict:
    """Build index shard ``spec`` from embedding shards [first, last) of the store at ``root``."""
    from tsds.retrieval.sharded import build_shard

    return build_shard(ShardVectors(PoolStore(root), first, last), spec, metric)


def _file_entry(path: Path, fmt: str | None) -> dict:
    refuse_pipe(path, "a pool build needs a regular file it can read again")
    p = path.resolve()
    if not p.exists():
        raise InputError(f"{path}: no such file")
    size, mtime_ns = path_state(p)
    # the state is taken before the hash: a file changed while it is hashed then fails the fast check
    return {"path": str(p), "sha256": path_sha256(p), "bytes": size, "mtime_ns": mtime_ns,
            "format": fmt or detect_format(p)}


class _ShardWrites:
    """Shards' files written in order by a background thread while the caller goes on (embedding the next shard).

    At most ``depth`` writes are in flight: ``submit`` first waits for the oldest when there are that
    many, re-raises its error if it failed, and runs its ``then`` callback in the calling thread. Once a
    write has failed, the writes queued after it do nothing (so no shard is finished after one that is
    not). Leaving the ``with`` block waits for every write the same way; when the block is left by an
    exception, it waits for the writes in flight (so no file is written after the build has returned)
    and the block's exception propagates.
    """

    def __init__(self, depth: int = 2):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tsds-shard-writer")
        self._pending = deque()
        self._depth = depth
        self._failed = False

    def _run(self, job) -> None:
        if self._failed:
            return
        try:
            job()
        except BaseException:
            self._failed = True
            raise

    def submit(self, job, then) -> None:
        while len(self._pending) >= self._depth:
            self._settle_oldest()
        self._pending.append((self._pool.submit(self._run, job), then))

    def _settle_oldest(self) -> None:
        future, then = self._pending.popleft()
        future.result()
        then()

    def settle(self) -> None:
        while self._pending:
            self._settle_oldest()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.settle()
            else:
                self._failed = True            # writes not yet started are skipped
                for future, _ in self._pending:
                    future.exception()         # wait; the block's own exception is the one raised
                self._pending.clear()
        finally:
            self._pool.shutdown(wait=True)
        return False


_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}(\.npy|\.npz)?$")  # the names tempfile.mkstemp gives ours


@contextmanager
def _exclusive_build(root: Path):
    """One build of a store at a time (a lock that the OS drops when its process dies, kill -9 included),
    and the half-written temporaries of a killed build removed before this one starts. A folder this
    build created is removed again if the build fails before writing anything into it."""
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        with _locked_and_swept(root):
            yield
    except BaseException:
        if created and {p.name for p in root.iterdir()} <= {".build.lock"}:
            (root / ".build.lock").unlink(missing_ok=True)
            root.rmdir()
        raise


@contextmanager
def _locked_and_swept(root: Path):
    with open(root / ".build.lock", "a") as lock:
        try:
            import fcntl
        except ImportError:  # no advisory locks here: builds are not guarded against each other
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(f"{root}: another build of this store is running") from None
        for folder in (root, root / "shards", root / "index"):
            for path in folder.glob(".*"):
                if _TEMPORARY.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
        yield


def build_store(
    paths,
    out: str | os.PathLike,
    *,
    embedder_spec: str = "static",
    spec: TextSpec | None = None,
    on_bad_row: str = "fail",
    shard_rows: int = SHARD_ROWS,
    fmt: str | None = None,
    metric: str = "euclidean",
    index_kind: str = "auto",
    embedder=None,
    engine=None,
    progress=None,
    on_shard=None,
    index_shards: int | None = None,
) -> PoolStore:
    """Embed a pool into a store folder, resuming or extending one that exists.

    An existing store is continued only if it was built from the same files (a prefix of
    ``paths``, same content hashes), the same text spec and the same embedder; files past
    that prefix are appended and only their rows are embedded. Finished shards are never
    embedded again.

    ``engine``: where the shards are embedded and the index built (default: this process; see
    tsds.engines). ``index_shards``: build a sharded index of that many shards (the Ray engine
    builds a sharded index by default; the local engine a single one).
    """
    check_build_options(paths, out, metric=metric, index_kind=index_kind, shard_rows=shard_rows,
                        on_bad_row=on_bad_row, fmt=fmt, index_shards=index_shards,
                        embedder_spec=None if embedder is not None else embedder_spec)
    with _exclusive_build(Path(out)):
        return _build_store(paths, Path(out), embedder_spec=embedder_spec, spec=spec, on_bad_row=on_bad_row,
                            shard_rows=shard_rows, fmt=fmt, metric=metric, index_kind=index_kind, embedder=embedder,
                            engine=engine, progress=progress, on_shard=on_shard, index_shards=index_shards)


def _build_store(paths, root: Path, *, embedder_spec, spec, on_bad_row, shard_rows, fmt, metric, index_kind,
                 embedder, engine, progress, on_shard, index_shards) -> PoolStore:
    """`build_store`'s work, under the store's build lock."""
    from tsds.embed import load_embedder
    from tsds.engines.local import LocalEngine

    spec = spec or TextSpec()
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise InputError("no pool files given")
    entries = [_file_entry(p, fmt) for p in paths]
    embedder = embedder or load_embedder(embedder_spec)
    identity = embedder.identity
    spec_dict = asdict(spec)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    meta_path = root / "store.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        _check_compatible(root, old, entries, identity, spec_dict, on_bad_row, shard_rows)
    meta = {
        "format": FORMAT_VERSION,
        "embedder": identity,
        "embedder_spec": embedder_spec,
        "text_spec": spec_dict,
        "on_bad_row": on_bad_row,
        "shard_rows": shard_rows,
        "files": entries,
        "dim": embedder.dim,
        "complete": False,
    }
    _atomic_json(meta_path, meta)
    store = PoolStore(root)
    # every finished shard, not only a contiguous prefix: an engine that embeds shards out of order
    # (Ray) can be interrupted with gaps, and resuming must keep what is finished
    done = {}
    for path in sorted((root / "shards").glob("[0-9][0-9][0-9][0-9][0-9][0-9].json")):
        meta_i = json.loads(path.read_text())
        done[int(meta_i["shard"])] = meta_i
    stats = ReadStats()
    engine = engine or LocalEngine()
    counters = {"embedded_shards": 0, "reused_shards": 0, "rows": 0}

    def seen(i, rows, digest, path) -> bool:
        """Count shard i; True when the store already holds it (same text), so it is not embedded again."""
        counters["rows"] += rows
        if i not in done:
            return False
        if done[i]["texts_sha256"] != digest or done[i]["rows"] != rows:
            raise InputError(
                f"{root}: shard {i} was built from different text than {path} holds now; "
                "rebuild the store into a new folder"
            )
        counters["reused_shards"] += 1
        if progress is not None:
            progress(rows)
        return True

    def shard_jobs():
        """The shards read here, in order: (shard, batch, digest) for each one still to embed."""
        batches = iter_batches([e["path"] for e in entries], spec, batch_size=shard_rows,
                               fmt=fmt, on_bad_row=on_bad_row, stats=stats)
        for i, batch in enumerate(batches):
            digest = texts_sha256(batch.texts)
            if not seen(i, len(batch), digest, batch.path):
                yield i, batch, digest

    # what a shard is, for every engine: read here in order (shard_jobs), or planned and read by workers
    source = PoolShards([(e["path"], e["format"]) for e in entries], spec, on_bad_row, shard_rows, stats,
                        jobs=shard_jobs, seen=seen, done=done)

    writes = _ShardWrites()

    def write(i, batch, digest, vectors, truncated):
        # the embeddings' hash and the locations file are done in helper threads while this one writes the
        # embeddings (hashing, writes and fsync release the GIL): a shard waits for one fsync, not two plus a
        # hash; the .json that marks the shard finished is still written last, after both
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2, thread_name_prefix="tsds-shard-write") as helpers:
            locs = helpers.submit(_atomic_npy, root / "shards" / f"{i:06d}.loc.npy",
                                  np.asarray(batch.locations, dtype=np.int64))
            # the hash of each row's embedded text, checked when its record is fetched (tsds.store.provenance);
            # an engine that reads in workers sends them (``text_hashes``) instead of the texts
            hashes = getattr(batch, "text_hashes", None)
            row_hashes = helpers.submit(_atomic_npy, hash_path(store.shard_path(i)),
                                        text_hashes(batch.texts) if hashes is None else hashes)
            emb_hash = helpers.submit(lambda: hashlib.sha256(memoryview(vectors).cast("B")).hexdigest())
            _atomic_npy(store.shard_path(i), vectors)
            locs.result()
            row_hashes.result()
            emb_hash = emb_hash.result()
        _atomic_json(root / "shards" / f"{i:06d}.json", {
            "shard": i, "file_index": batch.file_index, "first_row": batch.row_ids[0], "rows": len(batch),
            "texts_sha256": digest, "truncated": int(truncated), "embeddings_sha256": emb_hash,
            "zero_rows": zero_vector_rows(vectors).tolist(),  # offsets in the shard of all-zero rows
        })

    def finished(i, rows):
        counters["embedded_shards"] += 1
        if progress is not None:
            progress(rows)
        if on_shard is not None:
            on_shard(i)

    def finish(i, batch, digest, vectors, truncated):
        # written by a background thread while the engine embeds the next shard; the shard's callbacks
        # (progress, on_shard) run here, in this thread, once its files are all written
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        writes.submit(lambda: write(i, batch, digest, vectors, truncated), lambda: finished(i, len(batch)))

    with writes:
        engine.embed_shards(source, embedder, finish, embedder_spec=embedder_spec)
    n_rows = counters["rows"]
    if n_rows == 0:
        raise InputError(f"{paths[0]}: no usable rows in the pool")
    meta.update({"complete": True, "n_rows": n_rows, "skipped_rows": stats.skipped,
                 "bad_row_examples": stats.bad_examples, "clipped_texts": stats.clipped,
                 "truncated_texts": sum(s.get("truncated", 0) for s in PoolStore(root).shard_meta()),
                 "zero_rows": int(PoolStore(root).zero_rows().size),
                 "last_build": counters})
    _atomic_json(meta_path, meta)
    store = PoolStore(root, engine=engine if engine.name != "local" else None)
    index = store.index(metric, index_kind, engine=engine, shards=index_shards, mapped=False)
    if hasattr(index, "close"):
        index.close()
    return store


def _check_compatible(root, old, entries, identity, spec_dict, on_bad_row, shard_rows) -> None:
    if old.get("embedder") != identity:
        raise InputError(
            f"{root}: store was built with embedder {old.get('embedder', {}).get('model')!r} "
            f"({old.get('embedder', {}).get('weights_sha256', '')[:12]}), not {identity.get('model')!r} "
            f"({identity.get('weights_sha256', '')[:12]}); use a new store folder"
        )
    old_spec = dict(old.get("text_spec") or {})
    old_spec.setdefault("max_chars", TextSpec().max_chars)  # stores from before texts were clipped
    if old_spec != spec_dict or old.get("on_bad_row") != on_bad_row:
        raise InputError(f"{root}: store was built with text spec {old.get('text_spec')} "
                         f"(on_bad_row={old.get('on_bad_row')}); got {spec_dict} (on_bad_row={on_bad_row})")
    if old.get("shard_rows") != shard_rows:
        raise InputError(f"{root}: store uses {old.get('shard_rows')} rows per shard, not {shard_rows}")
    old_files = old.get("files", [])
    if len(entries) < len(old_files):
        raise InputError(f"{root}: store holds {len(old_files)} pool file(s); pass them all, in order, "
                         "then any new ones")
    for o, e in zip(old_files, entries):
        if o["path"] != e["path"]:
            raise InputError(f"{root}: pool file {len(old_files)} must be {o['path']}, got {e['path']}")
        if o["sha256"] != e["sha256"]:
            raise InputError(f"{e['path']}: content changed since the store was built (sha256 differs); "
                             "build a new store")
