"""The reference schema: models, legacy revision and generator agree with the scenarios.

The revisions run on a real server: 0001 builds the legacy schema, head is
exactly the models, and the downgrades undo exactly the upgrades. The generator
tests check every planted row by SQL, so the demo, the repair tests and the
benchmarks can rely on the exact numbers of docs/scenarios.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.schema import CreateIndex, CreateTable

from alembic_integrity.demo import datagen
from alembic_integrity.demo.datagen import Manifest
from alembic_integrity.demo.models import GATEWAY_SCHEMA, metadata
from alembic_integrity.demo.project import MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]
FAILED_SEQUENCE_NUMBERS = [
    80, 100, 210, 530, 532, 534, 536, 540, 542, 546, 548, 550, 552, 562, 564, 574, 582,
] + [584] * 7
TableKey = tuple[str | None, str]  # (schema, table)


# --- Alembic -------------------------------------------------------------------


def alembic_config(url: str | URL | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["configure_logger"] = False
    if url is not None:
        cfg.attributes["url"] = url
    return cfg




# --- Model facts ---------------------------------------------------------------------


def key(table: sa.Table) -> TableKey:
    return (table.schema, table.name)


def constraint_names(md: sa.MetaData) -> dict[str, TableKey]:
    return {
        str(c.name): key(t) for t in md.tables.values() for c in t.constraints if c.name
    }


def index_names(md: sa.MetaData) -> set[str]:
    return {str(ix.name) for t in md.tables.values() for ix in t.indexes}


def not_null_columns(md: sa.MetaData) -> set[tuple[str | None, str, str]]:
    return {(t.schema, t.name, c.name) for t in md.tables.values() for c in t.columns
            if not c.nullable}


def all_columns(md: sa.MetaData) -> set[tuple[str | None, str, str]]:
    return {(t.schema, t.name, c.name) for t in md.tables.values() for c in t.columns}






# --- Offline tests -------------------------------------------------------------------


def test_models_compile_and_every_constraint_is_named() -> None:
    dialect = postgresql.dialect()
    assert {t.schema for t in metadata.tables.values()} == {None, GATEWAY_SCHEMA}
    for table in metadata.sorted_tables:
        assert "CREATE TABLE" in str(CreateTable(table).compile(dialect=dialect))
        for index in table.indexes:
            CreateIndex(index).compile(dialect=dialect)
        for item in [*table.constraints, *table.indexes]:
            assert item.name, f"unnamed {type(item).__name__} on {table.name}"
            assert len(str(item.name).encode()) <= 63, item.name


def test_revisions_form_a_line() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    chain = [s.revision for s in script.walk_revisions()]
    assert chain == ["0005", "0004", "0003", "0002", "0001"]
    assert script.get_heads() == ["0005"]


# --- Database helpers --------------------------------------------------------------


def as_text(url: str | URL) -> str:
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


@pytest.fixture
def legacy_engine(integrity_database_url: str | URL) -> Iterator[sa.Engine]:
    """A fresh database at revision 0001 (the legacy schema), empty."""
    url = as_text(integrity_database_url)
    command.upgrade(alembic_config(url), "0001")
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def generated(engine: sa.Engine, **kwargs: Any) -> Manifest:
    with engine.begin() as conn:
        return datagen.generate(conn, **kwargs)


def ids(engine: sa.Engine, sql: str) -> list[int]:
    with engine.connect() as conn:
        return sorted(row[0] for row in conn.exec_driver_sql(sql))


def rows(engine: sa.Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(sql)]


FAILED = "SELECT f.id FROM invocation f WHERE f.type = 'IMAGE' AND f.output_image IS NULL"
RETRIED = (
    "EXISTS (SELECT 1 FROM invocation r WHERE r.run_id = f.run_id AND r.id <> f.id"
    " AND r.input_invocation_id = f.input_invocation_id AND r.output_image IS NOT NULL)"
)
REFERENCED = "EXISTS (SELECT 1 FROM invocation c WHERE c.input_invocation_id = f.id)"
OOM = "e.name = 'oom-exempt'"
DIAGRAM_EXPERIMENT = (
    "SELECT d.id FROM persistence_diagram d JOIN run r ON r.id = d.run_id"
    " LEFT JOIN experiment e ON e.id = r.experiment_id WHERE d.diagram_data IS NULL AND "
)
OUTCOMES = "SELECT id FROM gateway.routing_outcomes WHERE "
CHEAPEST_LINKED = (
    "outcome_status IS NULL OR decision_rule <> 'cheapest_clearing_floor'"
    " OR inference_id IS NOT NULL"
)

# Every kind of the manifest, found independently by SQL.
KIND_QUERIES: dict[str, str] = {
    "failed_deletable": f"{FAILED} AND {RETRIED} AND NOT {REFERENCED}",
    "failed_not_retried": f"{FAILED} AND NOT {RETRIED}",
    "failed_referenced": f"{FAILED} AND {RETRIED} AND {REFERENCED}",
    "runs_null_experiment": "SELECT id FROM run WHERE experiment_id IS NULL",
    "runs_null_started_at": "SELECT id FROM run WHERE started_at IS NULL",
    "invocations_null_started_at": "SELECT id FROM invocation WHERE started_at IS NULL",
    "embeddings_null_vector": "SELECT id FROM embedding WHERE vector IS NULL",
    "embeddings_null_started_at": "SELECT id FROM embedding WHERE started_at IS NULL",
    "diagrams_null_started_at": "SELECT id FROM persistence_diagram WHERE started_at IS NULL",
    "diagrams_oom_exempt": DIAGRAM_EXPERIMENT + OOM,
    "diagrams_null_data": DIAGRAM_EXPERIMENT + f"({OOM}) IS NOT TRUE",
    "interactions_null_enabled": "SELECT id FROM interactions WHERE enabled IS NULL",
    "interactions_null_invalidated": "SELECT id FROM interactions WHERE invalidated IS NULL",
    "interactions_invalidated_no_reason": "SELECT id FROM interactions"
        " WHERE NOT (NOT invalidated OR invalidation_reason IS NOT NULL)",
    "interactions_unknown_status": "SELECT id FROM interactions WHERE NOT (invalidated"
        " OR status IN ('pending', 'running', 'completed', 'failed'))",
    "staging_null_interaction": "SELECT id FROM postings_staging WHERE interaction_id IS NULL",
    "staging_missing_interaction": "SELECT s.id FROM postings_staging s WHERE NOT EXISTS"
        " (SELECT 1 FROM interactions i WHERE i.id = s.interaction_id)"
        " AND s.interaction_id IS NOT NULL",
    "orphan_outcomes": f"{OUTCOMES} NOT ({CHEAPEST_LINKED})",
    "stuck_inferences": "SELECT id FROM gateway.inferences WHERE status = 'routed'"
        " AND created_at < now() - interval '1 hour'",
    "negative_failure_counts": "SELECT id FROM failure_counts WHERE NOT (count >= 0)",
    "null_failure_reasons": "SELECT id FROM failure_logs WHERE reason IS NULL",
    "no_candidate_outcomes": f"{OUTCOMES} decision_rule = 'no_candidate_clears_floor'"
        " AND inference_id IS NULL",
    "inflight_outcomes": f"{OUTCOMES} outcome_status IS NULL AND inference_id IS NULL"
        " AND decision_rule = 'cheapest_clearing_floor'",
    "fresh_routed_inferences": "SELECT id FROM gateway.inferences WHERE status = 'routed'"
        " AND created_at >= now() - interval '1 hour'",
}


def found(engine: sa.Engine, kind: str) -> list[int]:
    return ids(engine, KIND_QUERIES[kind])


# --- Database tests: legacy revision ------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a database holds, read from its catalog: the shape the revisions build."""

    constraints: dict[str, TableKey]
    not_null: set[tuple[str | None, str, str]]
    columns: set[tuple[str | None, str, str]]
    indexes: set[str]


def facts(engine: sa.Engine) -> Facts:
    insp = sa.inspect(engine)
    constraints: dict[str, TableKey] = {}
    not_null: set[tuple[str | None, str, str]] = set()
    columns: set[tuple[str | None, str, str]] = set()
    indexes: set[str] = set()
    for schema in (None, GATEWAY_SCHEMA):
        for table in insp.get_table_names(schema=schema):
            if table == "alembic_version":
                continue
            where = (schema, table)
            for column in insp.get_columns(table, schema):
                columns.add((schema, table, column["name"]))
                if not column["nullable"]:
                    not_null.add((schema, table, column["name"]))
            pk = insp.get_pk_constraint(table, schema)
            found = [pk, *insp.get_foreign_keys(table, schema),
                     *insp.get_check_constraints(table, schema),
                     *insp.get_unique_constraints(table, schema)]
            constraints |= {str(c["name"]): where for c in found if c.get("name")}
            indexes |= {str(ix["name"]) for ix in insp.get_indexes(table, schema)
                        if not ix.get("duplicates_constraint")}
    return Facts(constraints, not_null, columns, indexes)


def test_revisions_build_exactly_the_models_and_downgrades_undo_them(
    integrity_database_url: str | URL,
) -> None:
    """On a real server: 0001 is the legacy schema, head is the models, 0001 again after down."""
    url = as_text(integrity_database_url)
    cfg = alembic_config(url)
    engine = sa.create_engine(url)
    try:
        command.upgrade(cfg, "0001")
        legacy = facts(engine)
        command.upgrade(cfg, "head")
        head = facts(engine)
        command.downgrade(cfg, "0001")
        again = facts(engine)
    finally:
        engine.dispose()
    assert head.constraints == constraint_names(metadata)
    assert head.not_null == not_null_columns(metadata)
    assert head.columns == all_columns(metadata)
    assert head.indexes == legacy.indexes == index_names(metadata)
    assert legacy.constraints.items() <= head.constraints.items()
    assert legacy.not_null < head.not_null and legacy.columns < head.columns
    assert head.columns - legacy.columns == {(None, "persistence_diagram", "failure_reason")}
    assert again == legacy


def test_legacy_flags_are_nullable_with_a_default(legacy_engine: sa.Engine) -> None:
    """Scenario 2: the flags every work query filters on could be NULL."""
    flags = {c["name"]: c for c in sa.inspect(legacy_engine).get_columns("interactions")}
    assert flags["enabled"]["nullable"] and "true" in flags["enabled"]["default"]
    assert flags["invalidated"]["nullable"] and "false" in flags["invalidated"]["default"]


def test_legacy_revision_is_rerunnable_and_reversible(integrity_database_url: str | URL) -> None:
    cfg = alembic_config(as_text(integrity_database_url))
    command.upgrade(cfg, "0001")
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "0001")
    engine = sa.create_engine(as_text(integrity_database_url))
    try:
        assert set(sa.inspect(engine).get_table_names(schema=GATEWAY_SCHEMA)) == {
            "inferences", "routing_outcomes"}
    finally:
        engine.dispose()


# --- Database tests: generator ------------------------------------------------------


def test_dirty_generation_plants_exactly_the_manifest(legacy_engine: sa.Engine) -> None:
    manifest = generated(legacy_engine, rows=2000, dirty=True)
    assert set(KIND_QUERIES) | {"postings_total"} == set(manifest.summary())
    for kind, planted in {**manifest.kinds(), **manifest.kinds(control=True)}.items():
        assert found(legacy_engine, kind) == planted, kind
    counts = manifest.summary()
    assert {k: counts[k] for k in datagen.PLANTED} == datagen.PLANTED
    assert {k: counts[k] for k in datagen.CONTROLS} == datagen.CONTROLS


def test_failed_invocations_reproduce_scenario_1(legacy_engine: sa.Engine) -> None:
    manifest = generated(legacy_engine, rows=2000, dirty=True)
    assert (len(manifest.failed_deletable), len(manifest.failed_not_retried),
            len(manifest.failed_referenced)) == (15, 5, 4)
    failed = rows(
        legacy_engine,
        "SELECT f.id, f.model, f.seed, r.seed, r.network, f.sequence_number"
        " FROM invocation f JOIN run r ON r.id = f.run_id"
        " WHERE f.type = 'IMAGE' AND f.output_image IS NULL ORDER BY f.id",
    )
    assert [row[0] for row in failed] == manifest.failed_invocations
    assert {(*row[1:4], tuple(row[4])) for row in failed} == {
        ("SDXLTurbo", -1, -1, ("SDXLTurbo", "Moondream"))}
    assert Counter(row[5] for row in failed) == Counter(FAILED_SEQUENCE_NUMBERS)
    runs = ids(legacy_engine, f"SELECT DISTINCT run_id FROM invocation WHERE id IN ({FAILED})")
    assert len(runs) == 7
    assert sorted(manifest.retry_of) == sorted(
        manifest.failed_deletable + manifest.failed_referenced)


def test_text_invocations_and_clean_runs_have_outputs(legacy_engine: sa.Engine) -> None:
    generated(legacy_engine, rows=2000, dirty=True)
    assert ids(legacy_engine, "SELECT id FROM invocation WHERE NOT (type <> 'TEXT'"
               " OR output_text IS NOT NULL)") == []
    assert ids(legacy_engine, "SELECT id FROM invocation WHERE type NOT IN ('IMAGE', 'TEXT')") \
        == []


def test_oom_exempt_experiment_holds_the_legitimate_gaps(legacy_engine: sa.Engine) -> None:
    manifest = generated(legacy_engine, rows=2000, dirty=True)
    oom = ids(legacy_engine, "SELECT id FROM experiment WHERE name = 'oom-exempt'")
    assert oom == [manifest.oom_experiment_id]
    assert len(manifest.diagrams_oom_exempt) >= 3
    assert len(manifest.diagrams_null_data) == 2


def test_interactions_reproduce_scenario_2(legacy_engine: sa.Engine) -> None:
    manifest = generated(legacy_engine, rows=10_000, dirty=True)
    traced = rows(
        legacy_engine,
        "SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM postings_staging s"
        " JOIN interactions i ON i.id = s.interaction_id WHERE s.promoted_to_posting_id = p.id))"
        " FROM postings p",
    )
    assert traced == [(1632, 1632)] and manifest.postings_total == 1632
    # A NULL flag silently drops the row from every work query.
    work = set(ids(legacy_engine, "SELECT id FROM interactions"
                   " WHERE enabled = TRUE AND invalidated = FALSE"))
    null_flags = manifest.interactions_null_enabled + manifest.interactions_null_invalidated
    assert not work & set(null_flags)
    assert min(map(len, (manifest.interactions_null_enabled,
                         manifest.interactions_null_invalidated,
                         manifest.interactions_invalidated_no_reason,
                         manifest.interactions_unknown_status,
                         manifest.staging_null_interaction,
                         manifest.staging_missing_interaction))) >= 2


def test_orphaned_outcomes_reproduce_scenario_3(legacy_engine: sa.Engine) -> None:
    manifest = generated(legacy_engine, rows=2000, dirty=True)
    matches = rows(
        legacy_engine,
        "SELECT o.id, array_agg(i.id) FROM gateway.routing_outcomes o"
        " JOIN gateway.inferences i ON i.agent_id = o.agent_id AND i.model_id = o.model_id"
        "  AND i.cost = o.cost AND i.created_at BETWEEN o.created_at - interval '3 seconds'"
        "  AND o.created_at + interval '3 seconds'"
        " WHERE o.decision_rule = 'cheapest_clearing_floor' AND o.inference_id IS NULL"
        "  AND o.outcome_status IS NOT NULL GROUP BY o.id",
    )
    assert len(matches) == 27
    assert all(len(candidates) == 1 for _, candidates in matches)
    bijection = {outcome: candidates[0] for outcome, candidates in matches}
    assert bijection == manifest.orphan_matches
    assert len(set(bijection.values())) == 27
    assert rows(legacy_engine, "SELECT max(now() - created_at) < interval '24 hours'"
                f" FROM ({OUTCOMES} NOT ({CHEAPEST_LINKED})) o JOIN gateway.routing_outcomes"
                " r USING (id)") == [(True,)]
    linked = ids(legacy_engine, "SELECT inference_id FROM gateway.routing_outcomes"
                 " WHERE inference_id IS NOT NULL")
    assert not set(bijection.values()) & set(linked)


def test_gateway_controls_and_stuck_inferences(legacy_engine: sa.Engine) -> None:
    manifest = generated(legacy_engine, rows=2000, dirty=True)
    assert len(manifest.no_candidate_outcomes) == 2 and len(manifest.stuck_inferences) == 2
    ages = rows(
        legacy_engine,
        "SELECT now() - created_at >= interval '11 days 23 hours',"
        " now() - created_at < interval '12 days', completed_at IS NULL"
        " FROM gateway.inferences"
        " WHERE status = 'routed' AND created_at < now() - interval '1 hour'",
    )
    assert ages == [(True, True, True)] * 2
    assert len(manifest.fresh_routed_inferences) > 0
    statuses = ids(legacy_engine, "SELECT count(*) FROM gateway.inferences"
                   " WHERE status NOT IN ('routed', 'succeeded', 'failed')")
    assert statuses == [0]


def test_clean_generation_plants_nothing(legacy_engine: sa.Engine) -> None:
    manifest = generated(legacy_engine, rows=2000, dirty=False)
    assert manifest.total_planted == 0 and manifest.orphan_matches == {}
    for kind in manifest.kinds():
        assert found(legacy_engine, kind) == [], kind
    for kind, planted in manifest.kinds(control=True).items():
        assert found(legacy_engine, kind) == planted, kind
    assert ids(legacy_engine, "SELECT id FROM persistence_diagram WHERE diagram_data IS NULL") == []


def test_generation_is_deterministic(integrity_database_url: str | URL) -> None:
    url = as_text(integrity_database_url)
    cfg = alembic_config(url)
    engine = sa.create_engine(url)
    try:
        manifests = []
        for _ in range(2):
            command.upgrade(cfg, "0001")
            manifests.append(generated(engine, rows=1500, dirty=True, seed=7))
            command.downgrade(cfg, "base")
        assert manifests[0] == manifests[1]
    finally:
        engine.dispose()


def test_hand_patched_constraint_has_the_older_predicate(legacy_engine: sa.Engine) -> None:
    generated(legacy_engine, rows=500, dirty=True)
    with legacy_engine.begin() as conn:
        assert datagen.insert_hand_patched_constraint(conn) is True
        assert datagen.insert_hand_patched_constraint(conn) is False
    [(validated, definition)] = rows(
        legacy_engine,
        "SELECT convalidated, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conname = 'ck_routing_outcomes_inference_linked'",
    )
    assert not validated
    assert "cheapest_clearing_floor" in definition and "outcome_status" not in definition


# --- Database test: the whole chain, when the operations are available -----------------


def test_clean_data_upgrades_to_head_and_matches_the_models(legacy_engine: sa.Engine) -> None:
    """0002-0005 validate on clean data, replacing the hand-patched constraint (scenario 3)."""
    generated(legacy_engine, rows=1000, dirty=False)
    with legacy_engine.begin() as conn:
        datagen.insert_hand_patched_constraint(conn)
    cfg = alembic_config(legacy_engine.url)
    command.upgrade(cfg, "head")
    command.check(cfg)  # autogenerate finds no difference with the models
    assert rows(legacy_engine, "SELECT conname FROM pg_constraint c JOIN pg_namespace n"
                " ON n.oid = c.connamespace WHERE n.nspname IN ('public', 'gateway')"
                " AND NOT c.convalidated") == []
    live_checks = set(ids(
        legacy_engine,
        "SELECT conname FROM pg_constraint WHERE contype = 'c'"
        " AND connamespace IN ('public'::regnamespace, 'gateway'::regnamespace)",
    ))
    assert live_checks == {n for n, _ in constraint_names(metadata).items() if n.startswith("ck_")}
    [(definition,)] = rows(legacy_engine, "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                           " WHERE conname = 'ck_routing_outcomes_inference_linked'")
    assert "outcome_status IS NULL" in definition
