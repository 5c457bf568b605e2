"""The evaluation suite behind docs/results.md: every method on every task of benchmarks/suite.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_suite.py --store /tmp/store          # the whole suite
    python benchmarks/bench_suite.py --estimate                # time one task and print the expected time
    python benchmarks/bench_suite.py --budgets 0.01            # one budget (cells already run are reused)
    python benchmarks/bench_suite.py --report-only             # rewrite docs from benchmarks/results/eval_suite.json

Stages (fast mode: a byte 4-gram LM trained from scratch on each selection, scored on the task's held-out set):
1. grid: tasks x budgets x seeds x {tsds (the default setting), knn, random, dsir, full};
2. variants of tsds on the same cells: the previous default (support ~n, draws in proportion to p, one per
   cluster), its plain draw (no cluster rule), systematic draw, support of p >= 2n, support ~n (alpha up to 1);
3. duplicates: the pool plus copies making 10% of its rows (exact and lightly edited, some near the
   queries), 1% budget: tsds, the previous default, its plain draw, sigma 0, knn, random.
Every (stage, task, budget, method) cell is cached under --cache as it finishes: a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))

from tsds.evaluation.harness import (MethodSpec, PoolView, evaluate_methods, read_jsonl,  # noqa: E402
                                     task_eligibility)
from tsds.evaluation.suite import load_suite, suite_tasks  # noqa: E402

SUITE = ROOT / "benchmarks/suite.json"
POOL = ROOT / "data/demo/pool.jsonl.gz"
RESULTS = ROOT / "benchmarks/results/eval_suite.json"

BASE = {"sampling": "without-replacement"}
DEFAULT = {"preset": "default"}
# The default before the draw in turns: support of p ~n (alpha_auto 1), n Gumbel top-k draws in proportion to
# p, at most one per near-duplicate cluster. An explicit alpha_auto turns the preset's draw rules off, so
# the cluster rule is given again.
PREVIOUS = {**DEFAULT, "alpha_auto": 1.0, "alpha_auto_max": 0.5, "one_per_cluster": True}
METHODS = [MethodSpec("tsds", "tsds", DEFAULT), MethodSpec("knn", "knn", BASE),
           MethodSpec("random", "random", BASE), MethodSpec("dsir", "dsir", BASE), MethodSpec("full", "full", BASE)]
# Variants. The draw variants redraw the previous default's p; an explicit alpha_auto (the support variants)
# without one_per_cluster means the plain draw (n Gumbel top-k draws, no cluster rule).
VARIANTS = [MethodSpec("tsds previous default", "tsds", PREVIOUS),
            MethodSpec("tsds plain draw", "tsds", {**PREVIOUS, "one_per_cluster": False}),
            MethodSpec("tsds systematic", "tsds", {**PREVIOUS, "draw": "systematic"}),
            MethodSpec("tsds support 2n", "tsds", {**DEFAULT, "alpha_auto": 2.0, "alpha_auto_max": 0.5}),
            MethodSpec("tsds support n", "tsds", {**DEFAULT, "alpha_auto": 1.0, "alpha_auto_max": 1.0}),
            MethodSpec("tsds support 2n systematic", "tsds",
                       {**DEFAULT, "alpha_auto": 2.0, "alpha_auto_max": 0.5, "draw": "systematic"})]
DUPLICATES = [MethodSpec("tsds", "tsds", DEFAULT), VARIANTS[0], VARIANTS[1],
              MethodSpec("tsds sigma=0", "tsds", {**PREVIOUS, "sigma": 0.0}),
              MethodSpec("knn", "knn", BASE), MethodSpec("random", "random", BASE)]
DUP_SHARE = 0.10
DUP_COPIES = 10  # per copied text: half exact, half lightly edited
DUP_NEAR = 15  # copied texts per task taken among its queries' nearest neighbours; the rest at random


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, flush=True)


class Cache:
    """One JSON file per (stage, task, size, method): the rows of all its seeds."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, *key) -> Path:
        name = "__".join(str(k).replace(" ", "_").replace("/", "_") for k in key)
        return self.folder / f"{name}.json"

    def get(self, *key):
        p = self.path(*key)
        return json.loads(p.read_text()) if p.is_file() else None

    def put(self, rows, *key) -> None:
        p = self.path(*key)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, default=float))
        tmp.replace(p)


def run_cells(view, tasks, sizes, specs, seeds, stage, cache, eligibility, budget_of, sizes_all=()) -> list[dict]:
    rows = []
    for task in tasks:
        for size in sizes:
            for spec in specs:
                key = (stage, task.name, size, spec.name, ",".join(map(str, seeds)))
                got = cache.get(*key)
                if got is None and spec.method == "full":  # the whole eligible pool, whatever the budget
                    other = next((g for g in (cache.get(stage, task.name, s, spec.name, key[-1]) for s in sizes_all)
                                  if g), None)
                    got = [{**r, "size": size, "budget": size / r["pool_rows"]} for r in other] if other else None
                if got is None:
                    if task.name not in eligibility:
                        eligibility[task.name] = task_eligibility(view, task)
                    started = time.time()
                    got = evaluate_methods(view, task, size, [spec], seeds, mode="ngram", reference=False,
                                           eligibility=eligibility[task.name])
                    for r in got:
                        r.update(stage=stage, budget_share=budget_of(size), cell_seconds=time.time() - started)
                    cache.put(got, *key)
                    log(f"{stage:10s} {task.name:20s} n={size:<5d} {spec.name:16s} "
                        f"nll={np.mean([r['nll'] for r in got]):.4f} ({time.time() - started:.1f} s)")
                rows += got
    return rows


def collect(cache, tasks, sizes, seeds, dup_size) -> list[dict]:
    """Every cell of the suite found in the cache (this run's and earlier runs'), in suite order."""
    tag = ",".join(map(str, seeds))
    rows = []
    for stage, specs, cell_sizes in (("grid", METHODS, sizes), ("variants", VARIANTS, sizes),
                                     ("duplicates", DUPLICATES, [dup_size])):
        for t in tasks:
            for size in cell_sizes:
                for spec in specs:
                    got = cache.get(stage, t.name, size, spec.name, tag)
                    if got is None and spec.method == "full":  # the whole eligible pool at every budget
                        other = next((g for g in (cache.get(stage, t.name, s, spec.name, tag) for s in sizes) if g), [])
                        got = [{**r, "size": size, "budget": size / r["pool_rows"]} for r in other]
                    rows += got or []
    meta = cache.get("duplicates-meta")
    return rows + ([meta] if meta else [])


# ----------------------------------------------------------------------------------------- duplicates
def duplicated_pool(view: PoolView, tasks, work: Path) -> Path:
    """The pool plus copies making DUP_SHARE of the new pool's rows: per task DUP_NEAR texts among its
    queries' nearest neighbours, the rest at random (never a task's own rows), each copied DUP_COPIES times
    (half exact, half lightly edited); rows shuffled. Built once under ``work``."""
    from bench_eval import write_with_copies
    from tsds.store import build_store

    store_dir = work / "dup-store"
    if (store_dir / "store.json").is_file():
        return store_dir
    work.mkdir(parents=True, exist_ok=True)
    records = read_jsonl(POOL)
    n = len(records)
    n_texts = math.ceil(DUP_SHARE * n / ((1 - DUP_SHARE) * DUP_COPIES))
    rng = np.random.default_rng(0)
    banned = set()
    for t in tasks:
        if t.pool_rows is not None:
            banned.update(t.pool_rows.tolist())
    index = view.store.index("cosine")
    chosen: list[int] = []
    for t in tasks:
        q = view.embed(t.query_texts)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        _, ids = index.search(q, 10)
        near = [int(i) for i in np.unique(ids.ravel()) if i >= 0 and i not in banned and i not in chosen]
        chosen += rng.choice(near, size=min(DUP_NEAR, len(near)), replace=False).tolist()
    rest = np.setdiff1d(np.arange(n), np.array(chosen + sorted(banned)))
    chosen += rng.choice(rest, size=n_texts - len(chosen), replace=False).tolist()
    path, extra = write_with_copies(records, chosen, DUP_COPIES, work / "pool-dup.jsonl.gz")
    log(f"duplicated pool: {n} + {extra} copies of {len(chosen)} texts ({extra / (n + extra):.1%}) -> {path}")
    build_store([path], store_dir, embedder_spec="static")
    return store_dir


def copy_flags(store_dir: Path) -> np.ndarray:
    """Per row of the duplicated store: whether it is an added copy (not an original pool row)."""
    from tsds.store import PoolStore

    store = PoolStore(store_dir)
    return np.array([("duplicate_of" in r) for e in store.files for r in read_jsonl(e["path"])], dtype=bool)


# ----------------------------------------------------------------------------------------------- run
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=ROOT / "demo-out/store", help="the demo pool's store (built if missing)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/tsds-suite-cache"), help="per-cell results (resume)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tsds-suite-work"), help="the duplicated pool and its store")
    ap.add_argument("--budgets", default=None, help="comma-separated shares of the pool (default: the suite's)")
    ap.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    ap.add_argument("--stages", default="grid,variants,duplicates")
    ap.add_argument("--methods", default=None, help="comma-separated method names of the grid and variants "
                                                    "(default: all)")
    ap.add_argument("--estimate", action="store_true", help="run the first task at 1%% and print the expected time")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.report_only:
        from report_suite import report

        report(json.loads(RESULTS.read_text()))
        return
    suite = json.loads(SUITE.read_text())
    defs = load_suite(SUITE)
    if args.tasks:
        keep = set(args.tasks.split(","))
        defs = [d for d in defs if d.name in keep]
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else suite["budgets"]
    seeds = suite["seeds"]
    stages = args.stages.split(",")
    started = time.time()
    if not (args.store / "store.json").is_file():
        from tsds.store import build_store

        log(f"building the demo pool store at {args.store} (static embedder) ...")
        build_store([POOL], args.store, embedder_spec="static")
    view = PoolView(args.store)
    tasks = suite_tasks(defs, view, ROOT)
    n_pool = view.store.n_rows
    sizes = [int(round(b * n_pool)) for b in budgets]
    cache = Cache(args.cache)
    elig: dict = {}
    share = {s: b for s, b in zip(sizes, budgets)}
    if args.estimate:
        t0 = time.time()
        run_cells(view, tasks[:1], [int(round(0.01 * n_pool))], METHODS + VARIANTS, seeds, "grid", cache, elig,
                  lambda s: s / n_pool)
        per = time.time() - t0
        log(f"one task at 1%, {len(METHODS + VARIANTS)} methods x {len(seeds)} seeds: {per:.0f} s; the grid of "
            f"{len(defs)} tasks x {len(budgets)} budgets: about {per * len(defs) * len(budgets) / 60:.0f} min "
            "(5% cells cost more), plus the duplicated pool")
        return
    rows: list[dict] = []
    wanted = set(args.methods.split(",")) if args.methods else None
    pick = lambda specs: [s for s in specs if wanted is None or s.name in wanted]  # noqa: E731
    all_sizes = [int(round(b * n_pool)) for b in suite["budgets"]]
    if "grid" in stages:
        rows += run_cells(view, tasks, sizes, pick(METHODS), seeds, "grid", cache, elig, share.get, all_sizes)
    if "variants" in stages:
        rows += run_cells(view, tasks, sizes, pick(VARIANTS), seeds, "variants", cache, elig, share.get)
    if "duplicates" in stages:
        dstore = duplicated_pool(view, tasks, args.work)
        dview = PoolView(dstore)
        size = int(round(0.01 * n_pool))
        dview.flags = copy_flags(dstore)  # the harness reports each selection's share of flagged rows
        rows += run_cells(dview, tasks, [size], DUPLICATES, seeds, "duplicates", cache, {}, lambda s: 0.01)
        cache.put({"stage": "duplicates-meta", "copy_rows": int(dview.flags.sum()),
                   "pool_rows": int(dview.flags.size)}, "duplicates-meta")
    rows = collect(cache, tasks, all_sizes, seeds, int(round(0.01 * n_pool)))
    cells = {(r["stage"], r["task"], r["size"], r["method"]): r.get("cell_seconds", 0) for r in rows if "task" in r}
    meta = {"command": "python benchmarks/bench_suite.py", "seconds": float(sum(cells.values())), "date": time.strftime("%Y-%m-%d"),
            "budgets": suite["budgets"],
            "seeds": seeds, "pool_rows": n_pool,
            "tasks": [{**d.__dict__, "heldout_size": len(t.heldout)} for d, t in zip(defs, tasks)]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, separators=(",", ":"), default=float) + "\n")
    tmp.replace(RESULTS)
    log(f"done in {time.time() - started:.0f} s; rows in {RESULTS}")
    from report_suite import report

    report(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    main()
