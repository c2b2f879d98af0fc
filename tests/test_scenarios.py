"""The four reference scenarios end to end, with the models' own policies.

Legacy schema, the incidents planted with their numbers, the audit, the repair
the policies declare, a person's decisions for what they leave, then
``alembic upgrade head`` validates every rule and a pre-flight is clean.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from sqlalchemy import Engine

from alembic_integrity.audit.core import audit
from alembic_integrity.audit.preflight import preflight
from alembic_integrity.cli import cli
from alembic_integrity.demo import datagen, decisions
from alembic_integrity.demo.models import metadata
from alembic_integrity.pg import raw
from alembic_integrity.repair import RepairResult, repair
from alembic_integrity.rules.metadata import DeclaredRules, rules_from_metadata

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class World:
    engine: Engine
    cfg: Config
    manifest: Any
    declared: DeclaredRules
    url: str


@pytest.fixture
def world(engine: Engine, integrity_database_url: str) -> Iterator[World]:
    cfg = Config(str(ROOT / "alembic.ini"), stdout=io.StringIO())
    cfg.attributes["configure_logger"] = False
    cfg.attributes["url"] = str(integrity_database_url)
    command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        manifest = datagen.generate(conn, rows=3000, dirty=True)
    yield World(engine, cfg, manifest, rules_from_metadata(metadata), str(integrity_database_url))


def ids(engine: Engine, sql: str) -> set[int]:
    with engine.connect() as conn:
        return {r[0] for r in raw.execute(conn, sql)}


def policy_counts(result: RepairResult, rule: str) -> list[tuple[str, int, int, int]]:
    outcome = next(r for r in result.rules if r.rule.startswith(rule))
    return [(p.kind, p.changed, p.refused, p.left) for p in outcome.policies]


def test_audit_finds_exactly_the_planted_violations(world: World) -> None:
    found = {f.label: f.violations for f in audit(world.engine, world.declared).findings}
    m = world.manifest
    assert found["ck_invocation_image_output"] == 24
    assert found["ck_routing_outcomes_inference_linked"] == 27
    assert found["inferences_not_stuck_in_routed"] == len(m.stuck_inferences) == 2
    assert found["run.experiment_id NOT NULL"] == len(m.runs_null_experiment)
    assert found["interactions.enabled NOT NULL"] == len(m.interactions_null_enabled)
    assert found["ck_interactions_status_known"] == len(m.interactions_unknown_status)
    assert found["ck_failure_counts_count_nonnegative"] == len(m.negative_failure_counts)


def test_repair_does_what_each_scenario_says(world: World) -> None:
    engine, m = world.engine, world.manifest
    interactions_before = ids(engine, "SELECT id FROM interactions")
    result = repair(engine, world.declared, apply=True)

    # 1. retried and unused failures deleted; referenced and never-retried ones left.
    assert policy_counts(result, "ck_invocation_image_output") == [
        ("Delete", 15, 4, 0), ("Manual", 0, 0, 5)]
    assert ids(engine, "SELECT id FROM invocation WHERE type = 'IMAGE' AND output_image IS NULL"
               ) == set(m.failed_referenced) | set(m.failed_not_retried)
    # 2. interactions are never deleted; bad ones invalidated with a reason, flags defaulted.
    assert ids(engine, "SELECT id FROM interactions") == interactions_before
    assert ids(engine, "SELECT id FROM interactions WHERE invalidated AND "
                       "invalidation_reason LIKE 'unknown status: %'") == set(
        m.interactions_unknown_status)
    assert ids(engine, "SELECT id FROM interactions WHERE enabled IS NULL OR invalidated IS NULL"
               ) == set()
    # 3. orphans re-linked one to one; legitimate ones untouched; stuck ones failed.
    linked = {o: i for o, i in _pairs(engine, "SELECT id, inference_id FROM "
                                              "gateway.routing_outcomes")}
    assert {o: linked[o] for o in m.orphan_outcomes} == m.orphan_matches
    assert all(linked[o] is None for o in m.no_candidate_outcomes + m.inflight_outcomes)
    assert ids(engine, "SELECT id FROM gateway.inferences WHERE status = 'failed' AND "
                       "completed_at IS NOT NULL AND error_message LIKE 'stuck in routed%'"
               ) == set(m.stuck_inferences)
    assert ids(engine, "SELECT id FROM gateway.inferences WHERE status = 'routed'"
               ) >= set(m.fresh_routed_inferences)
    # 4. counters and reasons.
    assert ids(engine, "SELECT id FROM failure_counts WHERE count < 0") == set()
    assert result.for_person == 12  # 3 runs without experiment + 4 referenced + 5 not retried


def _pairs(engine: Engine, sql: str) -> list[tuple[Any, Any]]:
    with engine.connect() as conn:
        return [tuple(r) for r in raw.execute(conn, sql)]


def test_after_a_persons_decisions_the_upgrade_validates_and_preflight_is_clean(
        world: World) -> None:
    engine = world.engine
    repair(engine, world.declared, apply=True)
    add_hand_patched_constraint(world)
    with engine.begin() as conn:
        decisions.prepare(conn)
    chosen = decisions.decisions(world.declared)
    for name in decisions.decision_names():
        assert repair(engine, chosen, apply=True, rules=[name]).for_person == 0
    command.upgrade(world.cfg, "head")  # 0002 repairs its new CHECK's rows (repair=True)
    oom = ids(engine, "SELECT id FROM persistence_diagram WHERE failure_reason IS NOT NULL")
    assert oom == set(world.manifest.diagrams_oom_exempt)
    assert preflight(engine, world.declared).exit_code == 0
    with engine.connect() as conn:
        invalid = raw.execute(conn, "SELECT conname FROM pg_constraint c JOIN pg_namespace n "
                                    "ON n.oid = c.connamespace WHERE NOT convalidated "
                                    "AND nspname IN ('public', 'gateway')").all()
    assert invalid == []


def add_hand_patched_constraint(world: World) -> None:
    """Production's hand-made CHECK with the older predicate, added during the repair."""
    with world.engine.begin() as conn:
        assert datagen.insert_hand_patched_constraint(conn)


def test_preflight_on_the_legacy_schema_cannot_tell(world: World) -> None:
    """One rule names a column only revision 0002 adds: exit 2, and it says why."""
    result = CliRunner().invoke(cli, ["preflight", "--url", world.url,
                                      "-c", str(ROOT / "alembic.ini"), "--repair"])
    assert result.exit_code == 2, result.output
    assert "left for a person" in result.output
    assert "cannot tell" in result.output


def test_operation_repair_true_repairs_rows_written_since_the_preflight(world: World) -> None:
    """0002's data_present CHECK: its column is new, so only repair=True can fix its rows."""
    engine = world.engine
    repair(engine, world.declared, apply=True)
    with engine.begin() as conn:
        decisions.prepare(conn)
    for name in decisions.decision_names():
        repair(engine, decisions.decisions(world.declared), apply=True, rules=[name])
    command.upgrade(world.cfg, "0002")
    with engine.connect() as conn:
        definition, valid = raw.execute(conn, "SELECT pg_get_constraintdef(oid), convalidated "
                                              "FROM pg_constraint WHERE conname = "
                                              "'ck_persistence_diagram_data_present'").one()
        logged = raw.execute(conn, "SELECT sum(rows) FROM alembic_integrity.repair_log WHERE "
                                   "rule LIKE 'ck_persistence_diagram_data_present%' "
                                   "AND action IN ('update', 'delete')").scalar_one()
    assert valid and "failure_reason" in definition
    assert logged == len(world.manifest.diagrams_oom_exempt) + len(
        world.manifest.diagrams_null_data)
