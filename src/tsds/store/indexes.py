"""A store's indexes: the stored one loaded (checked, of this content and kind) or built and saved, single or
sharded (one index per group of embedding shards, built on the engine; finished shards kept on resume)."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.retrieval.index import build_index
from tsds.retrieval.mapped import MAPS_PAGES, local_or_none, to_mapped
from tsds.store.checks import Damaged, check_file, check_index_shard, file_record, read_sealed, seal
from tsds.store.layout import ShardVectors, StoreLayout

log = logging.getLogger("tsds")
_atomic_json, _atomic_npy, atomic_write_index = atomic.write_json, atomic.write_npy, atomic.write_index


class StoreIndexes:
    """The index part of `tsds.store.PoolStore`."""

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

    meta = build_shard(ShardVectors(StoreLayout(root), first, last), spec, metric)
    files = {"faiss": file_record(Path(spec.path)), "radius": None}
    if spec.radius_path is not None:
        files["radius"] = file_record(Path(spec.radius_path))
    meta = seal({**meta, "files": files})
    _atomic_json(Path(spec.path).with_suffix(".json"), meta)
    return meta
