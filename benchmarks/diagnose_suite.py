"""Why a tsds setting and knn differ on the suite's cells: the figures behind docs/results.md's diagnosis.

    OMP_NUM_THREADS=1 python benchmarks/diagnose_suite.py --store demo-out/store --size 1795 [--tasks food,games]

Per task (seed 0, or each of ``--seeds``), for the previous default (support of p about n, n draws in proportion to p; ``--method
default`` for the current one) against knn's round robin, one JSON line:
- ``overlap``: share of the n rows both select; ``d_only_tsds``/``d_only_knn``: mean distance of the rows only
  one of them took to their nearest query;
- ``rho_gt1``: share of tsds's rows with density rho > 1; ``plan_L_cv``: coefficient of variation of the
  plan's neighbours per query; ``cluster_changed``: draws that the setting's draw rules (cluster rule, turns)
  changed against the plain draw of the same p;
- ``knn_reach_min/max``: the deepest rank knn's round robin reaches per query (most isolated / most shared
  query); ``q_deeper_tsds``: queries whose plan reaches deeper than knn; ``shared_deeper``/``shared_other``:
  mean share of those queries' (the others') plan rows that another query's plan also holds;
  ``corr_reach_shared``: correlation over queries of knn's extra reach with that share;
- ``label_only_tsds``/``label_only_knn``: share of the task's own label among the rows only one took;
- ``only_rows_in_plan``: whether every row only one of them took lies in tsds's plan (support of p);
  ``rows_only_tsds_without_cluster_rule``: the rows only tsds takes when its cluster rule is off.
``--seeds 0,1,2``: one line per seed (the seed orders the queries in the draw in turns).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_suite import DEFAULT, PREVIOUS, SUITE  # noqa: E402
from tsds.evaluation.harness import MethodSpec, PoolView, select, task_eligibility  # noqa: E402
from tsds.evaluation.suite import load_suite, suite_tasks  # noqa: E402
from tsds.methods.knn import round_robin  # noqa: E402


def diagnose(view: PoolView, task, size: int, params: dict, vectors: np.ndarray, seed: int = 0) -> dict:
    elig = task_eligibility(view, task)
    sel, _ = select(MethodSpec("tsds", "tsds", params), view, task, size, seed, eligibility=elig)
    plain, _ = select(MethodSpec("plain", "tsds", {**params, "one_per_cluster": False, "query_turns": False}),
                      view, task, size, seed, eligibility=elig)
    no_rule, _ = select(MethodSpec("no cluster rule", "tsds", {**params, "one_per_cluster": False}),
                        view, task, size, seed, eligibility=elig)
    q = view.embed(task.query_texts)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    D = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * q @ vectors.T))
    D[:, ~elig.mask] = np.inf
    order = np.argsort(D, axis=1, kind="stable")[:, :max(4 * size // len(q) + 64, 1024)]
    knn, _ = round_robin(order, size)
    m = len(q)
    rank = [{int(r): k for k, r in enumerate(order[j])} for j in range(m)]
    reach = np.array([max(rank[j][int(c)] for c in knn[j::m]) + 1 for j in range(m)])  # knn: query j takes every m-th
    L = sel.allocation.support
    cover = np.zeros(vectors.shape[0], dtype=np.int64)
    for j in range(m):
        cover[order[j][:L[j]]] += 1
    shared = np.array([np.mean(cover[order[j][:L[j]]] > 1) for j in range(m)])
    T, K = np.flatnonzero(sel.counts), np.sort(knn)
    only_t, only_k = np.setdiff1d(T, K), np.setdiff1d(K, T)
    differ_no_rule = np.setdiff1d(np.flatnonzero(no_rule.counts), K).size
    own = np.array([tuple(lab) in task.labels if lab else False for lab in view.labels]) if task.labels else None
    rho = sel.density_cache.values[T]
    deeper = L > reach
    mean = lambda x: float(np.mean(x)) if np.size(x) else float("nan")  # noqa: E731
    return {"task": task.name, "seed": seed, "alpha": sel.config.alpha, "support": int(np.count_nonzero(sel.probabilities)),
            "overlap": len(np.intersect1d(T, K)) / size, "d_only_tsds": mean(D[:, only_t].min(0)),
            "d_only_knn": mean(D[:, only_k].min(0)), "rho_gt1": mean(rho > 1.001), "plan_L": int(np.median(L)),
            "plan_L_cv": float(L.std() / L.mean()), "cluster_changed": int(np.count_nonzero(sel.counts != plain.counts) // 2),
            "knn_reach_min": int(reach.min()), "knn_reach_max": int(reach.max()), "q_deeper_tsds": int(deeper.sum()),
            "shared_deeper": mean(shared[deeper]), "shared_other": mean(shared[~deeper]),
            "corr_reach_shared": float(np.corrcoef(reach - L, shared)[0, 1]), "rows_only_tsds": int(only_t.size),
            "rows_only_knn": int(only_k.size), "only_rows_in_plan": bool((sel.probabilities[np.concatenate([only_t, only_k])] > 0).all()),
            "rows_only_tsds_without_cluster_rule": int(differ_no_rule), "label_only_tsds": mean(own[only_t]) if own is not None else None,
            "label_only_knn": mean(own[only_k]) if own is not None else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=ROOT / "demo-out/store")
    ap.add_argument("--size", type=int, default=1795)
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--method", choices=["previous", "default"], default="previous")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    args = ap.parse_args()
    view = PoolView(args.store)
    tasks = suite_tasks(load_suite(SUITE), view, ROOT)
    keep = set(args.tasks.split(",")) if args.tasks else None
    x = np.asarray(view.store.vectors().take(np.arange(view.store.n_rows)), dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    params = PREVIOUS if args.method == "previous" else DEFAULT
    for t in tasks:
        if keep is None or t.name in keep:
            for seed in (int(v) for v in args.seeds.split(",")):
                row = diagnose(view, t, args.size, params, x, seed)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
