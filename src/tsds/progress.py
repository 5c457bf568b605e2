"""Progress reporting at the edge: rich bars with this run's rate and ETA, or nothing when quiet."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn
from rich.progress import TimeElapsedColumn
from rich.table import Column
from rich.text import Text

REFRESH_PER_SECOND = 2
"""Redraws per second: the rate and ETA are current within a second even while a shard is embedded."""

_bars = {"on": True}


def show_bars(on: bool) -> None:
    """Draw bars (the default) or not: off where stderr must carry only JSON lines (``--log-json``)."""
    _bars["on"] = bool(on)


class _Advance:
    """The callback a bar yields: ``advance(n)`` for work done by this run, ``advance.reused(n)`` for work
    found already done (a resumed store's finished shards: they move the bar but not the rate or ETA), and
    ``advance.add_total(n)`` for work that becomes known on the way (the lazy densities learn each round how
    many points they will compute). ``rate()`` and ``eta()`` are this run's own work only."""

    def __init__(self, bar=None, task=None, unit: str = "rows", clock=time.monotonic):
        self.bar, self.task, self.unit, self.clock = bar, task, unit, clock
        self.done = self.reused_n = 0
        self.total = None
        # the rate is measured from the end of this run's first piece of own work: model loading, reading
        # and finished shards found before it are not work done at the rate that the rest will take
        self.anchor: tuple[float, int] | None = None

    def __call__(self, n: int = 1) -> None:
        self.done += n
        if self.anchor is None:
            self.anchor = (self.clock(), self.done)
        self._move(n)

    def reused(self, n: int) -> None:
        self.reused_n += n
        self._move(n)

    def add_total(self, n: int) -> None:
        self.total = (self.total or 0) + n
        if self.bar is not None:
            self.bar.update(self.task, total=self.total)

    def rate(self) -> float | None:
        """Units per second of this run's own work since its first piece ended, or None before a second."""
        if self.anchor is None or self.done == self.anchor[1]:
            return None
        elapsed = self.clock() - self.anchor[0]
        return (self.done - self.anchor[1]) / elapsed if elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds left at this run's rate, or None while unknown."""
        rate = self.rate()
        if rate is None or self.total is None:
            return None
        return max(self.total - self.done - self.reused_n, 0) / rate

    def _move(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)


class _RateEta(ProgressColumn):
    """``1,234 rows/s  ETA 0:01:05`` from the task's `_Advance` (this run's own work)."""

    def __init__(self, advance: _Advance):
        super().__init__(table_column=Column(no_wrap=True))
        self.advance = advance

    def render(self, task) -> Text:
        a = self.advance
        rate, eta = a.rate(), a.eta()
        speed = f"{rate:,.0f} {a.unit}/s" if rate is not None else f"- {a.unit}/s"
        left = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "-:--:--"
        if eta is not None and eta >= 86400:
            left = f"{eta / 86400:.1f} d"
        return Text(f"{speed}  ETA {left}")


@contextmanager
def progress_bar(description: str, total: int | None, *, quiet: bool = False, unit: str = "rows"):
    """Yield a callback ``advance(n)`` (with ``reused(n)`` and ``add_total(n)``); draws a bar on stderr with
    this run's rate and ETA, redrawn every half second, unless quiet. ``total`` None: unknown until
    ``add_total`` gives some."""
    advance = _Advance(unit=unit)
    advance.total = total
    if quiet or not _bars["on"]:
        yield advance
        return
    columns = [TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), TaskProgressColumn(),
               _RateEta(advance), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False,
                  refresh_per_second=REFRESH_PER_SECOND) as bar:
        advance.bar, advance.task = bar, bar.add_task(description, total=total)
        try:
            yield advance
        except BaseException:  # the error is the run's last word: no bar (or its empty last line) before it
            if bar.console.is_terminal:
                bar.live.transient = True  # erased from the screen
            else:
                bar.console.quiet = True  # not drawn at the end into a log or pipe
            raise
