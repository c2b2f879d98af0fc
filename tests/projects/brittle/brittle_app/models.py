"""The models declare account.name NOT NULL; no revision ever made it so (drift)."""

import sqlalchemy as sa

metadata = sa.MetaData()

account = sa.Table(
    "account", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
)
