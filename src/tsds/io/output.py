"""Atomic output: everything is written into a temporary sibling folder, then renamed into place."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.errors import InputError, ParameterError

_WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_RECORDS_NAME = re.compile(r"^[^/\\\x00]+$")


def _resolved(path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _guarded() -> list[tuple[Path, str]]:
    """Folders an output may never replace, nor any folder above them."""
    places = [(Path("/"), "the root folder"), (Path.cwd(), "the current folder")]
    try:
        places.append((Path.home(), "the home folder"))
    except (KeyError, RuntimeError):
        pass
    return [(_resolved(p), why) for p, why in places]


def _inputs(inputs) -> list[tuple[Path, str]]:
    return [(_resolved(p), str(p)) for p in inputs if p is not None and str(p) != ""]


def check_not_over_inputs(out, inputs=(), flag: str = "--out") -> Path:
    """Refuse an output folder that is, or holds, an input, or is the root, home or current folder (or above
    one of them): replacing it would delete what the command reads. Symlinks are resolved."""
    where = _resolved(out)
    for place, why in _guarded():
        if where == place or where in place.parents:
            raise ParameterError(f"{flag} {out}: is {why}" + ("" if where == place else f" or above it ({place})")
                                 + "; choose a new folder for the output")
    for path, name in _inputs(inputs):
        if path == where or where in path.parents:
            raise ParameterError(f"{flag} {out}: holds the input {name}; choose another output folder")
    return where


def check_output_dir(out: str | os.PathLike, overwrite: bool, inputs=(), flag: str = "--out") -> Path:
    """Everything about the output folder that can fail, checked before any work: not over an input (see
    ``check_not_over_inputs``) nor a pool store, absent unless overwrite, a folder, its parent writable.
    Temporary folders of earlier runs of the same output that were killed are removed first
    (``tsds.atomic.sweep_stale``)."""
    out = Path(out)
    check_not_over_inputs(out, inputs, flag)
    if (out / "store.json").is_file():
        raise ParameterError(f"{flag} {out}: is a pool store; choose another output folder")
    atomic.sweep_stale(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: output folder exists; choose another or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: parent folder of the output does not exist")
    try:
        atomic.temp_dir(out).rmdir()
    except OSError as exc:
        raise InputError(f"{out.parent}: cannot write the output here ({exc.strerror or exc})") from None
    return out


def check_output_file(path: str | os.PathLike | None, inputs=(), flag: str = "--out",
                      parent_made: bool = False) -> Path | None:
    """A file the command will write: not a folder, not an input nor inside an input pool store, and its
    folder exists (or, with ``parent_made``, will be made by the command)."""
    if path is None:
        return None
    path = Path(path)
    where = _resolved(path)
    for src, name in _inputs(inputs):
        if src == where:
            raise ParameterError(f"{flag} {path}: is the input {name}; choose another file")
        if src in where.parents and (src / "store.json").is_file():
            raise ParameterError(f"{flag} {path}: lies inside the pool store {name}; choose another file")
    if path.is_dir():
        raise ParameterError(f"{flag} {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        if parent_made:
            return path
        raise InputError(f"{path.parent}: folder of {flag} does not exist")
    try:
        os.unlink(atomic.temp_file(path))
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot write in {path.parent} ({exc.strerror or exc})") from None
    return path


def check_records_name(name: str) -> str:
    """The records file's name: a plain file name (no folder part, not . or ..), written inside --out."""
    if not _RECORDS_NAME.match(name or "") or name in (".", "..") or name.startswith("~"):
        raise ParameterError(f"--records {name!r}: must be a plain file name (written inside --out), "
                             "without folders")
    return name


STORE_SOURCE = "source.jsonl"  # the pool file a store built from texts in memory keeps in its own folder
_STORE_ENTRIES = {"store.json", ".build.lock", "shards", STORE_SOURCE}


def check_store_dir(out: str | os.PathLike, inputs=(), flag: str = "--out") -> Path:
    """A pool store folder to build or extend: not over an input, and either absent, empty, or a store (a build writes and sweeps its own names there, so it must not share a
    folder with other files)."""
    out = Path(out)
    where = _resolved(out)
    for path, name in _inputs(inputs):
        if path == where / STORE_SOURCE:
            continue  # the store's own copy of texts given in memory
        if path == where or where in path.parents:
            raise ParameterError(f"{flag} {out}: holds the input {name}; choose another folder for the store")
        if path in where.parents and path.is_dir():  # a saved dataset's folder: its content hash would change
            raise ParameterError(f"{flag} {out}: lies inside the input folder {name}; choose another folder")
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{out}: exists and is not a folder")
        names = {p.name for p in out.iterdir()}
        if names and not names & _STORE_ENTRIES:
            raise ParameterError(f"{flag} {out}: is a folder of other files, not a pool store; choose a new or "
                                 "empty folder")
    here = out
    while not here.is_dir() and here != here.parent:
        here = here.parent
    try:
        atomic.temp_dir(here / out.name).rmdir()
    except OSError as exc:
        raise InputError(f"{out}: cannot write the store in {here} ({exc.strerror or exc})") from None
    return out


@contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False, inputs=()):
    """Yield a temporary folder; on success it replaces ``out``, on error it is removed."""
    out = check_output_dir(out, overwrite, inputs)
    tmp = atomic.temp_dir(out)
    try:
        yield tmp
        atomic.replace_dir(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.filename is not None or exc.errno not in _WRITE_ERRORS:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(out)) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        atomic.save_npy_into(f, array)


def save_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n")


def _default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
