"""look books up by ISBN

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

idempotent = True  # explicit: this revision must survive a re-run


def upgrade() -> None:
    op.create_index("ix_book_isbn", "book", ["isbn"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_book_isbn", "book", if_exists=True)
