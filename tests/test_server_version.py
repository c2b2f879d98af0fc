"""The suite runs on the server it was meant for: .ci/test names the major per run."""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

EXPECT_ENV = "ALEMBIC_INTEGRITY_EXPECT_PG_MAJOR"


def test_the_session_server_is_the_expected_major(integrity_postgres_url: str) -> None:
    engine = sa.create_engine(integrity_postgres_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            number = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
    finally:
        engine.dispose()
    assert number >= 130000, "the fixtures need PostgreSQL 13+ (DROP DATABASE ... WITH (FORCE))"
    expected = os.environ.get(EXPECT_ENV)
    if expected:
        assert number // 10000 == int(expected)
