"""Whether the pool files still hold what the store embedded.

A store records each source file's size, mtime and sha256, and (from this format on) a hash of every
row's embedded text (``shards/NNNNNN.hash.npy``: 8 bytes of blake2b per row, little-endian uint64).
Records fetched back by location are checked against both: the file's size and mtime (its sha256 when
those changed, or when rows have no text hash: stores built before the hashes), and each record's text,
extracted again with the store's text spec, against the hash of the text that was embedded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tsds.errors import InputError
from tsds.io.arrays import file_sha256
from tsds.io.readers import RowError, TextSpec

HASH_SUFFIX = ".hash.npy"


def texts_sha256(texts: list[str]) -> str:
    """One hash of a shard's texts in order (each length-prefixed): tells whether a finished shard holds
    the text the pool holds now."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def text_hash(text: str) -> int:
    """8 bytes of blake2b of the text's UTF-8 (lone surrogates, which JSON can carry, passed through)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def text_hashes(texts) -> np.ndarray:
    """`text_hash` of each text, as uint64."""
    return np.fromiter((text_hash(t) for t in texts), dtype=np.uint64, count=len(texts))


def _files_of(p: Path) -> list[Path]:
    return sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]


def path_state(p: Path) -> tuple[int, int]:
    """(bytes, mtime_ns) of a file, or of a directory's files (total bytes, latest mtime)."""
    stats = [f.stat() for f in _files_of(p)]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def path_sha256(p: Path) -> str:
    """sha256 of a file; of a directory, over its files' relative names and sha256s, in name order."""
    if not p.is_dir():
        return file_sha256(p)
    h = hashlib.sha256()
    for f in _files_of(p):
        h.update(str(f.relative_to(p)).encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def check_source(entry: dict, *, full: bool) -> None:
    """Refuse a pool file that is gone or whose content differs from the store's record of it.

    Unchanged size and mtime pass at once unless ``full``; otherwise (or with no mtime recorded) the
    sha256 decides, so a file that was only touched passes."""
    p = Path(entry["path"])
    if not p.exists():
        raise InputError(f"{p}: pool file of the store is missing")
    mtime = entry.get("mtime_ns")
    if not full and mtime is not None and path_state(p) == (entry["bytes"], mtime):
        return
    if path_sha256(p) != entry["sha256"]:
        raise InputError(f"{p}: pool file changed since the store was built (sha256 differs); "
                         "its records cannot be fetched by location; rebuild the store")


def check_record(spec: TextSpec, record: dict, expected: int, path: str, row: int, location: int) -> None:
    """Refuse a fetched record whose text (extracted with the store's spec) is not the one embedded."""
    try:
        same = text_hash(spec.extract(record)) == expected
    except RowError:
        same = False
    if not same:
        raise InputError(f"{path}: row {row} (location {location}) is not the text the store embedded; "
                         "the pool file changed since the store was built; rebuild the store")


def hash_path(shard_file: Path) -> Path:
    """shards/NNNNNN.hash.npy beside shards/NNNNNN.npy."""
    return shard_file.with_name(shard_file.name[:-len(".npy")] + HASH_SUFFIX)


def pool_texts(store) -> list[str]:
    """Every row's embedded text, in store row order: read again from the pool files with the store's text
    spec and bad-row policy, each file checked as for a fetch and each text against its stored hash, so a
    method that reads the texts (DSIR) sees exactly what was embedded, or gets a one-line error."""
    from tsds.io.readers import read_texts

    texts: list[str] = []
    for entry in store.files:
        check_source(entry, full=False)
        t, _ = read_texts(entry["path"], store.text_spec, fmt=entry.get("format"),
                          on_bad_row=store.meta.get("on_bad_row", "fail"))
        texts.extend(t)
    if len(texts) != store.n_rows:
        raise InputError(f"{store.files[0]['path']}: the pool files hold {len(texts)} texts, the store "
                         f"{store.root} {store.n_rows} rows; the files changed since the build: rebuild the store")
    expected, known = store.text_hashes(np.arange(store.n_rows))
    wrong = np.flatnonzero(known & (text_hashes(texts) != expected))
    if wrong.size:
        raise InputError(f"{store.root}: row {int(wrong[0])} of the pool files is not the text the store embedded "
                         f"({wrong.size} such rows); the pool files changed since the build: rebuild the store")
    return texts
