"""`tsds pool verify`: check every file of a pool store against what was recorded when it was written."""

from __future__ import annotations

from pathlib import Path

import typer

from tsds.cli import _fail_cleanly, out
from tsds.cli.pool import pool_app


@pool_app.command("verify")
@_fail_cleanly
def pool_verify(
    store: Path = typer.Argument(..., help="Store folder."),
    repair: bool = typer.Option(False, "--repair", help="Rebuild what is damaged: shards embedded again from the "
                                "pool files (unchanged since the build), indexes rebuilt, density caches dropped."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the files with a problem."),
    source_root: Path | None = typer.Option(None, "--source-root", help="Where the pool files are now, if they "
                                            "moved (a --repair embeds from them, checked by content)."),
):
    """Hash every file of a store; exit 1 if anything is damaged (after --repair: if anything still is)."""
    from rich.table import Table

    from tsds.store.verify import repair_store, verify_store

    findings = verify_store(store)
    if repair and any(f.problem for f in findings):
        before = {f.file for f in findings if f.problem}
        findings = repair_store(store, findings, source_root=source_root)
        for f in findings:
            if f.file in before and not f.problem:
                f.status = "repaired"
    table = Table("file", "status", "detail", box=None, pad_edge=False)
    for f in findings:
        if not quiet or f.problem:
            style = "red" if f.problem else ("yellow" if f.status != "ok" else "")
            table.add_row(f.file, f.status, f.detail, style=style or None)
    problems = sum(f.problem for f in findings)
    if table.row_count:
        out.print(table)
    if not problems:
        out.print(f"{store}: {len(findings)} file(s) checked, no problem", highlight=False)
    if problems:
        out.print(f"{problems} problem(s); repair with `tsds pool verify --repair {store}`", highlight=False)
        raise typer.Exit(1)
