"""Progress on stderr for every long command: a bar when a person watches, else a log line.

One renderer for audit, preflight, repair and restore, so they all look and behave the same:
on a terminal a transient bar (what, done of total, rate, elapsed); otherwise a line every
``LOG_EVERY_S`` seconds, so a CI log shows the run is alive without flooding it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar

from ..pg.progress import Progress, ProgressCallback

LOG_EVERY_S = 10.0


@contextmanager
def reporter(doing: str) -> Iterator[ProgressCallback]:
    if sys.stderr.isatty():
        with _bar(doing) as update:
            yield update
        return
    yield _log_lines(doing)


@contextmanager
def _bar(doing: str) -> Iterator[ProgressCallback]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with Bar(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(doing, total=None, rate="")

        def update(p: Progress) -> None:
            rate = f"{p.rate:,.0f} {p.unit}/s" if p.rate else ""
            bar.update(task, description=p.what, completed=p.done, total=p.total, rate=rate)

        yield update


def _log_lines(doing: str) -> ProgressCallback:
    last = [time.monotonic()]

    def log_line(p: Progress) -> None:
        if time.monotonic() - last[0] < LOG_EVERY_S:
            return
        last[0] = time.monotonic()
        of = f" of {p.total:,}" if p.total is not None else ""
        rate = f", {p.rate:,.0f} {p.unit}/s" if p.rate else ""
        click.echo(f"{doing}: {p.what}: {p.done:,}{of} {p.unit}{rate}", err=True)

    return log_line
