"""Integrity of a pool store: what every file should hold, checked cheaply on use and fully by `tsds pool verify`.

What is recorded when a file is written:

- every metadata .json (store.json, shard and index .json, index.json) carries ``checksum``, the sha256 of
  its own content without that key (``seal``), so a flipped byte or a truncated file never passes as data;
- a shard's .json has ``embeddings_sha256``, ``locations_sha256`` and ``text_hashes_sha256`` (of the arrays'
  bytes) and its row count;
- store.json, once complete, has ``shard_hashes`` (each shard's embeddings hash, so a shard of another store
  is not taken for this one's) and ``fingerprint``: the sha256 of every shard's row count and embeddings
  hash, the identity of the store's content. Index .json files and density caches record the fingerprint they
  were made from, so one of another store (or of this store before an append) is never used as this one's;
- an index .json has each index file's size, sha256 and a sampled sha256 (``file_record``);
- a density cache (.npz) holds the sha256 of its two arrays beside them.

What is checked, and when (measured on the project's 2-core machine, files in the page cache: sha256 of a
64 MB file 48 ms, of a 300 MB index 0.25-0.35 s; a 10M-row store's 10 GB of embeddings ~10 s):

- opening a complete store (``PoolStore.check``, once per instance, before any use): store.json's and every
  shard .json's checksum and recorded embeddings hash, and each shard .npy / .loc.npy's header (dtype,
  shape) and size: 0.17 s per 1,000 shards (8M rows at the default 8,192 rows a shard; 0.04 s of it reading
  the shard .json files, which every use does anyway); no embedding is read;
- loading an index: its .json's checksum and fingerprint, each file's size, and its full sha256 up to
  ``FULL_HASH_UP_TO`` bytes (48 ms at 64 MB), above that a sampled hash (``SAMPLES`` blocks of 64 KB at fixed
  places: 7 ms at 300 MB): loading reads the whole file anyway, but a selection should not pay a second full
  pass on every run; a flipped byte between the samples of a large index is left to `tsds pool verify`;
- reading locations and text hashes (writing records): their sha256 (8 bytes a row; read in full anyway);
- loading a density cache: its arrays' sha256 (a damaged or foreign cache is dropped with a warning and
  recomputed: it only saves time);
- resuming or re-running a build: every finished shard's full hashes, since the build reads the whole
  pool's text again anyway (a damaged shard is embedded again, a damaged index rebuilt);
- ``tsds pool verify``: everything, every byte hashed; ``--repair`` rebuilds just what is damaged.

Damage found on use raises ``Damaged``: one line naming the file and the repair command.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tsds.errors import InputError


SEAL = "checksum"
FULL_HASH_UP_TO = 64 << 20
SAMPLES = 64
SAMPLE_BYTES = 1 << 16


class Damaged(InputError):
    """A store file that does not hold what was recorded when it was written."""

    def __init__(self, path, reason: str, root=None):
        self.path, self.reason = Path(path), reason
        if self.path.name == "store.json":      # it alone records how the store was built
            hint = "run the store's `tsds pool build` command again (same files and options, same --out)"
        else:
            hint = f"repair it with `tsds pool verify --repair{f' {root}' if root is not None else ''}`"
        super().__init__(f"{path}: {reason}; the pool store is damaged: {hint}")


def _canonical(data: dict) -> bytes:
    """The content as it reads back from the file (tuples as lists, keys as strings), in one spelling."""
    plain = json.loads(json.dumps({k: v for k, v in data.items() if k != SEAL}))
    return json.dumps(plain, sort_keys=True).encode()


def seal(data: dict) -> dict:
    """``data`` with its checksum (written by the store's json writer as is)."""
    return {**data, SEAL: hashlib.sha256(_canonical(data)).hexdigest()}


def read_sealed(path: Path, root=None) -> dict:
    """A metadata .json, its checksum checked (files of older stores carry none and are taken as they are)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Damaged(path, "missing", root) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Damaged(path, f"unreadable ({type(exc).__name__})", root) from None
    if not isinstance(data, dict):
        raise Damaged(path, "not a json object", root)
    if SEAL in data and data[SEAL] != hashlib.sha256(_canonical(data)).hexdigest():
        raise Damaged(path, "checksum mismatch", root)
    return data


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def fingerprint(shards: list[dict]) -> str:
    """The identity of a store's content: every shard's rows and embeddings hash, in order."""
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{int(s['rows'])}:{s.get('embeddings_sha256', '')}\n".encode())
    return h.hexdigest()


def _npy_header(shape: tuple, dtype) -> bytes:
    import io

    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def check_npy(path: Path, shape: tuple, dtype, root=None) -> None:
    """An .npy file's header says ``shape`` and ``dtype`` and its size is exactly header + data."""
    want_header = _npy_header(shape, dtype)
    want = len(want_header) + int(np.prod(shape)) * np.dtype(dtype).itemsize
    try:
        with open(path, "rb") as f:       # the header np.save writes for this array: no parsing needed
            if f.read(len(want_header)) == want_header and os.fstat(f.fileno()).st_size == want:
                return
    except FileNotFoundError:
        raise Damaged(path, "missing", root) from None
    except OSError as exc:
        raise Damaged(path, f"unreadable ({exc.strerror})", root) from None
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            got_shape, fortran, got_dtype = read(f)
            offset = f.tell()
    except FileNotFoundError:
        raise Damaged(path, "missing", root) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise Damaged(path, f"bad .npy header ({exc})", root) from None
    if tuple(got_shape) != tuple(shape) or got_dtype != np.dtype(dtype) or fortran:
        raise Damaged(path, f"holds {got_dtype} {tuple(got_shape)}, expected {np.dtype(dtype)} {tuple(shape)}", root)
    size = os.path.getsize(path)
    want = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size != want:
        raise Damaged(path, f"{size} bytes, expected {want}", root)


def npy_sha256(path: Path) -> str:
    """The sha256 of an .npy file's data (what a shard .json records)."""
    mm = np.load(path, mmap_mode="r", allow_pickle=False)
    h = hashlib.sha256()
    flat = mm.reshape(-1) if mm.size else mm
    step = max(1, (16 << 20) // max(1, mm.itemsize))
    for a in range(0, flat.size, step):
        h.update(memoryview(np.ascontiguousarray(flat[a:a + step])).cast("B"))
    return h.hexdigest()


def _sample_offsets(size: int) -> list[int]:
    if size <= SAMPLES * SAMPLE_BYTES:
        return [0]
    last = size - SAMPLE_BYTES
    return sorted({round(last * j / (SAMPLES - 1)) for j in range(SAMPLES)})


def sampled_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for off in _sample_offsets(size):
            f.seek(off)
            h.update(f.read(SAMPLE_BYTES if size > SAMPLES * SAMPLE_BYTES else size))
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    from tsds.io.arrays import file_sha256 as full

    return full(path)


def file_record(path: Path) -> dict:
    """Size and hashes of a file just written, for its .json."""
    size = os.path.getsize(path)
    return {"bytes": size, "sha256": file_sha256(path), "sample_sha256": sampled_sha256(path, size)}


def check_file(path: Path, record: dict | None, *, full: bool = False, root=None) -> None:
    """``path`` against its ``record``: size always; full sha256 when ``full`` or small, else the sampled one."""
    if record is None:
        if not Path(path).is_file():
            raise Damaged(path, "missing", root)
        return
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise Damaged(path, "missing", root) from None
    if size != record["bytes"]:
        raise Damaged(path, f"{size} bytes, expected {record['bytes']}", root)
    if full or size <= FULL_HASH_UP_TO:
        if file_sha256(path) != record["sha256"]:
            raise Damaged(path, "sha256 mismatch", root)
    elif sampled_sha256(path, size) != record["sample_sha256"]:
        raise Damaged(path, "sha256 mismatch (sampled)", root)


def arrays_digest(*arrays: np.ndarray) -> str:
    """What a cache file (densities, pool scale) records of its arrays: the sha256 of their sha256s, in order."""
    return hashlib.sha256(b"".join(bytes.fromhex(array_sha256(a)) for a in arrays)).hexdigest()


def read_density_cache(path: Path):
    """(rho, count, digest, fingerprint) of a density cache, its digest checked; raises Damaged."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            if not {"rho", "count", "sha256", "fingerprint"} <= set(z.files):
                raise Damaged(path, "no checksum (written by an older tsds)")
            rho, count = z["rho"], z["count"]
            digest, fp = str(z["sha256"]), str(z["fingerprint"])
    except Damaged:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise Damaged(path, f"unreadable ({type(exc).__name__})") from None
    if rho.dtype != np.float64 or count.dtype != np.int64 or rho.shape != count.shape or rho.ndim != 1 \
            or arrays_digest(rho, count) != digest:
        raise Damaged(path, "sha256 mismatch")
    return rho, count, digest, fp


def check_index_shard(spec, metric: str, root=None, *, full: bool = False) -> dict:
    """An index shard's .json (sealed, of ``spec``) and its files against the sizes and hashes it records."""
    meta_path = Path(spec.path).with_suffix(".json")
    meta = read_sealed(meta_path, root)
    if (meta.get("start"), meta.get("rows"), meta.get("kind"), meta.get("metric")) != \
            (spec.start, spec.rows, spec.kind, metric):
        raise Damaged(meta_path, "describes another index shard than index.json lists", root)
    files = meta.get("files", {})
    check_file(Path(spec.path), files.get("faiss"), full=full, root=root)
    if spec.radius_path:
        check_file(Path(spec.radius_path), files.get("radius"), full=full, root=root)
    return meta
