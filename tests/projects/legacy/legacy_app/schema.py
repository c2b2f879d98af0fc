"""The tables as ``metadata.create_all`` made them, before the project adopted Alembic."""

import sqlalchemy as sa
from sqlalchemy import Connection

legacy_metadata = sa.MetaData()

sa.Table(
    "author", legacy_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100)),
)
sa.Table(
    "book", legacy_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.String(200)),
    sa.Column("author_id", sa.Integer),
)


def create_all(conn: Connection) -> None:
    """What the application ran on start-up before revision 0001 existed."""
    legacy_metadata.create_all(conn)
