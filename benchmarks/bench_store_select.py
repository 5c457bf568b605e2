"""Benchmark: per-task selection on a pool store, cold and warm, against ``--method knn`` on the same store.

How to run
----------
    .venv/bin/python benchmarks/bench_store_select.py STORE [--tasks data/demo/tasks] [--repeats 2]

``STORE`` is a built pool store (``tsds pool build``); it is copied into a temporary folder first, so the
store itself is only read. For each task folder (``queries.jsonl``) and each repeat, three runs of the
CLI in fresh processes, in this order: ``--method knn``; TSDS cold (the copy's ``densities/`` folder
removed first, so every density is computed); TSDS warm (the densities the cold run saved are there).
Size: 1% of the pool; other parameters at their defaults (``--sigma auto``). Recorded per run: wall time
(interpreter start, imports and the embedder included) and the manifest's stage times; per task and
repeat, the ratios cold / knn and warm / knn, measured back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "store_select.json"


def run(store: Path, queries: Path, out: Path, size: int, method: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "tsds.cli", "select", "--pool", str(store), "--queries", str(queries),
           "--size", str(size), "--method", method, "--out", str(out), "--overwrite", "-q"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed:\n{proc.stderr[-2000:]}")
    man = json.loads((out / "manifest.json").read_text())
    timings = man.get("timings", {})
    dens = (man.get("result") or {}).get("densities") or {}
    stages = {k: round(v["seconds"] if isinstance(v, dict) else v, 3) for k, v in timings.items()
              if isinstance(v, (int, float, dict)) and not isinstance(v, bool)}
    return {"wall_s": round(wall, 3), "stages_s": stages,
            "density_points": dens.get("points")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--tasks", type=Path, default=ROOT / "data" / "demo" / "tasks")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    spec = json.loads((args.store / "store.json").read_text())
    rows = int(spec.get("rows") or spec.get("n_rows") or 0)
    size = max(1, rows // 100) if rows else 300
    tasks = sorted(p for p in args.tasks.iterdir() if (p / "queries.jsonl").is_file())
    load = [os.getloadavg()]
    records = []
    with tempfile.TemporaryDirectory(prefix="tsds-store-bench-") as tmp:
        store = Path(tmp) / "store"
        shutil.copytree(args.store, store)
        for r in range(args.repeats):
            for task in tasks:
                q = task / "queries.jsonl"
                out = Path(tmp) / "out"
                knn = run(store, q, out, size, "knn")
                shutil.rmtree(store / "densities", ignore_errors=True)
                cold = run(store, q, out, size, "tsds")
                warm = run(store, q, out, size, "tsds")
                rec = {"task": task.name, "repeat": r, "knn": knn, "cold": cold, "warm": warm,
                       "cold_over_knn": round(cold["wall_s"] / knn["wall_s"], 3),
                       "warm_over_knn": round(warm["wall_s"] / knn["wall_s"], 3)}
                records.append(rec)
                print(json.dumps(rec), flush=True)
    load.append(os.getloadavg())
    cold = [x["cold_over_knn"] for x in records]
    warm = [x["warm_over_knn"] for x in records]
    result = {"benchmark": "per-task selection on a store: cold, warm, against --method knn",
              "created": time.strftime("%Y-%m-%d %H:%M:%S"), "store_rows": rows, "size": size,
              "embedder": spec.get("embedder"), "records": records,
              "cold_over_knn_median": float(np.median(cold)), "cold_over_knn_range": [min(cold), max(cold)],
              "warm_over_knn_median": float(np.median(warm)), "warm_over_knn_range": [min(warm), max(warm)],
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_before_after": [list(map(float, v)) for v in load],
                          "note": "a shared machine: other work ran during the measurement"}}
    print(json.dumps({k: result[k] for k in result if k.endswith(("median", "range"))}))
    if not args.no_write:
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
