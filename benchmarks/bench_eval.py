"""The five bundled tasks with neural models; docs/results.md itself now comes from the suite.

    .venv/bin/python benchmarks/bench_eval.py                 # = benchmarks/bench_suite.py (docs/results.md)
    .venv/bin/python benchmarks/bench_eval.py --report-only   # = benchmarks/bench_suite.py --report-only
    .venv/bin/python benchmarks/bench_eval.py --tiny --model  # the 5-task run below, then docs/results.md

With --tiny, --model or --minilm-store, the 5-task run (its rows in benchmarks/results/eval.json, whose
neural-model rows docs/results.md shows):
1. grid: 5 tasks x budgets 0.5%, 1%, 5% of the pool x 3 seeds x {tsds, random, knn, dsir, full}, each
   selection trained into a byte 4-gram LM from scratch (fast mode) and scored on the task's held-out set;
2. variants of TSDS at 1%: draws with replacement (the paper), sigma = 0, C = 5, alpha = 0.9, and the MiniLM
   embedder when a MiniLM store of the pool exists (--minilm-store; building one takes ~15 min of 1 CPU);
3. robustness: the pool plus 300 texts copied 20 times each (10 exact, 10 lightly edited), 1% budget;
4. optional (--tiny): the same comparison with a tiny byte-level transformer from scratch (one task, 1%);
5. optional (--model): SmolLM2-135M-Instruct, last 2 layers finetuned with a fixed recipe (one task, 1%).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tsds.evaluation.harness import (TSDS_FIXED, MethodSpec, PoolView, default_methods,  # noqa: E402
                                     evaluate_methods, load_task, read_jsonl)

TASKS = ["food", "computing-networking", "zoology", "games", "science-quotes"]
BUDGETS = [0.005, 0.01, 0.05]
SEEDS = [0, 1, 2]
POOL = ROOT / "data/demo/pool.jsonl.gz"
STORE = ROOT / "demo-out/store"
WORK = ROOT / "benchmarks/work"
RESULTS = ROOT / "benchmarks/results/eval.json"

VARIANTS = [
    MethodSpec("tsds", "tsds", TSDS_FIXED),
    MethodSpec("tsds with replacement", "tsds", {**TSDS_FIXED, "sampling": "with-replacement"}),
    MethodSpec("tsds sigma=0", "tsds", {**TSDS_FIXED, "sigma": 0.0}),
    MethodSpec("tsds C=5", "tsds", {**TSDS_FIXED, "C": 5.0}),
    MethodSpec("tsds alpha=0.9", "tsds", {**TSDS_FIXED, "alpha": 0.9}),
]
ROBUST = [MethodSpec("tsds", "tsds", TSDS_FIXED), MethodSpec("tsds sigma=0", "tsds", {**TSDS_FIXED, "sigma": 0.0}),
          MethodSpec("random", "random", {"sampling": "without-replacement"}),
          MethodSpec("knn", "knn", {"sampling": "without-replacement"}),
          MethodSpec("dsir", "dsir", {"sampling": "without-replacement"})]


def log(msg: str) -> None:
    print(msg, flush=True)


def expected_seconds(args) -> dict:
    # measured on the 2-core development machine (shared with other jobs): selection ~1-2 s, n-gram fit+score
    # ~0.2-1 s (full pool ~10 s), figures ~0.5 s; DSIR features of the pool once ~15 s; store build ~60 s.
    grid = len(TASKS) * len(BUDGETS) * (len(SEEDS) * 3 + 1) * 0.6 + len(TASKS) * 8
    variants = len(TASKS) * len(SEEDS) * (len(VARIANTS) - 1) * 0.4
    robust = 30 + len(TASKS) * len(SEEDS) * len(ROBUST) * 0.5
    est = {"store (if missing)": 0 if (STORE / "store.json").is_file() else 90, "grid": grid,
           "variants": variants, "robustness": robust}
    if args.minilm_store:
        est["minilm variant"] = len(TASKS) * len(SEEDS) * 4
    if args.tiny:
        est["tiny transformer"] = 6 * 60
    if args.model:
        est["SmolLM2"] = 150 + 5 * 90
    return est


def ensure_store():
    from tsds.store import build_store

    if not (STORE / "store.json").is_file():
        log("building the demo pool store (static embedder) ...")
        build_store([POOL], STORE, embedder_spec="static")
    return PoolView(STORE)


def light_edit(text: str, rng: random.Random) -> str:
    words = text.split()
    kind = rng.randrange(4)
    if kind == 0 and len(words) > 3:
        del words[rng.randrange(1, len(words))]
    elif kind == 1:
        words = [w.lower() for w in words]
    elif kind == 2 and len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        words.append(rng.choice([".", "!", "(sic)", "etc."]))
    return " ".join(words)


def duplicated_pool(view: PoolView) -> Path:
    """The pool plus 300 texts x 20 copies: per task 30 of its queries' 300 nearest neighbours, 150 random."""
    from tsds.store import build_store

    out = WORK / "dup-pool"
    store_dir = out / "store"
    if (store_dir / "store.json").is_file():
        return store_dir
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = read_jsonl(POOL)
    index = view.store.index("cosine")
    chosen: list[int] = []
    for t in TASKS:
        q = view.embed(load_task(ROOT / "data/demo/tasks" / t).query_texts)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        _, ids = index.search(q, 15)
        near = np.unique(ids.ravel())
        chosen += rng.choice(near, size=30, replace=False).tolist()
    rest = np.setdiff1d(np.arange(len(records)), chosen)
    chosen += rng.choice(rest, size=150, replace=False).tolist()
    path, extra = write_with_copies(records, chosen, 20, out / "pool-dup.jsonl.gz")
    log(f"duplicated pool: {len(records)} + {extra} copies of {len(chosen)} texts -> {path}")
    build_store([path], store_dir, embedder_spec="static")
    return store_dir


def write_with_copies(records: list[dict], chosen: list[int], copies: int, path: Path) -> tuple[Path, int]:
    """Write ``records`` plus ``copies`` copies of each chosen row (the first half exact, the rest lightly
    edited; seeded), shuffled, to a gzipped JSON Lines ``path``. Returns (path, number of copies)."""
    prng = random.Random(0)
    extra = []
    for r in chosen:
        rec = records[r]
        for c in range(copies):
            text = rec["text"] if c < copies // 2 else light_edit(rec["text"], prng)
            extra.append({**rec, "id": f"{rec['id']}-dup{c}", "text": text, "duplicate_of": rec["id"]})
    allrec = records + extra
    prng.shuffle(allrec)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for rec in allrec:
            f.write(json.dumps(rec) + "\n")
    return path, len(extra)


def run(args) -> list[dict]:
    est = expected_seconds(args)
    total = sum(est.values())
    log("expected running time: about %d min (%s)" % (math.ceil(total / 60),
                                                      ", ".join(f"{k} {v / 60:.1f} min" for k, v in est.items())))
    started = time.time()
    view = ensure_store()
    rows: list[dict] = []
    tasks = {t: load_task(ROOT / "data/demo/tasks" / t) for t in TASKS}
    n_pool = view.store.n_rows
    log("stage 1: grid")
    for t, task in tasks.items():
        for b in BUDGETS:
            size = int(round(b * n_pool))
            for r in evaluate_methods(view, task, size, default_methods(), SEEDS, mode="ngram", log=log,
                                      reference=(b == BUDGETS[0])):
                rows.append({**r, "stage": "grid"})
    log(f"  ({time.time() - started:.0f} s)")
    log("stage 2: variants at 1%")
    variants = list(VARIANTS[1:])
    views = {}
    if args.minilm_store:
        variants.append(MethodSpec("tsds minilm", "tsds", TSDS_FIXED, store=str(args.minilm_store)))
        views[str(args.minilm_store)] = PoolView(args.minilm_store)
    size = int(round(0.01 * n_pool))
    for t, task in tasks.items():
        for r in evaluate_methods(view, task, size, variants, SEEDS, mode="ngram", log=log, reference=False,
                                  views=views):
            rows.append({**r, "stage": "variants"})
    log(f"  ({time.time() - started:.0f} s)")
    log("stage 3: robustness (duplicated pool)")
    dview = PoolView(duplicated_pool(view))
    dsize = int(round(0.01 * n_pool))  # same budget in examples as the clean pool's 1%
    for t, task in tasks.items():
        for r in evaluate_methods(dview, task, dsize, ROBUST, SEEDS, mode="ngram", log=log, reference=False):
            rows.append({**r, "stage": "robustness"})
    log(f"  ({time.time() - started:.0f} s)")
    if args.tiny:
        from tsds.evaluation.fast import TinyRecipe

        log("stage 4: tiny transformer (food, 1%)")
        recipe = TinyRecipe(d_model=64, n_layers=2, n_heads=4, context=64, batch=16, steps=150)
        for r in evaluate_methods(view, tasks["food"], size, default_methods(), [0], mode="tiny",
                                  tiny_recipe=recipe, log=log):
            rows.append({**r, "stage": "tiny"})
    if args.model:
        from tsds.evaluation.finetune import CausalLMHarness, FinetuneRecipe

        log("stage 5: SmolLM2-135M-Instruct (food, 1%)")
        harness = CausalLMHarness(None, FinetuneRecipe(steps=args.model_steps, max_heldout=60))
        for r in evaluate_methods(view, tasks["food"], size, default_methods(), [0], mode="model",
                                  harness=harness, log=log):
            rows.append({**r, "stage": "model"})
    log(f"done in {time.time() - started:.0f} s (expected about {total:.0f} s)")
    return rows


# ----------------------------------------------------------------------------------------------- report
def fmt(m, s):
    return f"{m:.3f} ± {s:.3f}"


def table_small(rows, stage):
    sel = [r for r in rows if r["stage"] == stage]
    if not sel:
        return None
    lines = ["| method | held-out NLL | perplexity | train loss | trained tokens |", "|---|---:|---:|---:|---:|"]
    for r in sel:
        lines.append(f"| {r['method']} | {r['nll']:.4f} | {r['perplexity']:.2f} | "
                     f"{r.get('train_loss') if r.get('train_loss') is None else round(r['train_loss'], 3)} | "
                     f"{r['recipe'].get('tokens_trained', r.get('trained_tokens', '-'))} |")
    return "\n".join(lines) + f"\n\nModel: {sel[0]['model']}; recipe: `{json.dumps(sel[0]['recipe'])}`; unit: nats per {sel[0]['unit']}."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report-only", action="store_true", help="rewrite docs/results.md from the saved rows")
    ap.add_argument("--tiny", action="store_true", help="also run the tiny-transformer stage (~6 min)")
    ap.add_argument("--model", action="store_true", help="also run the SmolLM2 stage (~10 min; needs gguf)")
    ap.add_argument("--model-steps", type=int, default=8)
    ap.add_argument("--minilm-store", type=Path, default=None, help="a MiniLM store of the same pool")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if not (args.tiny or args.model or args.minilm_store):
        import bench_suite

        sys.argv = [sys.argv[0]] + (["--report-only"] if args.report_only else [])
        bench_suite.main()
        return
    started = time.time()
    rows = run(args)
    cmd = "python benchmarks/bench_eval.py" + (" --tiny" if args.tiny else "") + (" --model" if args.model else "") \
        + (f" --minilm-store {args.minilm_store}" if args.minilm_store else "")
    meta = {"command": cmd, "seconds": time.time() - started, "date": time.strftime("%Y-%m-%d"),
            "expected_min": math.ceil(sum(expected_seconds(args).values()) / 60)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=float) + "\n")
    from report_suite import report as report_suite  # docs/results.md: the suite, with these neural rows

    report_suite(json.loads((ROOT / "benchmarks/results/eval_suite.json").read_text()))


if __name__ == "__main__":
    main()
