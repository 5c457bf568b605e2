"""Select with several methods for a target task, train a language model on each selection, score held-out.

    view = PoolView("demo-out/store")
    task = load_task("data/demo/tasks/food")
    rows = evaluate_methods(view, task, size=359, methods=default_methods(), seeds=[0, 1, 2], mode="ngram")

Modes (the model trained on each selection; the same recipe for every method):
- ``ngram``: byte 4-gram Witten-Bell model from scratch (fast; the benchmark's full grid; CI);
- ``tiny``: tiny byte-level transformer from scratch (fixed steps, tokens, learning rate);
- ``model``: finetune a real causal LM (default SmolLM2-135M-Instruct) with a fixed recipe.
The reference row ``none`` is the model before any training on a selection (untrained / pretrained).

Every method selects from the same eligible rows, decided once per task (tsds.pipeline.eligibility): the
task's query and held-out texts are removed from the pool (equal after normalising whitespace and case, or
within ``DECONTAMINATION_RADIUS`` of one's embedding), and rows with an all-zero embedding are left out.
A selection that still holds a held-out text is refused, never scored.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsds.config import make_config
import tsds.evaluation.metrics as metrics
from tsds.store import PoolStore

NGRAM_ORDER = 4
# Embedding distance within which a pool row counts as a copy of a query or held-out text. On the demo
# tasks with the static embedder, a held-out text with a word added or removed lies 0.16-0.31 from the
# original and distinct held-out texts at least 0.59 from each other.
DECONTAMINATION_RADIUS = 0.3


@dataclass(frozen=True)
class MethodSpec:
    """One row of the comparison: a method, its parameters, and (optionally) a store of its own."""

    name: str
    method: str
    params: dict = field(default_factory=dict)
    store: str | None = None  # another store of the same pool (e.g. MiniLM embeddings); None = the main one


# The default setting, exactly as `tsds select` and `tsds.Selector(size=n)` use it (alpha lowered until the
# support holds 2n, draws in turns over the queries, one per near-duplicate cluster).
TSDS_PRESET = {"preset": "default"}
# A fixed setting that earlier benchmark runs report as "tsds": alpha 0.5 kept as given (an explicit alpha turns
# off the default's alpha lowering and cluster rule), cosine, C = 1, sigma = 0.3, n distinct plain draws.
TSDS_FIXED = {"alpha": 0.5, "C": 1.0, "sigma": 0.3, "metric": "cosine", "sampling": "without-replacement"}
BASELINE_DEFAULT = {"sampling": "without-replacement"}


def default_methods() -> list[MethodSpec]:
    return [MethodSpec("tsds", "tsds", TSDS_PRESET), MethodSpec("random", "random", BASELINE_DEFAULT),
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
    pool_rows: np.ndarray | None = None  # pool rows the task was carved from (never selectable) ...
    pool_store: str | None = None  # ... in this store


def load_task(task_dir=None, *, queries=None, heldout=None, text_field: str = "text", name: str | None = None) -> Task:
    """A target task: queries.jsonl and heldout.jsonl(.gz) in `task_dir`, or the two files given. Its name:
    ``name``, else the folder's, else the query file's (its folder's when the file is named queries.*)."""
    from tsds.pipeline.queries import task_name
    if task_dir is not None:
        d = Path(task_dir)
        queries = queries or d / "queries.jsonl"
        heldout = heldout or next((d / n for n in ("heldout.jsonl.gz", "heldout.jsonl") if (d / n).is_file()),
                                  d / "heldout.jsonl.gz")
    if queries is None or heldout is None:
        raise ValueError("a task needs query examples and a held-out set")
    q, h = read_jsonl(queries), read_jsonl(heldout)
    labels = {(r.get("source"), r.get("label")) for r in q + h if r.get("label") is not None}
    name = name or (Path(task_dir).resolve().name if task_dir is not None else task_name(queries))
    return Task(name, Path(queries), [r[text_field] for r in q], [r[text_field] for r in h], labels)


class PoolView:
    """A store with its texts, (source, label) per row, embedder and held-out embedding cache."""

    def __init__(self, store, embedder=None):
        from tsds.methods.dsir import store_texts

        self.store = store if isinstance(store, PoolStore) else PoolStore(store)
        self.store.require_complete()
        self.texts = store_texts(self.store)
        self.labels = self._labels()
        self._embedder = embedder
        self._emb_cache: dict = {}
        self.flags: np.ndarray | None = None  # rows to count in each selection (e.g. copies added to a pool)

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


def task_eligibility(view: PoolView, task: Task, *, decontaminate: bool = True,
                     radius: float = DECONTAMINATION_RADIUS):
    """The rows every method may select for ``task`` (see the module docstring), computed once."""
    from tsds.pipeline.eligibility import Exclusion, pool_eligibility

    texts = task.query_texts + task.heldout if decontaminate else None
    return pool_eligibility(view.store, Exclusion(exclude_texts=texts, exclude_radius=radius, pool_texts=view.texts),
                            embedder=view.embedder)


def _for_view(eligibility, v: PoolView):
    """The task's eligibility on another store of the same pool: the same rows, plus that store's zero rows."""
    from dataclasses import replace

    if eligibility is None or str(v.store.root) == eligibility.store_root:
        return eligibility
    if v.store.n_rows != eligibility.n_rows:
        raise ValueError(f"{v.store.root}: {v.store.n_rows} rows, not the {eligibility.n_rows} of the main store")
    return replace(eligibility, zero_rows=np.union1d(eligibility.zero_rows, v.store.zero_rows()))


def refuse_heldout(view: PoolView, task: Task, counts: np.ndarray, method: str) -> None:
    """Refuse to score a selection holding a held-out text (equal after normalising whitespace and case)."""
    from tsds.errors import InputError
    from tsds.pipeline.decontaminate import normalise

    held = {normalise(t) for t in task.heldout}
    bad = [int(r) for r in np.flatnonzero(counts) if normalise(view.texts[r]) in held]
    if bad:
        raise InputError(f"method {method} selected {len(bad)} pool rows whose text is a held-out text of task "
                         f"{task.name} (e.g. row {bad[0]}: {view.texts[bad[0]][:60]!r}); refusing to score it")


def select(spec: MethodSpec, view: PoolView, task: Task, size: int, seed: int, *, views: dict | None = None,
           eligibility=None):
    """Run one method; returns (Selection, seconds). `views` maps store paths to PoolViews for spec.store;
    ``eligibility``: the task's eligible rows (`task_eligibility`), the same for every method."""
    from tsds.methods import select_method

    v = view if spec.store is None else (views or {}).get(spec.store) or PoolView(spec.store)
    params = dict(spec.params)
    draw = params.pop("draw", None)
    config = make_config(size=size, seed=seed, **params)
    started = time.time()
    kwargs = {"embedder": v.embedder, "eligibility": _for_view(eligibility, v)}
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
    sel.timings["alpha_used"] = sel.config.alpha
    if draw is not None:
        sel.counts = redraw(v, sel, size, seed, draw)
    return sel, time.time() - started


def redraw(view: PoolView, sel, size: int, seed: int, draw: str) -> np.ndarray:
    """n distinct draws from the selection's p by another rule (a variant): ``systematic`` (dependent
    rounding of n p, candidates in index order), ``systematic-query`` (the same, candidates laid out by
    nearest query, then by distance to it, so every query's neighbourhood gets its share), or ``cluster``
    (at most one draw per near-duplicate cluster of the support: rows within sigma of each other)."""
    from tsds.core.sampling import draw_one_per_cluster, draw_systematic

    p = sel.probabilities
    if draw == "systematic":
        return draw_systematic(p, size, seed)
    if draw == "systematic-query":
        rows = np.flatnonzero(p)
        q, d = sel.nearest_query(rows)
        lead = rows[np.lexsort((d, q))]
        return draw_systematic(p, size, seed, order=np.concatenate([lead, np.setdiff1d(np.arange(p.size), rows)]))
    if draw == "cluster":
        rows = np.flatnonzero(p)
        labels = np.arange(p.size)
        labels[rows] = rows[metrics.near_duplicate_clusters(view.store.vectors().take(rows), sel.config.sigma)]
        return draw_one_per_cluster(p, size, seed, labels)
    raise ValueError(f"draw must be systematic, systematic-query or cluster, got {draw!r}")


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
    if view.flags is not None:
        out["flagged_share"] = float((view.flags[rows] * c).sum() / c.sum())
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


@dataclass
class EvalSettings:
    """How ``evaluate_methods`` scores: ``mode`` (ngram, tiny or model), ``reference`` (a ``none`` row, the
    model before training), ``harness`` (mode model) and ``tiny_recipe`` (mode tiny), ``views`` (store paths
    to PoolViews for MethodSpec.store), ``log`` (a callable for progress lines), ``decontaminate`` and
    ``radius`` (the task's texts removed from the pool), ``eligibility`` (decided already)."""

    mode: str = "ngram"
    reference: bool = True
    harness: object = None
    tiny_recipe: object = None
    views: dict | None = None
    log: object = None
    decontaminate: bool = True
    radius: float = DECONTAMINATION_RADIUS
    eligibility: object = None


def evaluate_methods(view: PoolView, task: Task, size: int, methods: list[MethodSpec], seeds: list[int],
                     settings: EvalSettings | None = None, **options) -> list[dict]:
    """One row per (method, seed): selection figures, then held-out NLL after training on the selection.

    ``options``: the fields of ``EvalSettings`` (or ``settings``). Every method selects from the same
    eligible rows (``task_eligibility``: the task's query and held-out texts removed unless ``decontaminate``
    is False, zero-vector rows left out); each row reports how many were removed. Deterministic selections
    (knn, full) trained by a deterministic model (ngram) are scored once and reported for every seed. With
    ``reference``, a `none` row scores the model before training.
    """
    st = settings or EvalSettings(**options)
    mode, reference, harness, tiny_recipe, views, log = (st.mode, st.reference, st.harness, st.tiny_recipe,
                                                          st.views, st.log)
    decontaminate, radius, eligibility = st.decontaminate, st.radius, st.eligibility
    rows: list[dict] = []
    elig = eligibility or task_eligibility(view, task, decontaminate=decontaminate, radius=radius)
    decon = elig.decontamination
    if task.pool_rows is not None and task.pool_store == str(view.store.root):
        left = np.setdiff1d(task.pool_rows, elig.excluded)
        if left.size:  # a carved task's own rows must never be selectable
            raise ValueError(f"task {task.name}: {left.size} of its carved rows are still eligible (row {left[0]})")
    if log and decon is not None:
        log(f"  {task.name}: decontamination removed {decon.removed.size} pool rows ({decon.by_radius} within "
            f"{decon.radius} of the task's {decon.eval_items} query and held-out texts, {decon.by_exact_text} more by "
            f"exact text); {elig.zero_rows.size} zero-vector rows left out")
    base = {"task": task.name, "pool_rows": view.store.n_rows, "size": size,
            "budget": size / view.store.n_rows, "mode": mode, "eligible_rows": elig.eligible,
            "decontaminated_rows": None if decon is None else int(decon.removed.size),
            "decontaminated_by_exact_text": None if decon is None else decon.by_exact_text,
            "decontamination_radius": None if decon is None else decon.radius,
            "zero_rows_excluded": 0 if elig.keep_zero_rows else int(elig.zero_rows.size)}
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
            sel, secs = select(spec, view, task, size, seed, views=views, eligibility=elig)
            refuse_heldout(view, task, sel.counts, spec.name)
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
