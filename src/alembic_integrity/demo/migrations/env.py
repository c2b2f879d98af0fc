"""Alembic environment of the alembic-integrity reference schema.

Where the database URL comes from, first match wins:

1. ``config.attributes["connection"]`` (a live Connection, for programmatic use),
2. ``config.attributes["url"]``,
3. the ``DATABASE_URL`` environment variable,
4. ``alembic -x url=...``,
5. ``sqlalchemy.url`` in ``alembic.ini``.

Switches: ``-x transaction_per_migration=true`` commits after each revision,
so a failed VALIDATE in a late revision keeps the earlier ones applied.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, pool
from sqlalchemy.engine import URL, make_url

import alembic_integrity  # noqa: F401  (registers the ensure_* operations on op)
from alembic_integrity.autogenerate import integrity_autogenerate
from alembic_integrity.demo.models import GATEWAY_SCHEMA, metadata
from alembic_integrity.errors import ConfigurationError
from alembic_integrity.pg.database import normalize_url

config = context.config
target_metadata = metadata
INCLUDED_SCHEMAS = frozenset({None, "public", GATEWAY_SCHEMA})
OFFLINE_FALLBACK_URL = "postgresql+psycopg://"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


class MissingDatabaseURL(ConfigurationError, CommandError):
    """No usable URL; a CommandError so the alembic CLI prints one line."""


def configured_url() -> str | None:
    """The first URL given by attributes, environment, ``-x url=`` or the ini file."""
    x_args = context.get_x_argument(as_dictionary=True)
    for candidate in (
        config.attributes.get("url"),
        os.environ.get("DATABASE_URL"),
        x_args.get("url"),
        config.get_main_option("sqlalchemy.url"),
    ):
        if isinstance(candidate, URL):  # str(URL) would mask the password
            return candidate.render_as_string(hide_password=False)
        if candidate and str(candidate).strip():
            return str(candidate).strip()
    return None


def database_url(offline: bool) -> URL:
    """The URL to use; offline SQL generation only needs the dialect."""
    raw = configured_url()
    if raw is None:
        if offline:
            return make_url(OFFLINE_FALLBACK_URL)
        raise MissingDatabaseURL(
            "no database URL: set DATABASE_URL (or pass -x url=... to alembic)"
        )
    try:
        return normalize_url(raw)  # postgresql:// means psycopg 3 here, not psycopg2
    except ConfigurationError as err:
        raise MissingDatabaseURL(str(err)) from err


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Reflect only the schemas the reference models live in."""
    if type_ == "schema":
        return name in INCLUDED_SCHEMAS
    return True


def transaction_per_migration() -> bool:
    value = context.get_x_argument(as_dictionary=True).get("transaction_per_migration", "")
    return value.strip().lower() in TRUE_WORDS


def common_options() -> dict[str, object]:
    return {
        "target_metadata": target_metadata,
        "include_schemas": True,
        "include_name": include_name,
        "transaction_per_migration": transaction_per_migration(),
        "compare_server_default": True,
        **integrity_autogenerate(),  # CHECK / NOT NULL / FK changes as ensure_* operations
    }


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``) without connecting."""
    context.configure(
        url=database_url(offline=True),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **common_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_with_connection(connection: Connection) -> None:
    context.configure(connection=connection, **common_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database, reusing a connection handed in by the caller."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with_connection(connection)
        return
    engine = create_engine(database_url(offline=False), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            run_with_connection(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
