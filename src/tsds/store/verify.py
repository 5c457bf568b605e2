"""`tsds pool verify [--repair]`: every file of a store checked in full, and just what is damaged rebuilt.

What each file records and what is checked on use: tsds.store.checks (whose names are importable here too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsds.errors import InputError
from tsds.store.scale import read_scale_cache
from tsds.store.checks import (  # noqa: F401 (seal, read_sealed, ...: the checks' names importable from here)
    Damaged,
    check_file,
    check_index_shard,
    check_npy,
    file_record,
    fingerprint,
    npy_sha256,
    read_density_cache,
    read_sealed,
    seal,
)


# ---- tsds pool verify ----------------------------------------------------------------------
PROBLEMS = ("damaged", "missing", "unfinished", "incomplete", "unsupported")


@dataclass
class Finding:
    """One file of a store and what verifying it found: ok, stale (made from older content; rebuilt on use),
    or one of ``PROBLEMS``."""

    file: str
    status: str
    detail: str = ""

    @property
    def problem(self) -> bool:
        return self.status in PROBLEMS


def _rel(root: Path, path) -> str:
    return str(Path(path).relative_to(root)) if Path(path).is_relative_to(root) else str(path)


def verify_store(root) -> list[Finding]:
    """Every file of the store at ``root`` against what was recorded when it was written, every byte hashed."""
    from tsds.store.pool import PoolStore

    root = Path(root)
    found: list[Finding] = []

    def attempt(path, check) -> bool:
        try:
            check()
        except Damaged as exc:
            found.append(Finding(_rel(root, exc.path), "missing" if exc.reason == "missing" else "damaged",
                                 exc.reason))
            return False
        found.append(Finding(_rel(root, path), "ok"))
        return True

    try:
        store = PoolStore(root)
    except Damaged as exc:
        return [Finding("store.json", "missing" if exc.reason == "missing" else "damaged", exc.reason)]
    except InputError as exc:
        return [Finding("store.json", "missing" if not (root / "store.json").exists() else "unsupported",
                        str(exc).split(": ", 1)[-1])]
    found.append(Finding("store.json", "ok" if store.complete else "incomplete",
                         "" if store.complete else "the build did not finish"))
    _verify_shards(store, found, attempt)
    try:
        store.fingerprint                # what the indexes and caches must have been made from
    except Damaged:
        store = None
    if store is None or not store.complete:     # rebuilt once the store is whole again
        return found
    _verify_indexes(store, found, attempt)
    for path in sorted((root / "densities").glob("*.npz")):
        _verify_density(store, path, found)
    for path in sorted((root / "scale").glob("*.npz")):
        _verify_scale(store, path, found)
    return found


def _verify_shards(store, found: list[Finding], attempt) -> None:
    root, dim = store.root, int(store.meta["dim"])
    recorded = store.meta.get("shard_hashes")
    names = sorted(p.name for p in (root / "shards").glob("[0-9]*") if p.name[:6].isdigit())
    count = max([int(n[:6]) + 1 for n in names if n.endswith(".json")] + [0])
    if store.complete and recorded is not None:
        count = len(recorded)
    total = 0
    for i in range(count):
        json_path = root / "shards" / f"{i:06d}.json"
        meta = {}

        def check_json():
            meta.update(read_sealed(json_path, root))
            if meta.get("shard") != i:
                raise Damaged(json_path, f"says it is shard {meta.get('shard')}")
            if recorded is not None and (i >= len(recorded) or recorded[i] != meta.get("embeddings_sha256")):
                raise Damaged(json_path, "is not the shard store.json records (a file of another store?)")

        if not attempt(json_path, check_json):
            for suffix in (".npy", ".loc.npy", ".hash.npy"):
                found.append(Finding(f"shards/{i:06d}{suffix}", "unchecked", "its .json is damaged"))
            continue
        rows = int(meta["rows"])
        total += rows
        npy, loc = store.shard_path(i), store.loc_path(i)

        def check_npy_file(path, shape, dtype, key):
            check_npy(path, shape, dtype)
            if key in meta and npy_sha256(path) != meta[key]:
                raise Damaged(path, "sha256 mismatch")

        attempt(npy, lambda: check_npy_file(npy, (rows, dim), np.float32, "embeddings_sha256"))
        attempt(loc, lambda: check_npy_file(loc, (rows,), np.int64, "locations_sha256"))
        if "text_hashes_sha256" in meta:
            hashes = npy.with_name(f"{i:06d}.hash.npy")
            attempt(hashes, lambda: check_npy_file(hashes, (rows,), np.uint64, "text_hashes_sha256"))
    for name in names:
        if int(name[:6]) >= count:
            found.append(Finding(f"shards/{name}", "extra", "not part of the store (an unfinished write's)"))
    if store.complete and total != store.n_rows and not any(f.problem for f in found if f.file.startswith("shards")):
        found.append(Finding("store.json", "damaged", f"says {store.n_rows} rows, the shards hold {total}"))


def _verify_indexes(store, found: list[Finding], attempt) -> None:
    from tsds.retrieval.sharded import ShardSpec

    root, folder = store.root, store.root / "index"
    for info_path in sorted(folder.glob("*.json")):
        base = info_path.name[:-len(".json")]
        info = {}
        if not attempt(info_path, lambda: info.update(read_sealed(info_path, root))):
            continue
        if not store._fresh(info, base.partition("-")[0]):
            found[-1] = Finding(_rel(root, info_path), "stale", "made from other content; rebuilt on use")
            continue
        files = info.get("files", {})
        for suffix, key in ((".faiss", "faiss"), (".radius.npy", "radius")):
            path = folder / f"{base}{suffix}"
            if key == "faiss" or files.get(key) is not None or path.exists():
                attempt(path, lambda: check_file(path, files.get(key), full=True, root=root))
    for faiss_path in sorted(folder.glob("*.faiss")):
        if not faiss_path.with_suffix(".json").exists():
            found.append(Finding(_rel(root, faiss_path.with_suffix(".json")), "missing",
                                 f"{faiss_path.name} has none: its write did not finish"))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        manifest_path = sub / "index.json"
        manifest = {}
        if not attempt(manifest_path, lambda: manifest.update(read_sealed(manifest_path, root))):
            continue
        if not store._fresh(manifest, sub.name.partition("-")[0]):
            found[-1] = Finding(_rel(root, manifest_path), "stale", "made from other content; rebuilt on use")
            continue
        for d in manifest.get("shards", []):
            spec = ShardSpec.from_json(sub, d)
            attempt(spec.path, lambda: check_index_shard(spec, manifest.get("metric"), root, full=True))


def _verify_density(store, path: Path, found: list[Finding]) -> None:
    try:
        rho, _, _, fp = read_density_cache(path)
    except Damaged as exc:
        old = exc.reason.startswith("no checksum")       # dropped and recomputed on use, like a stale one
        found.append(Finding(_rel(store.root, path), "stale" if old else "damaged", exc.reason))
        return
    if fp != store.fingerprint or rho.shape != (store.n_rows,):
        found.append(Finding(_rel(store.root, path), "stale", "made from other content; recomputed on use"))
    else:
        found.append(Finding(_rel(store.root, path), "ok"))


def _verify_scale(store, path: Path, found: list[Finding]) -> None:
    try:
        _, _, _, fp = read_scale_cache(path)
    except Damaged as exc:
        found.append(Finding(_rel(store.root, path), "damaged", exc.reason))
        return
    found.append(Finding(_rel(store.root, path), "ok" if fp == store.fingerprint else "stale",
                         "" if fp == store.fingerprint else "made from other content; measured again on use"))


def repair_store(root, findings: list[Finding] | None = None, *, embedder=None, engine=None,
                 source_root=None) -> list[Finding]:
    """Rebuild what ``verify_store`` found damaged, and only that: damaged or missing shards are embedded
    again from the pool files (which must be unchanged; found again under ``source_root`` if they moved,
    see tsds.store.sources), damaged indexes rebuilt, damaged density caches removed (recomputed on use).
    Returns the store verified again."""
    from tsds.io.readers import TextSpec
    from tsds.store.build import build_store
    from tsds.store.pool import PoolStore

    root = Path(root)
    findings = verify_store(root) if findings is None else findings
    bad = [f for f in findings if f.problem]
    if not bad:
        return findings
    if any(f.file == "store.json" and f.status == "unsupported" for f in bad):
        raise InputError(f"{root / 'store.json'}: {next(f.detail for f in bad if f.file == 'store.json')}")
    if any(f.file == "store.json" and f.status != "incomplete" for f in bad):
        raise InputError(f"{root / 'store.json'}: {next(f.detail for f in bad if f.file == 'store.json')}; "
                         "it alone records how the store was built: run the store's `tsds pool build` command "
                         "again (same files and options, same --out)")
    meta = read_sealed(root / "store.json", root)
    recorded = meta.get("index") or {}
    bases = set()
    for f in bad:
        path = root / f.file
        if f.file.startswith(("densities/", "scale/")):
            path.unlink(missing_ok=True)
        elif f.file.startswith("index/"):
            parts = Path(f.file).parts
            if len(parts) > 2:                                   # a sharded index: index/<base>/...
                bases.add((parts[1], True))
                (root / "index" / parts[1] / "index.json").unlink(missing_ok=True)
            else:
                base = parts[1].split(".")[0]
                bases.add((base, False))
                (root / "index" / f"{base}.json").unlink(missing_ok=True)
    if any(f.file == "store.json" or f.file.startswith("shards/") for f in bad):
        formats = {e.get("format") for e in meta["files"]}
        from tsds.store.sources import resolve_files

        build_store([e["path"] for e in resolve_files(meta["files"], root, source_root)], root,
                    embedder_spec=meta["embedder_spec"],
                    spec=TextSpec.from_dict(meta["text_spec"]), on_bad_row=meta["on_bad_row"],
                    shard_rows=meta["shard_rows"], fmt=formats.pop() if len(formats) == 1 else None,
                    metric=recorded.get("metric", "euclidean"), index_kind=recorded.get("kind", "auto"),
                    index_shards=recorded.get("shards"), embedder=embedder, engine=engine)
    store = PoolStore(root, engine=engine)
    for base, sharded in sorted(bases, key=lambda b: "-" in b[0]):   # the default indexes first
        metric, _, kind = base.partition("-")
        default = not kind
        if default:
            kind = recorded.get("kind", "auto") if recorded.get("metric") == metric else "auto"
        shards = len({p.name[:10] for p in (root / "index" / base).glob("shard-*")}) or None if sharded else None
        index = store.index(metric, kind, shards=shards, mapped=False, default=default)
        if hasattr(index, "close"):
            index.close()
    return verify_store(root)
