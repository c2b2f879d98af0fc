"""backfill prices through the ORM, then require them

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


class _Base(DeclarativeBase):
    pass


class _Product(_Base):
    """The product table as this revision knows it (never the app's current model)."""

    __tablename__ = "product"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str]
    price_cents: Mapped[int | None]


def upgrade() -> None:
    session = Session(bind=op.get_bind())
    if session.scalar(sa.select(sa.func.count()).select_from(_Product)) == 0:
        session.add(_Product(sku="GIFT-CARD", price_cents=None))
    for product in session.scalars(sa.select(_Product).where(_Product.price_cents.is_(None))):
        product.price_cents = 0
    session.flush()
    op.alter_column("product", "price_cents", nullable=False)


def downgrade() -> None:
    op.alter_column("product", "price_cents", nullable=True)
    op.execute("DELETE FROM product WHERE sku = 'GIFT-CARD'")
