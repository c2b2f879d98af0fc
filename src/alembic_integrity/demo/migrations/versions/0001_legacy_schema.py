"""Legacy schema: the four scenarios' tables without their rules.

The tables as those systems had them: nullable columns that should not be,
no CHECKs, none of the foreign keys that revisions 0002-0005 add.
Re-runnable: schema, tables and indexes use IF NOT EXISTS.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GATEWAY = "gateway"
NOW = sa.text("now()")

# (index name, table, columns, schema), created after the tables.
INDEXES: list[tuple[str, str, list[str], str | None]] = [
    ("ix_run_experiment_id", "run", ["experiment_id"], None),
    ("ix_invocation_run_id", "invocation", ["run_id"], None),
    ("ix_invocation_input_invocation_id", "invocation", ["input_invocation_id"], None),
    ("ix_embedding_invocation_id", "embedding", ["invocation_id"], None),
    ("ix_persistence_diagram_run_id", "persistence_diagram", ["run_id"], None),
    ("ix_interactions_posting_id", "interactions", ["posting_id"], None),
    ("ix_postings_staging_interaction_id", "postings_staging", ["interaction_id"], None),
    (
        "ix_postings_staging_promoted_to_posting_id",
        "postings_staging",
        ["promoted_to_posting_id"],
        None,
    ),
    (
        "ix_inferences_agent_id_model_id_created_at",
        "inferences",
        ["agent_id", "model_id", "created_at"],
        GATEWAY,
    ),
    ("ix_routing_outcomes_inference_id", "routing_outcomes", ["inference_id"], GATEWAY),
    ("ix_inflight_records_batch_id", "inflight_records", ["batch_id"], None),
]

# Children first, so that the downgrade never trips over a foreign key.
DROP_ORDER: list[tuple[str, str | None]] = [
    ("failure_logs", None),
    ("failure_counts", None),
    ("inflight_records", None),
    ("batch_record_keys", None),
    ("active_batches", None),
    ("routing_outcomes", GATEWAY),
    ("inferences", GATEWAY),
    ("postings_staging", None),
    ("interactions", None),
    ("postings", None),
    ("persistence_diagram", None),
    ("embedding", None),
    ("invocation", None),
    ("run", None),
    ("experiment", None),
]


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False)


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def _tstz(name: str, nullable: bool = True, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=NOW if default else None,
    )


def _text(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _bigint(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _fk(table: str, column: str, referent: str, ondelete: str | None = None) -> sa.Constraint:
    """A foreign key the legacy system already had (not one a later revision adds)."""
    return sa.ForeignKeyConstraint(
        [column], [f"{referent}.id"], name=op.f(f"fk_{table}_{column}_{referent}"),
        ondelete=ondelete,
    )


def create_ml_pipeline() -> None:
    """Scenario 1: rows were created first and filled in afterwards, so much is nullable."""
    op.create_table(
        "experiment",
        _id(),
        _text("name", nullable=False),
        _tstz("created_at", nullable=False, default=True),
        _pk("experiment"),
        sa.UniqueConstraint("name", name=op.f("uq_experiment_name")),
        if_not_exists=True,
    )
    op.create_table(
        "run",
        _id(),
        _bigint("experiment_id"),
        sa.Column("network", postgresql.ARRAY(sa.Text()), nullable=False),
        _bigint("seed", nullable=False),
        _bigint("max_length", nullable=False),
        _tstz("started_at"),
        _tstz("completed_at"),
        _pk("run"),
        if_not_exists=True,
    )
    op.create_table(
        "invocation",
        _id(),
        _bigint("run_id", nullable=False),
        _text("model", nullable=False),
        _text("type", nullable=False),
        _bigint("sequence_number", nullable=False),
        _bigint("seed", nullable=False),
        _bigint("input_invocation_id"),
        _tstz("started_at"),
        _tstz("completed_at"),
        _text("output_text"),
        sa.Column("output_image", sa.LargeBinary(), nullable=True),
        _pk("invocation"),
        _fk("invocation", "run_id", "run"),
        if_not_exists=True,
    )
    op.create_table(
        "embedding",
        _id(),
        _bigint("invocation_id", nullable=False),
        _text("embedding_model", nullable=False),
        _tstz("started_at"),
        _tstz("completed_at"),
        sa.Column("vector", postgresql.ARRAY(sa.Double()), nullable=True),
        _pk("embedding"),
        _fk("embedding", "invocation_id", "invocation"),
        if_not_exists=True,
    )
    op.create_table(
        "persistence_diagram",
        _id(),
        _bigint("run_id", nullable=False),
        _tstz("started_at"),
        _tstz("completed_at"),
        sa.Column("diagram_data", postgresql.JSONB(), nullable=True),
        _pk("persistence_diagram"),
        _fk("persistence_diagram", "run_id", "run"),
        if_not_exists=True,
    )


def create_interactions() -> None:
    """Scenario 2: the flags were nullable with a default; staging did not name its fetch."""
    op.create_table(
        "postings",
        _id(),
        _text("title", nullable=False),
        _text("url"),
        _tstz("created_at", nullable=False, default=True),
        _pk("postings"),
        if_not_exists=True,
    )
    op.create_table(
        "interactions",
        _id(),
        _bigint("posting_id"),
        _text("conversation_id", nullable=False),
        _text("status", nullable=False),
        _bigint("execution_order", nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=True, server_default=sa.text("true")),
        sa.Column("invalidated", sa.Boolean(), nullable=True, server_default=sa.text("false")),
        _text("invalidation_reason"),
        _tstz("created_at", nullable=False, default=True),
        _pk("interactions"),
        _fk("interactions", "posting_id", "postings"),
        if_not_exists=True,
    )
    op.create_table(
        "postings_staging",
        _id(),
        _bigint("interaction_id"),
        _bigint("promoted_to_posting_id"),
        sa.Column("payload", postgresql.JSONB(), nullable=True),
        _tstz("fetched_at", nullable=False, default=True),
        _pk("postings_staging"),
        _fk("postings_staging", "promoted_to_posting_id", "postings"),
        if_not_exists=True,
    )


def create_gateway() -> None:
    """Scenario 3, in its own schema: outcomes did not have to name their inference."""
    op.create_table(
        "inferences",
        _id(),
        _text("agent_id", nullable=False),
        _text("model_id", nullable=False),
        _text("status", nullable=False),
        _text("error_message"),
        sa.Column("cost", sa.Numeric(12, 6), nullable=True),
        _tstz("created_at", default=True),
        _tstz("completed_at"),
        _pk("inferences"),
        schema=GATEWAY,
        if_not_exists=True,
    )
    op.create_table(
        "routing_outcomes",
        _id(),
        _text("agent_id", nullable=False),
        _text("model_id"),
        _text("decision_rule", nullable=False),
        _text("chosen_model_slug"),
        _bigint("inference_id"),
        _text("outcome_status"),
        sa.Column("cost", sa.Numeric(12, 6), nullable=True),
        _tstz("created_at", default=True),
        _pk("routing_outcomes"),
        schema=GATEWAY,
        if_not_exists=True,
    )


def create_batch_bookkeeping() -> None:
    """Scenario 4: in-flight state lives in the database so that a crash loses nothing."""
    op.create_table(
        "active_batches",
        _id(),
        _text("name", nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'running'")),
        _tstz("started_at", nullable=False, default=True),
        _tstz("heartbeat_at"),
        _pk("active_batches"),
        if_not_exists=True,
    )
    op.create_table(
        "batch_record_keys",
        _id(),
        _bigint("batch_id", nullable=False),
        _text("record_key", nullable=False),
        _pk("batch_record_keys"),
        sa.UniqueConstraint(
            "batch_id", "record_key", name=op.f("uq_batch_record_keys_batch_id_record_key")
        ),
        if_not_exists=True,
    )
    op.create_table(
        "inflight_records",
        _id(),
        _bigint("batch_id", nullable=False),
        _text("record_key", nullable=False),
        sa.Column("attempt", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        _tstz("claimed_at", nullable=False, default=True),
        _pk("inflight_records"),
        if_not_exists=True,
    )
    op.create_table(
        "failure_counts",
        _id(),
        _text("record_key", nullable=False),
        _text("kind", nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        _tstz("last_failed_at"),
        _pk("failure_counts"),
        sa.UniqueConstraint("record_key", name=op.f("uq_failure_counts_record_key")),
        if_not_exists=True,
    )
    op.create_table(
        "failure_logs",
        _id(),
        _text("record_key", nullable=False),
        _bigint("batch_id"),
        _text("kind", nullable=False),
        _text("reason"),
        _tstz("logged_at", nullable=False, default=True),
        _pk("failure_logs"),
        if_not_exists=True,
    )


def upgrade() -> None:
    # Bounded waits while creating; restored afterwards so that the VALIDATEs
    # of later revisions in the same transaction are not cut short.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {GATEWAY}")
    create_ml_pipeline()
    create_interactions()
    create_gateway()
    create_batch_bookkeeping()
    for name, table, columns, schema in INDEXES:
        op.create_index(op.f(name), table, columns, schema=schema, if_not_exists=True)
    op.execute("SET LOCAL lock_timeout TO DEFAULT")
    op.execute("SET LOCAL statement_timeout TO DEFAULT")


def downgrade() -> None:
    for table, schema in DROP_ORDER:
        op.drop_table(table, schema=schema, if_exists=True)
    # RESTRICT (the default): never drop objects in gateway that are not ours.
    op.execute(f"DROP SCHEMA IF EXISTS {GATEWAY}")
