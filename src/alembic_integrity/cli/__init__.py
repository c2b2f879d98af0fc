"""The ``alembic-integrity`` command: parse, call the library, render.

Each subcommand lives in a module of its own in this package and is added to
the group below. Errors derived from :class:`IntegrityError` become one line
on stderr and their exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from ..errors import IntegrityError
from ._common import State


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tighten PostgreSQL integrity rules without an outage and without losing a row."""
    ctx.obj = State(debug=debug)


def _register() -> None:
    from . import throwaway_cmd  # noqa: F401  (each module adds its command to `cli`)


def main(argv: list[str] | None = None) -> None:
    _register()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="alembic-integrity", standalone_mode=False)
    except IntegrityError as err:
        if debug:
            raise
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(2 if err.exit_code == 1 else err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
