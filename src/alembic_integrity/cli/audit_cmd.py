"""``alembic-integrity audit``: every declared rule, its state, and the rows that break it.

Exit codes: 0 no violations, 1 violations, 2 a problem (a rule that could not
be audited) or an error. Read-only: counting runs in a READ ONLY transaction.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import click
from rich.console import Console

from ..audit.core import AuditReport, audit
from ..errors import ConfigurationError
from ..settings import parse_value
from . import cli, render
from ._common import declared_rules, engine_for, metadata_options, url_option
from .progress import reporter

_FILE_WIDTH = 160  # a table written to a file is not squeezed to 80 columns


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``30s``, ``500ms``, ``2min`` or a number of milliseconds (the settings' grammar)."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_value("statement_timeout_ms", value)
        except ConfigurationError:
            self.fail(f"{value!r} is not a duration; use e.g. 30s, 500ms, 2min or 1500 (ms)",
                      param, ctx)


@cli.command("audit")
@url_option
@metadata_options
@click.option("--sample", type=click.IntRange(min=0), default=5, show_default=True,
              help="Primary keys of violating rows to show per rule.")
@click.option("--statement-timeout", "timeout_ms", type=Duration(), default=None,
              help="Stop any one counting query after this long (30s, 500ms, 2min, or ms); "
                   "that rule becomes a problem.")
@click.option("--format", "fmt", type=click.Choice(render.AUDIT_FORMATS), default="table",
              show_default=True, help="table for a terminal, json for programs, markdown for CI.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to FILE instead of stdout.")
@click.option("--all", "show_all", is_flag=True,
              help="Table format: also list rules that are valid with no violating rows.")
def audit_command(url: str | None, metadata_spec: str | None, config_path: str, sample: int,
                  timeout_ms: int | None, fmt: str, output: Path | None,
                  show_all: bool) -> None:
    """Report each declared rule's state and the rows that break it now (changes nothing).

    Exit code 0: no violations; 1: violations; 2: a rule could not be audited, or an error.
    """
    _check_output(output)
    engine = engine_for(url)
    try:
        declared = declared_rules(metadata_spec, config_path)
        with reporter("auditing") as progress:
            result = audit(engine, declared, sample=sample, statement_timeout_ms=timeout_ms,
                           progress=progress)
    finally:
        engine.dispose()
    _emit(result, fmt, output, show_all)
    sys.exit(result.exit_code)


def _check_output(output: Path | None) -> None:
    """Fail before a long audit, not after it, when the report cannot be written."""
    if output is not None and not output.resolve().parent.is_dir():
        raise click.BadParameter(f"directory {output.parent} does not exist",
                                 param_hint="'--output'")


def _emit(result: AuditReport, fmt: str, output: Path | None, show_all: bool) -> None:
    if output is None:
        _write(result, fmt, Console(), None, show_all)
        return
    try:
        with output.open("w", encoding="utf-8") as handle:
            console = Console(file=handle, width=_FILE_WIDTH, color_system=None)
            _write(result, fmt, console, handle, show_all)
    except OSError as err:  # exit 2, never 1: 1 means "violations found"
        raise ConfigurationError(f"cannot write the report to {output}: "
                                 f"{err.strerror or err}") from err
    click.echo(f"{render.audit_summary(result)}; report written to {output}", err=True)


def _write(result: AuditReport, fmt: str, console: Console, handle: TextIO | None,
           show_all: bool) -> None:
    if fmt == "table":
        console.print(render.audit_table(result, show_all))
    elif fmt == "json":
        click.echo(render.audit_json(result), nl=False, file=handle)
    else:
        click.echo(render.audit_markdown(result), nl=False, file=handle)
