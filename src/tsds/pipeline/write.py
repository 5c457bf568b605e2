"""Writing a text selection: records, arrays, manifest, detail file and README.md dataset card, atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tsds.io.output import atomic_dir, save_json, save_npy
from tsds.io.writers import check_license, dataset_card, records_format
from tsds.pipeline.autoparams import describe_alpha, describe_parameters
from tsds.pipeline.density_check import describe_check
from tsds.pipeline.manifest import build_manifest
from tsds.pipeline.queries import task_name
from tsds.pipeline.select import Selection
from tsds.pipeline.stages import StageLog
from tsds.pipeline.text import DETAIL_FILE, PROVENANCE, QUERIES_FILE, save_detail, write_selected


@dataclass(frozen=True)
class Output:
    """Where and how a selection is written.

    out : path
        The output folder (must not exist unless ``overwrite``).
    records_name : str
        Name of the records file in it: ``.jsonl``, ``.jsonl.gz`` or ``.parquet``.
    overwrite : bool
        Replace an existing output folder.
    source_field : str
        Record field counted in the card's "rows by source" table.
    license : str or None
        The selection's licence for the card's metadata (an SPDX id such as ``cc-by-4.0``); None: ``other``,
        with a note that the pool files' licences apply.
    """

    out: object
    records_name: str = "selected.jsonl"
    overwrite: bool = False
    source_field: str = "source"
    license: str | None = None

    def __post_init__(self):
        records_format(self.records_name)
        check_license(self.license)


def _store_section(store) -> dict:
    return {"path": str(store.root.resolve()), "rows": store.n_rows, "files": store.files,
            "embedder": store.meta["embedder"], "skipped_rows": store.meta.get("skipped_rows", 0),
            "truncated_texts": store.meta.get("truncated_texts", 0)}


def card_pool(store) -> dict:
    """The pool section of a dataset card."""
    return {"store": str(store.root.resolve()), "rows": store.n_rows,
            "embedder": store.meta["embedder"].get("model"), "files": store.files}


def _summary(selection: Selection, res: dict, rows: int, baseline: bool) -> dict:
    summary = {"rows written (draws)": rows, "distinct records": selection.distinct_selected,
               "support of p": res["support_size"]}
    if not baseline:
        summary.update({
            "objective": f"{res['objective']:.6g}",
            "alignment term (alpha/C x transport cost)": f"{res['alignment_term']:.6g}",
            "diversity term": f"{res['diversity_term']:.6g}",
            "level s": f"{res['level_s']:.6g}",
            "neighbours per query (mean)": f"{res['neighbours_used_per_query']['mean']:.1f}",
            "K used": res["k_used"],
            "recall@K of the index": res["recall_at_k"],
        })
    return summary


def write_text_selection(out, store, selection: Selection, info: dict, *, queries_path, **output) -> Path:
    """Write records, arrays, manifest and README.md dataset card into ``out`` atomically.

    ``info``: what the method reported (tsds.methods); ``output``: the other fields of ``Output``
    (records_name, overwrite, source_field) and ``stages`` (a StageLog).
    """
    stages = output.pop("stages", None) or StageLog()
    opts = out if isinstance(out, Output) else Output(out, **output)
    with stages.stage("write"):
        with atomic_dir(opts.out, opts.overwrite) as tmp:
            written = write_selected(tmp / opts.records_name, store, selection, info["query_texts"], opts.source_field)
            save_npy(tmp / "probabilities.npy", selection.probabilities)
            save_npy(tmp / "selected_indices.npy", selection.selected_indices)
            qstats = info.get("query_read")
            method = info.get("method", "tsds")
            manifest = build_manifest(selection, {"queries": queries_path}, {
                "pool_store": _store_section(store),
                "queries": {"count": len(info["query_texts"]), "skipped_rows": qstats.skipped if qstats else 0},
                "index": info["index"],
                "records": {"file": opts.records_name, "rows": written["rows"], "sources": written["sources"]},
                "method": method,
                "task": task_name(queries_path, info.get("task_name")),
                **{k: info[k] for k in ("calibration", "decontamination", "eligibility", "query_warnings")
                   if info.get(k) is not None},
            })
            baseline = method != "tsds"
            if baseline:  # its parameters are what it used
                manifest["parameters"] = info.get("parameters") or {"method": method}
            save_json(tmp / "manifest.json", manifest)
            if info.get("query_vectors") is not None:
                save_detail(tmp, [selection], info["query_vectors"], info["query_texts"])
            card = dataset_card(
                title=f"Selection for {manifest['task']}" + (f" (baseline {method})" if baseline else ""),
                pool=card_pool(store),
                queries={"path": str(queries_path), "count": len(info["query_texts"])},
                parameters=manifest["parameters"],
                summary=_summary(selection, manifest["result"], written["rows"], baseline),
                license=opts.license,
                records={"file": opts.records_name, "columns": written["columns"] or PROVENANCE,
                         "sources": written["sources"]},
                **({"description": info["description"]} if info.get("description") else {}),
            )
            (tmp / "README.md").write_text(card + card_extra(info, None if baseline else manifest["parameters"],
                                                             selection.info.get("density_check")))
    return Path(opts.out)


def card_extra(info: dict, parameters: dict | None = None, density_check: dict | None = None) -> str:
    """Dataset-card lines for the resolved parameters (``parameters``: the manifest's, TSDS only), automatic parameters, decontamination, query warnings and the report files."""
    lines = ["", "## Calibration, decontamination and query checks", ""]
    cal = info.get("calibration") or {}
    if "sigma" in cal:
        lines.append(f"- sigma auto: {cal['sigma']['sigma']} ({cal['sigma']['rule']})")
    if parameters and parameters.get("preset") is not None:
        lines.append(f"- parameters: {describe_parameters(parameters)}")
    if "alpha" in cal:
        a = cal["alpha"]
        lines.append(f"- {'alpha auto' if a.get('alpha_max', 1.0) == 1.0 else 'alpha'}: {describe_alpha(a)}; "
                     f"rule: {a['rule']}")
    if density_check is not None:
        lines.append(f"- {describe_check(density_check)}")
    if "C_recommendation" in cal:
        lines.append(f"- C used {cal['C_recommendation']['used']}; recommended from the embedding scale: "
                     f"{cal['C_recommendation']['C']} ({cal['C_recommendation']['rule']})")
    e = info.get("eligibility")
    if e:
        z = e["zero_rows"]
        lines.append(f"- eligible pool rows: {e['eligible_rows']} of {e['pool_rows']}; rows with an all-zero "
                     f"embedding: {z['count']} ({'left out' if z['excluded'] else 'kept'})"
                     + (f", e.g. {'; '.join(z['examples'][:3])}" if z["examples"] else ""))
    d = info.get("decontamination")
    if d:
        lines.append(f"- decontamination: {d['removed']} pool rows removed ({d['removed_by_radius']} within radius "
                     f"{d['radius']} of {d['eval_items']} evaluation items, {d['removed_by_exact_text']} more by exact text)")
    warns = info.get("query_warnings") or []
    lines.append(f"- query warnings: {len(warns)}")
    for w in warns[:20]:
        lines.append(f"  - {w['kind']}: {w['message']}")
    lines += ["", f"`{DETAIL_FILE}` and `{QUERIES_FILE}` hold the neighbour lists, transport weights and queries "
              "that `tsds report` draws its figures from.", ""]
    return "\n".join(lines)
