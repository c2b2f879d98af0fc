"""pytest fixtures for testing against a real, disposable PostgreSQL.

``integrity_postgres_url`` is one server for the whole session (or the one in
``$ALEMBIC_INTEGRITY_TEST_URL``); ``integrity_database_url`` is a fresh, empty
database on it per test, dropped afterwards, so tests cannot see each other.
If no server can be started the fixtures fail loudly: a skipped integrity test
would look like a passing one.

Loaded for every pytest run in an environment where the package is installed
(``pytest11`` entry point), so importing this module must stay cheap.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

TEST_URL_ENV = "ALEMBIC_INTEGRITY_TEST_URL"


@pytest.fixture(scope="session")
def integrity_postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL superuser connection shared by the session's tests."""
    existing = os.environ.get(TEST_URL_ENV)
    if existing:
        yield existing
        return
    from .throwaway import throwaway_postgres

    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def integrity_database_url(integrity_postgres_url: str) -> Iterator[str]:
    """URL of a new empty database (``test_<hex>``), dropped with ``FORCE`` after the test."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    server = sa.make_url(integrity_postgres_url)
    name = f"test_{uuid.uuid4().hex}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()
