"""What a store holds, cheaply: its files (where they are now and in which state), embedder, text spec,
indexes, density caches, sizes on disk and the rows the build skipped, clipped or embedded as zeros. Only
``check=True`` reads the pool files (sha256 of each); otherwise a file's size and mtime tell its state."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tsds.store.layout import StoreLayout
from tsds.store.provenance import path_sha256, path_state
from tsds.store.sources import source_root_of

_DENSITY = re.compile(r"^(?P<metric>[a-z]+)-sigma(?P<sigma>.+?)(?:-nearest(?P<lists>\d+)-(?P<kind>[a-z]+))?\.npz$")


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def file_state(entry: dict, check: bool) -> str:
    """ok / moved (found elsewhere, same size and mtime or, with ``check``, same sha256) / changed (size
    differs, or sha256 with ``check``) / touched (mtime differs only: ``check`` tells) / missing."""
    if entry["state"] == "missing":
        return "missing"
    where = Path(entry["path"])
    size, mtime = path_state(where)
    if size != entry["bytes"]:
        return "changed"
    if check:
        return entry["state"] if path_sha256(where) == entry["sha256"] else "changed"
    return entry["state"] if mtime == entry.get("mtime_ns") else "touched"


def _indexes(root: Path) -> list[dict]:
    found = []
    folder = root / "index"
    for meta in sorted(folder.glob("*.json")) + sorted(folder.glob("*/index.json")):
        base = meta.parent.name if meta.name == "index.json" else meta.stem
        try:
            m = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            m = {}
        sharded = meta.name == "index.json"
        size = _bytes(meta.parent) if sharded else sum(_bytes(p) for p in folder.glob(f"{base}.*"))
        shards = m.get("shards")
        found.append({"name": base, "metric": m.get("metric", base.partition("-")[0]),
                      "kind": m.get("kind", base.partition("-")[2] or "?"),
                      "shards": len(shards) if isinstance(shards, list) else (1 if not sharded else None),
                      "bytes": size})
    return found


def _densities(root: Path, store: StoreLayout) -> list[dict]:
    """Each density cache: metric, sigma, bytes, rows known (NaN: not computed) and its state: "ok" (of this
    store's content), "stale" (of other content: never used) or "damaged" (recomputed on use)."""
    import numpy as np

    from tsds.store.checks import Damaged, read_density_cache

    found = []
    for p in sorted((root / "densities").glob("*.npz")):
        m = _DENSITY.match(p.name)
        if not m:
            continue
        entry = {"metric": m["metric"], "sigma": float(m["sigma"]), "bytes": p.stat().st_size, "known": 0,
                 "state": "ok", "density": "exact" if m["lists"] is None else f"approx, {m['lists']} nearest {m['kind']} lists"}
        try:
            rho, _, _, fp = read_density_cache(p)
        except Damaged:
            entry["state"] = "damaged"
        else:
            if fp != store.fingerprint or rho.shape != (store.n_rows,):
                entry["state"] = "stale"
            else:
                entry["known"] = int(np.count_nonzero(~np.isnan(rho)))
        found.append(entry)
    return found


def store_info(store: StoreLayout, check: bool = False) -> dict:
    """A store's summary as plain data (what `tsds pool info` prints)."""
    root = Path(store.root)
    m = store.meta
    rows_of: dict[int, int] = {}
    for s in store.shard_meta():
        rows_of[int(s["file_index"])] = rows_of.get(int(s["file_index"]), 0) + int(s["rows"])
    files = [{"path": e["path"], "recorded_path": e["recorded_path"], "source_path": e["source_path"],
              "format": e.get("format"), "rows": rows_of.get(i, 0), "bytes": e["bytes"],
              "state": file_state(e, check)} for i, e in enumerate(store.files)]
    sizes = {"shards": _bytes(root / "shards"), "index": _bytes(root / "index"),
             "densities": _bytes(root / "densities"), "scale": _bytes(root / "scale")}
    sizes["total"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "store": str(root), "complete": store.complete, "rows": store.n_rows, "dim": m.get("dim"),
        "embedder": {"spec": m.get("embedder_spec"), **{k: v for k, v in (m.get("embedder") or {}).items()
                                                          if isinstance(v, (str, int, float))}},
        "text_spec": m.get("text_spec"), "on_bad_row": m.get("on_bad_row"), "shard_rows": m.get("shard_rows"),
        "source_root": m.get("source_root") or source_root_of([e["path"] for e in m["files"]]), "files": files,
        "skipped_rows": m.get("skipped_rows", 0), "clipped_texts": m.get("clipped_texts", 0),
        "truncated_texts": m.get("truncated_texts", 0), "zero_rows": m.get("zero_rows", 0),
        "indexes": _indexes(root), "densities": _densities(root, store), "bytes": sizes,
        "checked": check,
    }
