"""One env.py for both databases: batch mode where the database is SQLite."""

import os

from alembic import context
from portable_app.models import metadata
from sqlalchemy import create_engine, pool

config = context.config
target_metadata = metadata


def url() -> str:
    return (config.attributes.get("url") or os.environ.get("DATABASE_URL")
            or config.get_main_option("sqlalchemy.url") or "")


def run_migrations_offline() -> None:
    context.configure(url=url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
