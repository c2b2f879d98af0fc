"""``alembic-integrity repair`` and ``alembic-integrity restore``: parse, call, render.

``repair`` is a dry run unless ``--apply``; both exit 0 when all is well, 1
when rows are left for a person (repair) or conflicts were left alone
(restore), 2 on an error, which is always one line. ``repair --apply`` and
``restore`` show their progress on stderr (see :mod:`.progress`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from ..errors import IntegrityError, first_line
from ..repair import RepairResult, repair
from ..repair.log import DEFAULT_LOG_TABLE
from ..repair.restore import RestoreResult, restore
from . import cli, render
from ._common import declared_rules, engine_for, metadata_options, url_option
from .progress import reporter

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
    with reporter("repairing") as progress:
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
    with reporter("restoring") as progress:
        result = _with_engine(url, lambda engine: restore(engine, repair_id, force=force,
                                                          log_table=log_table,
                                                          progress=progress))
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _render_restore(result)
    ctx.exit(result.exit_code)


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
