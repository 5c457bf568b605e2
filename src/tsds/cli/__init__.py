"""Command-line interface: a thin layer over the library (tsds.api, tsds.pipeline, tsds.store)."""

from __future__ import annotations

import errno
import gc
import logging
import sys
from functools import wraps

import typer
from rich.console import Console

from tsds.errors import TsdsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="Task-specific data selection (TSDS).")
err = Console(stderr=True)
out = Console()


def _print_version(value: bool) -> None:
    if value:
        out.print(f"tsds {package_version()}", highlight=False)
        raise typer.Exit(0)


def package_version() -> str:
    """The installed package's version, from its metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tsds")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    """Task-specific data selection (TSDS)."""
    from tsds.memory import release_large_blocks

    release_large_blocks()


def _fail_cleanly(fn):
    """Turn user errors, and the system's refusals to read or write a file (no space, file too large, no
    permission, read-only), into one line on stderr and exit status 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TsdsError as exc:
            _error_line(str(exc))
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # the reader of our output went away (| head): not an error of ours
                raise
            _error_line(os_error_line(exc))

    return wrapper


def os_error_line(exc: OSError) -> str:
    """``path: reason`` for an OSError (both paths of a failed rename)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {reason}"


def _error_line(message: str) -> None:
    from rich.markup import escape

    one_line = " ".join(line.strip() for line in message.strip().splitlines())
    if _json_errors["on"]:          # --log-json: the error is a JSON line too, like everything on stderr
        logging.getLogger("tsds").error(one_line)
        raise typer.Exit(2)
    err.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


_LIBRARY_LOGGERS = ("ray", "transformers", "sentence_transformers", "model2vec", "huggingface_hub", "torch",
                    "faiss", "urllib3", "filelock", "py.warnings")


_json_errors = {"on": False}


class JsonLines(logging.Formatter):
    """One JSON object per record: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, and the record's fields
    (a message that is itself a JSON object, as the stage and shard events are, is merged in; any other
    message is ``message``)."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import datetime, timezone

        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name}
        message = record.getMessage()
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
        line.update(fields if isinstance(fields, dict) else {"message": message})
        return json.dumps(line, default=str)


def _logging(quiet: bool, log_json: bool) -> None:
    """Where the run's messages go. Human output is on stdout, the progress bar and warnings on stderr.
    ``quiet``: errors only (tsds' own warnings, Python warnings, the logs and download/distillation bars of
    Ray, transformers, sentence-transformers and model2vec are all dropped). ``log_json``: stderr carries
    JSON lines only (`JsonLines`: a timestamp each; per finished stage and shard, and every warning), the
    progress bar is left out, and human output stays on stdout (or is dropped with ``quiet``)."""
    import os

    from tsds.progress import show_bars

    show_bars(not log_json)
    _json_errors["on"] = log_json
    logging.captureWarnings(True)              # Python warnings become log records: JSON, or dropped when quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_json else logging.Formatter("%(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.ERROR if quiet else logging.WARNING)
    logging.getLogger("tsds").setLevel(logging.ERROR if quiet else logging.INFO)
    logging.getLogger("tsds.stage").setLevel(logging.INFO if log_json else logging.WARNING)
    if quiet:
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        # read by the libraries when they load (none is imported yet): no tqdm bars, no verbose logs
        os.environ.update({"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                           "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
                           "RAY_DEDUP_LOGS": "0"})


def spec_from_options(text_field, template, messages_field, roles=None):
    """A TextSpec from the three mutually exclusive text options (and ``--roles`` for chat), or None for
    the default. The escapes \\n, \\t and \\\\ of ``--template`` are decoded once; ``--roles`` is a
    comma-separated list of roles, or ``all``."""
    from tsds.errors import ParameterError
    from tsds.io.readers import TextSpec, decode_escapes

    if roles is not None and messages_field is None:
        raise ParameterError("--roles applies to --messages-field only")
    if text_field is None and template is None and messages_field is None:
        return None
    kept = {}
    if roles is not None:
        names = tuple(r.strip() for r in roles.split(","))
        if not all(names):
            raise ParameterError(f"--roles {roles!r}: give role names separated by commas, or all")
        kept["roles"] = None if names == ("all",) else names
    if template is not None:
        template = decode_escapes(template)
    return TextSpec(text_field=text_field, template=template, messages_field=messages_field, **kept)


def spec_keywords(spec) -> dict:
    """The text keywords of ``tsds.Pool.build`` that make ``spec`` (none for the default)."""
    if spec is None:
        return {}
    return {"text_field": spec.text_field, "template": spec.template, "messages_field": spec.messages_field,
            "roles": spec.roles}


def main():  # pragma: no cover
    """The ``tsds`` program: a bad option value (not a number, not a choice) is one line too, exit status 2."""
    try:
        from typer._click import exceptions as cx
    except ImportError:
        from click import exceptions as cx

    try:
        code = app(standalone_mode=False)
    except cx.NoArgsIsHelpError:
        app()
        return
    except cx.UsageError as exc:
        _usage_line(exc)
    except cx.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    # what is left goes with the process: the interpreter's last collection then skips the objects of the imports
    # (typer, rich, pydantic, numpy, faiss), 40-60 ms of every run's exit
    gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc) -> None:
    from rich.markup import escape

    hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
    err.print(f"[bold red]error:[/] {escape(' '.join(exc.format_message().splitlines()))}{hint}",
              highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


from tsds.cli import pool as _pool  # noqa: E402,F401  (registers commands)
from tsds.cli import verify as _verify  # noqa: E402,F401
from tsds.cli import select as _select  # noqa: E402,F401
from tsds.cli import report as _report  # noqa: E402,F401
from tsds.cli import eval as _eval  # noqa: E402,F401
