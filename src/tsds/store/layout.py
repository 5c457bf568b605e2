"""A pool store's layout, opened and checked: store.json, the shards' files and what they hold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tsds.embed.base import zero_vector_rows
from tsds.errors import InputError
from tsds.io.readers import TextSpec
from tsds.store.checks import Damaged, array_sha256, check_npy, fingerprint, read_sealed
from tsds.store.provenance import hash_path


FORMAT_VERSION = 1
SHARD_ROWS = 8192


class ShardVectors:
    """The store's embeddings as a vector source (see tsds.io.arrays), one shard at a time."""

    def __init__(self, store: StoreLayout, first: int = 0, last: int | None = None):
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


class StoreLayout:
    """A pool store folder opened for reading: its layout, metadata, checks and arrays (`PoolStore` adds the
    index and the density cache)."""

    def __init__(self, root: str | os.PathLike, engine=None, source_root: str | os.PathLike | None = None):
        self.root = Path(root)
        self.engine = engine
        self.source_root = source_root
        self._files: list[dict] | None = None
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
        """The pool files' records, each with ``path`` where the file is now (see tsds.store.sources: a pool
        moved with its store, or found under ``source_root``), ``recorded_path`` and ``state``."""
        if self._files is None:
            from tsds.store.sources import resolve_files

            self._files = resolve_files(self.meta["files"], self.root, self.source_root)
        return self._files

    @property
    def text_spec(self) -> TextSpec:
        return TextSpec.from_dict(self.meta["text_spec"])

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
