"""A self-contained HTML report of a selection folder (figures embedded as base64 PNG, also saved as files).

Reads only what the selection folder and the pool store hold: manifest.json, the records with provenance,
selection_detail.npz and queries.jsonl (written by the selection), a seeded sample of pool vectors
(``store.vectors().take``) and their records (read back and checked as the records file is: tsds.pipeline.text.fetch_rows).
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from collections import Counter
from pathlib import Path

import numpy as np

from tsds import atomic
from tsds.errors import InputError

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
SECTIONS = ["Summary", "Map", "Source and label mix", "Distances and density", "Per-query coverage",
            "Near-duplicate clusters", "Objective", "Selected rows"]


def _read_records(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _text(spec, record: dict) -> str:
    try:
        return spec.extract({k: v for k, v in record.items() if not k.startswith("_tsds")})
    except Exception:  # noqa: BLE001 - a record the spec cannot read: show its first string field
        return str(record.get("text") or next((v for k, v in record.items()
                                                if isinstance(v, str) and not k.startswith("_tsds")), ""))


def _mix(records: list[dict], field: str) -> dict[str, float]:
    c = Counter(str(r.get(field)) for r in records if field in r)
    total = sum(c.values())
    return {k: v / total for k, v in c.items()} if total else {}


def _nearest(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    q = q.astype(np.float64)
    d2 = (x * x).sum(1)[:, None] + (q * q).sum(1)[None, :] - 2 * x @ q.T
    return np.sqrt(np.maximum(d2.min(1), 0))


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1, n)


def coverage(detail, counts: np.ndarray, probabilities_by_part: list[np.ndarray]) -> dict:
    """Per query (over all parts): draws credited through the plan, neighbours with mass, farthest used distance."""
    credited, neighbours, farthest, nearest = [], [], [], []
    t = 0
    while f"ids_{t}" in detail:
        ids, w, d = detail[f"ids_{t}"], detail[f"weights_{t}"], detail[f"distances_{t}"]
        p = probabilities_by_part[t]
        c = counts[t] if isinstance(counts, list) else counts
        share = np.divide(w, p[ids], out=np.zeros_like(w), where=p[ids] > 0)
        credited.append((share * c[ids]).sum(1))
        used = w > 0
        neighbours.append(used.sum(1))
        farthest.append(np.where(used, d, 0).max(1))
        nearest.append(d[:, 0])
        t += 1
    return {k: np.concatenate(v) for k, v in (("credited", credited), ("neighbours", neighbours),
                                              ("farthest", farthest), ("nearest", nearest))}


def nearest_coverage(detail, counts: np.ndarray) -> dict:
    """Per query, for a selection without a transport plan (a baseline): the draws of the rows whose nearest
    query it is, how many such rows, the farthest of them, and its nearest drawn row."""
    ids, d = detail["ids_0"], detail["distances_0"]
    m = ids.shape[0]
    if ids.shape[1] == 0:
        zero = np.zeros(m)
        return {"credited": zero, "neighbours": zero, "farthest": zero, "nearest": zero}
    owner = np.argmin(d, axis=0)                     # each drawn row's nearest query
    mine = owner[None, :] == np.arange(m)[:, None]   # M x rows
    drawn = counts[ids[0]]
    return {"credited": (mine * drawn[None, :]).sum(1).astype(np.float64), "neighbours": mine.sum(1),
            "farthest": np.where(mine, d, 0).max(1), "nearest": d.min(1)}


def _checked_records(store, rows) -> list[dict]:
    """Records of pool rows read with the records file's checked fetch (tsds.pipeline.text.fetch_rows)."""
    from tsds.pipeline.text import fetch_rows

    return fetch_rows(store, rows)


def build_report(out, *, store=None, sample: int = 3000, seed: int = 0, clusters: int = 8, rows: int = 15,
                 sweep: list[dict] | None = None) -> Path:
    """Write ``out/report.html`` and ``out/figures/*.png`` for the selection folder ``out``."""
    from tsds.report import figures as fg
    from tsds.store import PoolStore

    out = Path(out)
    mpath = out / "manifest.json"
    if not mpath.is_file():
        raise InputError(f"{out}: not a selection folder (no manifest.json)")
    manifest = json.loads(mpath.read_text())
    detail_path = out / "selection_detail.npz"
    if not detail_path.is_file():
        raise InputError(f"{out}: no selection_detail.npz; reports need a text selection made by this version of tsds")
    detail = dict(np.load(detail_path, allow_pickle=False))
    with open(out / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line) for line in f]
    store = store if store is not None else PoolStore(manifest["pool_store"]["path"])
    spec = store.text_spec
    params = manifest["parameters"]
    metric, sigma = params.get("metric", "euclidean"), float(params.get("sigma", 0))
    records = _read_records(out / manifest["records"]["file"])
    multi = "targets" in manifest
    targets = [t["name"] for t in manifest["targets"]] if multi else [manifest.get("task", "queries")]

    # --- data -------------------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    n = store.n_rows
    pool_rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    vec = store.vectors()
    pool_x = vec.take(pool_rows)
    pool_recs = _checked_records(store, pool_rows)
    counts = np.zeros(n, dtype=np.int64)
    for r in records:
        counts[int(r["_tsds_row"])] += 1
    distinct = np.flatnonzero(counts)
    sel_x = vec.take(distinct)
    qv = detail["query_vectors"]
    if metric == "cosine":
        pool_x, sel_x, qv = _unit(pool_x), _unit(sel_x), _unit(qv)
    qt = detail["query_target"].astype(np.int64)

    figs: dict[str, bytes] = {}
    figs["map"] = fg.map_figure(pool_x, sel_x, qv, qt, targets)
    fields = ["source", "label"]
    figs["mix"] = fg.mix_figure({f: _mix(pool_recs, f) for f in fields}, {f: _mix(records, f) for f in fields})
    figs["distances"] = fg.distance_figure(_nearest(pool_x, qv), _nearest(sel_x, qv))
    neighbour_rho = np.concatenate([detail[k].ravel() for k in detail if k.startswith("densities_")])
    neighbour_rho = neighbour_rho[np.isfinite(neighbour_rho)]  # densities are computed only as far as needed
    sel_rho = np.array([r.get("_tsds_density") or 1.0 for r in records], dtype=np.float64)
    figs["density"] = fg.density_figure(neighbour_rho, sel_rho, sigma)

    probs = np.load(out / "probabilities.npy")
    if multi:
        part_counts, part_probs = [], []
        for t, name in enumerate(targets):
            c = np.zeros(n, dtype=np.int64)
            for r in records:
                if r.get("_tsds_target") == name:
                    c[int(r["_tsds_row"])] += 1
            part_counts.append(c)
            ids, w = detail[f"ids_{t}"], detail[f"weights_{t}"]
            p = np.zeros(n)
            np.add.at(p, ids.ravel(), w.ravel())
            part_probs.append(p)
        cov = coverage(detail, part_counts, part_probs)
    elif manifest.get("method", "tsds") != "tsds":
        cov = nearest_coverage(detail, counts)
    else:
        cov = coverage(detail, counts, [probs])
    pool_scale = (manifest.get("calibration") or {}).get("pool_scale", {})
    typical = pool_scale.get("nearest_neighbour_percentiles", {}).get("p95")
    warned = {w["query"] for w in manifest.get("query_warnings", []) if w["kind"] != "duplicate"} if not multi else set()
    far = cov["farthest"]
    med = float(np.median(far))
    reach_limit = med + 3.5 * max(1.4826 * float(np.median(np.abs(far - med))), 1e-9)
    flagged = np.array([(typical is not None and cov["nearest"][j] > typical) or far[j] > reach_limit or j in warned
                        for j in range(len(queries))], dtype=bool)
    figs["coverage"] = fg.coverage_figure(cov["credited"], cov["neighbours"], cov["farthest"], flagged, typical)
    if sweep:
        figs["sweep"] = fg.sweep_figure(sweep, params.get("size"))

    fig_dir = out / FIGURES_DIR
    fig_dir.mkdir(exist_ok=True)
    for name, png in figs.items():
        atomic.write_bytes(fig_dir / f"{name}.png", png)

    # --- near-duplicate clusters ---------------------------------------------------------------
    cluster_rows = []
    if sigma > 0:
        seen: set[int] = set()
        by_row = {int(r["_tsds_row"]): r for r in records}
        ranked = sorted(by_row.values(), key=lambda r: -(r.get("_tsds_cluster_size") or 1))
        index = None
        for r in ranked:
            size = int(r.get("_tsds_cluster_size") or 1)
            if size < 2 or len(cluster_rows) >= clusters:
                break
            row = int(r["_tsds_row"])
            if row in seen:
                continue
            if index is None:
                index = store.index(metric)
            x = vec.take([row])
            if metric == "cosine":
                x = _unit(x)
            d, ids = index.exact_search(x.astype(np.float32), min(size, 4))
            members = [(int(i), float(dd)) for i, dd in zip(ids[0], d[0]) if i >= 0 and dd <= sigma and i != row]
            seen.update(i for i, _ in members)
            seen.add(row)
            texts = []
            for (i, dd), rec in zip(members[:3], _checked_records(store, [i for i, _ in members[:3]])):
                texts.append((i, dd, _text(spec, rec)))
            cluster_rows.append({"row": row, "size": size, "density": r.get("_tsds_density"),
                                 "text": _text(spec, r), "members": texts})

    page = _html(manifest, figs, {"records": records, "queries": queries, "cov": cov, "flagged": flagged,
                                  "typical": typical, "clusters": cluster_rows, "targets": targets, "spec": spec,
                                  "n_rows": rows, "sweep": sweep, "pool_sample": pool_rows.size})
    path = out / REPORT_FILE
    atomic.write_text(path, page)
    return path


# ---- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}
nav{padding:8px 32px;background:#e8ecf2;font-size:13px}nav a{margin-right:14px;color:#1f3a5f}
main{padding:8px 32px 40px;max-width:1250px}
section{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:14px 20px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px;color:#1f3a5f}
img{max-width:100%;height:auto;display:block;margin:6px 0}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{border-bottom:1px solid #e3e7ee;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#b34700}.muted{color:#6b7380;font-size:12px}.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.kv td:first-child{width:38%;color:#4a5260}
"""

_SCRIPT = """
(function(){
  var errors = 0;
  window.addEventListener('error', function(){ errors += 1; document.body.setAttribute('data-js-errors', errors); }, true);
  function check(){
    var imgs = document.images, broken = 0;
    for (var i = 0; i < imgs.length; i++) {
      var ok = imgs[i].complete && imgs[i].naturalWidth > 0;
      imgs[i].setAttribute('data-rendered', ok ? '1' : '0');
      if (!ok) broken += 1;
    }
    document.body.setAttribute('data-images', imgs.length);
    document.body.setAttribute('data-images-broken', broken);
    document.body.setAttribute('data-js-errors', errors);
    document.body.setAttribute('data-report-checked', '1');
  }
  window.addEventListener('load', check);
})();
"""


def _esc(x, limit: int | None = None) -> str:
    s = "" if x is None else str(x)
    if limit and len(s) > limit:
        s = s[:limit] + "…"
    return html.escape(s)


def _img(name: str, png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img id="fig-{name}" alt="{_esc(alt)}" src="data:image/png;base64,{b64}">'


def _kv(rows: list[tuple[str, object]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _fmt(v, digits: int = 5) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return "" if v is None else str(v)


def _html(manifest, figs, page: dict) -> str:
    """The report page; ``page``: records, queries, cov, flagged, typical, clusters, targets, spec, n_rows,
    sweep, pool_sample."""
    records, queries, cov, flagged, typical = (page[k] for k in ("records", "queries", "cov", "flagged", "typical"))
    clusters, targets, spec, n_rows = (page[k] for k in ("clusters", "targets", "spec", "n_rows"))
    sweep, pool_sample = page["sweep"], page["pool_sample"]
    params, res = manifest["parameters"], manifest["result"]
    method = manifest.get("method", "tsds")
    cal = manifest.get("calibration") or {}
    decon = manifest.get("decontamination")
    warns = manifest.get("query_warnings") or []
    title = _esc(f"{manifest.get('task') or ', '.join(targets)}: {method} selection")
    s = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>",
         f"<style>{_CSS}</style></head><body>",
         f"<header><h1>{title}</h1><p>{_esc(', '.join(targets))} — {res['drawn']} draws ({res['distinct_drawn']} "
         f"distinct) from {manifest['pool_store']['rows']} pool rows; created {_esc(manifest.get('created'))}</p></header>",
         "<nav>" + "".join(f"<a href='#{_anchor(x)}'>{x}</a>" for x in SECTIONS) + "</nav><main>"]

    # summary
    if method == "tsds":
        summary = [("budget n / sampling", f"{params['size']} / {params['sampling']}"),
                   ("alpha", _fmt(params["alpha"]) + (" (auto)" if params.get("alpha_auto") else "")),
                   ("C", _fmt(params["C"])), ("sigma", _fmt(params["sigma"]) + (" (auto)" if params.get("sigma_auto") else "")),
                   ("metric", params["metric"]), ("support of p", res["support_size"]),
                   ("queries", manifest["queries"]["count"])]
    else:  # a baseline: the parameters it used, no TSDS parameter
        summary = [("method", f"{method} (baseline)"), ("budget n", params.get("size"))]
        summary += [(k, v) for k, v in params.items() if k not in ("method", "size")]
        summary += [("support of p", res["support_size"]), ("queries", manifest["queries"]["count"])]
    if "sigma" in cal:
        summary.append(("sigma rule", f"{cal['sigma']['rule']}; median NN distance {cal['sigma']['median_nearest_neighbour']}"))
    if "alpha" in cal:
        a = cal["alpha"]
        summary.append(("alpha rule", f"{a['rule']}: support {a['support']} >= {a['multiple']} x {a['size']}"))
    for t in manifest.get("targets", []):
        if t.get("calibration"):
            a = t["calibration"]
            summary.append((f"alpha auto ({t['name']})", f"{a['alpha']:.4g}: support {a['support']} >= {a['multiple']} x {a['size']}"))
    if "C_recommendation" in cal:
        summary.append(("C recommended from the embedding scale", f"{cal['C_recommendation']['C']} ({cal['C_recommendation']['rule']})"))
    if decon:
        summary.append(("decontamination", f"{decon['removed']} pool rows removed ({decon['removed_by_radius']} within "
                                           f"radius {decon['radius']} of {decon['eval_items']} evaluation items, "
                                           f"{decon['removed_by_exact_text']} more by exact text)"))
    s.append(f"<section id='summary'><h2>Summary</h2>{_kv(summary)}")
    if warns:
        s.append(f"<p class='warn'><b>{len(warns)} query warning(s):</b></p><ul>" +
                 "".join(f"<li class='warn'>{_esc(w['kind'])}: {_esc(w['message'])}</li>" for w in warns[:30]) + "</ul>")
    else:
        s.append("<p class='muted'>No query warnings (duplicates, outliers, queries without a close candidate).</p>")
    s.append("</section>")

    s.append(f"<section id='map'><h2>Map</h2>{_img('map', figs['map'], 'map of pool sample, queries and selection')}"
             f"<p class='muted'>{pool_sample} pool rows sampled at random; the projection is fitted on that sample.</p></section>")
    s.append(f"<section id='source-and-label-mix'><h2>Source and label mix</h2>{_img('mix', figs['mix'], 'source and label mix')}</section>")
    s.append("<section id='distances-and-density'><h2>Distances and density</h2><div class='grid'>"
             f"{_img('distances', figs['distances'], 'distance to nearest query')}"
             f"{_img('density', figs['density'], 'density histogram')}</div></section>")

    # coverage
    rows_html = []
    for j, qd in enumerate(queries):
        cls = " class='warn'" if flagged[j] else ""
        rows_html.append(f"<tr{cls}><td class='num'>{j}</td>" + (f"<td>{_esc(qd.get('target'))}</td>" if len(targets) > 1 else "")
                         + f"<td>{_esc(qd['text'], 140)}</td><td class='num'>{cov['credited'][j]:.1f}</td>"
                         f"<td class='num'>{int(cov['neighbours'][j])}</td><td class='num'>{cov['nearest'][j]:.3f}</td>"
                         f"<td class='num'>{cov['farthest'][j]:.3f}</td><td>{'far' if flagged[j] else ''}</td></tr>")
    head = "<tr><th>#</th>" + ("<th>target</th>" if len(targets) > 1 else "") + \
        "<th>query</th><th>draws credited</th><th>neighbours</th><th>nearest</th><th>farthest used</th><th></th></tr>"
    s.append("<section id='per-query-coverage'><h2>Per-query coverage</h2>"
             f"{_img('coverage', figs['coverage'], 'per-query coverage')}"
             "<p class='muted'>Every query sends mass 1/M; 'draws credited' splits each drawn row between the queries "
             "in proportion to the transport plan. 'far': even the query's nearest candidate lies beyond the pool's typical "
             f"nearest-neighbour distance ({_fmt(typical, 3)}), its farthest used neighbour is an outlier among the "
             "queries (median + 3.5 MAD), or it was flagged by the query checks.</p>"
             f"<table>{head}{''.join(rows_html)}</table></section>")

    # clusters
    if clusters:
        items = []
        for c in clusters:
            mem = "".join(f"<li>row {i} (distance {d:.3f}): {_esc(t, 200)}</li>" for i, d, t in c["members"])
            items.append(f"<tr><td class='num'>{c['row']}</td><td class='num'>{c['size']}</td>"
                         f"<td class='num'>{_fmt(c['density'], 4)}</td><td>{_esc(c['text'], 220)}<ul>{mem}</ul></td></tr>")
        body = ("<p class='muted'>Selected rows with other pool rows within sigma; the density term makes such a cluster "
                "share the mass one text would get.</p><table><tr><th>row</th><th>cluster size</th><th>density</th>"
                f"<th>selected text and near-duplicates in the pool</th></tr>{''.join(items)}</table>")
    else:
        body = "<p class='muted'>No selected row has a near-duplicate within sigma" + \
               (" (sigma = 0: the density term is off)" if not params.get("sigma") else "") + ".</p>"
    s.append(f"<section id='near-duplicate-clusters'><h2>Near-duplicate clusters</h2>{body}</section>")

    # objective
    if method != "tsds":
        obj = (f"<p class='muted'>Method {_esc(method)} is a baseline: it solves no TSDS problem, so there is no "
               "objective, transport plan or level. Coverage above credits each drawn row to its nearest query.</p>")
    elif manifest.get("targets"):
        trs = "".join(f"<tr><td>{_esc(t['name'])}</td><td class='num'>{t['share']:.3f}</td><td class='num'>{t['drawn']}</td>"
                      f"<td class='num'>{t['support_size']}</td><td class='num'>{_fmt(t['alpha'], 4)}</td>"
                      f"<td class='num'>{_fmt(t['alignment_term'])}</td><td class='num'>{_fmt(t['diversity_term'])}</td>"
                      f"<td class='num'>{_fmt(t['objective'])}</td><td class='num'>{_fmt(t['level_s'])}</td></tr>"
                      for t in manifest["targets"])
        ovl = "".join(f"<li>{_esc(o['a'])} / {_esc(o['b'])}: {o['support_overlap']} rows in both supports, "
                      f"{o['drawn_overlap']} drawn by both</li>" for o in manifest.get("overlaps", []))
        obj = ("<table><tr><th>target</th><th>share</th><th>draws</th><th>support</th><th>alpha</th><th>alignment term</th>"
               f"<th>diversity term</th><th>objective</th><th>level s</th></tr>{trs}</table><p>Overlaps:</p><ul>{ovl}</ul>")
    else:
        obj = _kv([("objective", _fmt(res["objective"])),
                   ("alignment term (alpha/C x transport cost)", _fmt(res["alignment_term"])),
                   ("diversity term ((1-alpha) x M x max rho gamma)", _fmt(res["diversity_term"])),
                   ("transport cost", _fmt(res["transport_cost"])), ("level s", _fmt(res["level_s"])),
                   ("neighbours per query (min / mean / max)",
                    "{min} / {mean:.1f} / {max}".format(**res["neighbours_used_per_query"])),
                   ("K used", res["k_used"]), ("recall@K of the index", res["recall_at_k"])])
    if sweep:
        obj += _img("sweep", figs["sweep"], "alpha sweep")
    s.append(f"<section id='objective'><h2>Objective</h2>{obj}</section>")

    # sample rows
    cols = [("_tsds_row", "row"), ("text", "text"), ("source", "source"), ("label", "label"),
            ("_tsds_target", "target"), ("_tsds_probability", "p"), ("_tsds_times_drawn", "drawn"),
            ("_tsds_nearest_query", "nearest query"), ("_tsds_query_distance", "distance"),
            ("_tsds_cluster_size", "cluster")]
    cols = [(k, h) for k, h in cols if k == "text" or any(k in r for r in records[:50])]
    step = max(1, len(records) // n_rows)
    shown = records[::step][:n_rows]
    trs = []
    for r in shown:
        cells = []
        for k, _ in cols:
            v = _text(spec, r) if k == "text" else r.get(k)
            num = isinstance(v, (int, float))
            cells.append(f"<td{' class=num' if num else ''}>{_esc(_fmt(v, 4) if num else v, 160)}</td>")
        trs.append("<tr>" + "".join(cells) + "</tr>")
    s.append("<section id='selected-rows'><h2>Selected rows</h2><p class='muted'>"
             f"{len(shown)} of {len(records)} rows, evenly spaced; provenance columns from the records file.</p>"
             "<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for _, h in cols) + "</tr>" + "".join(trs) + "</table></section>")
    s.append(f"</main><script>{_SCRIPT}</script></body></html>")
    return "\n".join(s)


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")
