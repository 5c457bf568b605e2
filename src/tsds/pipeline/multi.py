"""Several target tasks at once: one selection whose budget is split between targets in given proportions.

The TSDS problem is solved separately for each target (its own queries, alpha auto if asked) on one shared
pool context: the same index, decontamination and density cache, so densities are computed once. Each target
draws its share of the budget (largest-remainder rounding); with ``without-replacement`` a later target draws
only rows no earlier target drew, so the whole set is distinct. Overlaps between targets' supports and draws
are reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsds.config import SelectionConfig
from tsds.core import draw_without_replacement
from tsds.core.sampling import counts_to_indices
from tsds.errors import ParameterError
from tsds.io.output import atomic_dir, save_json, save_npy
from tsds.io.readers import TextSpec
from tsds.io.writers import dataset_card, write_records
from tsds.pipeline.eligibility import refuse_zero_queries
from tsds.pipeline.manifest import build_manifest
from tsds.pipeline.prepare import Preparation, open_store, prepare_pool, select_queries
from tsds.pipeline.queries import load_store_embedder, read_query_texts
from tsds.pipeline.select import Selection
from tsds.pipeline.stages import StageLog
from tsds.pipeline.text import PROVENANCE, save_detail, selected_records
from tsds.pipeline.write import Output, card_extra, card_pool

TARGET_COLUMN = "_tsds_target"


def parse_target(spec) -> tuple[str, float]:
    """``path`` or ``path:weight`` -> (path, weight); a weight must be a positive number."""
    s = str(spec)
    head, sep, tail = s.rpartition(":")
    if sep and head:
        try:
            w = float(tail)
        except ValueError:
            return s, 1.0
        if not np.isfinite(w) or w <= 0:
            raise ParameterError(f"--queries {s}: the weight after ':' must be a positive number")
        return head, w
    return s, 1.0


def split_budget(size: int, weights) -> list[int]:
    """Shares of ``size`` proportional to ``weights`` that sum to ``size`` (largest remainder)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0 or np.any(w <= 0) or not np.all(np.isfinite(w)):
        raise ParameterError("target weights must be positive numbers")
    exact = size * w / w.sum()
    base = np.floor(exact).astype(int)
    rest = size - int(base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return base.tolist()


@dataclass
class MultiSelection:
    names: list[str]
    paths: list[str]
    weights: list[float]
    sizes: list[int]
    selections: list[Selection]
    query_texts: list[list[str]]
    query_vectors: list[np.ndarray]
    calibration: list[dict]
    warnings: list[list[dict]]
    overlaps: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    @property
    def probabilities(self) -> np.ndarray:
        """The mixture sum_t w_t p_t (weights normalised)."""
        w = np.asarray(self.weights) / np.sum(self.weights)
        return sum(wt * s.probabilities for wt, s in zip(w, self.selections))

    @property
    def counts(self) -> np.ndarray:
        return sum(s.counts for s in self.selections)

    def summary(self) -> list[dict]:
        out = []
        for t, sel in enumerate(self.selections):
            a = sel.allocation
            out.append({"name": self.names[t], "path": self.paths[t], "weight": self.weights[t],
                        "share": self.weights[t] / sum(self.weights), "size": self.sizes[t],
                        "queries": len(self.query_texts[t]), "drawn": int(sel.counts.sum()),
                        "distinct_drawn": sel.distinct_selected,
                        "support_size": int(np.count_nonzero(sel.probabilities)),
                        "alpha": sel.config.alpha, "objective": a.objective,
                        "alignment_term": a.alpha / a.C * a.alignment, "diversity_term": (1 - a.alpha) * a.diversity,
                        "level_s": a.level, "k_used": sel.k_used, "calibration": self.calibration[t],
                        "query_warnings": self.warnings[t],
                        **({"density_check": sel.info["density_check"]} if "density_check" in sel.info else {})})
        return out


def _names(paths: list[str]) -> list[str]:
    names = []
    for p in paths:
        path = Path(p)
        stem = path.name.split(".")[0]
        name = path.parent.name if stem in ("queries", "query", "train") and path.parent.name else stem
        base, i = name, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def overlaps(names: list[str], selections: list[Selection]) -> list[dict]:
    out = []
    for a in range(len(selections)):
        for b in range(a + 1, len(selections)):
            pa, pb = selections[a].probabilities > 0, selections[b].probabilities > 0
            ca, cb = selections[a].counts > 0, selections[b].counts > 0
            out.append({"a": names[a], "b": names[b], "support_overlap": int(np.count_nonzero(pa & pb)),
                        "drawn_overlap": int(np.count_nonzero(ca & cb))})
    return out


def select_multi(store, targets, config: SelectionConfig, *, query_spec: TextSpec | None = None, embedder=None,
                 stages: StageLog | None = None, progress=None,
                 preparation: Preparation | None = None) -> tuple[MultiSelection, dict]:
    """``targets``: ``path:weight`` strings or (queries, weight) pairs, queries a file or a list of texts.
    ``preparation``: the eligible rows, as for a single target (zero-vector rows left out unless
    ``keep_zero_rows``; ``exclude``)."""
    store = open_store(store)
    stages = stages or StageLog()
    # each target draws from what earlier ones left, by the plain draw
    config = config.model_copy(update={"one_per_cluster": False, "query_turns": False})
    parsed = [parse_target(t) if isinstance(t, (str, Path)) else (t[0], float(t[1])) for t in targets]
    if not parsed:
        raise ParameterError("no targets given")
    paths = [p if isinstance(p, (str, Path)) else f"target-{i}" for i, (p, _) in enumerate(parsed)]
    weights = [float(w) for _, w in parsed]
    sizes = split_budget(config.size, weights)
    names = _names([str(p) for p in paths])
    embedder = load_store_embedder(store, embedder)
    ctx = prepare_pool(store, config, embedder=embedder, stages=stages, preparation=preparation)
    selections, texts_all, vecs, calibs, warns = [], [], [], [], []
    taken = np.zeros(store.n_rows, dtype=bool)
    for t, ((queries, _), n_t) in enumerate(zip(parsed, sizes)):
        with stages.stage(f"target:{names[t]}") as info:
            texts, _ = read_query_texts(store, queries, query_spec)
            q = embedder.embed(texts)
            refuse_zero_queries(texts, q, queries)
            cfg = ctx.config.model_copy(update={"size": max(1, n_t)})
            sel, alpha_info, w = select_queries(ctx, q, texts, cfg, progress=progress)
            if n_t == 0:
                sel.counts = np.zeros_like(sel.counts)
            elif cfg.sampling == "without-replacement":
                p = np.where(taken, 0.0, sel.probabilities)
                if np.count_nonzero(p) < n_t:
                    raise ParameterError(
                        f"target {names[t]}: only {np.count_nonzero(p)} candidates of its support remain after "
                        f"earlier targets' draws, fewer than its share {n_t}; lower alpha or use with-replacement")
                sel.counts = draw_without_replacement(p / p.sum(), n_t, cfg.seed + t)
            taken |= sel.counts > 0
            info.update(size=n_t, queries=len(texts))
        selections.append(sel)
        texts_all.append(texts)
        vecs.append(np.asarray(q, dtype=np.float32))
        calibs.append(alpha_info)
        warns.append(w)
    ctx.save_densities()
    multi = MultiSelection(names=names, paths=[str(p) for p in paths], weights=weights, sizes=sizes,
                           selections=selections, query_texts=texts_all, query_vectors=vecs,
                           calibration=calibs, warnings=warns, overlaps=overlaps(names, selections),
                           timings=stages.stages)
    info = {"index": {"kind": ctx.index.kind, **ctx.index.calibration}, "calibration": ctx.calibration,
            "decontamination": ctx.decontamination.summary() if ctx.decontamination else None,
            "eligibility": ctx.eligibility.summary(), "excluded_rows": ctx.eligibility.excluded,
            "query_warnings": [w for ws in warns for w in ws], "config": ctx.config}
    return multi, info


def write_multi_selection(out, store, multi: MultiSelection, info: dict, **output) -> Path:
    """The same output format as a single selection, with a ``_tsds_target`` column and per-target results.
    ``output``: the fields of ``tsds.pipeline.write.Output`` other than ``out``, and ``stages``."""
    stages = output.pop("stages", None) or StageLog()
    opts = out if isinstance(out, Output) else Output(out, **output)
    out, records_name, overwrite, source_field = opts.out, opts.records_name, opts.overwrite, opts.source_field
    with stages.stage("write"):
        records = []
        for name, sel, texts in zip(multi.names, multi.selections, multi.query_texts):
            records += [{**r, TARGET_COLUMN: name} for r in selected_records(store, sel, texts)]
        counts = multi.counts
        p = multi.probabilities
        sources = dict(Counter(str(r.get(source_field)) for r in records).most_common()) \
            if records and source_field in records[0] else None
        targets = multi.summary()
        with atomic_dir(out, overwrite) as tmp:
            write_records(tmp / records_name, records)
            save_npy(tmp / "probabilities.npy", p)
            save_npy(tmp / "selected_indices.npy", counts_to_indices(counts))
            manifest = build_manifest(multi.selections[0], {f"queries:{n}": pth for n, pth in
                                                            zip(multi.names, multi.paths)}, {
                "pool_store": {"path": str(store.root.resolve()), "rows": store.n_rows, "files": store.files,
                               "embedder": store.meta["embedder"]},
                "queries": {"count": sum(len(t) for t in multi.query_texts)},
                "index": info["index"],
                "records": {"file": records_name, "rows": len(records), "sources": sources,
                            "by_target": dict(Counter(r[TARGET_COLUMN] for r in records))},
                "targets": targets,
                "overlaps": multi.overlaps,
                **{k: info[k] for k in ("calibration", "decontamination", "eligibility", "query_warnings")
                   if info.get(k) is not None},
            })
            manifest["parameters"] = info["config"].model_dump()
            manifest["timings"] = multi.timings
            manifest["result"] = {"drawn": int(counts.sum()), "distinct_drawn": int(np.count_nonzero(counts)),
                                  "support_size": int(np.count_nonzero(p)), "targets": len(targets),
                                  "objective": None, "multi_target": True}
            save_json(tmp / "manifest.json", manifest)
            offsets = np.cumsum([0] + [len(t) for t in multi.query_texts])
            save_detail(tmp, multi.selections, np.concatenate(multi.query_vectors),
                        [t for ts in multi.query_texts for t in ts],
                        query_target=np.repeat(np.arange(len(targets)), np.diff(offsets)), targets=multi.names)
            summary = {"rows written (draws)": len(records), "distinct records": int(np.count_nonzero(counts)),
                       "support of the mixture": int(np.count_nonzero(p))}
            for t in targets:
                summary[f"target {t['name']}"] = (f"share {t['share']:.3f}, {t['drawn']} draws, support "
                                                  f"{t['support_size']}, alpha {t['alpha']:.4g}, "
                                                  f"objective {t['objective']:.5g}")
            for o in multi.overlaps:
                summary[f"overlap {o['a']} / {o['b']}"] = (f"{o['support_overlap']} rows in both supports, "
                                                           f"{o['drawn_overlap']} drawn by both")
            card = dataset_card(
                title="Selection for " + ", ".join(multi.names),
                pool=card_pool(store),
                queries={"path": ", ".join(multi.paths), "count": sum(len(t) for t in multi.query_texts)},
                parameters=info["config"].model_dump(), summary=summary,
                license=opts.license,
                records={"file": records_name, "sources": sources, "rows": len(records),
                         "columns": list(records[0]) if records else PROVENANCE + [TARGET_COLUMN]})
            (tmp / "README.md").write_text(card + card_extra(info))
    return Path(out)
