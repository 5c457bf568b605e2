"""Where a store's pool files are now: the store records each file's absolute path, its path relative to the
store folder, and its path relative to the pool's source root (the deepest folder holding every pool file).

A store and its pool may be moved (together, or the pool alone with ``source_root``): each file is looked
for at its recorded path, then under ``source_root`` (by its path relative to the recorded source root, then
by its name), then relative to the store folder. Whatever is found is used only if its content is the one
embedded: its size and mtime, else its sha256 (tsds.store.provenance.check_source), checked where records
are read back; a moved file whose content differs is refused there, named.
"""

from __future__ import annotations

import os
from pathlib import Path

from tsds.store.provenance import path_state


def source_root_of(paths) -> str:
    """The deepest folder holding every one of ``paths`` (absolute)."""
    parents = [os.path.dirname(str(p)) for p in paths]
    return os.path.commonpath(parents) if parents else ""


def relative_paths(entry: dict, root: Path, source_root: str) -> dict:
    """``entry`` with its path relative to the store folder (``relpath``) and to the pool's source root
    (``source_path``, what records name as ``_tsds_file``); POSIX separators."""
    p = str(entry["path"])
    try:
        rel = os.path.relpath(p, Path(root).resolve())
    except ValueError:           # another drive (Windows): no relative path
        rel = None
    source = os.path.relpath(p, source_root) if source_root else os.path.basename(p)
    return {**entry, "relpath": None if rel is None else Path(rel).as_posix(), "source_path": Path(source).as_posix()}


def inside_store(entry: dict) -> bool:
    """Whether the file lies in the store folder (the copy of texts given in memory): it moves with the store."""
    rel = entry.get("relpath")
    return rel is not None and not rel.startswith("../") and rel != ".."


def _candidates(entry: dict, root: Path, source_root) -> list[Path]:
    root = root.resolve()
    found = []
    if inside_store(entry):
        found.append(root / entry["relpath"])
    found.append(Path(entry["path"]))
    if source_root is not None:
        base = Path(source_root)
        found += [base / entry.get("source_path", Path(entry["path"]).name), base / Path(entry["path"]).name]
    if entry.get("relpath") is not None and not inside_store(entry):
        found.append(root / entry["relpath"])
    return [Path(os.path.normpath(p)) for p in found]


def locate(entry: dict, root: Path, source_root=None) -> tuple[Path | None, str]:
    """(where the file is now, its state): ``ok`` at its recorded place (or in the store folder, for a file
    kept there), ``moved`` found elsewhere, ``missing`` nowhere. Among the places that exist, the first whose
    size and mtime are the recorded ones is taken, else the first; its content is checked on use."""
    existing = []
    for c in _candidates(entry, Path(root), source_root):
        if c.exists() and c not in existing:
            existing.append(c)
    if not existing:
        return None, "missing"
    recorded = (entry.get("bytes"), entry.get("mtime_ns"))
    same = [c for c in existing if path_state(c) == recorded]
    where = (same or existing)[0]
    home = Path(root).resolve() / entry["relpath"] if inside_store(entry) else Path(entry["path"])
    return where, "ok" if where == home else "moved"


def resolve_files(files: list[dict], root: Path, source_root=None) -> list[dict]:
    """The store's file records with ``path`` where each file is now (``recorded_path``: where it was at the
    build; ``state``: ok, moved or missing; a missing one keeps its recorded path, so that its use names it)."""
    common = source_root_of([e["path"] for e in files])
    out = []
    for entry in files:
        if "source_path" not in entry:        # a store built before paths were recorded relative
            entry = relative_paths(entry, root, common)
        where, state = locate(entry, root, source_root)
        out.append({**entry, "path": str(where) if where is not None else entry["path"],
                    "recorded_path": entry["path"], "state": state})
    return out
