"""``alembic-integrity preflight``: would ``alembic upgrade head`` fail on a VALIDATE?"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from ..audit.preflight import PreflightResult, preflight
from ..repair.log import DEFAULT_LOG_TABLE
from . import cli, render
from ._common import declared_rules, engine_for, metadata_options, url_option
from .audit_cmd import Duration
from .progress import reporter


@cli.command("preflight")
@url_option
@metadata_options
@click.option("--repair", "apply_repair", is_flag=True,
              help="Apply the declared repair policies (before-images logged), then audit again.")
@click.option("--batch-size", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--log-table", default=DEFAULT_LOG_TABLE, show_default=True)
@click.option("--sample", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--statement-timeout", "timeout_ms", type=Duration(), default=None)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.md",
              help="Write the final audit as Markdown (e.g. to attach to a CI run).")
def preflight_command(url: str | None, metadata_spec: str | None, config_path: str,
                      apply_repair: bool, batch_size: int, log_table: str, sample: int,
                      timeout_ms: int | None, report: Path | None) -> None:
    """Audit the declared rules (and with --repair, repair first) before a migration.

    Exit code 0: no VALIDATE would fail; 1: some would; 2: a rule could not be checked.
    """
    engine = engine_for(url)
    try:
        declared = declared_rules(metadata_spec, config_path)
        with reporter("auditing") as progress:
            result = preflight(engine, declared, apply_repair=apply_repair,
                               batch_size=batch_size, log_table=log_table, sample=sample,
                               statement_timeout_ms=timeout_ms, progress=progress)
    finally:
        engine.dispose()
    _render(result)
    if report is not None:
        report.write_text(render.audit_markdown(result.final), encoding="utf-8")
    sys.exit(result.exit_code)


def _render(result: PreflightResult) -> None:
    out = Console()
    out.print(render.audit_table(result.before))
    if result.repaired is not None:
        render.print_repair(out, result.repaired)
        out.print(render.audit_table(result.final))
    verdict = {0: "safe to migrate: no VALIDATE would fail",
               1: f"not safe: {len(result.blocking)} rule(s) would fail VALIDATE "
                  "(see the rows left for a person)",
               2: "cannot tell: some rules could not be checked (see problems)"}
    out.print(verdict[result.exit_code], markup=False)
