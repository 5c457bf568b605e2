"""Gradient features against static and MiniLM embeddings, on a CPU-sized quality sub-pool.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gradients_compare.py features  # LoRA gradients, cached
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gradients_compare.py spectrum  # the features' geometry
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gradients_compare.py momentum  # the shared direction's source
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gradients_compare.py run       # stores, selections, scores
    .venv/bin/python benchmarks/bench_gradients_compare.py report                      # tables into the docs page

Sub-pool: 1,800 rows drawn with seed 0 from data/demo/pool.jsonl.gz plus 150 rows carrying the labels of each
of the tasks food, zoology and games (none of them a query or held-out text), 2,250 rows. Stores of it:
`static`, `minilm`, and gradient features (`gradients:smollm2?max_tokens=64&warmup=20&...`, SmolLM2-135M-Instruct
from the GGUF, LoRA r = 8 on q_proj/v_proj, Adam-preconditioned, projected to 8,192) uncentred and centred.

`features` computes each text's projected, unnormalised gradient once (plain and Adam-preconditioned, with
the full-space norms), in chunks under $WORK/raw (resumable); every representation below is derived from
them without another backward pass. A gradient store is filled from these rows through a replaying embedder
that carries the real embedder's identity; `run` checks the replayed rows against the real embedder on a
few texts, and the task queries are embedded by the real embedder itself.
Scores: tsds.evaluation.harness in ngram mode (byte 4-gram from scratch, held-out NLL, nats/byte; lower is
better), decontamination and distribution figures in the static store's space for every method.
Writes benchmarks/results/gradients_compare.json (and gradients_spectrum[_sep].json).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

WORK = Path(os.environ.get("TSDS_BENCH_WORK", "/tmp/grads-work"))
os.environ.setdefault("TSDS_CACHE_DIR", str(WORK / "cache"))
POOL = ROOT / "data/demo/pool.jsonl.gz"
TASKS = ["food", "zoology", "games"]
RESULTS = ROOT / "benchmarks/results"
DOC = ROOT / "docs/results-gradients.md"
RANDOM_ROWS, LABEL_ROWS = 1800, 150
SIZES = [50, 100]
SEEDS = [0, 1, 2]
CENTRE_ROWS = 512
MAX_TOKENS = 64
CHUNK = 200
# A response-only loss check: TSDS_BENCH_SEP=": " puts the loss on what follows the last ": " (the definition
# after the term in most rows of this pool), features in $WORK/raw-sep; `features` and `spectrum` only.
SEP = os.environ.get("TSDS_BENCH_SEP") or None
RAW = WORK / ("raw-sep" if SEP else "raw")


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def read_rows(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def task_rows(name: str) -> tuple[list[dict], list[dict]]:
    d = ROOT / "data/demo/tasks" / name
    return read_rows(d / "queries.jsonl"), read_rows(d / "heldout.jsonl.gz")


def subpool() -> Path:
    """The sub-pool file (written once): random rows plus rows of each task's labels."""
    path = WORK / "subpool.jsonl"
    if path.is_file():
        return path
    rows = read_rows(POOL)
    rng = np.random.default_rng(0)
    held, labels = set(), {}
    for t in TASKS:
        q, h = task_rows(t)
        held |= {r["text"] for r in q + h}
        labels[t] = {(r.get("source"), r.get("label")) for r in q + h}
    pick = set(rng.choice(len(rows), size=RANDOM_ROWS, replace=False).tolist())
    for t in TASKS:
        cand = [i for i, r in enumerate(rows)
                if (r["source"], r["label"]) in labels[t] and r["text"] not in held and i not in pick]
        pick |= set(rng.choice(cand, size=LABEL_ROWS, replace=False).tolist())
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(rows[i]) + "\n" for i in sorted(pick)), encoding="utf-8")
    return path


def grad_spec(centre: bool = False) -> str:
    sub = subpool()
    spec = f"gradients:smollm2?max_tokens={MAX_TOKENS}&warmup=20&warmup_batch=4&warmup_data={sub}"
    if SEP:
        spec += "&sep=" + urllib.parse.quote(SEP)
    return spec + f"&centre={CENTRE_ROWS if centre else 0}"


def all_texts() -> list[str]:
    texts = [r["text"] for r in read_rows(subpool())]
    for t in TASKS:
        texts += [r["text"] for r in task_rows(t)[0]]
    return texts


def features() -> None:
    """Projected plain and preconditioned gradients (unnormalised) of every sub-pool and query text."""
    import torch

    from tsds.embed.gradients import GradientEmbedder
    from tsds.embed.gradients.lora import per_example_grads, tokenize

    torch.set_num_threads(1)
    texts = all_texts()
    emb = GradientEmbedder(grad_spec(), device="cpu", batch_size=8)
    m, v = emb._moments
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    RAW.mkdir(parents=True, exist_ok=True)
    started, done = time.perf_counter(), 0
    for c in range(0, len(order), CHUNK):
        out = RAW / f"{c:06d}.npz"
        if out.is_file():
            continue
        idx = order[c:c + CHUNK]
        plain, pre, n_plain, n_pre = [], [], [], []
        for s in range(0, len(idx), 8):
            ids, first, _ = tokenize(emb.tokenizer, [texts[i] for i in idx[s:s + 8]], MAX_TOKENS, SEP)
            g = per_example_grads(emb.model, emb.params, ids, first, emb._pad)
            p = (0.9 * m + 0.1 * g) / torch.sqrt(0.999 * v + 0.001 * g * g + 1e-8)  # as the embedder does
            plain.append(emb.projection.project(g))
            pre.append(emb.projection.project(p))
            n_plain.append(g.norm(dim=1).double().numpy())
            n_pre.append(p.norm(dim=1).double().numpy())
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, idx=np.array(idx), plain=np.concatenate(plain), pre=np.concatenate(pre),
                 norm_plain=np.concatenate(n_plain), norm_pre=np.concatenate(n_pre))
        os.replace(tmp, out)
        done += len(idx)
        log(f"gradients {c + len(idx)}/{len(texts)} rows, {done / (time.perf_counter() - started):.2f} rows/s")


def load_raw() -> dict[str, np.ndarray]:
    n = len(all_texts())
    out = {"plain": np.zeros((n, 8192), np.float32), "pre": np.zeros((n, 8192), np.float32),
           "norm_plain": np.zeros(n), "norm_pre": np.zeros(n)}
    have = np.zeros(n, bool)
    for f in sorted(glob.glob(str(RAW / "*.npz"))):
        with np.load(f) as z:
            for k in out:
                out[k][z["idx"]] = z[k]
            have[z["idx"]] = True
    if not have.all():
        raise SystemExit(f"features missing for {int((~have).sum())} texts: run `features` first")
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def variants(raw: dict[str, np.ndarray], n_pool: int) -> dict[str, np.ndarray]:
    """Unit rows of each representation; centring means come from a seeded sample of 512 pool rows."""
    sample = np.sort(np.random.default_rng(0).choice(n_pool, size=CENTRE_ROWS, replace=False))
    pre, plain = raw["pre"].astype(np.float64), raw["plain"].astype(np.float64)
    pre_u, plain_u = pre / raw["norm_pre"][:, None], plain / raw["norm_plain"][:, None]
    return {"preconditioned": _unit(pre), "preconditioned, centred": _unit(pre - pre[sample].mean(0)),
            "preconditioned, unit then centred": _unit(pre_u - pre_u[sample].mean(0)),
            "plain": _unit(plain), "plain, centred": _unit(plain - plain[sample].mean(0)),
            "plain, unit then centred": _unit(plain_u - plain_u[sample].mean(0))}


def geometry(x: np.ndarray, pool: np.ndarray, rng) -> dict:
    """Share of the squared norm along the top (and top 5) directions, mean cosine of random pool pairs."""
    s = np.linalg.svd(x[pool], compute_uv=False) ** 2
    pairs = rng.choice(pool, size=(4000, 2))
    return {"top1_share": float(s[0] / s.sum()), "top5_share": float(s[:5].sum() / s.sum()),
            "mean_cos_random_pairs": float(np.mean(np.sum(x[pairs[:, 0]] * x[pairs[:, 1]], 1)))}


def knn_label_share(x, pool, queries, pool_labels, labels, k=50) -> float:
    """Label share of the first k distinct rows taken round-robin from each query's neighbour list."""
    order = np.argsort(-(x[queries] @ x[pool].T), axis=1)
    chosen: list[int] = []
    col = 0
    while len(chosen) < k:
        for r in order[:, col]:
            if r not in chosen and len(chosen) < k:
                chosen.append(int(r))
        col += 1
    return float(np.mean([pool_labels[pool[i]] in labels for i in chosen]))


def spectrum() -> dict:
    """The geometry of every representation, and a kNN label-share probe per task (no training)."""
    from tsds.embed import load_embedder

    rows = read_rows(subpool())
    n_pool = len(rows)
    raw = load_raw()
    pool = np.arange(n_pool)
    labs = [(r["source"], r["label"]) for r in rows]
    reps = variants(raw, n_pool)
    texts = all_texts()
    if SEP:
        reps = {f"{k} (loss after {SEP!r})": v for k, v in reps.items() if k.startswith("preconditioned")}
    else:
        for name in ("static", "minilm"):
            reps[name] = np.asarray(load_embedder(name).embed(texts), dtype=np.float64)
    out = {"pool_rows": n_pool, "label_share_in_pool": {}, "representations": {}}
    task_labels = {}
    for t in TASKS:
        q, h = task_rows(t)
        task_labels[t] = {(r.get("source"), r.get("label")) for r in q + h}
        out["label_share_in_pool"][t] = float(np.mean([lab in task_labels[t] for lab in labs]))
    for name, x in reps.items():
        g = geometry(x, pool, np.random.default_rng(0))
        for k, t in enumerate(TASKS):
            qi = n_pool + 20 * k + np.arange(20)
            g[f"{t}_query_pool_cos"] = float(np.mean(x[qi] @ x[pool].T))
            g[f"{t}_knn50_label_share"] = knn_label_share(x, pool, qi, labs, task_labels[t])
        out["representations"][name] = g
        log(f"{name:36s} " + " ".join(f"{k}={v:.3f}" for k, v in g.items()))
    return out


def momentum() -> dict:
    """How much of the preconditioned features is the warm-up's momentum term 0.9 m / sqrt(0.999 v + eps),
    the part of m' / sqrt(v' + eps) that is the same for every text."""
    import torch

    from tsds.embed.gradients import GradientEmbedder

    torch.set_num_threads(1)
    emb = GradientEmbedder(grad_spec(), device="cpu", batch_size=8)
    m, v = emb._moments
    term = emb.projection.project((0.9 * m / torch.sqrt(0.999 * v + 1e-8))[None].double())[0].astype(np.float64)
    n_pool = len(read_rows(subpool()))
    pre = load_raw()["pre"][:n_pool].astype(np.float64)
    norms = np.linalg.norm(pre, axis=1)
    cos = (pre / norms[:, None]) @ (term / np.linalg.norm(term))
    mean = pre.mean(0)
    out = {"cos_pool_mean_feature": float(mean @ term / np.linalg.norm(mean) / np.linalg.norm(term)),
           "row_cos_median": float(np.median(cos)), "row_cos_p5": float(np.percentile(cos, 5)),
           "term_norm_over_median_row_norm": float(np.linalg.norm(term) / np.median(norms))}
    log(json.dumps(out))
    return out


class ReplayEmbedder:
    """Rows computed earlier (one per text), under the identity of the embedder that computes them."""

    def __init__(self, table: dict[str, np.ndarray], identity: dict, dim: int) -> None:
        from tsds.embed.base import Embedder, l2_normalise

        class _Replay(Embedder):
            @property
            def identity(self_inner):
                return identity

            def _embed_batch(self_inner, texts):
                return l2_normalise(np.stack([table[t] for t in texts]))

        self.embedder = _Replay(dim=dim, max_tokens=MAX_TOKENS, batch_size=64)


def gradient_store(name: str, rows: np.ndarray, real, texts: list[str]) -> Path:
    """A store of the sub-pool whose rows are `rows` (unnormalised ok), checked against `real` on 12 texts."""
    from tsds.store import build_store

    out = WORK / "stores" / name
    sub = subpool()
    n_pool = len(read_rows(sub))
    check = np.linspace(0, n_pool - 1, 12).astype(int)
    got = real.embed([texts[i] for i in check])
    want = _unit(rows[check].astype(np.float64))
    err = float(np.abs(got - want).max())
    log(f"{name}: replayed rows vs the real embedder on 12 texts: max abs difference {err:.2e}")
    if err > 1e-4:
        raise SystemExit(f"{name}: replayed rows differ from the embedder's by {err}")
    meta = out / "store.json"
    if not meta.is_file() or json.loads(meta.read_text()).get("embedder") != real.identity:
        table = {texts[i]: rows[i] for i in range(n_pool)}
        replay = ReplayEmbedder(table, real.identity, real.dim).embedder
        build_store([sub], out, embedder=replay, embedder_spec=None, overwrite=out.is_dir())
    return out


def run() -> dict:
    import torch

    from tsds.embed.gradients import GradientEmbedder
    from tsds.evaluation.harness import MethodSpec, PoolView, TSDS_FIXED, evaluate_methods, load_task
    from tsds.store import build_store

    torch.set_num_threads(1)
    sub = subpool()
    texts = all_texts()
    n_pool = len(read_rows(sub))
    raw = load_raw()
    stores, seconds = {}, {}
    for name in ("static", "minilm"):
        out = WORK / "stores" / name
        t0 = time.perf_counter()
        if not (out / "store.json").is_file():
            build_store([sub], out, embedder_spec=name)
        stores[name] = out
        seconds[name] = round(time.perf_counter() - t0, 1)
    views = {}
    for name, centre in (("gradients", False), ("gradients-centred", True)):
        t0 = time.perf_counter()
        real = GradientEmbedder(grad_spec(centre), device="cpu", batch_size=8)
        rows = raw["pre"].astype(np.float64)
        if centre:
            rows = rows - real._mean[None, :]
        seconds[name + " embedder load (+ centring mean)"] = round(time.perf_counter() - t0, 1)
        stores[name] = gradient_store(name, rows, real, texts)
        views[str(stores[name])] = PoolView(stores[name], embedder=real)
    for name in ("minilm",):
        views[str(stores[name])] = PoolView(stores[name])
    main = PoolView(stores["static"])
    knn, base = {"sampling": "without-replacement"}, {"sampling": "without-replacement"}
    methods = [MethodSpec("random", "random", base)]
    for name in ("static", "minilm", "gradients", "gradients-centred"):
        s = None if name == "static" else str(stores[name])
        methods += [MethodSpec(f"knn {name}", "knn", knn, store=s),
                    MethodSpec(f"tsds {name}", "tsds", TSDS_FIXED, store=s)]
    out_rows = []
    for t in TASKS:
        task = load_task(ROOT / "data/demo/tasks" / t)
        for size in SIZES:
            out_rows += evaluate_methods(main, task, size, methods, SEEDS, mode="ngram", views=views, log=log)
    return {"subpool_rows": n_pool, "tasks": TASKS, "sizes": SIZES, "seeds": SEEDS, "centre_rows": CENTRE_ROWS,
            "gradient_spec": grad_spec().replace(str(WORK) + "/", "$WORK/"), "store_seconds": seconds,
            "threads": 1, "rows": out_rows}


def paired(rows: list[dict], a: str, b: str, size: int) -> dict:
    """Mean of nll(a) - nll(b) over (task, seed) pairs at `size`, per-task means, and two t intervals (95%):
    over the (task, seed) pairs, and over the task means (the task as the unit)."""
    from scipy import stats

    def interval(x):
        half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if x.std() > 0 else 0.0
        return float(x.mean() - half), float(x.mean() + half)

    nll = {(r["task"], r["seed"], r["method"]): r["nll"] for r in rows if r["size"] == size}
    d = {(t, s): nll[(t, s, a)] - nll[(t, s, b)] for t in TASKS for s in SEEDS}
    x = np.array(list(d.values()))
    per_task = {t: float(np.mean([d[(t, s)] for s in SEEDS])) for t in TASKS}
    return {"mean": float(x.mean()), "pairs": interval(x), "tasks": interval(np.array(list(per_task.values()))),
            "per_task": per_task}


def tables() -> str:
    res = json.loads((RESULTS / "gradients_compare.json").read_text())
    rows = res["rows"]
    names = ["random", "knn static", "tsds static", "knn minilm", "tsds minilm", "knn gradients", "tsds gradients",
             "knn gradients-centred", "tsds gradients-centred"]
    lines = ["| task | n | none | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for t in TASKS:
        for size in SIZES:
            cell = []
            for m in names:
                v = [r for r in rows if r["task"] == t and r["size"] == size and r["method"] == m]
                nll, lab = np.array([r["nll"] for r in v]), np.mean([r.get("label_share", np.nan) for r in v])
                sd = f" ± {nll.std(ddof=1):.3f}" if nll.std() > 0 else ""
                cell.append(f"{nll.mean():.3f}{sd} ({lab:.2f})")
            none = next(r["nll"] for r in rows if r["task"] == t and r["method"] == "none")
            lines.append(f"| {t} | {size} | {none:.3f} | " + " | ".join(cell) + " |")
    pairs = [("tsds gradients-centred", "tsds gradients"), ("knn gradients-centred", "knn gradients"),
             ("tsds gradients", "random"), ("tsds gradients-centred", "random"),
             ("tsds gradients-centred", "tsds static"), ("tsds gradients-centred", "tsds minilm"),
             ("knn gradients-centred", "knn static"), ("tsds minilm", "tsds static"), ("tsds static", "random")]
    lines += ["", "| difference (nats/byte; < 0: the first is better) | n | mean | 95%, 9 (task, seed) pairs | "
              "95%, 3 task means | " + " | ".join(TASKS) + " |", "|---|---|---|---|---|" + "---|" * len(TASKS)]
    for a, b in pairs:
        for size in SIZES:
            p = paired(rows, a, b, size)
            (lo, hi), (tlo, thi) = p["pairs"], p["tasks"]
            lines.append(f"| {a} − {b} | {size} | {p['mean']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | "
                         f"[{tlo:+.3f}, {thi:+.3f}] | "
                         + " | ".join(f"{p['per_task'][t]:+.3f}" for t in TASKS) + " |")
    return "\n".join(lines)


def spectrum_table() -> str:
    res = json.loads((RESULTS / "gradients_spectrum.json").read_text())
    lines = ["| features | top direction (top 5) share | mean cosine, random pool pairs | "
             + " | ".join(f"{t}: query-pool cosine / kNN-50 label share" for t in TASKS) + " |",
             "|---|---|---|" + "---|" * len(TASKS)]
    reps = dict(res["representations"])
    if (RESULTS / "gradients_spectrum_sep.json").is_file():
        reps.update(json.loads((RESULTS / "gradients_spectrum_sep.json").read_text())["representations"])
    for name, g in reps.items():
        lines.append(f"| {name} | {g['top1_share']:.3f} ({g['top5_share']:.3f}) | {g['mean_cos_random_pairs']:.3f} | "
                     + " | ".join(f"{g[t + '_query_pool_cos']:.3f} / {g[t + '_knn50_label_share']:.2f}" for t in TASKS)
                     + " |")
    share = ", ".join(f"{t} {v:.3f}" for t, v in res["label_share_in_pool"].items())
    lines.append(f"\nShare of the sub-pool's rows carrying each task's labels: {share}.")
    if "momentum" in res:
        m = res["momentum"]
        lines.append(f"\nThe warm-up's momentum term 0.9 m / sqrt(0.999 v + eps), projected: cosine "
                     f"{m['cos_pool_mean_feature']:.3f} with the pool's mean preconditioned feature, "
                     f"{m['row_cos_median']:.2f} with a row (median; 5th percentile {m['row_cos_p5']:.2f}), "
                     f"norm {m['term_norm_over_median_row_norm']:.2f} times a row's median norm.")
    return "\n".join(lines)


def report() -> None:
    """Replace the generated blocks of the docs page (between their markers) with the current tables."""
    text = DOC.read_text(encoding="utf-8")
    for key, make, path in (("spectrum", spectrum_table, "gradients_spectrum.json"),
                            ("compare", tables, "gradients_compare.json")):
        if not (RESULTS / path).is_file():
            continue
        begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = head + begin + "\n" + make() + "\n" + end + rest.split(end, 1)[1]
        print(make())
    DOC.write_text(text, encoding="utf-8")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "report"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if what == "features":
        features()
    elif what == "spectrum":
        name = "gradients_spectrum_sep.json" if SEP else "gradients_spectrum.json"
        (RESULTS / name).write_text(json.dumps(spectrum(), indent=2) + "\n")
        report()
    elif what == "momentum":
        path = RESULTS / "gradients_spectrum.json"
        res = json.loads(path.read_text())
        res["momentum"] = momentum()
        path.write_text(json.dumps(res, indent=2) + "\n")
    elif what == "run":
        (RESULTS / "gradients_compare.json").write_text(json.dumps(run(), indent=2, default=str) + "\n")
        report()
    else:
        report()


if __name__ == "__main__":
    main()
