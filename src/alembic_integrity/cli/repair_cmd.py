"""``alembic-integrity repair`` and ``alembic-integrity restore``: parse, call, render.

``repair`` is a dry run unless ``--apply``; both exit 0 when all is well, 1
when rows are left for a person (repair) or conflicts were left alone
(restore), 2 on an error, which is always one line. ``repair --apply`` and
``restore`` show their progress on stderr (see :func:`_progress`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from ..errors import IntegrityError, first_line
from ..repair import RepairProgress, RepairResult, repair
from ..repair.log import DEFAULT_LOG_TABLE
from ..repair.restore import RestoreProgress, RestoreResult, restore
from . import cli, render
from ._common import declared_rules, engine_for, metadata_options, url_option

_FORMATS = click.Choice(["table", "json"])


def _log_table_option(fn: Any) -> Any:
    return click.option("--log-table", default=DEFAULT_LOG_TABLE, show_default=True,
                        metavar="SCHEMA.TABLE",
                        help="Repair log table (its runs table is <table>_runs).")(fn)


@cli.command("repair")
@url_option
@metadata_options
@click.option("--apply", "apply_", is_flag=True,
              help="Change the rows; without it, only print what would be done.")
@click.option("--batch-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Rows per batch; each batch is one short transaction.")
@click.option("--rule", "rule_names", multiple=True, metavar="NAME",
              help="Only this rule (constraint name or label); repeatable.")
@_log_table_option
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.md",
              help="Also write a Markdown report of what was (or would be) done.")
@click.option("--format", "fmt", type=_FORMATS, default="table", show_default=True)
@click.pass_context
def repair_command(ctx: click.Context, url: str | None, metadata_spec: str | None,
                   config_path: str, apply_: bool, batch_size: int, rule_names: tuple[str, ...],
                   log_table: str, report: Path | None, fmt: str) -> None:
    """Repair rows that break the declared rules, as their policies say (dry run by default)."""
    declared = declared_rules(metadata_spec, config_path)
    with _progress("repairing") as show:
        def progress(p: RepairProgress) -> None:
            show(f"{p.rule}: {p.policy}", p.done, p.total, p.rate)

        result = _with_engine(url, lambda engine: repair(
            engine, declared, apply=apply_, batch_size=batch_size, log_table=log_table,
            rules=list(rule_names) or None, progress=progress if apply_ else None))
    if report is not None:
        try:
            report.write_text(result.to_markdown(), encoding="utf-8")
        except OSError as err:
            raise IntegrityError(f"--report {report}: cannot write it: {err.strerror or err}"
                                 + (f"; the repair was applied, undo with: "
                                    f"{result.restore_command}" if result.repair_id else "")
                                 ) from err
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _render_repair(result)
    ctx.exit(result.exit_code)


@cli.command("restore")
@click.argument("repair_id", type=int)
@url_option
@click.option("--force", is_flag=True,
              help="Also overwrite rows changed again since the repair (conflicts).")
@_log_table_option
@click.option("--format", "fmt", type=_FORMATS, default="table", show_default=True)
@click.pass_context
def restore_command(ctx: click.Context, repair_id: int, url: str | None, force: bool,
                    log_table: str, fmt: str) -> None:
    """Put back every row repair REPAIR_ID changed, as it was before."""
    with _progress("restoring") as show:
        def progress(p: RestoreProgress) -> None:
            show(f"restoring {p.table}", p.done, p.total, p.rate)

        result = _with_engine(url, lambda engine: restore(engine, repair_id, force=force,
                                                          log_table=log_table,
                                                          progress=progress))
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _render_restore(result)
    ctx.exit(result.exit_code)


Show = Callable[[str, int, "int | None", float], None]
"""``show(what, rows done, rows to go in all or None, rows per second)``."""

LOG_EVERY_S = 10.0


@contextmanager
def _progress(doing: str) -> Iterator[Show]:
    """A bar on a terminal (rows done of all, rate, elapsed), like the audit's; otherwise a
    line on stderr every ``LOG_EVERY_S`` seconds, so a CI log shows the run is alive."""
    if sys.stderr.isatty():
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(doing, total=None, rate="")

            def update(what: str, done: int, total: int | None, rate: float) -> None:
                bar.update(task, description=what, completed=done, total=total,
                           rate=f"{rate:,.0f} rows/s")

            yield update
        return
    last = [time.monotonic()]

    def log_line(what: str, done: int, total: int | None, rate: float) -> None:
        if time.monotonic() - last[0] < LOG_EVERY_S:
            return
        last[0] = time.monotonic()
        of = f" of {total:,}" if total is not None else ""
        click.echo(f"{doing}: {what}: {done:,}{of} rows, {rate:,.0f} rows/s", err=True)

    yield log_line


def _with_engine(url: str | None, call: Any) -> Any:
    """Run ``call(engine)``; a database error nobody translated still becomes one line."""
    engine: Engine = engine_for(url)
    try:
        return call(engine)
    except DBAPIError as err:
        raise IntegrityError(f"database error: {first_line(err)}") from err
    finally:
        engine.dispose()


def _render_repair(result: RepairResult) -> None:
    render.print_repair(Console(), result)


def _render_restore(result: RestoreResult) -> None:
    render.print_restore(Console(), result)
