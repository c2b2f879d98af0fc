"""tasks belong to a project and can be done; batch mode so SQLite can follow

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM task WHERE project_id IS NULL")
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("done", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.alter_column("project_id", existing_type=sa.Integer, nullable=False)
        batch.create_foreign_key("fk_task_project_id_project", "project", ["project_id"],
                                 ["id"])


def downgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.drop_constraint("fk_task_project_id_project", type_="foreignkey")
        batch.alter_column("project_id", existing_type=sa.Integer, nullable=True)
        batch.drop_column("done")
