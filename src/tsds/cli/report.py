"""`tsds report` (HTML report of a selection folder) and `tsds sweep` (alpha sweep on one neighbour fetch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tsds.cli import _fail_cleanly, _logging, app, out, spec_from_options as _spec


@app.command("report")
@_fail_cleanly
def report_cmd(
    selection: Path = typer.Argument(..., help="A selection folder written by `tsds select` (text mode)."),
    sample: int = typer.Option(3000, "--sample", help="Pool rows sampled for the map and the mix."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pool sample."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Write SELECTION/report.html (self-contained) and SELECTION/figures/*.png."""
    from tsds.config import MAX_INT, check_count
    from tsds.report import build_report

    _logging(quiet, False)
    check_count("--sample", sample, high=10_000_000)
    check_count("--seed", seed, low=0, high=MAX_INT)
    path = build_report(selection, sample=sample, seed=seed)
    if not quiet:
        out.print(f"report: {path} (figures in {path.parent / 'figures'})", highlight=False)


@app.command("compare")
@_fail_cleanly
def compare_cmd(
    a: Path = typer.Argument(..., help="A selection folder (text mode), e.g. made with --method tsds."),
    b: Path = typer.Argument(..., help="Another selection folder of the same pool store, e.g. --method knn."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for compare.html and figures/compare-*.png."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Write OUT/compare.html (self-contained): two selections of one pool store side by side."""
    from tsds.report.compare import compare_selections

    _logging(quiet, False)
    path = compare_selections(a, b, out_dir)
    if not quiet:
        out.print(f"comparison: {path}", highlight=False)


@app.command("sweep")
@_fail_cleanly
def sweep_cmd(
    pool: Path = typer.Option(..., "--pool", help="A pool store built by `tsds pool build`."),
    queries: Path = typer.Option(..., "--queries", help="Query examples of the target task."),
    alpha: str = typer.Option("0.1,0.3,0.5,0.7,0.9", "--alpha", help="Comma-separated alpha values."),
    C: Optional[float] = typer.Option(None, "--C", "-C", help="Scale of distances; default: the recommendation from the embedding scale."),
    sigma: str = typer.Option("auto", "--sigma", help="Kernel radius, or 'auto' (median nearest-neighbour distance / 3)."),
    metric: str = typer.Option("euclidean", "--metric"),
    size: Optional[int] = typer.Option(None, "--size", "-n", help="Budget, drawn as a line in the figure and used to say which alphas leave room for n distinct draws."),
    no_ot: bool = typer.Option(False, "--no-ot", help="Skip the exact OT distance (slow for very wide supports)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the sweep as JSON here."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write the sweep figure (PNG) here."),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
    template: Optional[str] = typer.Option(None, "--template"),
    messages_field: Optional[str] = typer.Option(None, "--messages-field"),
    roles: Optional[str] = typer.Option(None, "--roles", help="With --messages-field: roles embedded, or all."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """For each alpha: support of p, objective terms and OT distance to the queries, from one neighbour fetch."""
    from rich.table import Table

    from tsds import atomic
    from tsds.api import Pool, sweep_alpha
    from tsds.config import MAX_SIZE, check_choice, check_count, check_number
    from tsds.errors import ParameterError
    from tsds.io.output import check_output_file

    _logging(quiet, False)
    try:
        alphas = [float(a) for a in alpha.split(",") if a.strip()]
    except ValueError:
        raise ParameterError(f"--alpha must be comma-separated numbers, got {alpha!r}") from None
    if not alphas or any(not 0 <= a <= 1 for a in alphas):
        raise ParameterError("--alpha values must lie in [0, 1]")
    check_number("--C", C, low=0, low_open=True)
    sigma_auto = sigma.strip().lower() == "auto"
    if not sigma_auto:
        check_number("--sigma", sigma, low=0)
    check_choice("--metric", metric, ("euclidean", "cosine"))
    check_count("--size", size, high=MAX_SIZE)
    for flag, path in (("--json", json_out), ("--figure", figure)):
        check_output_file(path, inputs=[pool, queries], flag=flag)
    if json_out is not None and figure is not None and json_out.resolve() == figure.resolve():
        raise ParameterError(f"--json and --figure name the same file {json_out}")
    swept = sweep_alpha(Pool.open(pool), queries, alphas, C=C, sigma="auto" if sigma_auto else float(sigma),
                        metric=metric, query_spec=_spec(text_field, template, messages_field, roles), with_ot=not no_ot)
    rows = swept.pop("rows")
    data = {**swept, "size": size, "rows": rows}
    c, s, c_info, s_info = swept["C"], swept["sigma"], swept["C_recommendation"], swept["sigma_auto"]
    c_rec = c_info["C"]
    if json_out:
        atomic.write_text(json_out, json.dumps(data, indent=2))
    if figure:
        from tsds.report.figures import sweep_figure

        atomic.write_bytes(figure, sweep_figure(rows, size))
    if not quiet:
        t = Table(title=f"alpha sweep (C={c:.3g}{' recommended' if C is None else ''}, sigma={s:.3g}, "
                        f"K={swept['k_used']}, {swept['neighbour_fetches']} neighbour fetch(es))")
        for h in ("alpha", "support", "neighbours/query", "alignment term", "diversity term", "objective",
                  "level s", "OT distance"):
            t.add_column(h, justify="right")
        for r in rows:
            ot = "" if r["ot_distance"] is None else f"{r['ot_distance']:.4f}"
            mark = " *" if size and r["support"] < 2 * size else ""
            t.add_row(f"{r['alpha']:.3g}", f"{r['support']}{mark}", f"{r['neighbours_mean']:.1f}",
                      f"{r['alignment_term']:.4g}", f"{r['diversity_term']:.4g}", f"{r['objective']:.4g}",
                      f"{r['level']:.4g}", ot)
        out.print(t)
        out.print(f"recommended C from the embedding scale: {c_rec} ({c_info['rule']})", highlight=False)
        if s_info:
            out.print(f"sigma auto: {s} ({s_info['rule']})", highlight=False)
        if size:
            out.print(f"* support below 2 x size ({2 * size}): n distinct draws would scrape the tail of p",
                      highlight=False)
