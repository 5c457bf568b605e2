"""Atomic writing: a temporary name in the destination's folder, fsync, permissions from the umask, rename.

Every file and folder tsds writes goes through here, so that a reader never sees half a file, a killed
writer leaves only temporaries (``.<name>.<8 chars>[.npy|.npz]`` for files, ``.<name>.tmp-<pid>-<host>-<chars>``
for folders) that the next run recognises, and outputs get the modes the user's umask asks for
(``tempfile`` alone would make them private: 0600 / 0700).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (/proc), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()


def _named(exc: OSError, path) -> OSError:
    """``exc`` with ``path`` as its file name where it has none (so that the one-line error names it)."""
    if exc.filename is None and exc.errno is not None:
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    return exc


def temp_file(path: str | os.PathLike, suffix: str = "") -> str:
    """An empty temporary file beside ``path``: ``.<name>.<8 random chars><suffix>``."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise _named(exc, path.parent) from None
    os.close(fd)
    return tmp


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Flush ``tmp`` to disk, give it the umask's mode, and rename it over ``path``."""
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.fsync(fd)
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary file name beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    tmp = temp_file(path, suffix)
    try:
        yield tmp
        commit(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        named = _named(exc, path)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data, *, sort_keys: bool = True, default=None) -> None:
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n").encode())


def write_npy(path: str | os.PathLike, array) -> None:
    with replacing(path, ".npy") as tmp, open(tmp, "wb") as f:
        save_npy_into(f, array)


class _Writes:
    """Only the write method of a file: numpy then writes through it, and a failed write raises the system's
    error (EFBIG, ENOSPC) instead of the bare 'n requested and m written' of ndarray.tofile."""

    def __init__(self, f):
        self.write = f.write


def save_npy_into(f, array) -> None:
    """``np.save`` into the open binary file ``f``, with the system's error when a write fails."""
    import numpy as np

    np.save(_Writes(f), array, allow_pickle=False)


def write_npz(path: str | os.PathLike, **arrays) -> None:
    import numpy as np

    with replacing(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def write_index(path: str | os.PathLike, index) -> None:
    """FAISS streams the index into the temporary file in chunks (no in-memory copy of the whole index).
    Through a Python writer, not by file name: FAISS's own file writer loses a failed write (a file-size
    limit, a full disk) and leaves a truncated index behind with only a message on stderr."""
    import faiss

    with replacing(path) as tmp, open(tmp, "wb", buffering=0) as f:
        def write_all(data) -> None:
            view = memoryview(data)
            while view:
                view = view[f.write(view):]

        try:
            faiss.write_index(index, faiss.PyCallbackIOWriter(write_all))
        except RuntimeError as exc:
            raise _faiss_error(str(exc), path) from None


def _faiss_error(message: str, path) -> OSError:
    """FAISS reports a failed write as text ('... close error: File too large'): the system error it names."""
    named = [code for code in errno.errorcode if code and os.strerror(code) in message]
    if named:
        code = max(named, key=lambda c: len(os.strerror(c)))
        return OSError(code, os.strerror(code), str(path))
    return OSError(errno.EIO, f"FAISS could not write the index ({message.strip().splitlines()[-1]})", str(path))


# ---- folders ----------------------------------------------------------------------------------------

def _owner() -> str:
    """``<pid>-<host>``: who writes a temporary folder (the host, because a shared folder may be written from
    several machines, and a pid says nothing about another machine's processes)."""
    return f"{os.getpid()}-{hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]}"


def temp_dir(path: str | os.PathLike) -> Path:
    """An empty temporary folder beside ``path``, named ``.<name>.tmp-<pid>-<host>-<chars>`` so that a later
    run can tell whether its writer is still alive (see ``sweep_stale``); mode from the umask."""
    path = Path(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{_owner()}-", dir=path.parent))
        os.chmod(tmp, dir_mode())
    except OSError as exc:
        raise _named(exc, path.parent) from None
    return tmp


def replace_dir(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``path`` (which may exist: it is moved aside, then removed)."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{_owner()}"
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs (on this machine); a process of another user counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders left beside ``path`` by writers of ``path`` on this machine that died (a
    killed run): ``.<name>.tmp-<pid>-<host>-*`` of a dead pid. A ``.<name>.old-<pid>-<host>`` of a dead pid is
    the previous output, moved aside by a writer killed between its two renames: it is put back if ``path``
    is missing, else removed. Returns what was removed or restored."""
    path = Path(path)
    done = []
    if not path.parent.is_dir():
        return done
    host = _owner().split("-")[1]
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(tmp|old)-(\d+)-([0-9a-f]{{8}})(-.*)?$")
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if not m or m.group(3) != host or pid_alive(int(m.group(2))) or entry.is_symlink() or not entry.is_dir():
            continue
        if m.group(1) == "old" and not path.exists():
            os.replace(entry, path)
        else:
            shutil.rmtree(entry, ignore_errors=True)
        done.append(entry)
    return done
