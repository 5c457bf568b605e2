"""Progress reporting at the edge: rich bars with rate and ETA, or nothing when quiet."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class _Advance:
    """The callback a bar yields: ``advance(n)`` for finished work, ``advance.add_total(n)`` for work that
    becomes known on the way (the lazy densities learn each round how many points they will compute)."""

    def __init__(self, bar=None, task=None, unit: str = "rows"):
        self.bar, self.task, self.unit = bar, task, unit

    def __call__(self, n: int = 1) -> None:
        if self.bar is None:
            return
        self.bar.advance(self.task, n)
        speed = self.bar.tasks[0].speed
        if speed:
            self.bar.update(self.task, rate=f"{speed:,.0f} {self.unit}/s")

    def add_total(self, n: int) -> None:
        if self.bar is not None:
            total = self.bar.tasks[0].total
            self.bar.update(self.task, total=(total or 0) + n)


@contextmanager
def progress_bar(description: str, total: int | None, *, quiet: bool = False, unit: str = "rows"):
    """Yield a callback ``advance(n)`` (with ``add_total(n)``); draws a bar with rate and ETA on stderr
    unless quiet. ``total`` None: unknown until ``add_total`` gives some."""
    if quiet:
        yield _Advance()
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        yield _Advance(bar, bar.add_task(description, total=total, rate=""), unit)
