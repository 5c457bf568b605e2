"""`tsds select`: from embeddings (.npy, the authors' interface) or from a pool store (text mode)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from tsds.cli import _fail_cleanly, _logging, app, err, out, spec_from_options as _spec

@app.command("select")
@_fail_cleanly
def select_cmd(
    candidate_embeddings: Optional[Path] = typer.Option(None, "--candidate-embeddings", help="N x d .npy of candidate embeddings."),
    query_embeddings: Optional[Path] = typer.Option(None, "--query-embeddings", help="M x d .npy of query embeddings."),
    size: Optional[int] = typer.Option(None, "--size", "-n", help="Budget: how many examples to draw."),
    alpha: Optional[str] = typer.Option(None, help="Alignment (1) versus diversity (0), or 'auto' (text mode): the largest alpha whose support of p holds --support-multiple x size candidates. Default (text mode): 0.5, lowered as far as needed for the support of p to hold twice the n distinct draws, which are taken in turns over the queries (the run says what it chose); with --paper and .npy embeddings: 0.5."),
    support_multiple: Optional[float] = typer.Option(None, "--support-multiple", help="With an automatic alpha: the support of p must hold at least this multiple of --size (default 2); given with the default alpha, the draw is the plain one."),
    C: Optional[float] = typer.Option(None, "--C", "-C", help="Scale of distances in the objective. Default 1 (text mode); 5 with --paper and .npy embeddings."),
    sigma: Optional[str] = typer.Option(None, help="Near-duplicate kernel radius; 0 disables; 'auto' (text mode): median nearest-neighbour distance in the pool / 3. Default 0.3 (text mode, cosine distance); 0.75 with --paper and .npy embeddings."),
    metric: Optional[str] = typer.Option(None, help="cosine (default in text mode) or euclidean (the paper; default with --paper and .npy embeddings)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the draw. Default 0."),
    without_replacement: bool = typer.Option(False, "--without-replacement", help="Draw n distinct examples (the default in text mode)."),
    with_replacement: bool = typer.Option(False, "--with-replacement", help="Draw n times with replacement (the paper; the default with --paper and .npy embeddings)."),
    paper: bool = typer.Option(False, "--paper", help="The published defaults for every parameter not given: euclidean, alpha 0.5, C 5, sigma 0.75, draws with replacement (what .npy embeddings and the authors' config file get anyway)."),
    index: Optional[str] = typer.Option(None, help="auto, flat (exact), ivf, or ivfpq (pool stores only)."),
    initial_k: Optional[int] = typer.Option(None, "--initial-k", help="First neighbour-list length (grown as needed)."),
    density: Optional[str] = typer.Option(None, "--density", help="exact (default): every density over the whole pool; approx: each over the members of its --density-lists nearest index lists only (for large pools with an IVF index: about 0.7x the time at 1M rows; never above exact; a sample of 256 is checked against exact and reported). A flat index (up to 50,000 rows) has no lists to probe: its densities stay exact."),
    density_lists: Optional[int] = typer.Option(None, "--density-lists", help="With --density approx: index lists nearest by centroid per density (default 32)."),
    index_storage: str = typer.Option("auto", "--index-storage", help="Where an IVF index keeps the vectors (.npy mode), and a flat one of 20,000+ rows its density partition: disk (what auto picks on Linux: a temporary file in --work-dir, mapped, so memory holds a window of them) or memory. Results are the same."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Folder for the mapped index's temporary file (default: TMPDIR); needs N x d x 4 bytes free; nothing is left in it."),
    config: Optional[Path] = typer.Option(None, "--config", help="The authors' config.yaml (query_embedding_path, candidate_embedding_path, output_folder, sample_size, alpha, C, sigma, max_K, kde_K)."),
    pool: Optional[Path] = typer.Option(None, "--pool", help="A pool store built by `tsds pool build` (text mode)."),
    source_root: Optional[Path] = typer.Option(None, "--source-root", help="Where the pool store's files are now, if they moved (found by relative path or name, checked by content; text mode)."),
    queries: Optional[List[str]] = typer.Option(None, "--queries", help="Query examples of the target task (any readable format; text mode). Repeat as PATH:WEIGHT for several targets sharing the budget in those proportions."),
    exclude: Optional[List[Path]] = typer.Option(None, "--exclude", help="Evaluation file(s): pool rows within --exclude-radius of any item, or equal to one after normalising whitespace and case, are removed before selection (text mode)."),
    exclude_radius: float = typer.Option(0.0, "--exclude-radius", help="Embedding distance for --exclude; 0 removes exact (normalised) text matches only."),
    keep_zero_rows: bool = typer.Option(False, "--keep-zero-rows", help="Let pool rows whose embedding is all zeros (texts the embedder cannot represent) be selected; by default every method leaves them out (text mode)."),
    task_name: Optional[str] = typer.Option(None, "--task-name", help="Name of the target task in the card and manifest (default: the query file's folder, or its name)."),
    report: bool = typer.Option(False, "--report", help="Also write report.html and figures/*.png into --out (text mode)."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="Query field holding the text (default: the store's)."),
    template: Optional[str] = typer.Option(None, "--template", help="Query text template over fields, e.g. '{instruction}\\n{output}'."),
    messages_field: Optional[str] = typer.Option(None, "--messages-field", help="Query field holding chat messages."),
    roles: Optional[str] = typer.Option(None, "--roles", help="With --messages-field: roles embedded, comma-separated, or all (default: user,assistant)."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (text mode; a Ray cluster serves the sharded index)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (e.g. auto); default with --engine ray: start a local one."),
    method: str = typer.Option("tsds", "--method", help="tsds, or a baseline with the same output: random, knn (cosine, round-robin over queries), dsir (hashed n-gram importance resampling), full (whole pool). Text mode."),
    records: str = typer.Option("selected.jsonl", "--records", help="Name of the records file in --out; .jsonl, .jsonl.gz or .parquet."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (must not exist unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    license: Optional[str] = typer.Option(None, "--license", help="The selection's licence for the dataset card's metadata (e.g. cc-by-4.0); default: other, with a note that the pool files' licences apply (text mode)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    log_json: bool = typer.Option(False, "--log-json", help="stderr carries only JSON lines (with a timestamp): one per finished stage, and warnings; no bar."),
):
    """Select training data whose distribution matches the query examples."""
    from tsds.api import select_embeddings
    from tsds.config import make_config, read_author_config
    from tsds.errors import ParameterError
    from tsds.io.output import check_output_dir
    from tsds.pipeline.select import APPROX_LOCAL_ONLY

    _logging(quiet, log_json)
    from tsds.io.writers import check_license

    check_license(license)
    _check_options(records=records, exclude_radius=exclude_radius, support_multiple=support_multiple,
                   index_storage=index_storage, work_dir=work_dir, engine=engine, method=method)
    params: dict = {}
    if config is not None:
        params.update(read_author_config(config))
        kde_k = params.pop("kde_K", None)
        if kde_k is not None and not quiet:
            err.print(f"note: kde_K={kde_k} ignored: densities are computed exactly over the whole pool")
    if density_lists is not None and density != "approx":
        raise ParameterError("--density-lists applies with --density approx")
    if density == "approx" and (engine != "local" or ray_address):
        raise ParameterError(APPROX_LOCAL_ONLY)
    cli = {"size": size, "C": C, "metric": metric, "seed": seed, "index": index, "initial_k": initial_k,
           "density": density, "density_lists": density_lists}
    params.update({k: v for k, v in cli.items() if v is not None})
    params.update(_auto_or_number("--alpha", alpha, "alpha", "alpha_auto", support_multiple or 2.0))
    params.update(_auto_or_number("--sigma", sigma, "sigma", "sigma_auto", True))
    if without_replacement and with_replacement:
        raise ParameterError("give --without-replacement or --with-replacement, not both")
    if without_replacement or with_replacement:
        params["sampling"] = "without-replacement" if without_replacement else "with-replacement"
    if pool is not None or queries:
        for flag, used in (("--index-storage", index_storage != "auto"), ("--work-dir", work_dir is not None)):
            if used:
                raise ParameterError(f"{flag} applies to selecting from .npy embeddings; a pool store keeps its "
                                     "index in its own folder")
        _select_text(pool, queries, out_dir, params, overwrite, quiet, records,
                     text_field, template, messages_field, exclude, exclude_radius, report, method,
                     engine, ray_address, keep_zero_rows, task_name, config_file=config,
                     support_multiple=support_multiple, preset="paper" if paper else None,
                     source_root=source_root, roles=roles, license=license)
        return
    if engine != "local" or ray_address:
        raise ParameterError("--engine ray applies to selecting from a pool store (--pool and --queries)")
    if method != "tsds":
        raise ParameterError(f"--method {method} needs a pool store (--pool and --queries)")
    for flag, used in (("--alpha auto", "alpha_auto" in params), ("--sigma auto", "sigma_auto" in params),
                       ("--support-multiple", support_multiple is not None),
                       ("--exclude", bool(exclude)), ("--report", report), ("--keep-zero-rows", keep_zero_rows),
                       ("--task-name", task_name is not None), ("--source-root", source_root is not None)):
        if used:
            raise ParameterError(f"{flag} needs a pool store (--pool and --queries)")
    cand = candidate_embeddings or params.pop("candidates", None)
    qry = query_embeddings or params.pop("queries", None)
    target = out_dir or params.pop("out", None)
    params.pop("candidates", None), params.pop("queries", None), params.pop("out", None)
    for name, value in (("--candidate-embeddings", cand), ("--query-embeddings", qry), ("--out", target),
                        ("--size", params.get("size"))):
        if value is None:
            raise ParameterError(f"{name} is required (on the command line or in --config)")
    params["preset"] = "paper"  # the authors' defaults, so that numbers compare with their script
    make_config(**params)
    check_output_dir(target, overwrite, inputs=[cand, qry, config, work_dir])
    sel = select_embeddings(cand, qry, out=target, overwrite=overwrite, index_storage=index_storage,
                            work_dir=work_dir, **params)
    if not quiet:
        a = sel.allocation
        out.print(
            f"selected {int(sel.counts.sum())} draws ({sel.distinct_selected} distinct) from "
            f"{sel.probabilities.size} candidates; support {int((sel.probabilities > 0).sum())}, "
            f"K={sel.k_used}, level s={a.level:.6g}, objective={a.objective:.6g} -> {target}",
            highlight=False,
        )
        if "density_check" in sel.info:
            from tsds.pipeline.density_check import describe_check

            out.print(describe_check(sel.info["density_check"]), highlight=False)


def _check_options(*, records, exclude_radius, support_multiple, index_storage, work_dir, engine, method) -> None:
    """The options that need no file read, checked before anything else."""
    from tsds.methods import METHODS
    from tsds.config import check_choice, check_number
    from tsds.engines import ENGINES
    from tsds.errors import InputError
    from tsds.io.writers import records_format
    from tsds.retrieval.index import STORAGES

    records_format(records)
    check_number("--exclude-radius", exclude_radius, low=0)
    if support_multiple is not None:
        check_number("--support-multiple", support_multiple, low=1)
    check_choice("index storage (--index-storage)", index_storage, STORAGES)
    check_choice("--engine", engine, ENGINES)
    check_choice("--method", method, METHODS)
    if work_dir is not None and not work_dir.is_dir():
        raise InputError(f"--work-dir: {work_dir} does not exist or is not a folder")


def _auto_or_number(flag: str, value, name: str, auto_name: str, auto_value) -> dict:
    """'auto' -> {auto_name: auto_value}; a number -> {name: float}; None -> {}."""
    from tsds.errors import ParameterError

    if value is None:
        return {}
    if isinstance(value, str) and value.strip().lower() == "auto":
        return {auto_name: auto_value}
    try:
        return {name: float(value)}
    except (TypeError, ValueError):
        raise ParameterError(f"{flag} must be a number or 'auto', got {value!r}") from None


def _selector(params: dict, method: str, support_multiple: float | None, preset: str | None = None):
    """The facade's Selector for the parsed options (``alpha_auto`` / ``sigma_auto`` mean "auto")."""
    from tsds.api import Selector

    p = dict(params)
    alpha = "auto" if p.pop("alpha_auto", None) is not None else p.pop("alpha", None)
    sigma = "auto" if p.pop("sigma_auto", False) else p.pop("sigma", None)
    return Selector(size=p.pop("size", None), alpha=alpha, sigma=sigma, C=p.pop("C", None), method=method,
                    support_multiple=support_multiple, preset=preset, **p)


def _select_text(pool, queries, out_dir, params, overwrite, quiet, records, text_field, template, messages_field,
                 exclude=None, exclude_radius=0.0, report=False, method="tsds", engine="local", ray_address=None,
                 keep_zero_rows=False, task_name=None, config_file=None, support_multiple=None, preset=None,
                 source_root=None, roles=None, license=None):
    """Text mode through the facade: Pool.open, Selector.select (or select_targets), save, report."""
    from tsds.api import Pool
    from tsds.errors import InputError, ParameterError
    from tsds.io.output import check_output_dir
    from tsds.methods import get_method
    from tsds.pipeline.multi import parse_target
    from tsds.engines import make_engine
    from tsds.progress import progress_bar
    from tsds.store import PoolStore

    for name, value in (("--pool", pool), ("--queries", queries or None), ("--out", out_dir),
                        ("--size", params.get("size"))):
        if value is None:
            raise ParameterError(f"{name} is required for selecting from a pool store")
    if method != "tsds" and (preset or support_multiple is not None):
        raise ParameterError(f"{'--paper' if preset else '--support-multiple'} applies to method tsds, not {method!r}")
    selector = _selector(params, method, support_multiple, preset)
    config = selector.config_
    get_method(method).configure(config)  # a baseline refuses TSDS parameters before a bar or an engine starts
    spec = _spec(text_field, template, messages_field, roles)
    targets = [parse_target(q) for q in queries]
    for path in [*(t[0] for t in targets), *(exclude or [])]:
        if not Path(path).exists():
            raise InputError(f"{path}: no such file")
    check_output_dir(out_dir, overwrite, inputs=[pool, *(t[0] for t in targets), *(exclude or []), config_file])
    checked = PoolStore(pool)
    checked.require_complete()
    n_rows = checked.n_rows
    distinct = config.sampling == "without-replacement" or method not in ("tsds", "full")
    if distinct and config.size > n_rows:  # the baselines other than full never draw more than the pool
        raise ParameterError(f"--size {config.size} is larger than the {n_rows} rows of the pool store {pool}; "
                             "cannot draw that many distinct examples")
    single = len(targets) == 1 and targets[0][0] == str(queries[0])  # one target, no weight
    if not single:
        if method != "tsds":
            raise ParameterError(f"several targets are supported with method tsds, not {method!r}")
        if task_name:
            raise ParameterError("--task-name applies to a single target")
    eligible = dict(exclude=list(exclude or []) or None, exclude_radius=exclude_radius,
                    keep_zero_rows=keep_zero_rows, query_spec=spec)
    runner = make_engine(engine, ray_address)
    try:
        opened = Pool.open(pool, engine=None if runner.name == "local" else runner, source_root=source_root)
        with progress_bar("densities", None, quiet=quiet, unit="points") as advance:
            if single:
                result = selector.select(opened, Path(targets[0][0]), progress=advance, task_name=task_name,
                                         **eligible)
            else:
                result = selector.select_targets(opened, queries, progress=advance, **eligible)
            result.save(out_dir, records_name=records, overwrite=overwrite, license=license)
        if report:
            result.report(out_dir)
    finally:
        runner.close()
    if not quiet:
        _print_text_summary(out_dir, records, result.selection)
        if report:
            out.print(f"report: {out_dir / 'report.html'} (figures in {out_dir / 'figures'})", highlight=False)


def _print_text_summary(out_dir: Path, records: str, sel, examples: int = 5) -> None:
    import json

    from rich.table import Table

    from tsds.pipeline.autoparams import describe_alpha, describe_parameters
    from tsds.pipeline.density_check import describe_check

    manifest = json.loads((out_dir / "manifest.json").read_text())
    res = manifest["result"]
    tail = (f", K={res['k_used']}, objective {res['objective']:.5g}" if res.get("objective") is not None
            else f", {res['targets']} targets" if res.get("targets") else f", method {manifest.get('method')}")
    out.print(f"[bold]selected[/] {res['drawn']} draws ({res['distinct_drawn']} distinct) from "
              f"{manifest['pool_store']['rows']} pool rows; support {res['support_size']}{tail}", highlight=False)
    for t in manifest.get("targets", []):
        out.print(f"  target {t['name']}: share {t['share']:.3f}, {t['drawn']} draws, support {t['support_size']}, "
                  f"alpha {t['alpha']:.4g}", highlight=False)
    for o in manifest.get("overlaps", []):
        out.print(f"  overlap {o['a']} / {o['b']}: {o['support_overlap']} rows in both supports, "
                  f"{o['drawn_overlap']} drawn by both", highlight=False)
    cal = manifest.get("calibration") or {}
    if manifest.get("method", "tsds") == "tsds":
        out.print(f"parameters: {describe_parameters(manifest['parameters'])}", highlight=False)
    if "sigma" in cal:
        out.print(f"sigma auto = {cal['sigma']['sigma']} ({cal['sigma']['rule']})", highlight=False)
    if "alpha" in cal:
        out.print(f"{'alpha auto' if cal['alpha'].get('alpha_max', 1.0) == 1.0 else 'alpha'}: "
                  f"{describe_alpha(cal['alpha'])}", highlight=False)
    checks = [(res.get("densities") or {}).get("check")] + [t.get("density_check") for t in manifest.get("targets", [])]
    for check in filter(None, checks):
        out.print(describe_check(check), highlight=False)
    e = manifest.get("eligibility")
    if e and e["zero_rows"]["count"]:
        z = e["zero_rows"]
        err.print(f"[yellow]note:[/] {z['count']} pool rows have an all-zero embedding (texts the embedder cannot "
                  f"represent), {'left out of the selection' if z['excluded'] else 'kept (--keep-zero-rows)'}; "
                  f"e.g. {'; '.join(z['examples'][:3])}", highlight=False)
    d = manifest.get("decontamination")
    if d:
        out.print(f"decontamination: removed {d['removed']} pool rows ({d['removed_by_radius']} within "
                  f"{d['radius']} of {d['eval_items']} evaluation items, {d['removed_by_exact_text']} more by exact text)",
                  highlight=False)
    for w in manifest.get("query_warnings", [])[:10]:
        err.print(f"[yellow]warning:[/] {w['message']}", highlight=False)
    sources = manifest["records"].get("sources")
    if sources:
        t = Table(title="selected rows by source")
        t.add_column("source")
        t.add_column("rows", justify="right")
        for k, v in sources.items():
            t.add_row(k, str(v))
        out.print(t)
    t = Table(title="a few selected rows and their nearest query", show_lines=True)
    t.add_column("selected text", overflow="fold", ratio=3)
    t.add_column("nearest query", overflow="fold", ratio=2)
    t.add_column("dist", justify="right")
    rows = _head_records(out_dir / records, examples)
    for r in rows:
        text = str(r.get("text", next((v for k, v in r.items() if not k.startswith("_tsds") and isinstance(v, str)), "")))
        t.add_row(text[:160], str(r.get("_tsds_nearest_query", ""))[:120], f"{r.get('_tsds_query_distance') or 0:.3f}")
    out.print(t)
    out.print(f"output: {out_dir}/ ({records}, README.md, manifest.json, probabilities.npy, selected_indices.npy)",
              highlight=False)


def _head_records(path: Path, n: int) -> list[dict]:
    import json

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).slice(0, n).to_pylist()
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


