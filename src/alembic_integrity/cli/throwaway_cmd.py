"""``alembic-integrity throwaway [-- CMD ARGS...]``: run CMD against a disposable server.

CMD gets ``DATABASE_URL`` in its environment; our exit code is CMD's. Without
CMD we print the URL and keep the server until Ctrl-C. The server is deleted in
every case, also on Ctrl-C, SIGTERM or SIGHUP: those signals are handled here,
in the command, never by the library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import click

from ..pg.throwaway import ThrowawayServer
from . import cli

_FORWARD_TIMEOUT_S = 10.0
_STOP_SIGNALS = tuple(
    sig for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if sig
)


class _Terminated(BaseException):
    """SIGTERM/SIGHUP arrived; unwinds like Ctrl-C so the server is stopped on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signum)


@contextlib.contextmanager
def _handlers(handler: Callable[[int, FrameType | None], Any], *signums: int) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in signums}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _terminal_delivers_sigint() -> bool:
    """Are we the terminal's foreground job? Then Ctrl-C already reached the child too."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.isatty():
                return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError):
            continue
    return False


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _run_child(argv: list[str], env: dict[str, str]) -> int:
    """Run CMD to its end and return its exit code, passing signals on like a shell would.

    Ctrl-C typed in the terminal reaches CMD by itself (same process group), so
    we neither forward it a second time nor die of it: CMD decides (psql merely
    cancels a query). A SIGINT sent to us alone, SIGTERM and SIGHUP are passed
    on; after SIGTERM/SIGHUP CMD gets 10 s before SIGKILL and we exit 128+signal.
    """
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as exc:
        click.echo(f"error: cannot run {argv[0]!r}: {exc.strerror or exc}", err=True)
        return 127 if isinstance(exc, FileNotFoundError) else 126

    terminated: list[int] = []
    deadline: list[float] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_delivers_sigint():
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)
        if signum != signal.SIGINT and not terminated:
            terminated.append(signum)
            deadline.append(time.monotonic() + _FORWARD_TIMEOUT_S)

    try:
        with _handlers(forward, signal.SIGINT, *_STOP_SIGNALS):
            while True:
                try:
                    returncode = child.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if deadline and time.monotonic() > deadline[0]:
                        child.kill()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if terminated:
        return 128 + terminated[0]
    return _exit_code(returncode)


@cli.command(
    "throwaway",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--docker/--no-docker",
    default=None,
    help="Require (or forbid) a Docker container; default: local binaries, else Docker.",
)
@click.option("--print-url", is_flag=True, help="Print the URL on stdout before running CMD.")
@click.option("--dbname", default="postgres", show_default=True, help="Database of the URL.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD ARGS...]")
def throwaway(docker: bool | None, print_url: bool, dbname: str, command: tuple[str, ...]) -> None:
    """Start a disposable PostgreSQL, run CMD with DATABASE_URL set, delete the server.

    Exits with CMD's exit code. Without CMD, prints the URL and keeps the
    server until Ctrl-C.
    """
    server = ThrowawayServer(docker=docker, dbname=dbname)
    code = 0
    try:
        with _handlers(_raise_terminated, *_STOP_SIGNALS), server:
            if not command:
                click.echo(server.url)
                click.echo(
                    f"throwaway PostgreSQL ready ({server.mode}, "
                    f"{server.startup_seconds:.2f} s); Ctrl-C stops and deletes it",
                    err=True,
                )
                try:
                    server.wait()
                except KeyboardInterrupt:
                    click.echo("stopping", err=True)
            else:
                if print_url:
                    click.echo(server.url)
                env = {**os.environ, "DATABASE_URL": server.url}
                code = _run_child(list(command), env)
    except _Terminated as exc:
        code = 128 + exc.signum
    sys.exit(code)
