"""Gradient features against static and MiniLM embeddings, scored by a real finetune (SmolLM2-135M-Instruct).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gradients_model.py run --minutes 55   # resumes
    .venv/bin/python benchmarks/bench_gradients_model.py report   # the section of docs/results-gradients.md

The quality sub-pool and stores of benchmarks/bench_gradients_compare.py (2,250 rows; `static`, `minilm`,
`gradients-centred` and, with --features, `gradients`: run its `features` and `run` steps first), the tasks
food, zoology and games. Methods on each store: tsds with the default preset (what `tsds select` does) and
knn; random (store-independent) and `none` (the pretrained model) as references. Training recipe and the
paired differences are bench_model.py's (last 2 blocks and the final norm, AdamW 3e-4, 50 steps of 8 x 64
tokens), with SIZE rows per selection and the first HELDOUT held-out texts of each task, the same for every
method. Decontamination and the selection figures (label share) use the static store for every method.
Cells run seed by seed (every task, store and method of seed 0 first), each cached in $WORK/model-cells
under a key of the recipe, the stores and the selection code; the json is rewritten after every cell, so
a stopped run leaves every finished cell in it. --minutes: no cell starts that would end past the limit.
Needs the model: TSDS_SMOLLM2_DIR (see tsds.evaluation.finetune).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import numpy as np  # noqa: E402

import bench_model as bm  # noqa: E402  (recipe, harness wrapper, t intervals, paired differences)

ROOT = HERE.parent
RESULTS = ROOT / "benchmarks/results/gradients_model.json"
DOC = ROOT / "docs/results-gradients.md"
TASKS = ("food", "zoology", "games")
FEATURES = ("static", "minilm", "gradients-centred")
SEEDS = (0, 1, 2)
SIZE = 100  # 4.4% of the sub-pool: the larger budget of the n-gram comparison
HELDOUT = 100
MARKERS = ("<!-- model:begin -->", "<!-- model:end -->")


def plan(seeds=SEEDS, tasks=TASKS, features=FEATURES) -> list[tuple[int, str, str]]:
    """(seed, task, method) in run order: seed by seed, task by task; within a task random first, then tsds
    and knn on each store in the order given."""
    methods = ["random"] + [f"{m} {f}" for f in features for m in ("tsds", "knn")]
    return [(s, t, m) for s in seeds for t in tasks for m in methods]


def fits(now: float, deadline: float | None, seconds: float) -> bool:
    """Whether a step of ``seconds`` started at ``now`` ends by ``deadline`` (None: no limit)."""
    return deadline is None or now + seconds <= deadline


def cell_estimate(measured: list[float], default: float) -> float:
    """Seconds the next cell is expected to take: the slowest cell of this run so far (the machine is
    shared, so the mean would start cells that end late), or ``default`` before the first."""
    return max(measured) if measured else default


def cell_path(work: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return work / f"{key['task']}-{key['method'].replace(' ', '_')}-{key['seed']}-{digest}.json"


def run(args) -> None:
    import torch

    import bench_gradients_compare as gc  # sets the sub-pool's cache folder: imported only to run
    from tsds.embed.gradients import GradientEmbedder
    from tsds.evaluation.finetune import CausalLMHarness
    from tsds.evaluation.harness import (TSDS_PRESET, MethodSpec, PoolView, evaluate_methods, load_task,
                                         task_eligibility)

    recipe = bm.Recipe(size=SIZE, heldout=HELDOUT)
    work = gc.WORK / "model-cells"
    stores = {f: gc.WORK / "stores" / f for f in ("static",) + tuple(args.features)}
    main = PoolView(stores["static"])
    prints = {f: json.loads((p / "store.json").read_text()).get("fingerprint") for f, p in stores.items()}
    base = {"recipe": asdict(recipe), "code": bm.code_digest(), "tsds": TSDS_PRESET, "main_store": prints["static"]}

    def key(task, method, seed):
        feature = method.split(" ", 1)[1] if " " in method else None
        return {**base, "task": task, "method": method, "seed": seed,
                "store": prints[feature] if feature else None}

    full = plan(args.seeds, args.tasks, args.features)
    cells = [c for c in full if c[2].split(" ", 1)[0] in args.methods]
    todo = [c for c in cells if not cell_path(work, key(c[1], c[2], c[0])).is_file()]
    per_cell = recipe.steps * bm.STEP_SECONDS + bm.EVAL_SECONDS + bm.SELECT_SECONDS
    bm.log(f"{len(cells)} cells in the plan, {len(cells) - len(todo)} cached; about "
           f"{math.ceil(len(todo) * per_cell / 60)} min for the rest at {per_cell:.0f} s a cell")
    started = time.time()
    deadline = started + args.minutes * 60 if args.minutes else None
    torch.set_num_threads(1)
    harness = bm.CountingHarness(CausalLMHarness(None, recipe.finetune(), threads=1))
    bm.log(f"model {harness.harness.name} loaded in {harness.harness.load_seconds} s")
    views = {}
    for f in args.features:
        if f == "static":
            continue
        emb = None
        if f.startswith("gradients") and any(m.endswith(" " + f) for _, _, m in todo):
            emb = GradientEmbedder(gc.grad_spec(f == "gradients-centred"), device="cpu", batch_size=8)
        views[str(stores[f])] = PoolView(stores[f], embedder=emb)
    specs = {"random": MethodSpec("random", "random", bm.BASELINE)}
    for f in args.features:
        store = None if f == "static" else str(stores[f])
        specs[f"tsds {f}"] = MethodSpec(f"tsds {f}", "tsds", TSDS_PRESET, store=store)
        specs[f"knn {f}"] = MethodSpec(f"knn {f}", "knn", bm.BASELINE, store=store)
    tasks, elig, measured = {}, {}, []
    for seed, t, m in cells:
        if t not in tasks:
            tasks[t] = load_task(ROOT / "data/demo/tasks" / t)
            ref = cell_path(work, key(t, "none", None))
            if not ref.is_file():
                res = harness.run([], tasks[t].heldout[:HELDOUT], seed=0)
                bm.write_json(ref, {"task": t, "method": "none", "seed": None, "size": 0, **res})
        path = cell_path(work, key(t, m, seed))
        if path.is_file():
            continue
        if not fits(time.time(), deadline, cell_estimate(measured, per_cell)):
            bm.log(f"stopping before {t} {m} seed {seed}: it would end past the --minutes limit")
            break
        if t not in elig:
            elig[t] = task_eligibility(main, tasks[t])
        cell_started = time.time()
        (row,) = evaluate_methods(main, tasks[t], SIZE, [specs[m]], [seed], mode="model", harness=harness,
                                  eligibility=elig[t], reference=False, views=views, log=bm.log)
        measured.append(time.time() - cell_started)
        bm.write_json(path, {**row, "feature": m.split(" ", 1)[1] if " " in m else None,
                             "cell_seconds": round(measured[-1], 1)})
        collect(work, cells, key, recipe, started, harness.harness.name, args)
    collect(work, cells, key, recipe, started, harness.harness.name, args)
    bm.log(f"done in {(time.time() - started) / 60:.1f} min")


def collect(work, cells, key, recipe, started, model, args) -> None:
    """Every cached cell of the plan (and each task's `none` row) into the results json; with ``--merge``,
    the earlier json's rows of the methods not run now are kept (``bench_model.merge_rows``) and its plan
    stays the page's plan."""
    rows = []
    for t in dict.fromkeys(t for _, t, _ in cells):
        ref = cell_path(work, key(t, "none", None))
        if ref.is_file():
            rows.append(json.loads(ref.read_text()))
    rows += [json.loads(p.read_text()) for s, t, m in cells if (p := cell_path(work, key(t, m, s))).is_file()]
    meta = {"command": "python benchmarks/bench_gradients_model.py run" + (f" --minutes {args.minutes:g}"
                                                                          if args.minutes else "")
            + (f" --methods {' '.join(args.methods)}" if len(args.methods) < 3 else "")
            + (f" --merge {args.merge}" if args.merge else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.time() - started),
            "model": model, "recipe": asdict(recipe), "tsds": bm.tsds_setting(), "code_digest": bm.code_digest(),
            "tasks": list(args.tasks), "features": list(args.features), "seeds": list(args.seeds),
            "plan": [list(c) for c in cells], "threads": 1, "git_head": bm.git_head()}
    data = {"meta": meta, "rows": rows}
    if args.merge:
        earlier = json.loads(args.merge.read_text())
        data = bm.merge_rows(data, earlier)
        data["meta"]["plan"] = earlier["meta"]["plan"]
    bm.write_json(args.out, data)


# ----------------------------------------------------------------------------------------------- report
def pairs(features) -> list[tuple[str, str]]:
    """The differences the report shows: gradients against each text embedding (same method), tsds against
    knn on each store, and every method against random."""
    out = []
    grads = [f for f in features if f.startswith("gradients")]
    for g in grads:
        for f in features:
            if not f.startswith("gradients"):
                out += [(f"tsds {g}", f"tsds {f}"), (f"knn {g}", f"knn {f}")]
    out += [(f"tsds {f}", f"knn {f}") for f in features]
    out += [(f"{m} {f}", "random") for f in features for m in ("tsds", "knn")]
    return out


def coverage(data: dict) -> str:
    """Which (seed, task, method) cells of the plan ran, seed by seed."""
    have = {(r["seed"], r["task"], r["method"]) for r in data["rows"]}
    plan_cells = [tuple(c) for c in data["meta"]["plan"]]
    lines = []
    for s in dict.fromkeys(c[0] for c in plan_cells):
        mine = [c for c in plan_cells if c[0] == s]
        done = [c for c in mine if c in have]
        if len(done) == len(mine):
            lines.append(f"seed {s}: all {len(mine)} cells")
        elif not done:
            lines.append(f"seed {s}: not run")
        else:  # name the shorter list
            left = [c for c in mine if c not in have]
            which, named = ("not run", left) if len(left) <= len(done) else ("ran", done)
            lines.append(f"seed {s}: {len(done)} of {len(mine)} cells ({which}: "
                         + ", ".join(f"{t} {m}" for _, t, m in named) + ")")
    return "; ".join(lines) + "."


def table_nll(data: dict) -> str:
    rows = data["rows"]
    out = ["| task | method | seeds | held-out NLL (nats/token), mean ± sd | change vs pretrained | epochs | "
           "label share |", "|---|---|---|---|---|---|---|"]
    methods = list(dict.fromkeys(c[2] for c in data["meta"]["plan"]))
    for t in dict.fromkeys(r["task"] for r in rows):
        ref = next((r["nll"] for r in rows if r["task"] == t and r["method"] == "none"), None)
        out.append(f"| {t} | none (pretrained) | - | {bm._f(ref)} | - | 0 | - |")
        for m in methods:
            rs = sorted((r for r in rows if r["task"] == t and r["method"] == m), key=lambda r: r["seed"])
            if not rs:
                continue
            v = np.array([r["nll"] for r in rs])
            sd = bm._f(float(v.std(ddof=1))) if v.size > 1 else "n/a"
            ep = [r["epochs"] for r in rs if r.get("epochs")]
            lab = [r["label_share"] for r in rs if r.get("label_share") is not None]
            change = bm._f(float(v.mean()) - ref, sign=True) if ref is not None else "n/a"
            out.append(f"| {t} | {m} | {','.join(str(r['seed']) for r in rs)} | {bm._f(float(v.mean()))} ± {sd} | "
                       f"{change} | {f'{min(ep):.1f}-{max(ep):.1f}' if ep else 'n/a'} | "
                       f"{bm._f(float(np.mean(lab)), 2) if lab else 'n/a'} |")
    return "\n".join(out)


def table_pairs(data: dict) -> str:
    out = ["| pair | task | n pairs | differences (by seed) | mean | 95% t interval | |",
           "|---|---|---|---|---|---|---|"]
    for a, b in pairs(data["meta"]["features"]):
        for d in bm.paired_differences(data["rows"], a, b):
            diffs = ", ".join(bm._f(x, sign=True) for x in d["diffs"])
            out.append(f"| {a} − {b} | {d['task']} | {d['n']} | {diffs} | {bm._f(d['mean'], sign=True)} | "
                       f"[{bm._f(d['low'], sign=True)}, {bm._f(d['high'], sign=True)}] | {bm.verdict(d)} |")
    return "\n".join(out)


def section(data: dict) -> str:
    meta = data["meta"]
    r = meta["recipe"]
    trained = [x["cell_seconds"] for x in data["rows"] if x.get("cell_seconds")]
    return "\n".join([
        f"Produced by `benchmarks/bench_gradients_model.py` ({meta['date']}, `{meta['command']}`, one thread on "
        f"a 2-core CPU shared with other jobs; raw rows: `benchmarks/results/gradients_model.json`; `report` "
        f"rewrites this block from them). Model {meta['model']}; selection code digest `{meta['code_digest']}` "
        f"(commit {str(meta.get('git_head'))[:10]})." + bm.merged_note(meta),
        "",
        f"Recipe, the same for every cell: {r['size']} selected rows ({r['size'] / 2250:.1%} of the sub-pool), "
        f"the last {r['train_layers']} blocks and the final norm trained, AdamW {r['lr']:g}, {r['steps']} steps "
        f"of {r['batch']} windows of {r['seq_len']} tokens; held-out: the first {r['heldout']} held-out texts "
        "of each task, mean token NLL in nats (lower is better). tsds: the default preset of that commit "
        f"({', '.join(f'{k} {v}' for k, v in meta['tsds'].items())}); knn: round-robin nearest neighbours of "
        "the 20 queries; random: uniform, distinct. Seeds change the draw (tsds, random) and the training "
        "windows (every method)."
        + (f" A cell (selection, training, scoring) took {min(trained):.0f}-{max(trained):.0f} s." if trained
           else ""),
        "",
        f"**Cells that ran.** {coverage(data)}",
        "",
        table_nll(data),
        "",
        "label share: share of the selected rows carrying one of the task's labels.",
        "",
        "Paired differences (held-out NLL, nats/token; negative: the first is better), one pair per (task, "
        "seed); the pooled row (task `all`) treats every pair as one draw.",
        "",
        table_pairs(data),
    ])


def report(path: Path = RESULTS, doc: Path = DOC) -> str:
    """Replace the block between the markers of the docs page with the section made from the json."""
    block = section(json.loads(path.read_text()))
    text = doc.read_text(encoding="utf-8")
    begin, end = MARKERS
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    text = head + begin + "\n" + block + "\n" + end + rest.split(end, 1)[1]
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(doc)
    return block


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("run", "report"))
    ap.add_argument("--minutes", type=float, default=None, help="start no cell that would end past this limit")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--features", nargs="+", default=list(FEATURES),
                    choices=("static", "minilm", "gradients-centred", "gradients"))
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the json goes (trial runs elsewhere)")
    ap.add_argument("--methods", nargs="+", default=["random", "tsds", "knn"], choices=("random", "tsds", "knn"),
                    help="run only these methods' cells (on every store given)")
    ap.add_argument("--merge", type=Path, default=None,
                    help="keep this json's rows of the methods not run now (same recipe and model)")
    args = ap.parse_args()
    if args.what == "run":
        run(args)
    else:
        print(report(args.out))


if __name__ == "__main__":
    main()
