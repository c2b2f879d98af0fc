"""Turn a URL into a working engine, or into one line saying what is wrong."""

from __future__ import annotations

import os
import re

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError

from ..errors import ConfigurationError, ServerUnavailable


def normalize_url(url: str) -> URL:
    """Accept ``postgres://``/``postgresql://`` and use psycopg 3 for them."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:  # ValueError: a port that is not a number
        raise ConfigurationError(
            f"{shown(url)!r} is not a database URL; expected postgresql://user@host:5432/dbname"
        ) from err
    backend, _, driver = parsed.drivername.partition("+")
    if backend in {"postgres", "postgresql"} and driver in {"", "psycopg"}:
        return parsed.set(drivername="postgresql+psycopg")
    if backend not in {"postgres", "postgresql"}:
        raise ConfigurationError(
            f"{shown(parsed)} is a {backend} URL; alembic-integrity works with PostgreSQL only"
        )
    return parsed


_USERINFO = re.compile(r"^([^/@]*://)?([^:/@]*):.*@")


def shown(url: URL | str) -> str:
    """A URL safe to print: the password hidden, even in a URL that does not parse."""
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            return _USERINFO.sub(r"\1\2:***@", url)
        return str(parsed.render_as_string(hide_password=True))
    return str(url.render_as_string(hide_password=True))


def resolve_url(url: str | None) -> str:
    found = url or os.environ.get("DATABASE_URL")
    if not found:
        raise ConfigurationError("no database given; pass --url or set DATABASE_URL")
    return found


def connect(url: str, *, application_name: str = "alembic-integrity") -> Engine:
    """An engine whose first connection has already succeeded."""
    parsed = normalize_url(url)
    try:
        engine = create_engine(parsed, connect_args={"application_name": application_name,
                                                     "connect_timeout": 10})
    except ImportError as err:
        raise ConfigurationError(
            f"no PostgreSQL driver: {err}; install one with "
            "pip install 'alembic-integrity[psycopg-binary]' (or [psycopg], [psycopg-c])"
        ) from err
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except DBAPIError as err:
        engine.dispose()
        reason = str(getattr(err, "orig", err)).strip().splitlines()
        raise ServerUnavailable(
            f"cannot connect to {shown(parsed)}: {reason[-1] if reason else err}; "
            "check the URL and that the server is running"
        ) from err
    return engine
