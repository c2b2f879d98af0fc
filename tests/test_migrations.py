"""The reference migrations: idempotent revision by revision, reversible, lint-clean offline."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from alembic_integrity.demo import datagen

ROOT = Path(__file__).resolve().parents[1]
# squawk rules the offline SQL still triggers, each explained in the README.
ACCEPTED_SQUAWK_RULES = {"ban-drop-constraint", "prefer-robust-stmts", "prefer-text-field"}


def alembic_config(url: str, **x: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"), stdout=io.StringIO())
    cfg.attributes["configure_logger"] = False
    cfg.attributes["url"] = url
    cfg.cmd_opts = type("Opts", (), {"x": [f"{k}={v}" for k, v in x.items()]})()
    return cfg


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def schema_fingerprint(engine: Engine, with_oids: bool = False) -> list[tuple]:
    """Everything the rules touch: constraints with definitions and validity, and nullability.

    ``with_oids`` also proves that no constraint was dropped and re-created.
    """
    oid = "k.oid" if with_oids else "0"
    with engine.connect() as conn:
        constraints = conn.exec_driver_sql(
            "SELECT n.nspname, c.relname, k.conname, k.convalidated, pg_get_constraintdef(k.oid), "
            f"{oid} "
            "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'gateway') ORDER BY 1, 2, 3").all()
        columns = conn.exec_driver_sql(
            "SELECT table_schema, table_name, column_name, is_nullable "
            "FROM information_schema.columns WHERE table_schema IN ('public', 'gateway') "
            "ORDER BY 1, 2, 3").all()
    return [tuple(r) for r in constraints] + [tuple(r) for r in columns]


@pytest.fixture(params=["one-transaction", "transaction-per-migration"])
def cfg(request: pytest.FixtureRequest, integrity_database_url: str) -> Iterator[Config]:
    per_migration = request.param == "transaction-per-migration"
    yield alembic_config(integrity_database_url,
                         transaction_per_migration=str(per_migration).lower())


def test_each_revision_runs_twice_and_changes_nothing_the_second_time(
        cfg: Config, engine: Engine) -> None:
    previous = "base"
    for revision in revisions():
        command.upgrade(cfg, revision)
        once = schema_fingerprint(engine, with_oids=True)
        command.stamp(cfg, previous, purge=True)  # as if the revision had never been recorded
        command.upgrade(cfg, revision)
        again = schema_fingerprint(engine, with_oids=True)
        assert again == once, f"revision {revision} is not idempotent"
        previous = revision


def test_upgrade_downgrade_upgrade(cfg: Config, engine: Engine) -> None:
    command.upgrade(cfg, "head")
    at_head = schema_fingerprint(engine)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    assert schema_fingerprint(engine) == at_head


def test_head_on_clean_data_over_a_hand_patched_constraint(engine: Engine,
                                                          integrity_database_url: str) -> None:
    """Scenario 3: production already had the constraint, with the older predicate."""
    cfg = alembic_config(integrity_database_url)
    command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        datagen.generate(conn, rows=2000, dirty=False)
        datagen.insert_hand_patched_constraint(conn)
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        definition, valid = conn.exec_driver_sql(
            "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint "
            "WHERE conname = 'ck_routing_outcomes_inference_linked'").one()
    assert valid and "outcome_status IS NULL" in definition
    command.check(cfg)  # models and database agree


def offline_sql() -> str:
    cfg = Config(str(ROOT / "alembic.ini"), stdout=io.StringIO())
    cfg.attributes["configure_logger"] = False
    out = io.StringIO()
    cfg.output_buffer = out
    with redirect_stdout(out):
        command.upgrade(cfg, "head", sql=True)
    return out.getvalue()


def test_offline_sql_has_the_online_boundaries_and_timeouts() -> None:
    sql = offline_sql()
    block = ("BEGIN;\n\nSET LOCAL lock_timeout = '200ms';\n\nSET LOCAL statement_timeout = "
             "'5000ms';\n\nALTER TABLE gateway.routing_outcomes DROP CONSTRAINT IF EXISTS "
             "ck_routing_outcomes_inference_linked;\n\nALTER TABLE gateway.routing_outcomes ADD "
             "CONSTRAINT ck_routing_outcomes_inference_linked CHECK (outcome_status IS NULL OR "
             "decision_rule <> 'cheapest_clearing_floor' OR inference_id IS NOT NULL) NOT VALID;"
             "\n\nCOMMIT;\n\nBEGIN;\n\nSET LOCAL lock_timeout = '200ms';\n\nSET LOCAL "
             "statement_timeout = '0ms';\n\nALTER TABLE gateway.routing_outcomes VALIDATE "
             "CONSTRAINT ck_routing_outcomes_inference_linked;\n\nCOMMIT;")
    assert block in sql


def test_offline_sql_passes_squawk_but_for_the_documented_rules(tmp_path: Path) -> None:
    squawk = shutil.which("squawk") or str(Path(__import__("sys").executable).parent / "squawk")
    script = tmp_path / "upgrade.sql"
    script.write_text(offline_sql())
    result = subprocess.run([squawk, "--reporter", "json", str(script)],
                            capture_output=True, text=True, check=False)
    findings = json.loads(result.stdout or "[]")
    rules = {f.get("rule_name") or f.get("code") for f in findings}
    assert rules <= ACCEPTED_SQUAWK_RULES, f"new squawk findings: {rules - ACCEPTED_SQUAWK_RULES}"
