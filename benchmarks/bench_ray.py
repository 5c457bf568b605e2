"""Benchmark: the local engine against the Ray engine with 1 and 2 workers, stage by stage, in one run;
and the recall of the sharded approximate (IVF) index's merged top-K against exact search.

How to run
----------
    .venv/bin/python benchmarks/bench_ray.py                  # 200k texts, writes benchmarks/results/ray.json
    .venv/bin/python benchmarks/bench_ray.py --rows 50000     # smaller (no JSON unless --json is given)

About 4-6 minutes on 2 idle cores. Inputs go to ``benchmarks/work/`` (git-ignored) and are reused.

What it measures
----------------
Texts: the 35,894 real texts of ``data/demo/pool.jsonl.gz`` as they are, then recombined (sentences
rotated, a 4-12 word clause borrowed from another text) up to ``--rows``, every text distinct; records
keep their other fields. Queries: the 100 query texts of the five demo tasks (``data/demo/tasks``).

For each engine (local; Ray with 1 worker; Ray with 2 workers, each a fresh local Ray instance with
2 CPUs), on the same input, the same static embedder, 8192-row shards and a 2-shard index:

* ``ray_init``: starting the Ray instance (not part of any stage below);
* ``embed``: ``build_store`` without its index: reading, hashing, embedding, writing shards; for Ray,
  ``scan`` is the part of it spent planning shards (scan tasks parse the pool file in 64 MiB ranges);
* ``index``: building the 2 index shards (IVF-Flat, 100k rows each), timed separately on the built store;
* ``neighbours`` / ``density`` / ``solve`` / ``sample``: ``select_on_index`` for the 100 queries
  (size 1000, alpha 0.5, C 1, sigma 0.3), from the stage log; recall calibration is in ``neighbours``;
* ``write_records``: fetching the selected records by location and writing selected.jsonl (Ray: Ray Data
  read tasks and one write task), compared byte for byte across the three runs.

The stores of the three runs are compared (embedding shard bytes) and the three selections
(probabilities, max abs difference). Recall: for the index cut into 2 and 4 IVF-Flat shards (local
backend), merged recall@K against exact search at a range of nprobe values, K = 64 and 512; the same for
2 IVF-PQ shards (PQ candidates re-ranked exactly) by search breadth, and the breadth calibration picks.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
RESULTS = HERE / "results" / "ray.json"
DEMO = ROOT / "data" / "demo" / "pool.jsonl.gz"
QUERY_TEXTS: list[str] = []
TASKS = ROOT / "data" / "demo" / "tasks"
from bench_build import _variant  # noqa: E402  (the same realistic text generator as the build benchmark)


def make_input(n: int) -> Path:
    path = WORK / f"ray-pool-n{n}.jsonl"
    if path.is_file():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    with gzip.open(DEMO, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    base_n = len(records)
    seen = set()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for i in range(n):
            r, b = divmod(i, base_n)
            rec = dict(records[b])
            text = rec["text"]
            if r:
                k = (i * 2654435761) & 0xFFFFFFFF
                text = _variant(text, records[k % base_n]["text"], r, k >> 8)
                rec["id"] = f"{rec.get('id', b)}~{r}"
            key = hashlib.blake2b(text.encode(), digest_size=12).digest()
            if key in seen:
                text = f"{text} ({r})"
            seen.add(hashlib.blake2b(text.encode(), digest_size=12).digest())
            rec["text"] = text
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def queries() -> list[str]:
    out = []
    for task in sorted(TASKS.iterdir()):
        for line in (task / "queries.jsonl").read_text().splitlines():
            out.append(json.loads(line)["text"])
    return out


def run_engine(label: str, workers: int | None, pool: Path, q: np.ndarray, embedder) -> dict:
    from tsds.config import SelectionConfig
    from tsds.engines import LocalEngine
    from tsds.pipeline.select import select_on_index
    from tsds.pipeline.stages import StageLog
    from tsds.pipeline.text import write_selected
    from tsds.store import PoolStore, build_store

    out = WORK / f"ray-store-{label}"
    shutil.rmtree(out, ignore_errors=True)
    res: dict = {"engine": label}
    t = time.perf_counter()
    if workers is None:
        engine = LocalEngine()
    else:
        from tsds.engines.ray import RayEngine

        engine = RayEngine(num_cpus=2, workers=workers)
    res["ray_init_s"] = round(time.perf_counter() - t, 2)
    try:
        t = time.perf_counter()
        store = build_store([pool], out, embedder=embedder, engine=engine, index_shards=2)
        build_s = time.perf_counter() - t
        shutil.rmtree(out / "index")
        t = time.perf_counter()
        index = PoolStore(out, engine=engine).index("euclidean", shards=2)
        res["index_s"] = round(time.perf_counter() - t, 2)
        res["embed_s"] = round(build_s - res["index_s"], 2)
        res["embed_rows_per_s"] = round(store.n_rows / res["embed_s"])
        config = SelectionConfig(size=1000, alpha=0.5, C=1.0, sigma=0.3, seed=0)
        stages = StageLog()
        t = time.perf_counter()
        sel = select_on_index(index, q, config, stages=stages)
        res["select_s"] = round(time.perf_counter() - t, 2)
        for name in ("neighbours", "density", "solve", "sample"):
            res[f"{name}_s"] = round(stages.stages[name]["seconds"], 3)
        res["k_used"] = int(sel.k_used)
        res["recall"] = sel.recall
        res["densities_computed"] = int(sel.density_stats.points)
        res["density_pairs"] = int(sel.density_stats.pairs)
        res["nprobe"] = index.calibration.get("nprobe")
        res["scan_s"] = getattr(engine, "timings", {}).get("scan_s")
        t = time.perf_counter()
        written = write_selected(out / "selected.jsonl", PoolStore(out, engine=engine), sel, QUERY_TEXTS, "source")
        res["write_records_s"] = round(time.perf_counter() - t, 3)
        res["records_rows"] = written["rows"]
        res["records_sha256"] = hashlib.sha256((out / "selected.jsonl").read_bytes()).hexdigest()
        digest = hashlib.sha256()
        for s in store.shard_meta():
            digest.update(s["embeddings_sha256"].encode())
        res["embeddings_sha256"] = digest.hexdigest()
        return res, sel.probabilities
    finally:
        engine.close()


def recall_table(pool_store: Path, q: np.ndarray) -> list[dict]:
    from tsds.retrieval.recall import _recall
    from tsds.store import PoolStore

    rows = []
    store = PoolStore(pool_store)
    for shards in (2, 4):
        t = time.perf_counter()
        index = store.index("euclidean", "ivf", shards=shards)
        build = time.perf_counter() - t
        for k in (64, 512):
            _, truth = index.exact_search(q, k)
            for nprobe in (1, 2, 4, 8, 16, 32):
                index.nprobe = nprobe
                t = time.perf_counter()
                _, found = index.search(q, k)
                rows.append({"shards": shards, "k": k, "nprobe": nprobe, "recall": round(_recall(found, truth), 4),
                             "search_s": round(time.perf_counter() - t, 4), "index_build_s": round(build, 2)})
    return rows


def pq_recall_table(pool_store: Path, q: np.ndarray) -> list[dict]:
    """Merged recall@K of IVF-PQ shards (PQ candidates re-ranked with the stored vectors) against exact
    search, by search breadth: up to nlist the lists probed, beyond it re-ranking RERANK x k x breadth/nlist
    candidates; and the breadth that recall calibration picks for target 0.95."""
    from tsds.retrieval.recall import _recall
    from tsds.store import PoolStore

    rows = []
    store = PoolStore(pool_store)
    t = time.perf_counter()
    index = store.index("euclidean", "ivfpq", shards=2)
    build = time.perf_counter() - t
    lists = max(index.backend.worker.indexes[s].lists for s in index.backend.shards) if index.backend.worker.indexes \
        else None
    for k in (64, 512):
        _, truth = index.exact_search(q, k)
        for nprobe in (1, 4, 16, 64, 256, 1024, 4096):
            index.nprobe = nprobe
            t = time.perf_counter()
            D, found = index.search(q, k)
            rows.append({"kind": "ivfpq", "shards": 2, "k": k, "breadth": nprobe, "recall": round(_recall(found, truth), 4),
                         "search_s": round(time.perf_counter() - t, 4), "index_build_s": round(build, 2)})
        index.nprobe = 1
        recall = index.calibrate(q, k, target=0.95)
        rows.append({"kind": "ivfpq", "shards": 2, "k": k, "calibrated_breadth": index.calibration["nprobe"],
                     "recall": round(recall, 4), "lists_per_shard": lists})
    index_bytes = sum(Path(s.path).stat().st_size for s in index.specs)
    rows.append({"kind": "ivfpq", "index_bytes": index_bytes, "vector_bytes": store.n_rows * int(store.meta["dim"]) * 4})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--json", action="store_true", help="write results/ray.json even for a non-default size")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tsds.embed import load_embedder

    pool = make_input(args.rows)
    embedder = load_embedder("static")
    global QUERY_TEXTS
    QUERY_TEXTS = queries()
    q = embedder.embed(QUERY_TEXTS)
    runs, probs = [], []
    for label, workers in (("local", None), ("ray-1", 1), ("ray-2", 2)):
        res, p = run_engine(label, workers, pool, q, embedder)
        print(json.dumps(res), flush=True)
        runs.append(res)
        probs.append(p)
    same_store = len({r["embeddings_sha256"] for r in runs}) == 1
    diffs = {f"{runs[0]['engine']} vs {r['engine']}": float(np.max(np.abs(probs[0] - p)))
             for r, p in zip(runs[1:], probs[1:])}
    recall = recall_table(WORK / "ray-store-local", q)
    pq_recall = pq_recall_table(WORK / "ray-store-local", q)
    for r in recall + pq_recall:
        print(json.dumps(r), flush=True)
    result = {
        "benchmark": "bench_ray.py", "rows": args.rows, "queries": int(q.shape[0]), "shard_rows": 8192,
        "index_shards": 2, "embedder": "static",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "runs": runs, "same_embeddings_in_all_stores": same_store, "max_abs_probability_difference": diffs,
        "sharded_ivf_recall": recall, "sharded_ivfpq_recall": pq_recall,
        "same_records_file_in_all_runs": len({r["records_sha256"] for r in runs}) == 1,
    }
    print(json.dumps({"same_store": same_store, "diffs": diffs}))
    if args.rows == 200_000 or args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for label in ("local", "ray-1", "ray-2"):
        shutil.rmtree(WORK / f"ray-store-{label}", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
