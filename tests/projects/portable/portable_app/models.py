"""Named constraints through a naming convention, so SQLite and PostgreSQL agree on names."""

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

project = sa.Table(
    "project", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
)
task = sa.Table(
    "task", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("project.id"), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
)
