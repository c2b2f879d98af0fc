"""What a person decided after reading the repair report of the reference scenarios.

The standing policies on the models leave some rows for a person: runs that
belong to no experiment, and failed invocations that were never retried or
that a later invocation consumed. These are one-off decisions, so they live
here rather than on the models, and they run through the same repair engine:
every row they touch is logged with its before-image and can be restored.
"""

from __future__ import annotations

from sqlalchemy import Connection

from ..pg.identifiers import TableName
from ..rules.kinds import ExpectRule, ForeignKeyRule
from ..rules.metadata import DeclaredRules
from ..rules.policies import Delete, Quarantine, Relink, SetValue
from .models import RETRIED

RECOVERED_EXPERIMENT = "recovered-runs"
RUN = TableName("run")
INVOCATION = TableName("invocation")
FAILED_IMAGE = "f.type = 'IMAGE' AND f.output_image IS NULL"
# The retry of a failed input: same run, same step, with an output.
RETRY_OF_INPUT = (
    "SELECT r.id FROM invocation f JOIN invocation r ON r.run_id = f.run_id "
    "AND r.sequence_number = f.sequence_number AND r.id <> f.id AND r.output_image IS NOT NULL "
    "WHERE f.id = t.input_invocation_id"
)

DECISIONS = (
    # 1. Runs with no experiment are filed under one made for them, not guessed.
    ExpectRule("run_filed_under_an_experiment", RUN, "experiment_id IS NOT NULL", (
        SetValue(column="experiment_id", expression=(
            "(SELECT e.id FROM experiment e WHERE e.name = 'recovered-runs')")),
    )),
    # 2. A step that consumed a failed output is re-pointed at that output's retry.
    ExpectRule("input_is_not_a_failed_invocation", INVOCATION,
               f"input_invocation_id IS NULL OR NOT EXISTS (SELECT 1 FROM invocation f "
               f"WHERE f.id = t.input_invocation_id AND {FAILED_IMAGE})",
               (Relink(column="input_invocation_id", match=RETRY_OF_INPUT),)),
    # 3. Now unreferenced, retried failures go; never-retried ones are archived whole.
    ExpectRule("failed_image_invocations_settled", INVOCATION,
               "type <> 'IMAGE' OR output_image IS NOT NULL",
               (Delete(where=RETRIED), Quarantine())),
)


def decisions(declared: DeclaredRules) -> DeclaredRules:
    """The decisions, with the models' foreign keys so Delete still refuses referenced rows."""
    fks = [r for r in declared.rules if isinstance(r, ForeignKeyRule)]
    return DeclaredRules(rules=[*DECISIONS, *fks])


def decision_names() -> list[str]:
    return [d.name for d in DECISIONS]


def prepare(conn: Connection) -> None:
    """The experiment the person created for runs that had none."""
    conn.exec_driver_sql(
        "INSERT INTO experiment (name) VALUES ('recovered-runs') ON CONFLICT (name) DO NOTHING"
    )
