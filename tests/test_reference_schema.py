"""The reference schema: models, legacy revision and generator agree with the scenarios.

The offline tests read the revisions by running their ``upgrade()`` /
``downgrade()`` against a recording ``op``: the legacy tables plus what
0002-0005 ensure must be exactly the models. The database tests need only
revision 0001 and the generator, and check every planted row by SQL, so the
demo, the repair tests and the benchmarks can rely on the exact numbers of
REFERENCE_SCENARIOS.md.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
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

ROOT = Path(__file__).resolve().parents[1]
FAILED_SEQUENCE_NUMBERS = [
    80, 100, 210, 530, 532, 534, 536, 540, 542, 546, 548, 550, 552, 562, 564, 574, 582,
] + [584] * 7
TableKey = tuple[str | None, str]  # (schema, table)


# --- Alembic -------------------------------------------------------------------


def alembic_config(url: str | URL | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["configure_logger"] = False
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def revision_module(revision: str) -> ModuleType:
    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    assert script is not None, revision
    return script.module


# --- Recording op: what a revision asks for, without a database ---------------------


def _check_stub(name: str, table: str, condition: str, schema: str | None = None,
                *, repair: bool = False) -> None:
    """The documented parameters of op.ensure_check_constraint."""


def _fk_stub(name: str, source: str, referent: str, local: list[str], remote: list[str],
             ondelete: str | None = None, onupdate: str | None = None,
             schema: str | None = None, referent_schema: str | None = None) -> None:
    """The documented parameters of op.ensure_foreign_key."""


def _column_stub(table: str, column: str, schema: str | None = None) -> None:
    """The documented parameters of op.ensure_not_null / op.ensure_nullable."""


def _drop_stub(name: str, table: str, schema: str | None = None) -> None:
    """The documented parameters of op.ensure_constraint_dropped."""


SIGNATURES = {
    "ensure_check_constraint": inspect.signature(_check_stub),
    "ensure_foreign_key": inspect.signature(_fk_stub),
    "ensure_not_null": inspect.signature(_column_stub),
    "ensure_nullable": inspect.signature(_column_stub),
    "ensure_constraint_dropped": inspect.signature(_drop_stub),
}


@dataclass
class RecordingOp:
    """Stands in for ``alembic.op``; ``ensure_*`` calls are bound to their documented names."""

    calls: list[tuple[str, dict[str, Any], tuple[Any, ...]]] = field(default_factory=list)

    def f(self, name: str) -> str:
        return name

    def get_context(self) -> Any:
        return SimpleNamespace(config=None)

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kwargs: Any) -> None:
            if name in SIGNATURES:
                bound = SIGNATURES[name].bind(*args, **kwargs)
                bound.apply_defaults()
                self.calls.append((name, dict(bound.arguments), ()))
            else:
                self.calls.append((name, kwargs, args))

        return record

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kw for call, kw, _ in self.calls if call == name]

    def raw(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kw) for call, kw, args in self.calls if call == name]


def record(revision: str, direction: str, monkeypatch: pytest.MonkeyPatch) -> RecordingOp:
    module = revision_module(revision)
    recorder = RecordingOp()
    monkeypatch.setattr(module, "op", recorder)
    getattr(module, direction)()
    return recorder


def rule_calls(monkeypatch: pytest.MonkeyPatch, direction: str = "upgrade") -> RecordingOp:
    """The calls of 0002-0005 together."""
    merged = RecordingOp()
    for revision in ("0002", "0003", "0004", "0005"):
        merged.calls += record(revision, direction, monkeypatch).calls
    return merged


def legacy_metadata(monkeypatch: pytest.MonkeyPatch) -> tuple[sa.MetaData, set[str]]:
    """The tables and index names revision 0001 creates, rebuilt from its op calls."""
    recorder = record("0001", "upgrade", monkeypatch)
    legacy = sa.MetaData()
    for args, kw in recorder.raw("create_table"):
        sa.Table(args[0], legacy, *args[1:], schema=kw.get("schema"))
    indexes = {args[0] for args, _ in recorder.raw("create_index")}
    return legacy, indexes


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


def squash(sql: str) -> str:
    return " ".join(sql.split())


def model_constraint(name: str) -> sa.Constraint:
    for table in metadata.tables.values():
        for constraint in table.constraints:
            if constraint.name == name:
                return constraint
    raise AssertionError(f"no constraint {name} in the models")


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


def test_gateway_tables_live_in_their_schema() -> None:
    gateway = {t.name for t in metadata.tables.values() if t.schema == GATEWAY_SCHEMA}
    assert gateway == {"inferences", "routing_outcomes"}


def test_scenario_rules_have_their_names() -> None:
    names = constraint_names(metadata)
    expected = {
        "ck_invocation_image_output": (None, "invocation"),
        "ck_invocation_text_output": (None, "invocation"),
        "ck_persistence_diagram_data_present": (None, "persistence_diagram"),
        "fk_run_experiment_id_experiment": (None, "run"),
        "fk_invocation_input_invocation_id_invocation": (None, "invocation"),
        "ck_interactions_invalidation_reason": (None, "interactions"),
        "ck_interactions_status_known": (None, "interactions"),
        "fk_postings_staging_interaction_id_interactions": (None, "postings_staging"),
        "ck_routing_outcomes_inference_linked": (GATEWAY_SCHEMA, "routing_outcomes"),
        "ck_inferences_status_known": (GATEWAY_SCHEMA, "inferences"),
        "fk_routing_outcomes_inference_id_inferences": (GATEWAY_SCHEMA, "routing_outcomes"),
        "ck_failure_counts_count_nonnegative": (None, "failure_counts"),
        "fk_batch_record_keys_batch_id_active_batches": (None, "batch_record_keys"),
        "fk_inflight_records_batch_id_active_batches": (None, "inflight_records"),
    }
    assert {name: names.get(name) for name in expected} == expected


def test_revisions_form_a_line() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    chain = [s.revision for s in script.walk_revisions()]
    assert chain == ["0005", "0004", "0003", "0002", "0001"]
    assert script.get_heads() == ["0005"]


def test_legacy_plus_ensured_rules_are_exactly_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    legacy, legacy_indexes = legacy_metadata(monkeypatch)
    ops = rule_calls(monkeypatch)
    ensured = {
        kw["name"]: (kw["schema"], kw.get("table") or kw["source"])
        for kw in ops.of("ensure_check_constraint") + ops.of("ensure_foreign_key")
    }
    legacy_names = constraint_names(legacy)
    assert not set(ensured) & set(legacy_names), "a rule the legacy schema already had"
    assert {**legacy_names, **ensured} == constraint_names(metadata)
    assert legacy_indexes == index_names(metadata)


def test_ensured_definitions_match_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = rule_calls(monkeypatch)
    for kw in ops.of("ensure_check_constraint"):
        model = model_constraint(kw["name"])
        assert isinstance(model, sa.CheckConstraint)
        assert squash(kw["condition"]) == squash(str(model.sqltext)), kw["name"]
    for kw in ops.of("ensure_foreign_key"):
        model = model_constraint(kw["name"])
        assert isinstance(model, sa.ForeignKeyConstraint)
        assert list(kw["local"]) == [c.name for c in model.columns], kw["name"]
        assert [model.referred_table.schema, model.referred_table.name] == [
            kw["referent_schema"], kw["referent"]]
        assert list(kw["remote"]) == [e.column.name for e in model.elements]
        assert kw["ondelete"] == model.ondelete, kw["name"]


def test_ensured_not_nulls_are_what_legacy_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    legacy, _ = legacy_metadata(monkeypatch)
    ops = rule_calls(monkeypatch)
    ensured = {(kw["schema"], kw["table"], kw["column"]) for kw in ops.of("ensure_not_null")}
    assert not_null_columns(metadata) - not_null_columns(legacy) == ensured
    assert not_null_columns(legacy) <= not_null_columns(metadata)
    added = {(kw.get("schema"), args[0], args[1].name) for args, kw in ops.raw("add_column")}
    assert added == {(None, "persistence_diagram", "failure_reason")}
    assert all_columns(legacy) | added == all_columns(metadata)


def test_downgrades_undo_exactly_the_upgrades(monkeypatch: pytest.MonkeyPatch) -> None:
    up, down = rule_calls(monkeypatch), rule_calls(monkeypatch, "downgrade")
    added = {kw["name"] for kw in up.of("ensure_check_constraint") + up.of("ensure_foreign_key")}
    assert {kw["name"] for kw in down.of("ensure_constraint_dropped")} == added
    not_null = {(kw["schema"], kw["table"], kw["column"]) for kw in up.of("ensure_not_null")}
    assert {(kw["schema"], kw["table"], kw["column"]) for kw in down.of("ensure_nullable")} \
        == not_null
    assert [args[:2] for args, _ in down.raw("drop_column")] == [
        ("persistence_diagram", "failure_reason")]


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


def test_legacy_database_lacks_exactly_the_rules(
    legacy_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What 0001 really created: the models minus exactly what 0002-0005 ensure."""
    ops = rule_calls(monkeypatch)
    insp = sa.inspect(legacy_engine)
    live_nullable: set[tuple[str | None, str, str]] = set()
    live_names: dict[str, TableKey] = {}
    for table in metadata.tables.values():
        columns = insp.get_columns(table.name, table.schema)
        live_nullable |= {(table.schema, table.name, c["name"]) for c in columns if c["nullable"]}
        assert insp.get_check_constraints(table.name, table.schema) == []
        for fk in insp.get_foreign_keys(table.name, table.schema):
            live_names[fk["name"]] = key(table)
    added = {(None, "persistence_diagram", "failure_reason")}
    ensured = {(kw["schema"], kw["table"], kw["column"]) for kw in ops.of("ensure_not_null")}
    assert not_null_columns(metadata) & live_nullable == ensured
    assert all_columns(metadata) - added - live_nullable == not_null_columns(metadata) - ensured
    model_fks = {str(fk.name): key(t) for t in metadata.tables.values()
                 for fk in t.foreign_key_constraints}
    ensured_fks = {kw["name"] for kw in ops.of("ensure_foreign_key")}
    assert live_names == {n: k for n, k in model_fks.items() if n not in ensured_fks}
    flags = {c["name"]: c for c in insp.get_columns("interactions")}
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
