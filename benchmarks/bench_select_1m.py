"""Benchmark: one selection at N = 1,000,000 x 384 from a memory-mapped .npy, per-stage time and peak memory.

How to run
----------
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_select_1m.py [--n 1000000] [--timeout 1800]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_select_1m.py --n 5000000 --timeout 6000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_select_1m.py --n 5000000 --density approx

The data and the job are bench_select.py's (same generator and seed, M = 500 queries near 6 clusters, size
2000, alpha 0.5, C 5, sigma 0.75, euclidean, the default index: IVF-Flat with its lists in a mapped
file), at N = 1M: the candidate .npy (1.5 GB) is written once to benchmarks/work/ and read memory-mapped
by the CLI. One run in a fresh process under /usr/bin/time -v. Recorded: wall time, per-stage seconds
and peak RSS from the --log-json lines, the process's peak RSS against the embedding matrix, K, the
density points, the thread setting and the machine's load average before and after (a shared machine).
Writes benchmarks/results/select_1m.json (select_5m.json for --n 5000000). The pool is generated in
memory once (one copy of the rows) and written shuffled in chunks, so 5M x 384 (7.7 GB) fits this machine.
``--density approx`` runs the same job with approximate densities (select_<n>_approx.json), and records
the run's own check of a sample against exact densities (tsds.pipeline.density_check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_select as bs  # noqa: E402

RESULTS = bs.ROOT / "benchmarks" / "results"


def label(n: int) -> str:
    """1000000 -> '1m', 5000000 -> '5m': names the results file and the output folder of one size."""
    return f"{n / 1e6:g}m" if n % 100_000 == 0 else str(n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--results", type=Path, default=None, help="default: benchmarks/results/select_<n>.json")
    ap.add_argument("--density", choices=("exact", "approx"), default="exact")
    args = ap.parse_args(argv)
    tail = "" if args.density == "exact" else "_approx"
    results = args.results or RESULTS / f"select_{label(args.n)}{tail}.json"
    d, m = 384, 500
    os.environ.setdefault("PYTHONPATH", str(bs.ROOT / "src"))
    load = [os.getloadavg()]
    t = time.perf_counter()
    cpath, qpath, data = bs.ensure_data(args.n, d, m)
    data_s = round(time.perf_counter() - t, 1)
    load.append(os.getloadavg())
    job = bs.run_job(cpath, qpath, "auto", bs.WORK / f"out_{label(args.n)}{tail}", args.timeout,
                     extra=("--density", args.density))
    load.append(os.getloadavg())
    emb_mb = args.n * d * 4 / 1e6
    r = bs.summarise("auto", job, emb_mb)
    stages = r.get("stages") or job.get("partial_stages") or {}
    result = {"benchmark": "bench_select_1m", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "problem": {"n_candidates": args.n, "dim": d, "n_queries": m, **bs.PARAMS, "index": "auto"},
              "data": data, "data_prepare_s": data_s, "embedding_matrix_mb": round(emb_mb, 1),
              "wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"], "peak_over_embeddings": r.get("peak_over_embeddings"),
              "timed_out": job.get("timed_out", False), "k_used": r.get("k_used"), "k_history": r.get("k_history"),
              "density_points": r.get("density_points"), "density": args.density,
              "density_check": _check(bs.WORK / f"out_{label(args.n)}{tail}"),
              "stages": {k: {"seconds": v.get("seconds"), "peak_rss_mb": v.get("peak_rss_mb")} for k, v in stages.items()},
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                          "loadavg_start_after_data_after_job": [list(map(float, v)) for v in load],
                          "note": "a shared machine: other developers' work ran during the measurement"}}
    print(json.dumps({k: v for k, v in result.items() if k not in ("data",)}, indent=1))
    if not args.no_write:
        results.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {results}")
    return 0


def _check(out: Path) -> dict | None:
    """The run's own sampled check against exact densities (approximate densities only)."""
    path = out / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["result"].get("densities", {}).get("check")


if __name__ == "__main__":
    raise SystemExit(main())
