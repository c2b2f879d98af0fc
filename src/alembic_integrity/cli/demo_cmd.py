"""``alembic-integrity demo``: the reference scenarios end to end (the README's first command)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from ..errors import ConfigurationError
from . import cli


@cli.command("demo")
@click.option("-c", "--config", "config_path", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The reference project's alembic.ini. Default: the copy shipped in the "
                   "package, so the demo runs in any folder.")
@click.option("--rows", type=click.IntRange(min=1000), default=10_000, show_default=True,
              help="Clean rows generated around the planted incidents.")
@click.option("--url", help="Use this (empty) database instead of a throwaway server.")
def demo_command(config_path: Path | None, rows: int, url: str | None) -> None:
    """Legacy schema, dirty data, audit, repair, restore, upgrade head, twice, clean audit."""
    from ..demo import story as demo  # imported here: it pulls in the whole toolkit
    from ..demo.project import ALEMBIC_INI

    if config_path is None:
        config_path = ALEMBIC_INI
    if not config_path.exists():
        raise ConfigurationError(f"{config_path} not found; pass -c path/to/alembic.ini of the "
                                 "reference project, or leave -c out to use the packaged one")
    console = Console(width=None if sys.stdout.isatty() else 150)
    sys.exit(demo.run(config_path, rows, url, console))
