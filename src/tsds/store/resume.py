"""Resuming a build: the previous store.json, the finished shards that can be kept, and whether the store
may be built on at all with these files and parameters."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from tsds.errors import InputError
from tsds.io.readers import TextSpec
from tsds.store.checks import Damaged, check_npy, npy_sha256, read_sealed
from tsds.store.layout import _read_store_meta
from tsds.store.provenance import hash_path

log = logging.getLogger("tsds")


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
    old_spec = TextSpec.from_dict(old.get("text_spec") or {}).to_dict()  # in normal form, old keys filled in
    if old_spec != spec_dict or old.get("on_bad_row") != on_bad_row:
        raise InputError(f"{root}: store was built with text spec {old.get('text_spec')} "
                         f"(on_bad_row={old.get('on_bad_row')}); got {spec_dict} (on_bad_row={on_bad_row})")
    if old.get("shard_rows") != shard_rows:
        raise InputError(f"{root}: store uses {old.get('shard_rows')} rows per shard, not {shard_rows}")
    old_files = old.get("files", [])
    if not old.get("complete"):
        same = 0
        while same < min(len(old_files), len(entries)) and old_files[same]["sha256"] == entries[same]["sha256"]:
            same += 1
        return same
    if len(entries) < len(old_files):
        raise InputError(f"{root}: store holds {len(old_files)} pool file(s); pass them all, in order, "
                         "then any new ones (or only the new ones with --append; --overwrite rebuilds it)")
    for i, (o, e) in enumerate(zip(old_files, entries)):
        if o["path"] != e["path"] and o["sha256"] != e["sha256"]:   # the same content elsewhere: a moved file
            raise InputError(f"{root}: pool file {i + 1} of the store must be {o['path']}, got {e['path']} "
                             "(pass only new files with --append; --overwrite rebuilds the store)")
        if o["sha256"] != e["sha256"]:
            raise InputError(f"{e['path']}: content changed since the store was built (sha256 differs); "
                             "build a new store")
    return len(entries)
