"""Benchmark: `tsds select` against the authors' own tsds.py on the same .npy data, alternating, in one run.

How to run
----------
    .venv/bin/python benchmarks/compare_authors.py PATH/TO/authors/tsds.py              # 200k x 384
    .venv/bin/python benchmarks/compare_authors.py PATH/TO/authors/tsds.py --n 50000 --d 256
    .venv/bin/python benchmarks/compare_authors.py --tsds-only --n 50000 --d 256 --repeats 3   # tsds's side

The authors' script is public (github.com/ZifanL/TSDS, tsds.py with faiss_helper.py next to it) and is
not part of this repository: pass the path of a checkout's tsds.py. It is never copied into the repository;
this script writes a patched copy into a temporary folder, with the two float64 fixes it needs to run on
current numpy/FAISS (without them its own asserts fail on float32 rounding, e.g. "AssertionError:
1.0416..." at 50k x 256):

1. the neighbour distances are widened to float64 right after the search
   (``top_dists, top_indices = index.search(xq, MAX_K)`` is followed by ``top_dists = top_dists.astype(np.float64)``);
2. the kernel is computed in float64 (``kernel = 1 - D2 / (SIGMA ** 2)`` becomes
   ``kernel = 1 - D2.astype(np.float64) / (SIGMA ** 2)``).

Nothing else changes: its config (max_K 5000, kde_K 1000, IVF-Flat with nprobe 10) and its approximations
(densities from each point's 1000 nearest among the neighbour lists' points only, lists cut at 5000) stay.
tsds runs with exact densities over the whole pool and untruncated lists. Same data (benchmarks/bench_select.py's
generator, benchmarks/work/), M = 500 queries, size 2000, alpha 0.5, C 5, sigma 0.75, euclidean.

Each run is a fresh process under /usr/bin/time (wall time, peak RSS), with its modules' bytecode compiled
beforehand as an installed tool has it (``compiled_sources``); the two programs alternate,
``--repeats`` pairs, and each pair's ratio tsds / authors is recorded, so that load from other work on the
machine hits both sides of a ratio alike. Also recorded: the load average before and after, this machine's
GEMM rate (float32, measured in the same run on all cores), the multiply-adds the exact densities need
(density points x N x d) and the time they take at that rate: the physical floor of the density stage.
tsds's memory is also given over its baseline: the resident size of a fresh interpreter after importing
what ``tsds select`` on .npy files imports (numpy, FAISS, the CLI and the selection code), before any data is
read, measured in a process of its own next to each run; the peak over the embedding matrix is then
reported both raw and as the increment over that baseline.

``--approx`` adds a third program to each round: `tsds select --density approx` (each density over its
point's 32 nearest IVF lists only, tsds.pipeline.density_check), with its time ratio to the authors' and
to exact tsds in the same round, its own sampled check against exact densities, and how far its selection
moved from exact tsds's: the total variation distance between the two probability vectors and the share
of the drawn rows (as a multiset) that both drew.

``--tsds-only`` reruns tsds's side of an existing results file (the authors' runs and the time ratios in it
stay as they were, from their own date) and adds the runs under ``tsds_memory_rerun``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_select  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXES = [
    ("top_dists, top_indices = index.search(xq, MAX_K)",
     "top_dists, top_indices = index.search(xq, MAX_K); top_dists = top_dists.astype(np.float64)"),
    ("kernel = 1 - D2 / (SIGMA ** 2)", "kernel = 1 - D2.astype(np.float64) / (SIGMA ** 2)"),
]
PARAMS = bench_select.PARAMS


def patched_copy(authors: Path, into: Path) -> Path:
    """The authors' tsds.py with the two float64 fixes, and their faiss_helper.py, in ``into``."""
    text = authors.read_text()
    for old, new in FIXES:
        if text.count(old) != 1:
            raise SystemExit(f"{authors}: expected the line {old!r} once (is this the authors' tsds.py?)")
        text = text.replace(old, new)
    helper = authors.with_name("faiss_helper.py")
    if not helper.is_file():
        raise SystemExit(f"{helper}: missing (the authors' tsds.py imports it from its own folder)")
    (into / "tsds.py").write_text(text)
    shutil.copy(helper, into / "faiss_helper.py")
    compileall.compile_dir(into, quiet=1)
    return into / "tsds.py"


def compiled_sources() -> None:
    """Bytecode for tsds's sources, as an installed tool has it after its first run: with
    PYTHONDONTWRITEBYTECODE set (as on this project's machines) every run would otherwise compile the
    modules changed since their last bytecode from source (59 modules, 0.18 s of a 50k run). The authors'
    helper module is compiled the same way (``patched_copy``); a script run by path is compiled on every run
    by Python itself, on both sides (tsds's is the few lines of tsds/cli/__main__.py)."""
    compileall.compile_dir(ROOT / "src", quiet=1)


def timed(cmd: list[str], cwd: Path, env: dict, timeout: float) -> dict:
    t = time.perf_counter()
    try:
        proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *cmd], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "wall_s": timeout}
    wall = time.perf_counter() - t
    m = re.search(r"TIME ([\d.]+) (\d+)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"{cmd[:3]} failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"timed_out": False, "wall_s": round(wall, 3), "peak_rss_mb": round(int(m.group(2)) / 1024, 1)}


def run_authors(script: Path, cpath: Path, qpath: Path, work: Path, timeout: float) -> dict:
    cfg = {"query_embedding_path": str(qpath), "candidate_embedding_path": str(cpath),
           "output_folder": str(work / "out"), "sample_size": PARAMS["size"], "alpha": PARAMS["alpha"],
           "C": PARAMS["C"], "sigma": PARAMS["sigma"], "max_K": 5000, "kde_K": 1000}
    (work / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    return timed([sys.executable, str(script)], work, dict(os.environ), timeout)


def run_tsds(cpath: Path, qpath: Path, out: Path, timeout: float, extra: tuple = ()) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "tsds.cli", "select", "--candidate-embeddings", str(cpath),
           "--query-embeddings", str(qpath), "--size", str(PARAMS["size"]), "--alpha", str(PARAMS["alpha"]),
           "--C", str(PARAMS["C"]), "--sigma", str(PARAMS["sigma"]), "--metric", PARAMS["metric"],
           "--seed", str(PARAMS["seed"]), "--out", str(out), "--overwrite", "-q", *extra]
    res = timed(cmd, ROOT, env, timeout)
    if not res["timed_out"]:
        man = json.loads((out / "manifest.json").read_text())
        res["stages_s"] = {k: round(v["seconds"], 3) for k, v in man["timings"].items()}
        res["density_points"] = man["result"]["densities"]["points"]
        res["index_kind"] = man["index"].get("kind")
        res["k_used"] = man["result"]["k_used"]
        res["baseline_rss_mb"] = baseline_rss_mb(env)
        if "check" in man["result"]["densities"]:
            res["density_check"] = man["result"]["densities"]["check"]
    return res


def moved(exact_out: Path, approx_out: Path) -> dict:
    """How far the approximate selection is from the exact one: total variation distance between the two
    probability vectors, and the share of drawn rows (a multiset) that both drew."""
    p = np.load(exact_out / "probabilities.npy", allow_pickle=False)
    q = np.load(approx_out / "probabilities.npy", allow_pickle=False)
    a = np.load(exact_out / "selected_indices.npy", allow_pickle=False)
    b = np.load(approx_out / "selected_indices.npy", allow_pickle=False)
    ua, ca = np.unique(a, return_counts=True)
    ub, cb = np.unique(b, return_counts=True)
    _, ia, ib = np.intersect1d(ua, ub, return_indices=True)
    return {"total_variation": float(0.5 * np.abs(p - q).sum()),
            "drawn_in_common": round(float(np.minimum(ca[ia], cb[ib]).sum() / max(a.size, 1)), 4),
            "support_exact": int(np.count_nonzero(p)), "support_approx": int(np.count_nonzero(q))}


def tsds_only(results: Path, args, cpath: Path, qpath: Path, emb_mb: float) -> int:
    """Rerun tsds's side of ``results`` (see the module docstring); the authors' side is left as it was."""
    if not results.is_file():
        raise SystemExit(f"{results}: no results to add tsds's rerun to")
    result = json.loads(results.read_text())
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="tsds-authors-") as tmp:
        runs = [run_tsds(cpath, qpath, Path(tmp) / "tsds-out", args.timeout) for _ in range(args.repeats)]
    load.append(os.getloadavg())
    result["tsds_memory_rerun"] = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "note": ("tsds's side only, rerun to record its resident size after imports (the baseline) next to its "
                 f"peak; the authors' runs, time ratios and tsds_peak_over_embeddings above are from "
                 f"{result.get('created')}, not rerun"),
        "runs": runs, **memory_summary(runs, emb_mb),
        "loadavg_before_after": [list(map(float, x)) for x in load]}
    print(json.dumps({k: v for k, v in result["tsds_memory_rerun"].items() if k != "runs"}, indent=1))
    if not args.no_write:
        results.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {results}")
    return 0


BASELINE_CODE = ("import numpy, faiss, tsds, tsds.cli, tsds.cli.select, tsds.api.arrays, tsds.pipeline.select, "
                 "tsds.retrieval\n"
                 "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')))")


def baseline_rss_mb(env: dict) -> float:
    """Resident size (MB) of a fresh interpreter after the imports of ``tsds select``, before any data."""
    proc = subprocess.run([sys.executable, "-c", BASELINE_CODE], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"baseline process failed:\n{proc.stderr[-2000:]}")
    return round(int(proc.stdout.split()[-1]) / 1024, 1)


def memory_summary(runs: list[dict], emb_mb: float) -> dict:
    """Peak over the embedding matrix, raw and as the increment over the after-imports baseline."""
    ok = [r for r in runs if not r["timed_out"]]
    return {"baseline_rss_mb": [r["baseline_rss_mb"] for r in ok],
            "peak_over_embeddings": [round(r["peak_rss_mb"] / emb_mb, 3) for r in ok],
            "peak_increment_mb": [round(r["peak_rss_mb"] - r["baseline_rss_mb"], 1) for r in ok],
            "peak_increment_over_embeddings": [round((r["peak_rss_mb"] - r["baseline_rss_mb"]) / emb_mb, 3)
                                               for r in ok]}


def gemm_rate(d: int, seconds: float = 2.0) -> float:
    """Float32 multiply-adds per second of one large product on every core (BLAS threads)."""
    a = np.random.default_rng(0).random((2048, d), dtype=np.float32)
    b = np.random.default_rng(1).random((16384, d), dtype=np.float32)
    a @ b.T
    t, reps = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        a @ b.T
        reps += 1
    return reps * a.shape[0] * b.shape[0] * d / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("authors", type=Path, nargs="?",
                    help="path of the authors' tsds.py (faiss_helper.py next to it); not with --tsds-only")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--m", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2, help="alternating pairs (authors, tsds)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--approx", action="store_true", help="also run `tsds select --density approx` in each round")
    ap.add_argument("--tsds-only", action="store_true",
                    help="rerun tsds's side only, into the existing results file (AUTHORS is then not read)")
    args = ap.parse_args(argv)
    out = ROOT / "benchmarks" / "results" / f"authors_{args.n // 1000}k_d{args.d}.json"
    if args.tsds_only:
        cpath, qpath, _ = bench_select.ensure_data(args.n, args.d, args.m)
        compiled_sources()
        return tsds_only(out, args, cpath, qpath, args.n * args.d * 4 / 2**20)
    if args.authors is None or not args.authors.is_file():
        raise SystemExit(f"{args.authors}: no such file (the authors' tsds.py)")
    cpath, qpath, data = bench_select.ensure_data(args.n, args.d, args.m)
    emb_mb = args.n * args.d * 4 / 2**20
    compiled_sources()
    load = [os.getloadavg()]
    rate = gemm_rate(args.d)
    pairs = []
    with tempfile.TemporaryDirectory(prefix="tsds-authors-") as tmp:
        work = Path(tmp)
        script = patched_copy(args.authors, work)
        for r in range(args.repeats):
            a = run_authors(script, cpath, qpath, work, args.timeout)
            t = run_tsds(cpath, qpath, work / "tsds-out", args.timeout)
            pair = {"authors": a, "tsds": t}
            if not a["timed_out"] and not t["timed_out"]:
                pair["time_ratio"] = round(t["wall_s"] / a["wall_s"], 3)
                pair["peak_ratio"] = round(t["peak_rss_mb"] / a["peak_rss_mb"], 3)
            if args.approx:
                x = run_tsds(cpath, qpath, work / "tsds-approx", args.timeout, ("--density", "approx"))
                pair["tsds_approx"] = x
                if not x["timed_out"] and not a["timed_out"] and not t["timed_out"]:
                    pair["approx_time_ratio"] = round(x["wall_s"] / a["wall_s"], 3)
                    pair["approx_over_exact_time"] = round(x["wall_s"] / t["wall_s"], 3)
                    pair["approx_moved"] = moved(work / "tsds-out", work / "tsds-approx")
            pairs.append(pair)
            print(json.dumps(pair), flush=True)
    load.append(os.getloadavg())
    ratios = [p["time_ratio"] for p in pairs if "time_ratio" in p]
    last = next((p["tsds"] for p in reversed(pairs) if not p["tsds"]["timed_out"]), None)
    floor = None
    if last is not None:
        madds = last["density_points"] * args.n * args.d
        floor = {"density_points": last["density_points"], "density_multiply_adds": madds,
                 "density_floor_s": round(madds / rate, 3), "density_stage_s": last["stages_s"].get("density")}
    result = {
        "benchmark": "tsds select against the authors' tsds.py (two float64 fixes), same data, alternating",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "problem": {"n": args.n, "d": args.d, "m": args.m, **PARAMS, "data": data,
                    "embedding_matrix_mb": round(emb_mb, 1)},
        "authors_fixes": [new for _, new in FIXES],
        "bytecode": "compiled before the runs for both programs' modules (compileall)",
        "pairs": pairs,
        "time_ratio_median": float(np.median(ratios)) if ratios else None,
        **({"approx_time_ratios": [p.get("approx_time_ratio") for p in pairs],
            "approx_over_exact_time": [p.get("approx_over_exact_time") for p in pairs]} if args.approx else {}),
        "time_ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "tsds_peak_over_embeddings": [round(p["tsds"]["peak_rss_mb"] / emb_mb, 3) for p in pairs
                                      if not p["tsds"]["timed_out"]],
        "tsds_memory": memory_summary([p["tsds"] for p in pairs], emb_mb),
        "gemm_multiply_adds_per_s": round(rate / 1e9, 1) * 1e9,
        "exact_density_floor": floor,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before_after": [list(map(float, x)) for x in load],
                    "note": "a shared machine: other work ran during the measurement (see the load averages)"},
    }
    print(json.dumps({k: result[k] for k in ("time_ratio_median", "time_ratio_range", "tsds_peak_over_embeddings",
                                             "exact_density_floor")}, indent=1))
    if not args.no_write:
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
