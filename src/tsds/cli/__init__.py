"""Command-line interface: a thin layer over the library (tsds.api, tsds.pipeline, tsds.store)."""

from __future__ import annotations

import logging
import sys
from functools import wraps

import typer
from rich.console import Console

from tsds.errors import TsdsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Task-specific data selection (TSDS).")
err = Console(stderr=True)
out = Console()


@app.callback()
def _root() -> None:
    """Task-specific data selection (TSDS)."""
    from tsds.memory import release_large_blocks

    release_large_blocks()


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


def spec_from_options(text_field, template, messages_field):
    """A TextSpec from the three mutually exclusive text options, or None for the default."""
    from tsds.io.readers import TextSpec

    if text_field is None and template is None and messages_field is None:
        return None
    return TextSpec(text_field=text_field, template=template, messages_field=messages_field)


def main():  # pragma: no cover
    app()


from tsds.cli import pool as _pool  # noqa: E402,F401  (registers commands)
from tsds.cli import verify as _verify  # noqa: E402,F401
from tsds.cli import select as _select  # noqa: E402,F401
from tsds.cli import report as _report  # noqa: E402,F401
from tsds.cli import eval as _eval  # noqa: E402,F401
