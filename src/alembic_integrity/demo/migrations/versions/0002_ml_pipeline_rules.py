"""ML pipeline rules (scenario 1): outputs present, started_at and links NOT NULL.

``persistence_diagram.diagram_data`` stays nullable: a diagram may be absent
only with a recorded ``failure_reason`` (the out-of-memory experiment), which
a CHECK with an escape clause expresses and a bare NOT NULL cannot.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

import alembic_integrity  # noqa: F401  (registers op.ensure_*)
from alembic_integrity import settings

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_NULL: list[tuple[str, str]] = [
    ("run", "experiment_id"),
    ("run", "started_at"),
    ("invocation", "started_at"),
    ("embedding", "started_at"),
    ("embedding", "vector"),
    ("persistence_diagram", "started_at"),
]

CHECKS: list[tuple[str, str, str]] = [
    ("ck_invocation_image_output", "invocation", "type <> 'IMAGE' OR output_image IS NOT NULL"),
    ("ck_invocation_text_output", "invocation", "type <> 'TEXT' OR output_text IS NOT NULL"),
]

# Its column is added by this revision, so no pre-flight could repair its rows:
# repair=True applies the model's policies between ADD NOT VALID and VALIDATE.
DATA_PRESENT = (
    "ck_persistence_diagram_data_present",
    "persistence_diagram",
    "diagram_data IS NOT NULL OR failure_reason IS NOT NULL",
)

# (name, source table, local column, referent table)
FOREIGN_KEYS: list[tuple[str, str, str, str]] = [
    ("fk_run_experiment_id_experiment", "run", "experiment_id", "experiment"),
    (
        "fk_invocation_input_invocation_id_invocation",
        "invocation",
        "input_invocation_id",
        "invocation",
    ),
]


def briefly_locked(ddl: Callable[[], None]) -> None:
    """Run one instant ACCESS EXCLUSIVE statement with a bounded lock wait.

    Waiting behind a long transaction would queue every reader behind us;
    failing fast (and rerunning later) is the lesser harm. The wait is the
    toolkit's ``lock_timeout`` setting.
    """
    lock_ms = settings.resolve(op.get_context().config).lock_timeout_ms
    op.execute(f"SET LOCAL lock_timeout = '{lock_ms}ms'")
    op.execute("SET LOCAL statement_timeout = '5s'")
    ddl()
    op.execute("SET LOCAL lock_timeout TO DEFAULT")
    op.execute("SET LOCAL statement_timeout TO DEFAULT")


def upgrade() -> None:
    briefly_locked(lambda: op.add_column(
        "persistence_diagram", sa.Column("failure_reason", sa.Text(), nullable=True),
        if_not_exists=True,
    ))
    for table, column in NOT_NULL:
        op.ensure_not_null(table, column)
    for name, table, column, referent in FOREIGN_KEYS:
        op.ensure_foreign_key(name, table, referent, [column], ["id"])
    for name, table, condition in CHECKS:
        op.ensure_check_constraint(name, table, condition)
    op.ensure_check_constraint(*DATA_PRESENT, repair=True)


def downgrade() -> None:
    for name, table, _condition in [DATA_PRESENT, *reversed(CHECKS)]:
        op.ensure_constraint_dropped(name, table)
    for name, table, _column, _referent in reversed(FOREIGN_KEYS):
        op.ensure_constraint_dropped(name, table)
    for table, column in reversed(NOT_NULL):
        op.ensure_nullable(table, column)
    briefly_locked(
        lambda: op.drop_column("persistence_diagram", "failure_reason", if_exists=True)
    )
