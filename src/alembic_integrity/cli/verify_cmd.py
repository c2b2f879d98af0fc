"""``alembic-integrity verify``: prove the migrations on a throwaway PostgreSQL.

One head; each revision upgraded and re-run with nothing changing; downgrade
to base and upgrade again; no drift between models and database. Exit codes:
0 everything holds, 1 a check failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from ..verify import FAILED, PASSED, Step, VerifyReport, junit_xml, record_baseline, verify
from . import cli
from ._common import metadata_options

_MARKS = {PASSED: "[green]✓[/]", FAILED: "[bold red]✗[/]"}
_STATEMENT_LINES = 12


@cli.command("verify")
@metadata_options
@click.option("--url", default=None, metavar="URL",
              help="An EMPTY database to use (left at head). Default: a throwaway server. "
                   "DATABASE_URL is deliberately not read.")
@click.option("--strict", is_flag=True,
              help="Constraints in the database that the models lack fail the run.")
@click.option("--with-data", "data", metavar="PATH_OR_CALLABLE",
              help="A .sql file, or module:function called with a SQLAlchemy Connection.")
@click.option("--data-at", metavar="REVISION",
              help="Load --with-data right after upgrading to this revision.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="table for people, json for programs.")
@click.option("--junit-xml", "junit", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write JUnit XML (one testcase per step) to FILE.")
@click.option("-x", "x_args", multiple=True, metavar="KEY=VALUE",
              help="Passed to env.py like alembic -x (repeatable).")
@click.option("--docker/--no-docker", default=None,
              help="Throwaway server in Docker / from local binaries (default: local "
                   "binaries, Docker when there are none).")
@click.option("--skip-drift", is_flag=True, help="Do not compare the models with the database.")
@click.option("--base-sql", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="SQL run on the empty database before the first revision: what the "
                   "project creates outside Alembic.")
@click.option("--base-callable", metavar="MODULE:FUNCTION",
              help="Like --base-sql, a function called with a SQLAlchemy Connection (e.g. one "
                   "that runs metadata.create_all).")
@click.option("--idempotent-since", metavar="REVISION",
              help="Re-run baseline: this revision and its ancestors need not survive a "
                   "re-run (default: idempotent_since in alembic.ini's [alembic_integrity]).")
@click.option("--url-env", "url_env", multiple=True, metavar="NAME",
              help="Also set this environment variable to the run's URL, for an env.py that "
                   "does not read DATABASE_URL (repeatable).")
@click.option("--set-baseline", is_flag=True,
              help="Record the current head as idempotent_since in alembic.ini, then verify.")
def verify_command(config_path: str, metadata_spec: str | None, url: str | None, strict: bool,
                   data: str | None, data_at: str | None, fmt: str, junit: Path | None,
                   x_args: tuple[str, ...], docker: bool | None, skip_drift: bool,
                   base_sql: Path | None, base_callable: str | None,
                   idempotent_since: str | None, url_env: tuple[str, ...],
                   set_baseline: bool) -> None:
    """Upgrade, re-run, downgrade and re-upgrade every revision; compare models and database.

    Exit code 0: everything holds; 1: a check failed; 2: a usage or configuration error.
    """
    if junit is not None and not junit.resolve().parent.is_dir():
        raise click.BadParameter(f"directory {junit.parent} does not exist",
                                 param_hint="'--junit-xml'")
    if base_sql is not None and base_callable is not None:
        raise click.UsageError("--base-sql and --base-callable: give one of them")
    if set_baseline and idempotent_since is not None:
        raise click.UsageError("--set-baseline records the head; leave --idempotent-since out")
    console = Console(highlight=False, soft_wrap=True)  # CI logs: no hard wraps
    live = fmt == "table"
    if set_baseline:
        head = record_baseline(config_path)
        message = f"recorded idempotent_since = {head} in {config_path}"
        click.echo(message, err=not live)
    if live:
        where = "the given database" if url else "a throwaway PostgreSQL"
        console.print(f"verifying {escape(config_path)} on {where}")
    report = verify(config_path, url, metadata=metadata_spec, strict=strict, data=data,
                    data_at=data_at, x_args=x_args, docker=docker, skip_drift=skip_drift,
                    base=base_sql if base_sql is not None else base_callable,
                    idempotent_since=idempotent_since, url_env=url_env,
                    progress=(lambda step: _print_step(console, step)) if live else None)
    if junit is not None:
        junit.write_text(junit_xml(report), encoding="utf-8")
    if live:
        _print_summary(console, report)
    else:
        click.echo(report.to_json(), nl=False)
    sys.exit(report.exit_code)


def _print_step(console: Console, step: Step) -> None:
    mark = _MARKS.get(step.status, "[yellow]-[/]")
    console.print(f" {mark} {escape(step.name):<40} {step.seconds:6.2f} s")
    if step.status != PASSED and step.message:
        console.print(f"     {escape(step.message)}", style="red" if not step.ok else "yellow")
    if step.statement:
        lines = step.statement.strip().splitlines()
        shown = lines[:_STATEMENT_LINES] + (["..."] if len(lines) > _STATEMENT_LINES else [])
        console.print("     statement: " + escape("\n                ".join(shown)))
    for line in step.details:
        console.print(f"       {escape(line)}")
    for line in step.warnings:
        console.print(f"     [yellow]![/] {escape(line)}")


def _print_summary(console: Console, report: VerifyReport) -> None:
    style = "bold green" if report.ok else "bold red"
    console.print(f"[{style}]{escape(report.summary())}[/]")
    for step in report.failures:
        console.print(f"  [red]✗[/] {escape(step.name)}: {escape(step.message)}")
