"""Building a store: the pool's shards embedded on an engine and written (each file atomically, a shard's
.json last), resumed from the finished shards, and the store's index built; one build of a store at a time."""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.embed.base import embeds_with_progress, zero_vector_rows
from tsds.errors import InputError
from tsds.io.readers import ReadStats, TextSpec, detect_format, iter_batches, refuse_pipe
from tsds.store.checks import array_sha256, fingerprint, seal
from tsds.store.embedding import embed_shards
from tsds.store.layout import FORMAT_VERSION, _check_format
from tsds.store.options import BuildOptions, check_build_options
from tsds.store.pool import PoolStore
from tsds.store.provenance import (check_source, hash_path, path_sha256, path_state, text_hashes,
                                   texts_sha256)
from tsds.store.resume import _check_compatible, _finished_shards, _previous_meta
from tsds.store.shards import PoolShards
from tsds.store.sources import relative_paths, source_root_of

_atomic_json, _atomic_npy = atomic.write_json, atomic.write_npy


def _file_entry(path: Path, fmt: str | None) -> dict:
    refuse_pipe(path, "a pool build needs a regular file it can read again")
    p = path.resolve()
    if not p.exists():
        raise InputError(f"{path}: no such file")
    size, mtime_ns = path_state(p)
    # the state is taken before the hash: a file changed while it is hashed then fails the fast check
    return {"path": str(p), "sha256": path_sha256(p), "bytes": size, "mtime_ns": mtime_ns,
            "format": fmt or detect_format(p)}


def _appended_to(root: Path, old: dict | None, source_root) -> list[dict]:
    """``--append``: the store's own file records, each where it is now and checked unchanged (size and
    mtime, else sha256), so that only the new files are hashed and embedded."""
    from tsds.store.sources import resolve_files

    if old is None or not old.get("complete"):
        raise InputError(f"{root}: --append needs a complete store; run its build again (all its files, "
                         "without --append) to finish it first")
    entries = []
    for e in resolve_files(old["files"], root, source_root):
        check_source(e, full=False)
        size, mtime_ns = path_state(Path(e["path"]))
        entries.append({k: v for k, v in e.items() if k not in ("recorded_path", "state")}
                       | {"bytes": size, "mtime_ns": mtime_ns})
    return entries


def _refuse_repeats(entries: list[dict], first_new: int) -> None:
    """``--append``: a file the store holds already, or given twice, would be embedded twice."""
    if not first_new:
        return
    seen = {}
    for i, e in enumerate(entries):
        if e["sha256"] in seen and i >= first_new:
            where = "is already in the store" if seen[e["sha256"]] < first_new else "is given twice"
            raise InputError(f"{e['path']}: {where} (same content as {entries[seen[e['sha256']]]['path']})")
        seen.setdefault(e["sha256"], i)


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
        index_folders = [p for p in (root / "index").iterdir() if p.is_dir()] if (root / "index").is_dir() else []
        for folder in (root, root / "shards", root / "index", *index_folders, root / "densities"):
            for path in folder.glob(".*"):
                if _TEMPORARY.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
        yield


@contextmanager
def replacing_store(out: str | os.PathLike):
    """Yield a new empty folder beside the store ``out``; when the block succeeds it takes the place of
    ``out`` (the old store is moved aside, then removed), else it is removed and ``out`` is left as it was.
    The old store's build lock is held meanwhile, so no build of it runs while it is replaced."""
    import shutil

    from tsds.io.output import check_store_dir

    out = Path(out)
    check_store_dir(out)
    tmp = atomic.temp_dir(out)
    try:
        with _exclusive_build(out):
            yield tmp
            atomic.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _rebuild(paths, out: Path, o: BuildOptions, embedder, engine, progress, on_shard) -> PoolStore:
    """``--overwrite``: the store built from scratch beside ``out``, then put in its place. An input that is
    the store's own copy of texts given in memory is copied into the new store first."""
    import shutil

    from tsds.io.output import STORE_SOURCE

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    own = (out / STORE_SOURCE).resolve()
    with replacing_store(out) as tmp:
        inputs = []
        for p in paths:
            if Path(p).resolve() == own:
                shutil.copy2(own, tmp / STORE_SOURCE)
                p = tmp / STORE_SOURCE
            inputs.append(p)
        with _exclusive_build(tmp):
            store = _build_store(inputs, tmp, replace(o, overwrite=False), embedder, engine, progress, on_shard)
        last_build = store.meta["last_build"]
    store = PoolStore(out, engine=store.engine)
    store.meta["last_build"] = last_build
    return store


def build_store(paths, out: str | os.PathLike, options: BuildOptions | None = None, *, embedder=None, engine=None,
                progress=None, on_shard=None, **settings) -> PoolStore:
    """Embed a pool into a store folder, resuming or extending one that exists.

    An existing store is continued only if it was built from the same files (a prefix of
    ``paths``, same content hashes; a file moved since is recognised by its hash), the same
    text spec and the same embedder; files past that prefix are appended and only their rows
    are embedded. Finished shards are never embedded again. With ``append`` only the new files
    are given (the store's own are taken from its record); with ``overwrite`` the store is built
    anew and replaces the old one once complete.

    ``options``: a `BuildOptions`, or its fields as keywords (``embedder_spec``, ``spec``, ``on_bad_row``,
    ``shard_rows``, ``fmt``, ``metric``, ``index_kind``, ``index_shards``). ``embedder``: one already loaded
    (else ``embedder_spec`` is loaded); ``engine``: where the shards are embedded and the index built
    (default: this process; see tsds.engines); ``progress(rows)`` is called per embedded batch (on a
    distributed engine as its workers tell it, from a thread), ``progress.reused(rows)`` (or ``progress``) per
    shard found finished, and ``on_shard(i)`` as shards are written.
    """
    o = BuildOptions.of(options, settings)
    check_build_options(paths, out, replace(o, embedder_spec=None) if embedder is not None else o)
    atomic.sweep_stale(out)          # what a killed --overwrite left beside the store (its old copy put back)
    if o.overwrite and Path(out).is_dir() and any(Path(out).iterdir()):
        return _rebuild(paths, Path(out), o, embedder, engine, progress, on_shard)
    with _exclusive_build(Path(out)):
        return _build_store(paths, Path(out), o, embedder, engine, progress, on_shard)


def _build_store(paths, root: Path, o: BuildOptions, embedder, engine, progress, on_shard) -> PoolStore:
    """`build_store`'s work, under the store's build lock."""
    from tsds.embed import load_embedder
    from tsds.engines.local import LocalEngine

    embedder_spec, on_bad_row, shard_rows, fmt = o.embedder_spec, o.on_bad_row, o.shard_rows, o.fmt
    metric, index_kind, index_shards = o.metric, o.index_kind, o.index_shards
    spec = o.spec or TextSpec()
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise InputError("no pool files given")
    old = _previous_meta(root)
    earlier = _appended_to(root, old, o.source_root) if o.append else []
    entries = earlier + [_file_entry(p, fmt) for p in paths]
    _refuse_repeats(entries, len(earlier))
    source_root = source_root_of([e["path"] for e in entries])
    entries = [relative_paths(e, root, source_root) for e in entries]
    embedder = embedder or load_embedder(embedder_spec)
    identity = embedder.identity
    spec_dict = spec.to_dict()
    (root / "shards").mkdir(parents=True, exist_ok=True)
    meta_path = root / "store.json"
    keep_files = len(entries)
    if old is not None:
        _check_format(root, old)
        keep_files = _check_compatible(root, old, entries, identity, spec_dict, on_bad_row, shard_rows)
    meta = {
        "format": FORMAT_VERSION,
        "embedder": identity,
        "embedder_spec": embedder_spec,
        "text_spec": spec_dict,
        "on_bad_row": on_bad_row,
        "shard_rows": shard_rows,
        "files": entries,
        "source_root": source_root,
        "dim": embedder.dim,
        "complete": False,
    }
    _atomic_json(meta_path, seal(meta))
    store = PoolStore(root)
    # every finished shard, not only a contiguous prefix: an engine that embeds shards out of order
    # (Ray) can be interrupted with gaps, and resuming must keep what is finished
    recorded = old.get("shard_hashes") if old is not None and old.get("complete") else None
    done = _finished_shards(root, embedder.dim, keep_files, recorded)
    stats = ReadStats()
    engine = engine or LocalEngine()
    counters = {"embedded_shards": 0, "reused_shards": 0, "rows": 0}
    last = [-1]

    def seen(i, rows, digest, path) -> bool:
        """Count shard i; True when the store already holds it (same text), so it is not embedded again."""
        counters["rows"] += rows
        last[0] = max(last[0], i)
        if i not in done:
            return False
        if done[i]["texts_sha256"] != digest or done[i]["rows"] != rows:
            raise InputError(
                f"{root}: shard {i} was built from different text than {path} holds now; "
                "rebuild the store into a new folder"
            )
        counters["reused_shards"] += 1
        if progress is not None:          # moves a bar without counting towards this run's rate
            getattr(progress, "reused", progress)(rows)
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
            hashes = text_hashes(batch.texts) if hashes is None else np.asarray(hashes, dtype=np.uint64)
            row_hashes = helpers.submit(_atomic_npy, hash_path(store.shard_path(i)), hashes)
            emb_hash = helpers.submit(lambda: hashlib.sha256(memoryview(vectors).cast("B")).hexdigest())
            _atomic_npy(store.shard_path(i), vectors)
            locs.result()
            row_hashes.result()
            emb_hash = emb_hash.result()
        _atomic_json(root / "shards" / f"{i:06d}.json", seal({
            "shard": i, "file_index": batch.file_index, "first_row": batch.row_ids[0], "rows": len(batch),
            "texts_sha256": digest, "truncated": int(truncated), "embeddings_sha256": emb_hash,
            "locations_sha256": array_sha256(np.asarray(batch.locations, dtype=np.int64)),
            "text_hashes_sha256": array_sha256(hashes),
            "zero_rows": zero_vector_rows(vectors).tolist(),  # offsets in the shard of all-zero rows
        }))

    per_batch = progress is not None and (hasattr(engine, "progress_relay") if engine.distributed
                                          else embeds_with_progress(embedder))

    def finished(i, rows):
        counters["embedded_shards"] += 1
        if progress is not None and not per_batch:
            progress(rows)
        if on_shard is not None:
            on_shard(i)

    def finish(i, batch, digest, vectors, truncated):
        # written by a background thread while the engine embeds the next shard; the shard's callbacks
        # (progress, on_shard) run here, in this thread, once its files are all written
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        writes.submit(lambda: write(i, batch, digest, vectors, truncated), lambda: finished(i, len(batch)))

    with writes:
        embed_shards(engine, source, embedder, finish, embedder_spec=embedder_spec,
                     progress=progress if per_batch else None)
    n_rows = counters["rows"]
    if n_rows == 0:
        raise InputError(f"{entries[0]['path']}: no usable rows in the pool")
    for path in (root / "shards").glob("[0-9][0-9][0-9][0-9][0-9][0-9].json"):
        if int(path.name[:6]) > last[0]:      # left by an earlier build of more shards (its input changed since)
            path.unlink()
    shard_metas = PoolStore(root).shard_meta()
    meta.update({"complete": True, "n_rows": n_rows, "skipped_rows": stats.skipped,
                 "bad_row_examples": stats.bad_examples, "clipped_texts": stats.clipped,
                 "truncated_texts": sum(s.get("truncated", 0) for s in shard_metas),
                 "zero_rows": int(PoolStore(root).zero_rows().size),
                 "last_build": counters, "shard_hashes": [s["embeddings_sha256"] for s in shard_metas],
                 "fingerprint": fingerprint(shard_metas),
                 "index": {"metric": metric, "kind": index_kind, "shards": index_shards}})
    _atomic_json(meta_path, seal(meta))
    store = PoolStore(root, engine=engine if engine.name != "local" else None)
    index = store.index(metric, index_kind, engine=engine, shards=index_shards, mapped=False, default=True)
    if getattr(index, "n_shards", None) is not None and index_shards is None:
        meta["index"]["shards"] = index.n_shards       # what a repair rebuilds
        _atomic_json(meta_path, seal(meta))
        store = PoolStore(root, engine=engine if engine.name != "local" else None)
    if hasattr(index, "close"):
        index.close()
    return store
