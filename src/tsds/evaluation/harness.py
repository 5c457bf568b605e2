"""Select with several methods for a target task, train a language model on each selection, score held-out.

    view = PoolView("demo-out/store")
    task = load_task("data/demo/tasks/food")
    rows = evaluate_methods(view, task, size=359, methods=default_methods(), seeds=[0, 1, 2], mode="ngram")

Modes (the model trained on each selection; the same recipe for every method):
- ``ngram``: byte 4-gram Witten-Bell model from scratch (fast; the benchmark's full grid; CI);
- ``tiny``: tiny byte-level transformer from scratch (fixed steps, tokens, learning rate);
- ``model``: finetune a real causal LM (default SmolLM2-135M-Instruct) with a fixed recipe.
The reference row ``none`` is the model before any training on a selection (untrained / pretrained).
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsds.config import make_config
from tsds.evaluation import metrics
from tsds.store.pool import PoolStore

NGRAM_ORDER = 4


@dataclass(frozen=True)
class MethodSpec:
    """One row of the comparison: a method, its parameters, and (optionally) a store of its own."""

    name: str
    method: str
    params: dict = field(default_factory=dict)
    store: str | None = None  # another store of the same pool (e.g. MiniLM embeddings); None = the main one


# The project's recommended TSDS setting (README): cosine, C = 1, sigma = 0.3, n distinct draws.
TSDS_DEFAULT = {"alpha": 0.5, "C": 1.0, "sigma": 0.3, "metric": "cosine", "sampling": "without-replacement"}
BASELINE_DEFAULT = {"sampling": "without-replacement"}


def default_methods() -> list[MethodSpec]:
    return [MethodSpec("tsds", "tsds", TSDS_DEFAULT), MethodSpec("random", "random", BASELINE_DEFAULT),
            MethodSpec("knn", "knn", BASELINE_DEFAULT), MethodSpec("dsir", "dsir", BASELINE_DEFAULT),
            MethodSpec("full", "full", BASELINE_DEFAULT)]


def read_jsonl(path) -> list[dict]:
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Task:
    name: str
    queries_path: Path
    query_texts: list[str]
    heldout: list[str]
    labels: set  # (source, label) pairs of the task; empty when the files carry none


def load_task(task_dir=None, *, queries=None, heldout=None, text_field: str = "text") -> Task:
    """A target task: queries.jsonl and heldout.jsonl(.gz) in `task_dir`, or the two files given."""
    if task_dir is not None:
        d = Path(task_dir)
        queries = queries or d / "queries.jsonl"
        heldout = heldout or next((d / n for n in ("heldout.jsonl.gz", "heldout.jsonl") if (d / n).is_file()),
                                  d / "heldout.jsonl.gz")
    if queries is None or heldout is None:
        raise ValueError("a task needs query examples and a held-out set")
    q, h = read_jsonl(queries), read_jsonl(heldout)
    labels = {(r.get("source"), r.get("label")) for r in q + h if r.get("label") is not None}
    name = Path(task_dir).name if task_dir is not None else Path(queries).stem
    return Task(name, Path(queries), [r[text_field] for r in q], [r[text_field] for r in h], labels)


class PoolView:
    """A store with its texts, (source, label) per row, embedder and held-out embedding cache."""

    def __init__(self, store, embedder=None):
        from tsds.baselines.dsir import store_texts

        self.store = store if isinstance(store, PoolStore) else PoolStore(store)
        self.store.require_complete()
        self.texts = store_texts(self.store)
        self.labels = self._labels()
        self._embedder = embedder
        self._emb_cache: dict = {}

    def _labels(self) -> list | None:
        labels: list = []
        for entry in self.store.files:
            if "json" not in str(entry.get("format", "")) and not str(entry["path"]).endswith((".jsonl", ".jsonl.gz")):
                return None
            labels.extend((r.get("source"), r.get("label")) for r in read_jsonl(entry["path"]))
        return labels if len(labels) == self.store.n_rows else None

    @property
    def embedder(self):
        if self._embedder is None:
            from tsds.embed import load_embedder

            self._embedder = load_embedder(self.store.meta["embedder_spec"])
        return self._embedder

    def embed(self, texts: list[str]) -> np.ndarray:
        key = (len(texts), hash(tuple(texts)))
        if key not in self._emb_cache:
            self._emb_cache[key] = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        return self._emb_cache[key]


def select(spec: MethodSpec, view: PoolView, task: Task, size: int, seed: int, *, views: dict | None = None):
    """Run one method; returns (Selection, seconds). `views` maps store paths to PoolViews for spec.store."""
    from tsds.baselines import select_method

    v = view if spec.store is None else (views or {}).get(spec.store) or PoolView(spec.store)
    config = make_config(size=size, seed=seed, **spec.params)
    started = time.time()
    kwargs = {"embedder": v.embedder}
    if spec.method == "dsir":
        kwargs["pool_texts"] = v.texts
    from tsds.errors import ParameterError

    while True:
        try:
            sel, _ = select_method(spec.method, v.store, task.query_texts, config, **kwargs)
            break
        except ParameterError as exc:
            # n distinct draws need a support of p of at least n: lower alpha (wider support) until it holds,
            # as `--alpha auto` does; the alpha used is reported with the row.
            if spec.method != "tsds" or "positive probability" not in str(exc) or config.alpha < 1e-3:
                raise
            config = config.model_copy(update={"alpha": config.alpha / 2})
    sel.timings["alpha_used"] = config.alpha
    return sel, time.time() - started


_DUP_CACHE: dict = {}


def figures(view: PoolView, task: Task, counts: np.ndarray, seed: int = 0) -> dict:
    """Distribution figures of a selection in the main store's embedding space."""
    import hashlib

    rows = np.flatnonzero(counts)
    c = counts[rows]
    vec = view.store.vectors().take(rows)
    key = (str(view.store.root), hashlib.sha1(np.ascontiguousarray(counts).tobytes()).hexdigest())
    if key not in _DUP_CACHE:  # the full pool's figure is the same for every task: compute it once
        _DUP_CACHE[key] = metrics.near_duplicate_share(vec, c)
    out = {"draws": int(c.sum()), "distinct": int(rows.size), "distinct_share": metrics.distinct_share(counts),
           "near_duplicate_share": _DUP_CACHE[key],
           "ot_to_heldout": metrics.ot_distance(vec, c, view.embed(task.heldout), seed=seed),
           "train_bytes": int(sum(len(view.texts[r].encode()) * int(k) for r, k in zip(rows, c)))}
    if view.labels is not None and task.labels:
        out["label_share"] = metrics.label_share([view.labels[r] for r in rows], c, task.labels)
    return out


def training_texts(texts: list[str], counts: np.ndarray) -> list[str]:
    rows = np.flatnonzero(counts)
    return [texts[r] for r in rows for _ in range(int(counts[r]))]


def train_and_score(mode: str, train: list[str], heldout: list[str], seed: int, *, harness=None,
                    tiny_recipe=None) -> dict:
    if mode == "ngram":
        from tsds.evaluation.ngram import ngram_eval

        return ngram_eval(train, heldout, order=NGRAM_ORDER)
    if mode == "tiny":
        from tsds.evaluation.fast import TinyRecipe, fast_eval

        return fast_eval(train, heldout, tiny_recipe or TinyRecipe(), seed=seed)
    if mode == "model":
        return harness.run(train, heldout, seed=seed)
    raise ValueError(f"mode must be ngram, tiny or model, got {mode!r}")


def evaluate_methods(view: PoolView, task: Task, size: int, methods: list[MethodSpec], seeds: list[int], *,
                     mode: str = "ngram", reference: bool = True, harness=None, tiny_recipe=None,
                     views: dict | None = None, log=None) -> list[dict]:
    """One row per (method, seed): selection figures, then held-out NLL after training on the selection.

    Deterministic selections (knn, full) trained by a deterministic model (ngram) are scored once and
    reported for every seed. With `reference`, a `none` row scores the model before training.
    """
    rows: list[dict] = []
    base = {"task": task.name, "pool_rows": view.store.n_rows, "size": size,
            "budget": size / view.store.n_rows, "mode": mode}
    if reference:
        for seed in (seeds if mode != "ngram" else seeds[:1]):
            res = train_and_score(mode, [], task.heldout, seed, harness=harness, tiny_recipe=tiny_recipe)
            rows.append({**base, "method": "none", "seed": seed, **res})
    for spec in methods:
        cache = None
        for seed in seeds:
            if cache is not None:
                rows.append({**cache, "seed": seed})
                continue
            sel, secs = select(spec, view, task, size, seed, views=views)
            fig = figures(view, task, sel.counts, seed)
            res = train_and_score(mode, training_texts(view.texts, sel.counts), task.heldout, seed,
                                  harness=harness, tiny_recipe=tiny_recipe)
            row = {**base, "method": spec.name, "seed": seed, "select_seconds": round(secs, 2),
                   "alpha_used": sel.timings.get("alpha_used"), **fig, **res}
            rows.append(row)
            if log:
                log(f"  {task.name:22s} n={size:<6d} {spec.name:18s} seed={seed} nll={res['nll']:.4f} "
                    f"label={fig.get('label_share', float('nan')):.2f} dup={fig['near_duplicate_share']:.2f} "
                    f"ot={fig['ot_to_heldout']:.3f}")
            if mode == "ngram" and spec.method in ("knn", "full"):
                cache = row
    return rows


def summarise(rows: list[dict], keys=("task", "size", "method"), value: str = "nll") -> list[dict]:
    """Mean and standard deviation (over seeds) of `value` per group."""
    groups: dict = {}
    for r in rows:
        if value in r and r[value] is not None:
            groups.setdefault(tuple(r[k] for k in keys), []).append(float(r[value]))
    out = []
    for k, vals in groups.items():
        a = np.asarray(vals)
        out.append({**dict(zip(keys, k)), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
                    "n": int(a.size)})
    return out
