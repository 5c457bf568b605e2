"""docs/results.md from the suite's rows (benchmarks/results/eval_suite.json): tables, paired differences
with confidence intervals, the variants, the duplicated pool, and the neural-model rows of eval.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs/results.md"
FIG = ROOT / "docs/figures/eval_paired_differences.png"
OLD = ROOT / "benchmarks/results/eval.json"
BASELINES = ["knn", "random", "dsir", "full"]


def ci(values, level=0.95):
    """Mean and the half-width of its t confidence interval (0 when fewer than 2 values or no spread)."""
    a = np.asarray(values, dtype=float)
    if a.size < 2 or np.allclose(a, a[0]):
        return float(a.mean()), 0.0
    half = stats.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size)
    return float(a.mean()), float(half)


def fmt_ci(m, h, digits=3):
    return f"{m:+.{digits}f} ± {h:.{digits}f}"


def nll_by(rows, stage=None):
    """{(task, size, method): {seed: nll}}."""
    out: dict = {}
    for r in rows:
        if "nll" in r and (stage is None or r["stage"] == stage):
            out.setdefault((r["task"], r["size"], r["method"]), {})[r["seed"]] = r["nll"]
    return out


def paired(by, task, size, a, b):
    """Per-seed differences a - b on one cell (None when either is missing)."""
    x, y = by.get((task, size, a)), by.get((task, size, b))
    if not x or not y:
        return None
    seeds = sorted(set(x) & set(y))
    return [x[s] - y[s] for s in seeds] if seeds else None


def diff_tables(by, tasks, sizes, ref, others, pool_rows):
    """Per task x budget: mean difference ref - other over seeds with its CI; then pooled over tasks."""
    head = "| task | budget | " + " | ".join(f"{ref} − {o}" for o in others) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(others)]
    pooled = {}
    for size in sizes:
        for t in tasks:
            cells = []
            for o in others:
                d = paired(by, t, size, ref, o)
                if d is None:
                    cells.append("-")
                    continue
                m, h = ci(d)
                pooled.setdefault((size, o), []).append(m)
                mark = " ✓" if m + h < 0 else (" ✗" if m - h > 0 else "")
                cells.append(fmt_ci(m, h) + mark)
            lines.append(f"| {t} | {size} ({100 * size / pool_rows:.1f}%) | " + " | ".join(cells) + " |")
    return "\n".join(lines), pooled


def pooled_table(pooled, sizes, others, pool_rows, head="tsds − {o}"):
    lines = ["| budget | " + " | ".join(head.format(o=o) for o in others) + " |", "|---:|" + "---:|" * len(others)]
    for size in sizes:
        cells = []
        for o in others:
            v = pooled.get((size, o))
            if not v:
                cells.append("-")
                continue
            m, h = ci(v)
            wins = sum(x < 0 for x in v)
            cells.append(f"{fmt_ci(m, h)} ({wins}/{len(v)} lower)")
        lines.append(f"| {size} ({100 * size / pool_rows:.1f}%) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nll_table(by, tasks, sizes, methods, pool_rows):
    lines = ["| task | budget | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for t in tasks:
        for size in sizes:
            vals = {m: list(by[(t, size, m)].values()) for m in methods if (t, size, m) in by}
            if not vals:
                continue
            best = min(np.mean(v) for v in vals.values())
            cells = []
            for m in methods:
                if m not in vals:
                    cells.append("-")
                    continue
                c = f"{np.mean(vals[m]):.3f} ± {np.std(vals[m], ddof=1) if len(vals[m]) > 1 else 0:.3f}"
                cells.append(f"**{c}**" if np.mean(vals[m]) == best else c)
            lines.append(f"| {t} | {size} ({100 * size / pool_rows:.1f}%) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def suite_table(rows, meta):
    first = {}
    for r in rows:
        if r.get("stage") == "grid" and r["task"] not in first:
            first[r["task"]] = r
    lines = ["| task | from | queries | held-out | pool rows removed for it | eligible rows |", "|---|---|---:|---:|---:|---:|"]
    for d in meta["tasks"]:
        r = first.get(d["name"], {})
        origin = d["dir"] if d.get("dir") else f"pool label {d['source']}:{d['label']} (seed {d['seed']})"
        held = d.get("heldout_size", d.get("heldout"))
        lines.append(f"| {d['name']} | {origin} | 20 | {held} | {r.get('decontaminated_rows', '-')} | "
                     f"{r.get('eligible_rows', '-')} |")
    return "\n".join(lines)


def duplicates_section(rows, size, pool_rows):
    dup = [r for r in rows if r.get("stage") == "duplicates"]
    if not dup:
        return "Not run in this benchmark run."
    meta = next(r for r in rows if r.get("stage") == "duplicates-meta")
    share_pool = meta["copy_rows"] / meta["pool_rows"]
    clean = nll_by([r for r in rows if r.get("stage") in ("grid", "variants")])
    dirty = nll_by(dup)
    methods = list(dict.fromkeys(r["method"] for r in dup))
    tasks = list(dict.fromkeys(r["task"] for r in dup))
    lines = [f"Pool: {meta['pool_rows'] - meta['copy_rows']:,} rows + {meta['copy_rows']:,} copies "
             f"({share_pool:.1%} of the new pool). Budget {size} examples; mean over {len(tasks)} tasks x 3 seeds "
             "(± the 95% CI over tasks). Loss increase: NLL on the duplicated pool minus NLL of the same method, "
             "task, budget and seed on the clean pool.",
             "",
             "| method | NLL | copies in selection | near-dup share | loss increase | increase / knn's |",
             "|---|---:|---:|---:|---:|---:|"]
    incr = {}
    for m in methods:
        per_task = []
        for t in tasks:
            d = [dirty[(t, size, m)][s] - clean[(t, size, m)][s] for s in dirty.get((t, size, m), {})
                 if (t, size, m) in clean and s in clean[(t, size, m)]]
            if d:
                per_task.append(np.mean(d))
        incr[m] = per_task
    knn_inc = np.mean(incr["knn"]) if incr.get("knn") else None
    for m in methods:
        sel = [r for r in dup if r["method"] == m]
        by_task = lambda key: [np.mean([r[key] for r in sel if r["task"] == t]) for t in tasks]  # noqa: E731
        nll, copies, nd = ci(by_task("nll")), ci(by_task("flagged_share")), ci(by_task("near_duplicate_share"))
        inc = ci(incr[m]) if incr[m] else None
        ratio = f"{inc[0] / knn_inc:.2f}" if inc and knn_inc else "-"
        lines.append(f"| {m} | {nll[0]:.3f} ± {nll[1]:.3f} | {copies[0]:.3f} ± {copies[1]:.3f} | {nd[0]:.3f} ± {nd[1]:.3f} | "
                     + (fmt_ci(*inc) if inc else "-") + f" | {ratio} |")
    pairs = []
    for o in [m for m in methods if m != "tsds"]:
        per = [np.mean(d) for t in tasks if (d := paired(dirty, t, size, "tsds", o))]
        if per:
            m, h = ci(per)
            pairs.append(f"tsds − {o} {fmt_ci(m, h)} ({sum(x < 0 for x in per)}/{len(per)} tasks lower)")
    lines += ["", "Paired on the duplicated pool (NLL, mean over tasks ± 95% CI): " + "; ".join(pairs) + "."]
    ts = [r for r in dup if r["method"] == "tsds"]
    share_sel = np.mean([r["flagged_share"] for r in ts])
    tinc = np.mean(incr["tsds"]) if incr.get("tsds") else float("nan")
    lines += ["", f"Targets: tsds's share of copies {share_sel:.3f} vs 2 x the pool's share {2 * share_pool:.3f} "
              f"({'met' if share_sel < 2 * share_pool else 'not met'}); tsds's loss increase {tinc:+.3f} vs a third of "
              f"knn's {knn_inc / 3 if knn_inc else float('nan'):+.3f} "
              f"({'met' if knn_inc and tinc < knn_inc / 3 else 'not met'})."]
    return "\n".join(lines)


def figure(pooled, sizes, pool_rows, variants_pooled):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (pool, names, title) in zip(axes, [(pooled, ["knn", "full"], "tsds default − knn, full"),
                                                (variants_pooled[0], variants_pooled[1], "variant − tsds default")]):
        for k, o in enumerate(names):
            pts = [(100 * s / pool_rows, *ci(pool[(s, o)])) for s in sizes if pool.get((s, o))]
            if pts:
                x, m, h = map(np.array, zip(*pts))
                ax.errorbar(x * (1 + 0.04 * (k - len(names) / 2)), m, yerr=h, marker="o", capsize=3, label=o)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks([100 * s / pool_rows for s in sizes], [f"{100 * s / pool_rows:.1f}%" for s in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("budget (share of the pool)")
        ax.set_title(title + " (NLL, nats/byte)", fontsize=10)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("mean over tasks, 95% CI (below 0: tsds better)")
    fig.tight_layout()
    FIG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG, dpi=110)


def neural_rows():
    """The tiny-transformer and SmolLM2 tables of the last run of bench_eval.py --tiny --model."""
    if not OLD.is_file():
        return []
    from bench_eval import table_small

    rows = json.loads(OLD.read_text())["rows"]
    out = []
    for stage, title in (("tiny", "Tiny transformer from scratch (food, 1%, seed 0)"),
                         ("model", "SmolLM2-135M-Instruct, last 2 layers finetuned (food, 1%, seed 0)")):
        t = table_small(rows, stage)
        if t:
            out += ["", f"### {title}", "", t]
    return out


def report(data):
    from notes_eval import NOTES

    meta, rows = data["meta"], [r for r in data["rows"] if "stage" in r]
    pool_rows = meta["pool_rows"]
    tasks = [d["name"] for d in meta["tasks"]]
    sizes = sorted({r["size"] for r in rows if r.get("stage") == "grid"})
    by = nll_by([r for r in rows if r.get("stage") in ("grid", "variants")])
    per_cell, pooled = diff_tables(by, tasks, sizes, "tsds", BASELINES, pool_rows)
    variants = list(dict.fromkeys(r["method"] for r in rows if r.get("stage") == "variants"))
    _, v_pooled = diff_tables(by, tasks, sizes, "tsds", variants, pool_rows)
    v_pooled_neg = {k: [-x for x in v] for k, v in v_pooled.items()}  # variant - default
    vs_knn = {}
    for size in sizes:
        for v in variants:
            for t in tasks:
                d = paired(by, t, size, v, "knn")
                if d:
                    vs_knn.setdefault((size, v), []).append(np.mean(d))
    figure(pooled, sizes, pool_rows, (v_pooled_neg, variants))
    n_seeds = len(meta["seeds"])
    one = int(round(0.01 * pool_rows))
    parts = [
        "# Does the selection help? Downstream results on the evaluation suite",
        "",
        f"Produced by `{meta['command']}` ({meta['seconds'] / 60:.0f} min in all on a shared 2-core CPU, "
        f"summed over the cells, last run {meta['date']}; "
        "cells cached under /tmp/tsds-suite-cache, so a rerun resumes; `--report-only` rewrites this page from "
        "`benchmarks/results/eval_suite.json`). The suite is data: `benchmarks/suite.json`.",
        "",
        "**Model.** Every number comes from the fast mode: a byte-level 4-gram language model (interpolated "
        "Witten-Bell) trained from scratch on the selection and scored on the task's held-out set (mean negative "
        "log-likelihood per byte, nats; lower is better). The same recipe for every method; selections differ "
        "only in which texts they hold. The real-model harness (`tsds eval --mode model`, SmolLM2-135M) is not "
        "run for the grid on this 2-core CPU (last section).",
        "",
        f"**Methods.** `tsds`: the default setting (cosine, sigma 0.3, C 1, alpha 0.5 lowered until the support "
        f"of p holds twice the budget, n distinct draws in turns over the queries, each taking its nearest row "
        f"of the transport plan not drawn yet, at most one row per near-duplicate cluster while distinct "
        f"clusters last). `knn`: cosine nearest neighbours of the 20 queries, "
        "round-robin. `random`: uniform, distinct. `dsir`: hashed n-gram importance resampling fitted on the 20 "
        f"queries. `full`: the whole eligible pool ({pool_rows:,} rows). {n_seeds} seeds (the draw); knn and full "
        "are deterministic. Every method selects from the same eligible rows per task (one eligibility mask: "
        "the task's query and held-out texts and their near copies removed).",
        "",
        "## The suite",
        "",
        "Five bundled task folders and nine tasks carved from the pool's own labels: for each, a seeded choice "
        "of 20 query rows and 200 held-out rows of the label, which are then never selectable (the harness "
        "refuses to run if one is).",
        "",
        suite_table(rows, meta),
        "",
        f"## Paired differences: tsds − baseline (held-out NLL, nats/byte; below 0: tsds better)",
        "",
        "Pooled over the tasks: the mean of the per-task differences (each a mean over seeds), ± the 95% "
        "t confidence interval over tasks; in brackets, on how many tasks tsds's mean is lower.",
        "",
        pooled_table(pooled, sizes, BASELINES, pool_rows),
        "",
        "![paired differences](figures/eval_paired_differences.png)",
        "",
        f"Per task and budget: mean over the {n_seeds} seeds ± the 95% t interval over seeds (2 degrees of "
        "freedom, so wide; 0 spread when neither selection varies with the seed). ✓: the interval lies below 0 "
        "(tsds better), ✗: above 0.",
        "",
        per_cell,
        "",
        "## Held-out NLL per task (nats/byte, mean ± sd over seeds; best per row in bold)",
        "",
        nll_table(by, tasks, sizes, ["tsds", "knn", "random", "dsir", "full"], pool_rows),
        "",
        "## Variants of tsds on the same cells",
        "",
        "**tsds previous default**: alpha 0.5 lowered until the support of p holds n (not 2n), n distinct draws "
        "in proportion to p (Gumbel top-k), at most one per near-duplicate cluster: the default until the draw in "
        "turns replaced it. **tsds plain draw**: the previous default's p drawn by n independent Gumbel top-k "
        "draws, with no cluster rule (the default before this suite). **tsds systematic**: the previous default's "
        "p drawn by systematic (dependent) rounding of n p (`tsds.core.sampling.draw_systematic`). **tsds support "
        "2n**: the default's p (support 2n), drawn in proportion to p, plain draw. **tsds support n**: the largest "
        "alpha up to 1 (not 0.5) whose support holds n, plain draw. **tsds support 2n systematic**: support 2n, "
        "systematic draw. Cells not run are left out (the brackets say on how many tasks a figure rests).",
        "",
        "Variant − tsds default, pooled over tasks (below 0: the variant is better):",
        "",
        pooled_table(v_pooled_neg, sizes, variants, pool_rows, head="{o} − tsds"),
        "",
        "Variant − knn, pooled over tasks:",
        "",
        pooled_table(vs_knn, sizes, variants, pool_rows, head="{o} − knn"),
        "",
        f"## Duplicates: 10% of the pool's rows are copies (budget {one})",
        "",
        duplicates_section(rows, one, pool_rows),
        "",
        "## Neural models (earlier runs of `benchmarks/bench_eval.py --tiny --model`, 5 bundled tasks' food task)",
        *neural_rows(),
        "",
        NOTES.strip(),
        "",
    ]
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC} and {FIG}")
