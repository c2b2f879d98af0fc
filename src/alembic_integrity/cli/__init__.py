"""The ``alembic-integrity`` command: parse, call the library, render.
The top layer: may import anything below it; nothing in the library imports it.

Each subcommand lives in a module of its own in this package and is added to
the group below. Errors derived from :class:`IntegrityError` become one line
on stderr and their exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click
from sqlalchemy.exc import DBAPIError

from ..errors import IntegrityError, first_line
from ._common import State


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Tighten PostgreSQL integrity rules without an outage and without losing a row."""
    ctx.obj = State(debug=debug)


def _debug_requested(argv: list[str]) -> bool:
    """``--debug`` counts only before the subcommand, not inside a wrapped command."""
    for arg in argv:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            return False
    return False


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        cli.main(args=args, prog_name="alembic-integrity")  # standalone: exits with ctx.exit codes
    except IntegrityError as err:
        if debug:
            raise
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except DBAPIError as err:
        if debug:
            raise
        click.echo(f"error: the database refused: {first_line(err)} (use --debug for details)",
                   err=True)
        sys.exit(2)
    except Exception as err:  # a bug of ours or of a library: still one line, exit 2
        if debug:
            raise
        click.echo(f"error: unexpected {type(err).__name__}: {first_line(err)} (run again with "
                   "--debug for the traceback, and please report it)", err=True)
        sys.exit(2)


# Each module adds its command to `cli` when imported.
from . import (  # noqa: E402, F401
    audit_cmd,
    demo_cmd,
    preflight_cmd,
    repair_cmd,
    throwaway_cmd,
    verify_cmd,
)
