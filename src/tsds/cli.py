"""Command-line interface: a thin layer over tsds.api."""

from __future__ import annotations

import logging
import sys
from functools import wraps
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tsds.errors import TsdsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Task-specific data selection (TSDS).")
err = Console(stderr=True)
out = Console()


@app.callback()
def _root() -> None:
    """Task-specific data selection (TSDS)."""


def _fail_cleanly(fn):
    """Turn user errors into one line on stderr and exit status 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TsdsError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)

    return wrapper


def _logging(quiet: bool, log_json: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    if log_json:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
        logging.getLogger("tsds.stage").setLevel(logging.INFO)
    else:
        logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
        logging.getLogger("tsds.stage").setLevel(logging.WARNING)


@app.command("select")
@_fail_cleanly
def select_cmd(
    candidate_embeddings: Optional[Path] = typer.Option(None, "--candidate-embeddings", help="N x d .npy of candidate embeddings."),
    query_embeddings: Optional[Path] = typer.Option(None, "--query-embeddings", help="M x d .npy of query embeddings."),
    size: Optional[int] = typer.Option(None, "--size", "-n", help="Budget: how many examples to draw."),
    alpha: Optional[float] = typer.Option(None, help="Alignment (1) versus diversity (0). Default 0.5."),
    C: Optional[float] = typer.Option(None, "--C", "-C", help="Scale of distances in the objective. Default 5."),
    sigma: Optional[float] = typer.Option(None, help="Near-duplicate kernel radius; 0 disables. Default 0.75."),
    metric: Optional[str] = typer.Option(None, help="euclidean (the paper) or cosine."),
    seed: Optional[int] = typer.Option(None, help="Seed of the draw. Default 0."),
    without_replacement: bool = typer.Option(False, "--without-replacement", help="Draw n distinct examples instead of the paper's n draws with replacement."),
    index: Optional[str] = typer.Option(None, help="auto, flat (exact) or ivf."),
    initial_k: Optional[int] = typer.Option(None, "--initial-k", help="First neighbour-list length (grown as needed)."),
    config: Optional[Path] = typer.Option(None, "--config", help="The authors' config.yaml (query_embedding_path, candidate_embedding_path, output_folder, sample_size, alpha, C, sigma, max_K, kde_K)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (must not exist unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    log_json: bool = typer.Option(False, "--log-json", help="A JSON line on stderr per finished stage."),
):
    """Select training data whose distribution matches the query examples."""
    from tsds.api import select_embeddings
    from tsds.config import read_author_config
    from tsds.errors import ParameterError

    _logging(quiet, log_json)
    params: dict = {}
    if config is not None:
        params.update(read_author_config(config))
        kde_k = params.pop("kde_K", None)
        if kde_k is not None and not quiet:
            err.print(f"note: kde_K={kde_k} ignored: densities are computed exactly over the whole pool")
    cli = {"size": size, "alpha": alpha, "C": C, "sigma": sigma, "metric": metric, "seed": seed,
           "index": index, "initial_k": initial_k}
    params.update({k: v for k, v in cli.items() if v is not None})
    if without_replacement:
        params["sampling"] = "without-replacement"
    cand = candidate_embeddings or params.pop("candidates", None)
    qry = query_embeddings or params.pop("queries", None)
    target = out_dir or params.pop("out", None)
    params.pop("candidates", None), params.pop("queries", None), params.pop("out", None)
    for name, value in (("--candidate-embeddings", cand), ("--query-embeddings", qry), ("--out", target),
                        ("--size", params.get("size"))):
        if value is None:
            raise ParameterError(f"{name} is required (on the command line or in --config)")
    sel = select_embeddings(cand, qry, out=target, overwrite=overwrite, **params)
    if not quiet:
        a = sel.allocation
        out.print(
            f"selected {int(sel.counts.sum())} draws ({sel.distinct_selected} distinct) from "
            f"{sel.probabilities.size} candidates; support {int((sel.probabilities > 0).sum())}, "
            f"K={sel.k_used}, level s={a.level:.6g}, objective={a.objective:.6g} -> {target}",
            highlight=False,
        )


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
