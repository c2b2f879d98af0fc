"""Gateway rules (scenario 3): a completed cheapest-floor outcome names its inference.

Production already had ``ck_routing_outcomes_inference_linked`` with an older
predicate, added by hand during the repair (without the ``outcome_status IS
NULL`` escape that lets a two-phase write pass while in flight; PostgreSQL
cannot defer a CHECK). ``ensure_check_constraint`` replaces a same-named
constraint whose predicate differs, and adds it on a fresh database.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

import alembic_integrity  # noqa: F401  (registers op.ensure_*)

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"

NOT_NULL: list[tuple[str, str]] = [
    ("inferences", "created_at"),
    ("routing_outcomes", "created_at"),
]

CHECKS: list[tuple[str, str, str]] = [
    ("ck_inferences_status_known", "inferences", "status IN ('routed', 'succeeded', 'failed')"),
    (
        "ck_routing_outcomes_inference_linked",
        "routing_outcomes",
        "outcome_status IS NULL OR decision_rule <> 'cheapest_clearing_floor' "
        "OR inference_id IS NOT NULL",
    ),
]

OUTCOME_FK = "fk_routing_outcomes_inference_id_inferences"


def upgrade() -> None:
    for table, column in NOT_NULL:
        op.ensure_not_null(table, column, schema=SCHEMA)
    op.ensure_foreign_key(
        OUTCOME_FK, "routing_outcomes", "inferences", ["inference_id"], ["id"],
        schema=SCHEMA, referent_schema=SCHEMA,
    )
    for name, table, condition in CHECKS:
        op.ensure_check_constraint(name, table, condition, schema=SCHEMA)


def downgrade() -> None:
    for name, table, _condition in reversed(CHECKS):
        op.ensure_constraint_dropped(name, table, schema=SCHEMA)
    op.ensure_constraint_dropped(OUTCOME_FK, "routing_outcomes", schema=SCHEMA)
    for table, column in reversed(NOT_NULL):
        op.ensure_nullable(table, column, schema=SCHEMA)
