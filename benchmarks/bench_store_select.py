"""Benchmark: per-task selection on a pool store, cold and warm, against ``--method knn`` on the same store.

How to run
----------
    .venv/bin/python benchmarks/bench_store_select.py STORE [--tasks data/demo/tasks] [--repeats 2]
        [--results benchmarks/results/store_select_<name>.json]   # another store's figures

``STORE`` is a built pool store (``tsds pool build``); it is copied into a temporary folder first, so the
store itself is only read. First, once, every row's density is computed for the sigma the selections use
(``tsds pool densities --sigma 0.3``, the default setting's, timed) and set aside. Then for each task folder
(``queries.jsonl``) and each repeat, four runs of the CLI in fresh processes, in this order:
``--method knn``; TSDS cold (the copy's ``densities/`` folder removed first, so every density is
computed); TSDS warm (the densities the cold run saved are there: the same task again); TSDS
precomputed (``densities/`` holds only the densities computed ahead: a task never seen). Size: 1% of the
pool; other parameters at their defaults (sigma 0.3, alpha auto). Every process runs with OMP_NUM_THREADS=1
(unless set otherwise). Recorded per run: wall time (interpreter start, imports and the embedder
included) and the manifest's stage times; per task and repeat, the ratios to knn, measured back to back,
and whether the precomputed run's probabilities and indices equal the cold run's, byte for byte.
``--approx`` adds a fifth run, TSDS cold with ``--density approx`` (no densities of either kind in the
store), with its ratio to knn, its own sampled check against exact densities, and how far its selection
moved from the cold exact one (total variation between the probabilities, rows drawn by both).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from tsds.config import PRESETS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "store_select.json"


def _env() -> dict:
    return {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def precompute(store: Path, sigma: str) -> float:
    """``tsds pool densities STORE --sigma SIGMA`` in a fresh process; its wall time."""
    cmd = [sys.executable, "-m", "tsds.cli", "pool", "densities", str(store), "--sigma", sigma, "-q"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"pool densities failed:\n{proc.stderr[-2000:]}")
    return round(time.perf_counter() - t, 3)


def _same(a: Path, b: Path) -> bool:
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in ("probabilities.npy", "selected_indices.npy"))


def run(store: Path, queries: Path, out: Path, size: int, method: str, extra: tuple = ()) -> dict:
    env = _env()
    cmd = [sys.executable, "-m", "tsds.cli", "select", "--pool", str(store), "--queries", str(queries),
           "--size", str(size), "--method", method, "--out", str(out), "--overwrite", "-q", *extra]
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
            "density_points": dens.get("points"), **({"density_check": dens["check"]} if "check" in dens else {})}


def moved(a: Path, b: Path) -> dict:
    """Total variation between two selections' probabilities, and the rows both drew (distinct draws)."""
    p, q = (np.load(x / "probabilities.npy", allow_pickle=False) for x in (a, b))
    i, j = (np.load(x / "selected_indices.npy", allow_pickle=False) for x in (a, b))
    return {"total_variation": float(0.5 * np.abs(p - q).sum()), "drawn_by_both": int(np.intersect1d(i, j).size),
            "drawn": int(i.size)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--tasks", type=Path, default=ROOT / "data" / "demo" / "tasks")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="where to write the results (default: results/store_select.json, the demo store's)")
    ap.add_argument("--sigma", default=repr(PRESETS["default"]["sigma"]),
                    help="the sigma of the densities computed ahead (the selections' own)")
    ap.add_argument("--approx", action="store_true", help="also a cold run with --density approx per task")
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
        shutil.rmtree(store / "densities", ignore_errors=True)
        ahead_s = precompute(store, args.sigma)
        ahead = Path(tmp) / "ahead"
        shutil.copytree(store / "densities", ahead)
        print(json.dumps({"precompute_s": ahead_s}), flush=True)
        for r in range(args.repeats):
            for task in tasks:
                q = task / "queries.jsonl"
                out = Path(tmp) / "out"
                knn = run(store, q, out, size, "knn")
                shutil.rmtree(store / "densities", ignore_errors=True)
                cold = run(store, q, out, size, "tsds")
                shutil.copytree(out, Path(tmp) / "cold-out", dirs_exist_ok=True)
                warm = run(store, q, out, size, "tsds")
                shutil.rmtree(store / "densities")
                shutil.copytree(ahead, store / "densities")
                pre = run(store, q, out, size, "tsds")
                rec = {"task": task.name, "repeat": r, "knn": knn, "cold": cold, "warm": warm, "precomputed": pre,
                       "cold_over_knn": round(cold["wall_s"] / knn["wall_s"], 3),
                       "warm_over_knn": round(warm["wall_s"] / knn["wall_s"], 3),
                       "precomputed_over_knn": round(pre["wall_s"] / knn["wall_s"], 3),
                       "precomputed_identical_to_cold": _same(out, Path(tmp) / "cold-out")}
                if args.approx:
                    shutil.rmtree(store / "densities")
                    rec["approx"] = run(store, q, out, size, "tsds", ("--density", "approx"))
                    rec["approx_over_knn"] = round(rec["approx"]["wall_s"] / knn["wall_s"], 3)
                    rec["approx_over_cold"] = round(rec["approx"]["wall_s"] / cold["wall_s"], 3)
                    rec["approx_moved"] = moved(Path(tmp) / "cold-out", out)
                records.append(rec)
                print(json.dumps(rec), flush=True)
    load.append(os.getloadavg())
    ratios = {name: [x[f"{name}_over_knn"] for x in records]
              for name in ("cold", "warm", "precomputed", *(("approx",) if args.approx else ()))}
    result = {"benchmark": "per-task selection on a store: cold, warm, densities computed ahead, against --method knn",
              "created": time.strftime("%Y-%m-%d %H:%M:%S"), "store_rows": rows, "size": size,
              "embedder": spec.get("embedder"), "records": records, "precompute_s": ahead_s,
              "precompute_sigma": args.sigma, "omp_num_threads": _env()["OMP_NUM_THREADS"],
              "precomputed_identical_to_cold": all(x["precomputed_identical_to_cold"] for x in records),
              **{f"{n}_over_knn_median": float(np.median(v)) for n, v in ratios.items()},
              **{f"{n}_over_knn_range": [min(v), max(v)] for n, v in ratios.items()},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_before_after": [list(map(float, v)) for v in load],
                          "note": "a shared machine: other work ran during the measurement"}}
    print(json.dumps({k: result[k] for k in result if k.endswith(("median", "range", "identical_to_cold"))}))
    if not args.no_write:
        args.results.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
