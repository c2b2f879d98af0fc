"""projects and tasks

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("project", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(100), nullable=False),
                    sa.PrimaryKeyConstraint("id", name="pk_project"))
    op.create_table("task", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("project_id", sa.Integer, nullable=True),
                    sa.Column("title", sa.String(200), nullable=False),
                    sa.PrimaryKeyConstraint("id", name="pk_task"))


def downgrade() -> None:
    op.drop_table("task")
    op.drop_table("project")
