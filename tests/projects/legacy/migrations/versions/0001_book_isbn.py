"""books get an ISBN

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A plain add_column cannot run twice; PostgreSQL's transactional DDL already
# keeps a failed deploy from half-applying it, so the re-run is not required.
idempotent = False


def upgrade() -> None:
    op.add_column("book", sa.Column("isbn", sa.String(20)))


def downgrade() -> None:
    op.drop_column("book", "isbn")
