"""Benchmark: the density stage alone, pruned IVF scan against brute force against the chooser ("auto").

How to run
----------
    .venv/bin/python benchmarks/bench_density.py            # writes benchmarks/results/density.json
    .venv/bin/python benchmarks/bench_density.py --quick    # smaller pools, no JSON written
    .venv/bin/python benchmarks/bench_density.py --approx 8,16,32,64 [--store PATH]   # results/density_approx.json

What it measures
----------------
Two pools, each with an IVF-Flat index built as `tsds select` builds it (tsds.retrieval.build_index):

* ``clustered``: benchmarks/bench_select.py's data (tight clusters, near-duplicates; N x 384, sigma 0.75),
  where the list bounds and the sieve prune most pairs;
* ``diffuse``: unit vectors around 40 wide, overlapping topics (N x 256, sigma ``--diffuse-sigma``),
  where a point's sigma-ball meets most lists and the list bounds prune little;
* ``text`` (with ``--store PATH``): the vectors of a pool store of real texts (its shards' .npy files), at
  sigma 0.259 (what ``--sigma auto`` picked on the demo store), 0.5 and 0.75; the queries are 20 pool rows.

The density points are those a selection computes: the nearest neighbours of M = 500 queries (their
first ``--points`` distinct ones). For each path, the densities of those points (a fresh plan per run, so
the chooser measures again), alternating pruned / brute / auto ``--repeats`` times, in one process; ratios
are taken within each repeat. Recorded per run: seconds, pairs multiplied in full, pairs sieved, points
that went brute force; once: the float32 GEMM rate of this machine on all cores (measured in the same
run) and the multiply-adds of the brute-force product (points x N x d) with their time at that rate, the
floor for exact densities by a product. The densities of the three paths are compared (max relative
difference; float32 products of other shapes round differently).

``--approx P,...``: exact densities by the chooser ("auto") only, then approximate ones
(``tsds.retrieval.Nearest``: each point's P nearest lists) for each P, alternating within each repeat;
recorded per P: seconds and their ratio to auto's in the same repeat, and the shortfall against exact,
(exact - approx) / exact: the share equal (within 1e-6), median, 99th percentile, largest, and the share
more than 1% low. Written to results/density_approx.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_select  # noqa: E402
from compare_authors import gemm_rate  # noqa: E402

from tsds.retrieval import DensityStats, Nearest, build_index, densities, prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "density.json"


def diffuse(n: int, d: int, m: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((40, d))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    lab = rng.integers(0, 40, n)
    x = topics[lab] + rng.standard_normal((n, d)) * (0.9 / np.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = topics[rng.integers(0, 3, m)] + rng.standard_normal((m, d)) * (0.9 / np.sqrt(d))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x.astype(np.float32), q.astype(np.float32)


def run_pool(name, x, q, sigma, points, repeats, rate, index=None, approx=()):
    x = prepare(x, "euclidean")
    t = time.perf_counter()
    index = index or build_index(x, kind="ivf")
    build_s = time.perf_counter() - t
    index.nprobe = max(1, index.nlist // 8)
    _, nb = index.search(prepare(q, "euclidean"), max(64, 8 * points // q.shape[0]))
    ids = np.unique(nb.ravel())[:points]
    densities(index, ids[:16], sigma, path="pruned")  # the shells (once per index, kept on it) before timing
    runs, values = [], {}
    paths = ("auto",) if approx else ("pruned", "brute", "auto")
    for r in range(repeats):
        for path in paths:
            index._density_plans = {}  # the chooser measures afresh in every run
            st = DensityStats()
            t = time.perf_counter()
            values[path] = densities(index, ids, sigma, stats=st, path=path)
            runs.append({"repeat": r, "path": path, "seconds": round(time.perf_counter() - t, 3),
                         "multiplied": st.multiplied, "sieved": st.sieved, "brute_points": st.brute_points,
                         "pairs_within_sigma": st.pairs})
            print(name, runs[-1], flush=True)
        for lists in approx:
            st = DensityStats()
            t = time.perf_counter()
            values[lists] = densities(index, ids, sigma, stats=st, path=Nearest(lists))
            runs.append({"repeat": r, "path": f"nearest {lists}", "seconds": round(time.perf_counter() - t, 3),
                         "multiplied": st.multiplied, "sieved": st.sieved, "pairs_within_sigma": st.pairs})
            print(name, runs[-1], flush=True)
    madds = ids.size * x.shape[0] * x.shape[1]
    if approx:
        return {"pool": name, "n": x.shape[0], "d": x.shape[1], "sigma": sigma, "points": int(ids.size),
                "nlist": index.nlist, "runs": runs, "brute_floor_s": round(madds / rate, 3),
                "approx": [_shortfall(values["auto"], values[lists], lists, runs) for lists in approx]}
    secs = {p: [u["seconds"] for u in runs if u["path"] == p] for p in ("pruned", "brute", "auto")}
    return {
        "pool": name, "n": x.shape[0], "d": x.shape[1], "sigma": sigma, "points": int(ids.size),
        "nlist": index.nlist, "index_build_s": round(build_s, 2), "runs": runs,
        "brute_over_pruned": [round(b / p, 3) for b, p in zip(secs["brute"], secs["pruned"])],
        "auto_over_best": [round(a / min(b, p), 3) for a, b, p in zip(secs["auto"], secs["brute"], secs["pruned"])],
        "brute_multiply_adds": madds, "brute_floor_s": round(madds / rate, 3),
        "max_relative_difference": {f"{a}-{b}": float(np.max(np.abs(values[a] / values[b] - 1)))
                                    for a, b in (("brute", "pruned"), ("auto", "pruned"))},
    }


def _shortfall(exact, approx, lists, runs) -> dict:
    """How far below exact the densities of ``lists`` nearest lists are, and their time over auto's."""
    short = np.maximum(0.0, exact - approx) / exact
    auto = [u["seconds"] for u in runs if u["path"] == "auto"]
    mine = [u["seconds"] for u in runs if u["path"] == f"nearest {lists}"]
    return {"lists": lists, "seconds": mine, "over_exact_time": [round(a / b, 3) for a, b in zip(mine, auto)],
            "equal_share": float(np.mean(short <= 1e-6)), "shortfall_median": float(np.median(short)),
            "shortfall_p99": float(np.quantile(short, 0.99)), "shortfall_max": float(short.max()),
            "low_share": float(np.mean(short > 0.01)), "above_exact": int(np.count_nonzero(approx > exact * (1 + 1e-6)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--points", type=int, default=8000)
    ap.add_argument("--diffuse-sigma", type=float, default=1.1)
    ap.add_argument("--store", type=Path, help="a pool store of real texts (read only)")
    ap.add_argument("--approx", default=None, help="P,P,...: approximate densities over the P nearest lists too")
    args = ap.parse_args(argv)
    approx = tuple(int(v) for v in args.approx.split(",")) if args.approx else ()
    n = 50_000 if args.quick else 200_000
    load = [os.getloadavg()]
    rate = gemm_rate(384)
    pools = []
    cpath, qpath, _ = bench_select.ensure_data(n, 384, 500)
    pools.append(run_pool("clustered", np.load(cpath), np.load(qpath), 0.75, args.points, args.repeats, rate,
                           approx=approx))
    x, q = diffuse(n, 256, 500)
    pools.append(run_pool("diffuse", x, q, args.diffuse_sigma, args.points, args.repeats, rate,
                           approx=approx))
    if args.store:
        shards = sorted(f for f in args.store.joinpath("shards").glob("*.npy")
                        if not f.name.endswith((".hash.npy", ".loc.npy")))
        x = prepare(np.concatenate([np.load(f) for f in shards]), "euclidean")
        q = x[np.random.default_rng(0).choice(x.shape[0], 20, replace=False)]
        index = build_index(x, kind="ivf")
        for sigma in (0.259, 0.5, 0.75):
            pools.append(run_pool(f"text sigma {sigma}", x, q, sigma, args.points, args.repeats, rate, index,
                                   approx=approx))
    load.append(os.getloadavg())
    result = {"benchmark": "density stage: pruned IVF scan, brute force, the chooser (auto)",
              "created": time.strftime("%Y-%m-%d %H:%M:%S"), "pools": pools,
              "gemm_multiply_adds_per_s": round(rate / 1e9, 1) * 1e9,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_before_after": [list(map(float, v)) for v in load],
                          "note": "a shared machine: other work ran during the measurement"}}
    for p in pools:
        if approx:
            for a in p["approx"]:
                print(p["pool"], "nearest", a["lists"], "time/exact", a["over_exact_time"], "equal", a["equal_share"],
                      "max shortfall", round(a["shortfall_max"], 4), ">1% low", a["low_share"])
            continue
        print(p["pool"], "brute/pruned", p["brute_over_pruned"], "auto/best", p["auto_over_best"],
              "floor", p["brute_floor_s"], "s")
    if not args.quick:
        target = RESULTS.with_name("density_approx.json") if approx else RESULTS
        if approx:
            result["benchmark"] = "density stage: exact (auto) against approximate (nearest lists)"
        target.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
