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
    index/<metric>-<kind>.faiss       an index of another kind than the stored one, built for a selection
                               that asked for it (or index/<metric>-<kind>/ sharded); never the default
    densities/<metric>-sigma<s>.npz   densities computed so far (NaN where not yet needed)

Every file is written to a temporary name and renamed, so a build killed at any point
(even by SIGKILL) leaves only finished shards, and the same command continues from there.
What each file should hold is recorded when it is written and checked on use (tsds.store.verify).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from contextlib import contextmanager
from functools import partial
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
from tsds.store.embedding import embed_shards
from tsds.store.provenance import hash_path, path_sha256, path_state, text_hashes, texts_sha256
from tsds.store.shards import PoolShards
from tsds.store.verify import (
    Damaged,
    array_sha256,
    check_file,
    check_index_shard,
    check_npy,
    density_digest,
    file_record,
    fingerprint,
    npy_sha256,
    read_density_cache,
    read_sealed,
    seal,
)

log = logging.getLogger("tsds")

FORMAT_VERSION = 1
SHARD_ROWS = 8192


_atomic_write_bytes, _atomic_json, _atomic_npy = atomic.write_bytes, atomic.write_json, atomic.write_npy
atomic_write_index = atomic.write_index


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
        self.meta = _read_store_meta(self.root)
        self._checked = False
        self._fingerprint: str | None = None

    # ---- layout ------------------------------------------------------------------------
    def shard_path(self, i: int) -> Path:
        return self.root / "shards" / f"{i:06d}.npy"

    def loc_path(self, i: int) -> Path:
        return self.root / "shards" / f"{i:06d}.loc.npy"

    def shard_meta(self) -> list[dict]:
        metas = []
        i = 0
        while (self.root / "shards" / f"{i:06d}.json").is_file():
            metas.append(read_sealed(self.root / "shards" / f"{i:06d}.json", self.root))
            i += 1
        return metas

    @property
    def fingerprint(self) -> str:
        """The identity of the store's content (tsds.store.verify.fingerprint)."""
        if self._fingerprint is None:
            self._fingerprint = self.meta.get("fingerprint") or fingerprint(self.shard_meta())
        return self._fingerprint

    def check(self) -> None:
        """The checks of a complete store that read no embedding (see tsds.store.verify), once per instance:
        store.json and every shard .json intact and consistent, each shard's .npy / .loc.npy header and size.
        Raises ``Damaged`` naming the first damaged file."""
        if self._checked or not self.complete:
            return
        shards = self.shard_meta()
        dim = int(self.meta["dim"])
        recorded = self.meta.get("shard_hashes")
        total = 0
        for i, s in enumerate(shards):
            json_path = self.root / "shards" / f"{i:06d}.json"
            if s.get("shard") != i:
                raise Damaged(json_path, f"says it is shard {s.get('shard')}", self.root)
            if recorded is not None and (i >= len(recorded) or recorded[i] != s.get("embeddings_sha256")):
                raise Damaged(json_path, "is not the shard store.json records (a file of another store?)", self.root)
            if s.get("first_row") != total or not 0 <= s.get("file_index", -1) < len(self.files):
                raise Damaged(json_path, f"says rows from {s.get('first_row')} of pool file {s.get('file_index')}; "
                              f"expected rows from {total} of one of {len(self.files)} file(s)", self.root)
            rows = int(s["rows"])
            check_npy(self.shard_path(i), (rows, dim), np.float32, self.root)
            check_npy(self.loc_path(i), (rows,), np.int64, self.root)
            if "text_hashes_sha256" in s:
                check_npy(hash_path(self.shard_path(i)), (rows,), np.uint64, self.root)
            total += rows
        if total != self.n_rows or (recorded is not None and len(recorded) != len(shards)):
            missing = self.root / "shards" / f"{len(shards):06d}.json"
            raise Damaged(missing if total < self.n_rows else self.root / "store.json",
                          f"the shards hold {total} rows, store.json says {self.n_rows}", self.root)
        self._checked = True

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
        self.check()

    def vectors(self) -> ShardVectors:
        self.check()
        return ShardVectors(self)

    def locations(self) -> tuple[np.ndarray, np.ndarray]:
        """(file index, location) of every row, in row order; each shard's locations checked against its hash."""
        self.check()
        files, locs = [], []
        for s in self.shard_meta():
            path = self.loc_path(s["shard"])
            loc = np.load(path, allow_pickle=False)
            if "locations_sha256" in s and array_sha256(loc) != s["locations_sha256"]:
                raise Damaged(path, "sha256 mismatch", self.root)
            locs.append(loc)
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
            recorded = metas[s].get("text_hashes_sha256")
            if recorded is None and not path.is_file():
                continue
            sel = np.flatnonzero(shard_of == s)
            check_npy(path, (metas[s]["rows"],), np.uint64, self.root)
            values = np.load(path, allow_pickle=False)
            if recorded is not None and array_sha256(values) != recorded:
                raise Damaged(path, "sha256 mismatch", self.root)
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
              mapped: bool = True, default: bool = False):
        """The stored index for ``metric``, built and saved on first use.

        A sharded index (``index/<metric>/``) is used when one is stored, else a single one
        (``index/<metric>.faiss``). With neither, the local engine builds a single index unless
        ``shards`` is given; the Ray engine always builds a sharded one (one shard per worker at
        least); ``kind="ivfpq"`` always builds a sharded one. The Ray engine serves a single index as a
        sharded index of one shard. The result
        is a ``SearchIndex`` or a ``ShardedIndex`` (same interface). IVF-Flat lists are copied into a mapped
        file (tsds.retrieval.mapped) whether loaded or just built here, unless ``mapped`` is False, which
        leaves one just built in memory (``build_store`` only needs the files written).

        ``default``: the store's own index is being made (a build): one stored of another kind is replaced, a
        damaged one rebuilt. Otherwise (a selection) the stored index is never replaced: ``kind="auto"`` takes
        it as it is, another kind than the stored one is kept beside it as ``index/<metric>-<kind>``, and a
        damaged one raises ``Damaged``. An index that cannot be saved (a read-only store) is used in memory.
        """
        self.require_complete()
        engine = engine or self.engine
        try:
            (self.root / "index").mkdir(exist_ok=True)
        except OSError:
            pass                # a read-only store: an index built here is used from memory
        remote = engine is not None and engine.name != "local"
        want_sharded = shards is not None or remote or kind == "ivfpq"
        recorded = self.meta.get("index") or {}
        if default or (recorded.get("metric") == metric and recorded.get("kind") == kind):
            candidates, name = [metric], metric
        elif kind == "auto":
            candidates, name = [metric], metric
            if recorded.get("metric") == metric:      # rebuilt as the build made it
                kind = recorded.get("kind", "auto")
                shards = shards if shards is not None else recorded.get("shards")
                want_sharded = want_sharded or shards is not None or kind == "ivfpq"
        else:
            candidates, name = [metric, f"{metric}-{kind}"], f"{metric}-{kind}"
        for base in candidates:
            found = self._stored_index(base, metric, kind, engine, shards, want_sharded, repair=default)
            if found is not None:
                return found
        if want_sharded:
            return self.build_sharded_index(metric, kind, engine=engine, shards=shards, name=name)
        built = build_index(self.vectors(), metric=metric, kind=kind, progress=progress, storage="memory")
        self._save_index(self.root / "index" / name, metric, built)
        if built.kind == "ivf" and MAPS_PAGES and mapped:
            built.pages, built._members = to_mapped(built.index, local_or_none(self.root / "index"))
        return built

    def _stored_index(self, base: str, metric: str, kind: str, engine, shards, want_sharded: bool, repair: bool):
        """The index stored under ``index/<base>`` if it is there, finished, of this store's content and of
        ``kind``; None if not. A damaged one raises ``Damaged``, or with ``repair`` is set aside (None)."""
        from tsds.retrieval.sharded import ShardedIndex, ShardSpec, load_shard

        folder = self.root / "index"
        remote = engine is not None and engine.name != "local"
        manifest_path = folder / base / "index.json"
        try:
            if manifest_path.is_file():
                manifest = read_sealed(manifest_path, self.root)
                if self._fresh(manifest, metric) and _kind_ok(kind, manifest["kinds"]) \
                        and shards in (None, len(manifest["shards"])):
                    specs = [ShardSpec.from_json(folder / base, d) for d in manifest["shards"]]
                    for spec in specs:
                        check_index_shard(spec, metric, self.root)
                    return ShardedIndex(specs, metric, backend=_backend(engine, specs, metric))
        except Damaged as exc:
            if not repair:
                raise
            log.warning("%s: %s; rebuilding the index", exc.path, exc.reason)
            manifest_path.unlink(missing_ok=True)
        info_path = folder / f"{base}.json"
        if not info_path.is_file():
            return None
        try:
            info = read_sealed(info_path, self.root)
            if not (self._fresh(info, metric) and kind in ("auto", info["kind"])):
                return None
            spec = ShardSpec(shard=0, start=0, rows=self.n_rows, kind=info["kind"],
                             path=str(folder / f"{base}.faiss"),
                             radius_path=str(folder / f"{base}.radius.npy") if info["kind"] == "ivf" else None)
            files = info.get("files", {})
            check_file(Path(spec.path), files.get("faiss"), root=self.root)
            if spec.radius_path:
                check_file(Path(spec.radius_path), files.get("radius"), root=self.root)
        except Damaged as exc:
            if not repair:
                raise
            log.warning("%s: %s; rebuilding the index", exc.path, exc.reason)
            info_path.unlink(missing_ok=True)
            return None
        if remote and shards is None:
            return ShardedIndex([spec], metric, backend=_backend(engine, [spec], metric))
        if not want_sharded:
            return load_shard(spec, metric)
        return None

    def _fresh(self, info: dict, metric: str) -> bool:
        """An index's .json is of this store's content (not of the store before an append, nor of another)
        and of ``metric`` (not a file of another metric's index under this one's name)."""
        return info.get("n_rows") == self.n_rows and info.get("metric", metric) == metric \
            and info.get("fingerprint", self.fingerprint) == self.fingerprint

    def _save_index(self, base: Path, metric: str, built) -> None:
        """Write a single index under ``base`` (.json last: it marks the index finished and records its files);
        a store that cannot be written keeps it in memory, with a warning."""
        info_path = base.with_suffix(".json")
        try:
            info_path.unlink(missing_ok=True)
            atomic_write_index(base.with_suffix(".faiss"), built.index)
            files = {"faiss": file_record(base.with_suffix(".faiss")), "radius": None}
            if built.list_radius is not None:
                _atomic_npy(base.with_suffix(".radius.npy"), built.list_radius)
                files["radius"] = file_record(base.with_suffix(".radius.npy"))
            _atomic_json(info_path, seal({"kind": built.kind, "metric": metric, "n_rows": self.n_rows,
                                          "fingerprint": self.fingerprint, "files": files}))
        except OSError as exc:
            log.warning("%s: cannot save the index (%s); it is used from memory", base.with_suffix(".faiss"),
                        exc.strerror or exc)

    def build_sharded_index(self, metric: str, kind: str = "auto", *, engine=None, shards: int | None = None,
                            name: str | None = None):
        """Build (or finish building) one FAISS index per group of embedding shards, in parallel on the engine.

        Finished index shards (their .json present, same rows and kind, files intact) are kept, so an
        interrupted build resumes; ``index.json`` is written last. ``name``: the folder under ``index/``
        (default ``metric``).
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
        folder = self.root / "index" / (name or metric)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.json").unlink(missing_ok=True)
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
                try:
                    old = check_index_shard(spec, metric, self.root, full=True)
                    if old.get("fingerprint", self.fingerprint) == self.fingerprint:
                        continue
                except Damaged:
                    pass
                meta_path.unlink()
            jobs.append((spec, first, last))
        engine.map(partial(_index_shard_job, str(self.root), metric), jobs)
        _atomic_json(folder / "index.json", seal({
            "layout": "sharded", "metric": metric, "n_rows": self.n_rows, "fingerprint": self.fingerprint,
            "kinds": sorted({s.kind for s in specs}), "shards": [s.to_json() for s in specs]}))
        return ShardedIndex(specs, metric, backend=_backend(engine, specs, metric))

    # ---- densities ---------------------------------------------------------------------
    def _density_path(self, metric: str, sigma: float) -> Path:
        return self.root / "densities" / f"{metric}-sigma{sigma!r}.npz"

    def load_densities(self, metric: str, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """(densities, near-duplicate counts) computed so far; NaN / -1 where not yet computed.

        A cache of another size (the store before an append) is ignored; one that is damaged, of another
        store's content, or without checksum (older tsds) is ignored with a warning and recomputed."""
        path = self._density_path(metric, sigma)
        fresh = np.full(self.n_rows, np.nan), np.full(self.n_rows, -1, dtype=np.int64)
        if not path.exists():
            return fresh
        try:
            rho, count, digest, fp = read_density_cache(path)
        except Damaged as exc:
            log.warning("%s: %s; the densities are computed again", path, exc.reason)
            return fresh
        if rho.shape != (self.n_rows,) and fp != self.fingerprint:
            return fresh
        if fp != self.fingerprint:
            log.warning("%s: made from other embeddings than this store's; the densities are computed again", path)
            return fresh
        return rho, count

    def save_densities(self, metric: str, sigma: float, rho: np.ndarray, count: np.ndarray) -> None:
        """Save the density cache; a store that cannot be written keeps none (it only saves time), with a warning."""
        folder = self.root / "densities"
        path = self._density_path(metric, sigma)
        rho = np.ascontiguousarray(rho, dtype=np.float64)
        count = np.ascontiguousarray(count, dtype=np.int64)
        try:
            folder.mkdir(exist_ok=True)
            atomic.write_npz(path, rho=rho, count=count, sha256=np.array(density_digest(rho, count)),
                             fingerprint=np.array(self.fingerprint))
        except OSError as exc:
            log.warning("%s: cannot save the density cache (%s); the selection is not affected",
                        path, exc.strerror or exc)


def _read_store_meta(root: Path) -> dict:
    """store.json, checked (``Damaged``) and of this format (``InputError``)."""
    try:
        meta = read_sealed(root / "store.json", root)
    except Damaged as damaged:
        try:      # a store of another format may seal its files otherwise: say so, rather than "damaged"
            plain = json.loads((root / "store.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            plain = None
        if isinstance(plain, dict):
            _check_format(root, plain)
        raise damaged
    _check_format(root, meta)
    return meta


def _check_format(root: Path, meta: dict) -> None:
    fmt = meta.get("format")
    if fmt != FORMAT_VERSION:
        newer = isinstance(fmt, int) and fmt > FORMAT_VERSION
        raise InputError(f"{root / 'store.json'}: store format {fmt!r} is "
                         + (f"newer than this tsds reads ({FORMAT_VERSION}); upgrade tsds" if newer else
                            f"not supported (expected {FORMAT_VERSION}); rebuild the store into a new folder"))


def _kind_ok(kind: str, kinds: list[str]) -> bool:
    return kind == "auto" or kinds == [kind]


def _backend(engine, specs, metric):
    """Where the shards of an index are served: the engine's backend, or this process."""
    from tsds.retrieval.sharded import ShardWorker

    if engine is None or engine.name == "local":
        return None
    return engine.serve(partial(ShardWorker, metric=metric), specs, [s.shard for s in specs])


def _index_shard_job(root: str, metric: str, job) -> dict:
    """`build_index_shard` of one (spec, first, last) job, as an engine task."""
    spec, first, last = job
    return build_index_shard(root, spec, metric, first, last)


def build_index_shard(root: str, spec, metric: str, first: int, last: int) -> dict:
    """Build index shard ``spec`` from embedding shards [first, last) of the store at ``root``."""
    from tsds.retrieval.sharded import build_shard

    meta = build_shard(ShardVectors(PoolStore(root), first, last), spec, metric)
    files = {"faiss": file_record(Path(spec.path)), "radius": None}
    if spec.radius_path is not None:
        files["radius"] = file_record(Path(spec.radius_path))
    meta = seal({**meta, "files": files})
    _atomic_json(Path(spec.path).with_suffix(".json"), meta)
    return meta


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
        index_folders = [p for p in (root / "index").iterdir() if p.is_dir()] if (root / "index").is_dir() else []
        for folder in (root, root / "shards", root / "index", *index_folders, root / "densities"):
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
    old = _previous_meta(root)
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
        embed_shards(engine, source, embedder, finish, embedder_spec=embedder_spec)
    n_rows = counters["rows"]
    if n_rows == 0:
        raise InputError(f"{paths[0]}: no usable rows in the pool")
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


def _previous_meta(root: Path) -> dict | None:
    """store.json of the store being built on, or None for a new store. A store.json that is damaged or
    missing beside finished shards leaves nothing to tell which embedder and input the shards came from:
    they are set aside (their .json removed) and embedded again."""
    meta_path = root / "store.json"
    shard_jsons = list((root / "shards").glob("[0-9][0-9][0-9][0-9][0-9][0-9].json"))
    try:
        if meta_path.is_file() or shard_jsons:
            return _read_store_meta(root)
    except Damaged as exc:
        if shard_jsons:
            log.warning("%s: %s; the store's %d finished shard(s) are embedded again", exc.path, exc.reason,
                        len(shard_jsons))
        for path in shard_jsons:
            path.unlink()
    return None


def _finished_shards(root: Path, dim: int, keep_files: int, recorded: list | None) -> dict:
    """The shards a build can reuse: .json intact, embeddings and locations matching their hashes (read in
    full: the build reads all the pool's text again anyway), of a pool file before ``keep_files`` (the
    files whose content is unchanged), and the shard store.json recorded when there is a record. Any other
    finished shard has its .json removed (so it counts as unfinished) and is embedded again."""
    from concurrent.futures import ThreadPoolExecutor

    def intact(path: Path) -> dict | None:
        i = int(path.name[:6])
        try:
            m = read_sealed(path, root)
            if m.get("shard") != i:
                raise Damaged(path, f"says it is shard {m.get('shard')}")
            if int(m.get("file_index", keep_files)) >= keep_files:
                return None
            rows = int(m["rows"])
            npy, loc = root / "shards" / f"{i:06d}.npy", root / "shards" / f"{i:06d}.loc.npy"
            check_npy(npy, (rows, dim), np.float32)
            check_npy(loc, (rows,), np.int64)
            if npy_sha256(npy) != m.get("embeddings_sha256"):
                raise Damaged(npy, "sha256 mismatch")
            if "locations_sha256" in m and npy_sha256(loc) != m["locations_sha256"]:
                raise Damaged(loc, "sha256 mismatch")
            if "text_hashes_sha256" in m:
                hp = hash_path(npy)
                check_npy(hp, (rows,), np.uint64)
                if npy_sha256(hp) != m["text_hashes_sha256"]:
                    raise Damaged(hp, "sha256 mismatch")
            if recorded is not None and (i >= len(recorded) or recorded[i] != m["embeddings_sha256"]):
                raise Damaged(path, "is not the shard store.json records")
            return m
        except (Damaged, KeyError, ValueError, TypeError) as exc:
            reason = f"{exc.path}: {exc.reason}" if isinstance(exc, Damaged) else f"{path}: {exc!r}"
            log.warning("%s; shard %d is embedded again", reason, i)
            return None

    paths = sorted((root / "shards").glob("[0-9][0-9][0-9][0-9][0-9][0-9].json"))
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        found = list(pool.map(intact, paths))
    done = {}
    for path, m in zip(paths, found):
        if m is None:
            path.unlink(missing_ok=True)
        else:
            done[int(m["shard"])] = m
    return done


def _check_compatible(root, old, entries, identity, spec_dict, on_bad_row, shard_rows) -> int:
    """Refuse a build on a store of other parameters; return how many leading pool files the store's shards
    can be kept for. A complete store must have been built from a prefix of the files, unchanged; a store
    whose build never finished is built on from the first file that changed (the shards of that file and
    of the files after it are embedded again)."""
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
    if not old.get("complete"):
        same = 0
        while same < min(len(old_files), len(entries)) and old_files[same]["path"] == entries[same]["path"] \
                and old_files[same]["sha256"] == entries[same]["sha256"]:
            same += 1
        return same
    if len(entries) < len(old_files):
        raise InputError(f"{root}: store holds {len(old_files)} pool file(s); pass them all, in order, "
                         "then any new ones")
    for o, e in zip(old_files, entries):
        if o["path"] != e["path"]:
            raise InputError(f"{root}: pool file {len(old_files)} must be {o['path']}, got {e['path']}")
        if o["sha256"] != e["sha256"]:
            raise InputError(f"{e['path']}: content changed since the store was built (sha256 differs); "
                             "build a new store")
    return len(entries)
