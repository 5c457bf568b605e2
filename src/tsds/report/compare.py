"""A self-contained HTML page that puts two selections of one pool store side by side (e.g. tsds vs knn):
overlap, source/label mix, distance to the queries, near-duplicate share, per-query coverage, parameters.

Reads what each selection folder holds (manifest.json, the records file, selection_detail.npz) and the vectors
of the selected rows from the pool store both were made from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.errors import InputError
from tsds.report import _CSS, _SCRIPT, FIGURES_DIR, _esc, _fmt, _img, _kv, _mix, _read_records, _unit

COMPARE_FILE = "compare.html"
COMPARE_SECTIONS = ["Parameters", "Overlap", "Source and label mix", "Distance to the queries", "Near-duplicates",
                    "Per-query coverage"]


def _load(folder: Path) -> dict:
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise InputError(f"{folder}: not a selection folder (no manifest.json)")
    manifest = json.loads(mpath.read_text())
    if "pool_store" not in manifest or "records" not in manifest:
        raise InputError(f"{folder}: not a text selection of a pool store; a comparison needs two of them")
    detail_path = folder / "selection_detail.npz"
    if not detail_path.is_file():
        raise InputError(f"{folder}: no selection_detail.npz; comparisons need text selections made by this version of tsds")
    with np.load(detail_path, allow_pickle=False) as d:
        queries = np.asarray(d["query_vectors"], dtype=np.float64)
    records = _read_records(folder / manifest["records"]["file"])
    rows = np.array([int(r["_tsds_row"]) for r in records], dtype=np.int64)
    method = str(manifest.get("method", "tsds"))
    return {"folder": folder, "manifest": manifest, "records": records, "rows": rows, "queries": queries,
            "method": method, "name": method if folder.name == method else f"{method} ({folder.name})"}


def _store_identity(manifest: dict) -> tuple:
    ps = manifest["pool_store"]
    return (str(Path(ps["path"]).resolve()), ps.get("rows"),
            tuple(sorted(f.get("sha256", "") for f in ps.get("files", []))))


def check_same_store(a: dict, b: dict) -> None:
    """Refuse two selections of different pool stores (rows would name different texts)."""
    ia, ib = _store_identity(a["manifest"]), _store_identity(b["manifest"])
    if ia != ib:
        raise InputError(f"{a['folder']} and {b['folder']} select from different pool stores ({ia[0]}, {ia[1]} rows "
                         f"vs {ib[0]}, {ib[1]} rows); compare two selections of one store")


def _nearest_other(x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Distance of each row of ``x`` to its nearest other row of ``x`` (inf for a single row)."""
    n = len(x)
    out = np.full(n, np.inf)
    sq = (x * x).sum(1)
    for s in range(0, n, chunk):
        d2 = sq[s:s + chunk, None] + sq[None, :] - 2 * x[s:s + chunk] @ x.T
        d2[np.arange(min(chunk, n - s)), np.arange(s, min(s + chunk, n))] = np.inf
        out[s:s + chunk] = np.sqrt(np.maximum(d2.min(1), 0)) if n > 1 else np.inf
    return out


def _to_queries(x: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each row to its nearest query, and that query."""
    d2 = (x * x).sum(1)[:, None] + (q * q).sum(1)[None, :] - 2 * x @ q.T
    j = np.argmin(d2, axis=1) if len(x) else np.zeros(0, dtype=np.int64)
    return np.sqrt(np.maximum(d2[np.arange(len(x)), j], 0)), j


def _radius(sides: list[dict], nn: list[np.ndarray]) -> tuple[float, str]:
    for s in sides:
        sigma = float(s["manifest"]["parameters"].get("sigma") or 0)
        if s["method"] == "tsds" and sigma > 0:
            return sigma, f"sigma of {s['name']}"
    finite = np.concatenate([d[np.isfinite(d)] for d in nn])
    med = float(np.median(finite)) if finite.size else 0.0
    return med / 3, "median nearest-neighbour distance within the two selections / 3"


def compare_selections(a, b, out, *, store=None) -> Path:
    """Write ``out/compare.html`` and ``out/figures/compare-*.png`` comparing selection folders ``a`` and ``b``."""
    from tsds.report import compare_figures as cf
    from tsds.store import PoolStore

    sides = [_load(Path(a)), _load(Path(b))]
    check_same_store(*sides)
    if sides[0]["name"] == sides[1]["name"]:
        sides[0]["name"], sides[1]["name"] = f"A: {sides[0]['name']}", f"B: {sides[1]['name']}"
    names = (sides[0]["name"], sides[1]["name"])
    store = store if store is not None else PoolStore(sides[0]["manifest"]["pool_store"]["path"])
    if store.n_rows != sides[0]["manifest"]["pool_store"]["rows"]:
        raise InputError(f"{sides[0]['manifest']['pool_store']['path']}: holds {store.n_rows} rows, "
                         f"the selections were made from {sides[0]['manifest']['pool_store']['rows']}")
    metric = sides[0]["manifest"]["parameters"].get("metric", "euclidean")
    queries = sides[0]["queries"]
    same_queries = sides[1]["queries"].shape == queries.shape and np.allclose(sides[1]["queries"], queries)
    vec = store.vectors()
    for s in sides:
        s["distinct"] = np.unique(s["rows"])
        x = vec.take(s["distinct"]).astype(np.float64)
        q = s["queries"]
        if metric == "cosine":
            x, q = _unit(x), _unit(q)
        s["to_query"], _ = _to_queries(x, q)
        s["nn"] = _nearest_other(x)
        _, owner = _to_queries(x, _unit(queries) if metric == "cosine" else queries)
        draws = np.bincount(np.searchsorted(s["distinct"], s["rows"]), minlength=len(s["distinct"]))
        s["coverage"] = np.bincount(owner, weights=draws, minlength=len(queries))
        s["mix"] = {f: _mix(s["records"], f) for f in ("source", "label")}
    radius, radius_rule = _radius(sides, [s["nn"] for s in sides])
    for s in sides:
        n_distinct = max(1, len(s["distinct"]))
        s["dup"] = {"near_duplicate_share": float((s["nn"] <= radius).sum()) / n_distinct,
                    "repeat_share": 1 - len(s["distinct"]) / max(1, len(s["rows"]))}
    both = np.intersect1d(sides[0]["distinct"], sides[1]["distinct"])
    union = np.union1d(sides[0]["distinct"], sides[1]["distinct"])
    overlap = {"both": int(both.size), "union": int(union.size), "jaccard": both.size / max(1, union.size),
               "only_a": int(sides[0]["distinct"].size - both.size), "only_b": int(sides[1]["distinct"].size - both.size)}

    figs = {"compare-mix": cf.mix_pair_figure(sides[0]["mix"], sides[1]["mix"], names),
            "compare-distances": cf.distance_pair_figure(sides[0]["to_query"], sides[1]["to_query"], names),
            "compare-duplicates": cf.duplicate_pair_figure([s["dup"] for s in sides], names, radius),
            "compare-coverage": cf.coverage_pair_figure(sides[0]["coverage"], sides[1]["coverage"], names)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / FIGURES_DIR).mkdir(exist_ok=True)
    for name, png in figs.items():
        atomic.write_bytes(out / FIGURES_DIR / f"{name}.png", png)
    page = _html(sides, figs, {"overlap": overlap, "radius": radius, "radius_rule": radius_rule, "metric": metric,
                               "same_queries": same_queries})
    path = out / COMPARE_FILE
    atomic.write_text(path, page)
    return path


def _params(s: dict) -> list[tuple[str, object]]:
    m = s["manifest"]
    res = m.get("result", {})
    rows = [("method", s["method"]), ("folder", s["folder"])]
    rows += [(k, _fmt(v)) for k, v in m["parameters"].items() if k != "method"]
    rows += [("draws (distinct)", f"{len(s['rows'])} ({len(s['distinct'])})"),
             ("support of p", res.get("support_size")), ("queries", m.get("queries", {}).get("count")),
             ("created", m.get("created"))]
    return rows


def _html(sides: list[dict], figs: dict, page: dict) -> str:
    """The comparison page; ``page``: overlap, radius, radius_rule, metric, same_queries."""
    a, b = sides
    ov = page["overlap"]
    task = a["manifest"].get("task") or "selection"
    if b["manifest"].get("task") not in (None, task):
        task = f"{task} / {b['manifest']['task']}"
    title = _esc(f"{task}: {a['method']} vs {b['method']}")
    store = a["manifest"]["pool_store"]
    s = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>",
         f"<style>{_CSS}</style></head><body>",
         f"<header><h1>{title}</h1><p>{_esc(a['name'])} and {_esc(b['name'])} from the pool store "
         f"{_esc(store['path'])} ({_esc(store['rows'])} rows)</p></header>",
         "<nav>" + "".join(f"<a href='#{_anchor(x)}'>{x}</a>" for x in COMPARE_SECTIONS) + "</nav><main>"]
    s.append(f"<section id='parameters'><h2>Parameters</h2><div class='grid'><div><b>{_esc(a['name'])}</b>"
             f"{_kv(_params(a))}</div><div><b>{_esc(b['name'])}</b>{_kv(_params(b))}</div></div></section>")
    s.append("<section id='overlap'><h2>Overlap</h2>" + _kv([
        ("distinct rows in both", ov["both"]), ("only in " + a["name"], ov["only_a"]),
        ("only in " + b["name"], ov["only_b"]), ("Jaccard (both / either)", f"{ov['jaccard']:.3f}")]) + "</section>")
    s.append(f"<section id='source-and-label-mix'><h2>Source and label mix</h2>"
             f"{_img('compare-mix', figs['compare-mix'], 'source and label mix of both selections')}</section>")
    med = [f"{_esc(x['name'])}: median {float(np.median(x['to_query'])):.4f}" for x in sides if x["to_query"].size]
    s.append("<section id='distance-to-the-queries'><h2>Distance to the queries</h2>"
             f"{_img('compare-distances', figs['compare-distances'], 'distance to the nearest query')}"
             f"<p class='muted'>{page['metric']} distance of each distinct selected row to the nearest query of its "
             f"own selection; {'; '.join(med)}.</p></section>")
    dups = "; ".join(f"{_esc(x['name'])}: {x['dup']['near_duplicate_share']:.1%} of distinct rows, "
                     f"{x['dup']['repeat_share']:.1%} of draws repeat a row" for x in sides)
    s.append("<section id='near-duplicates'><h2>Near-duplicates</h2>"
             f"{_img('compare-duplicates', figs['compare-duplicates'], 'near-duplicate share')}"
             f"<p class='muted'>A distinct row counts as a near-duplicate when another row of the same selection lies "
             f"within {page['radius']:.4g} ({_esc(page['radius_rule'])}). {dups}.</p></section>")
    note = "" if page["same_queries"] else (" <span class='warn'>The two selections used different queries; "
                                            f"coverage is measured against the queries of {_esc(a['name'])}.</span>")
    trs = "".join(f"<tr><td class='num'>{j}</td><td class='num'>{a['coverage'][j]:.0f}</td>"
                  f"<td class='num'>{b['coverage'][j]:.0f}</td></tr>" for j in range(len(a["coverage"])))
    s.append("<section id='per-query-coverage'><h2>Per-query coverage</h2>"
             f"{_img('compare-coverage', figs['compare-coverage'], 'per-query coverage of both selections')}"
             "<p class='muted'>Each draw is credited to its nearest query (the same rule for both methods, so the "
             f"bars compare).{note}</p><table><tr><th>query</th><th>{_esc(a['name'])}</th><th>{_esc(b['name'])}</th>"
             f"</tr>{trs}</table></section>")
    s.append(f"</main><script>{_SCRIPT}</script></body></html>")
    return "\n".join(s)


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")
