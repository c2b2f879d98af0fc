"""repair on a real PostgreSQL: each policy does exactly what it says, a dry run writes
nothing, refusals write nothing, a killed run resumes, a read-only role gets one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from alembic_integrity.cli import main
from alembic_integrity.errors import ConfigurationError, IntegrityError
from alembic_integrity.pg.identifiers import TableName
from alembic_integrity.repair import RepairResult, repair, repair_rule
from alembic_integrity.rules.kinds import CheckRule, ForeignKeyRule, NotNullRule, Rule
from alembic_integrity.rules.metadata import DeclaredRules
from alembic_integrity.rules.policies import (
    Delete,
    Invalidate,
    Manual,
    Policy,
    Quarantine,
    Relink,
    SetValue,
    Sql,
)
from conftest import sql

LOG = "alembic_integrity.repair_log"

# A mixed-case schema, an identity key, a generated column, a composite key, a
# catalog FK that is NOT VALID, a declared-only FK and a self-reference.
SHOP = """
CREATE SCHEMA "Shop";
CREATE TABLE "Shop"."Customer" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "Name" text, "Active" boolean DEFAULT true, tier text,
    name_len integer GENERATED ALWAYS AS (length("Name")) STORED);
INSERT INTO "Shop"."Customer" ("Name", "Active", tier)
    SELECT 'c' || g, CASE WHEN g IN (3, 6, 9) THEN NULL ELSE true END,
           CASE WHEN g > 15 THEN 'gold' END
    FROM generate_series(1, 20) g;
CREATE TABLE "Shop"."Order" (
    "Region" text, "No" integer, customer_id bigint, qty integer, status text,
    invalidated boolean NOT NULL DEFAULT false, reason text,
    placed_at timestamptz DEFAULT '2024-01-01 10:00+00', tags text[], data jsonb,
    PRIMARY KEY ("Region", "No"));
INSERT INTO "Shop"."Order" ("Region", "No", customer_id, qty, status, tags, data)
    SELECT r, g, g, CASE WHEN g IN (2, 4, 6) THEN -g ELSE g END, 'open',
           ARRAY['t' || g], jsonb_build_object('n', g, 'f', g / 3.0)
    FROM unnest(ARRAY['EU', 'US']) r, generate_series(1, 10) g;
ALTER TABLE "Shop"."Order" ADD CONSTRAINT order_customer
    FOREIGN KEY (customer_id) REFERENCES "Shop"."Customer" NOT VALID;
CREATE TABLE "Shop".line (id integer PRIMARY KEY, "Region" text, "No" integer,
    FOREIGN KEY ("Region", "No") REFERENCES "Shop"."Order");
INSERT INTO "Shop".line VALUES (1, 'EU', 2), (2, 'EU', 2), (3, 'US', 4);
CREATE TABLE "Shop".invocation (id bigint PRIMARY KEY, run integer, input_id bigint,
    output text);
INSERT INTO "Shop".invocation VALUES
    (1, 1, NULL, 'a'), (2, 1, 1, NULL), (3, 1, 1, 'b'), (4, 1, 3, NULL), (5, 1, 4, 'c'),
    (6, 2, NULL, NULL), (7, 2, 6, NULL), (8, 2, 7, 'd');
"""

CUSTOMER = TableName("Customer", "Shop")
ORDER = TableName("Order", "Shop")
LINE = TableName("line", "Shop")
INVOCATION = TableName("invocation", "Shop")
QTY = "qty > 0"


@pytest.fixture
def shop(engine: Engine) -> Engine:
    sql(engine, SHOP)
    return engine


def declared(*rules: Rule) -> DeclaredRules:
    return DeclaredRules(rules=list(rules))


def qty_rule(*policies: Policy) -> CheckRule:
    return CheckRule("ck_order_qty", ORDER, QTY, policies)


def rows(engine: Engine, statement: str) -> list[tuple]:
    return sql(engine, statement)


def table_sum(engine: Engine, table: str, order: str = "1") -> str:
    """Checksum of a table's full contents."""
    return rows(engine, f"SELECT md5(string_agg(t::text, ',' ORDER BY {order})) "
                        f"FROM {table} t")[0][0]


def log_rows(engine: Engine, repair_id: int) -> list[dict[str, Any]]:
    found = rows(engine, f"SELECT to_jsonb(l) FROM {LOG} l WHERE repair_id = {repair_id} "
                         "ORDER BY log_id")
    return [r[0] for r in found]


def images(engine: Engine, repair_id: int, action: str | None = None) -> list[dict[str, Any]]:
    """The repair's image rows from every image table, as dicts (``_table`` names the table)."""
    found = []
    for image, table in rows(engine, f"SELECT DISTINCT image_table, table_name FROM {LOG} "
                                     f"WHERE repair_id = {repair_id} AND image_table IS NOT NULL"):
        for (row,) in rows(engine, f'SELECT to_jsonb(i) FROM alembic_integrity."{image}" i '
                                   f"WHERE _ai_repair_id = {repair_id}"):
            found.append({**row, "_table": table})
    return [r for r in found if action is None or r["_ai_action"] == action]


def schema_exists(engine: Engine, name: str = "alembic_integrity") -> bool:
    return bool(rows(engine, f"SELECT 1 FROM pg_namespace WHERE nspname = '{name}'"))


def only(result: RepairResult, index: int = 0) -> Any:
    assert len(result.rules) == 1, result.rules
    return result.rules[0].policies[index]


# --------------------------------------------------------------------------- dry run


def test_dry_run_counts_and_writes_nothing(shop: Engine) -> None:
    before = table_sum(shop, '"Shop"."Order"')
    rule = qty_rule(Delete(where='t."Region" = \'EU\''), Manual("US orders are audited"))
    result = repair(shop, declared(rule))
    delete, manual = result.rules[0].policies
    assert result.rules[0].violating == 6
    # EU 2 is referenced twice by line (catalog FK): refused; EU 4 and 6 would go.
    assert (delete.changed, delete.refused) == (2, 1)
    assert delete.samples == {"referenced by Shop.line.Region/No (line_Region_No_fkey)":
                              ['{"No": 2, "Region": "EU"}']}
    assert (manual.left, manual.reasons) == (3, {"US orders are audited": 3})
    assert result.exit_code == 1 and not result.applied and result.repair_id is None
    assert table_sum(shop, '"Shop"."Order"') == before
    assert not schema_exists(shop)


def test_nothing_to_repair_writes_nothing(shop: Engine) -> None:
    rule = CheckRule("ck_no", ORDER, '"No" > 0', (Delete(),))
    result = repair(shop, declared(rule), apply=True)
    assert result.repair_id is None and result.exit_code == 0
    assert result.rules[0].violating == 0
    assert not schema_exists(shop)


# --------------------------------------------------------------------------- Delete


def test_delete_logs_before_images_and_refuses_catalog_references(shop: Engine) -> None:
    result = repair(shop, declared(qty_rule(Delete())), apply=True, batch_size=2)
    policy = only(result)
    assert (policy.changed, policy.refused) == (4, 2)  # EU 2 and US 4 have lines
    left = rows(shop, 'SELECT "Region", "No" FROM "Shop"."Order" WHERE qty <= 0 ORDER BY 1, 2')
    assert left == [("EU", 2), ("US", 4)]
    deleted = images(shop, result.repair_id, "delete")
    assert sorted((r["Region"], r["No"]) for r in deleted) == [
        ("EU", 4), ("EU", 6), ("US", 2), ("US", 6)]
    eu4 = next(r for r in deleted if (r["Region"], r["No"]) == ("EU", 4))
    assert eu4["qty"] == -4 and eu4["tags"] == ["t4"] and eu4["data"] == {"f": 1.3333333333333333,
                                                                          "n": 4}
    steps = [r for r in log_rows(shop, result.repair_id) if r["action"] == "delete"]
    assert sum(r["rows"] for r in steps) == 4 and all(r["rows"] <= 2 for r in steps)
    assert {(r["schema_name"], r["table_name"], r["rule"], r["policy"]) for r in steps} == {
        ("Shop", "Order", "ck_order_qty on Shop.Order", "Delete")}
    refused = [r for r in log_rows(shop, result.repair_id) if r["action"] == "refused"]
    assert sorted(r["pk"]["No"] for r in refused) == [2, 4]
    assert result.exit_code == 1


def test_delete_refuses_rows_a_declared_foreign_key_references(shop: Engine) -> None:
    """Scenario 1: a failed invocation another one uses as input must not be deleted,
    though the foreign key exists only in the models."""
    failed = NotNullRule(INVOCATION, "output", (Delete(),))
    fk = ForeignKeyRule("fk_invocation_input", INVOCATION, ("input_id",), INVOCATION, ("id",))
    plan = repair(shop, declared(failed, fk), rules=["Shop.invocation.output NOT NULL"])
    policy = only(plan)
    # 2: nobody uses it -> deleted. 4: used by 5 -> refused. 6: used by 7, and 7 (failed
    # too, used by 8) is refused: 6 stays refused even though nothing else goes.
    assert (policy.changed, policy.refused) == (1, 3)
    result = repair(shop, declared(failed, fk), apply=True, batch_size=1,
                    rules=["Shop.invocation.output NOT NULL"])
    assert (only(result).changed, only(result).refused) == (1, 3)
    assert [r[0] for r in rows(shop, 'SELECT id FROM "Shop".invocation ORDER BY id')] == [
        1, 3, 4, 5, 6, 7, 8]
    reasons = only(result).reasons
    assert reasons == {"referenced by Shop.invocation.input_id (fk_invocation_input)": 3}


def test_delete_refusal_does_not_depend_on_the_order_of_batches(shop: Engine) -> None:
    """6 is referenced only by 7, which this same policy deletes: 6 is still refused,
    as the dry run said, whichever batch comes first."""
    sql(shop, 'UPDATE "Shop".invocation SET input_id = NULL WHERE id = 8')
    fk = ForeignKeyRule("fk_invocation_input", INVOCATION, ("input_id",), INVOCATION, ("id",))
    rule = declared(NotNullRule(INVOCATION, "output", (Delete(),)), fk)
    only_output = ["Shop.invocation.output NOT NULL"]
    assert only(repair(shop, rule, rules=only_output)).refused == 2
    result = repair(shop, rule, apply=True, batch_size=1, rules=only_output)
    assert sorted(r["id"] for r in images(shop, result.repair_id, "delete")) == [2, 7]
    assert only(result).refused == 2


def test_delete_cascade_deletes_referencing_rows_with_before_images(shop: Engine) -> None:
    result = repair(shop, declared(qty_rule(Delete(cascade=True))), apply=True)
    policy = only(result)
    assert (policy.changed, policy.cascaded, policy.refused) == (6, 3, 0)
    assert rows(shop, 'SELECT count(*) FROM "Shop".line') == [(0,)]
    cascaded = images(shop, result.repair_id, "cascade")
    assert sorted(r["id"] for r in cascaded) == [1, 2, 3]
    assert {r["_table"] for r in cascaded} == {"line"}


def test_delete_cascade_refuses_when_referencing_rows_are_referenced(shop: Engine) -> None:
    sql(shop, 'CREATE TABLE "Shop".line_note (id int PRIMARY KEY, line_id int '
              'REFERENCES "Shop".line)')
    sql(shop, 'INSERT INTO "Shop".line_note VALUES (1, 3)')
    plan = only(repair(shop, declared(qty_rule(Delete(cascade=True)))))
    assert (plan.changed, plan.cascaded, plan.refused) == (5, 2, 1)
    assert list(plan.samples.values()) == [['{"No": 4, "Region": "US"}']]


# --------------------------------------------------------------------------- updates


def test_invalidate_sets_values_and_logs_before_and_after(shop: Engine) -> None:
    rule = qty_rule(Invalidate(values={"invalidated": True, "reason": "negative qty",
                                       "qty": Sql("abs(qty)")}))
    result = repair(shop, declared(rule), apply=True, batch_size=4)
    assert (only(result).changed, result.exit_code) == (6, 0)
    assert rows(shop, 'SELECT count(*) FROM "Shop"."Order" WHERE invalidated AND '
                      "reason = 'negative qty' AND qty > 0") == [(6,)]
    assert {r["action"] for r in log_rows(shop, result.repair_id)} == {"update"}
    updates = images(shop, result.repair_id)
    assert len(updates) == 6 and {r["_ai_action"] for r in updates} == {"update"}
    eu2 = next(r for r in updates if (r["Region"], r["No"]) == ("EU", 2))
    # The key, the old values of the changed columns, and their new values; nothing else.
    assert (eu2["qty"], eu2["invalidated"], eu2["reason"]) == (-2, False, None)
    assert (eu2["_ai_new_qty"], eu2["_ai_new_reason"]) == (2, "negative qty")
    assert eu2["status"] is None and eu2["tags"] is None
    # Every row had a policy and every change fixed its row: no verification scan.
    assert result.rules[0].remaining is None
    assert rows(shop, 'SELECT count(*) FROM "Shop"."Order" WHERE qty <= 0') == [(0,)]


def test_log_pk_index_is_built_only_once_rows_are_looked_up(shop: Engine) -> None:
    index = ("SELECT count(*) FROM pg_indexes WHERE schemaname = 'alembic_integrity' "
             "AND indexname = 'repair_log_pk_hash'")
    rule = qty_rule(Invalidate(values={"qty": Sql("abs(qty)")}))
    result = repair(shop, declared(rule), apply=True, batch_size=4)
    # Summarised from the batches' counts: the same figures the log holds.
    assert only(result).changed == sum(r["rows"] for r in log_rows(shop, result.repair_id)) == 6
    assert rows(shop, index) == [(0,)]
    sql(shop, 'UPDATE "Shop"."Order" SET qty = -qty WHERE "No" IN (2, 4)')
    refused = repair(shop, declared(qty_rule(Delete())), apply=True, batch_size=2)
    assert (only(refused).changed, only(refused).refused) == (2, 2)
    assert rows(shop, index) == [(1,)]


def test_set_value_default_on_a_mixed_case_not_null_column(shop: Engine) -> None:
    rule = NotNullRule(CUSTOMER, "Active", (SetValue(expression="DEFAULT"),))
    plan = repair(shop, declared(rule))
    assert plan.rules[0].rule == 'Shop.Customer.Active NOT NULL'
    assert only(plan).changed == 3
    result = repair(shop, declared(rule), apply=True)
    assert only(result).changed == 3 and result.exit_code == 0
    assert rows(shop, 'SELECT count(*) FROM "Shop"."Customer" WHERE "Active"') == [(20,)]


def test_set_value_literal_and_where_partition(shop: Engine) -> None:
    rule = NotNullRule(CUSTOMER, "tier", (SetValue(value="basic", where="t.id < 10"),
                                          Manual("big customers: ask sales")))
    result = repair(shop, declared(rule), apply=True)
    first, manual = result.rules[0].policies
    assert (first.changed, manual.left) == (9, 6)
    assert manual.reasons == {"big customers: ask sales": 6}
    assert result.exit_code == 1
    assert rows(shop, 'SELECT count(*) FROM "Shop"."Customer" WHERE tier = \'basic\'') == [(9,)]


def test_policy_that_does_not_fix_the_rule_is_reported_and_does_not_loop(shop: Engine) -> None:
    rule = qty_rule(Invalidate(values={"invalidated": True}))
    result = repair(shop, declared(rule), apply=True, batch_size=2)
    outcome = result.rules[0]
    assert (only(result).changed, outcome.still_violating) == (6, 6)
    assert result.exit_code == 1


# --------------------------------------------------------------------------- Relink

OUTCOMES = """
CREATE SCHEMA gw;
CREATE TABLE gw.inference (id bigint PRIMARY KEY, agent text, cost numeric, at timestamptz);
CREATE TABLE gw.outcome (id bigint PRIMARY KEY, agent text, cost numeric, at timestamptz,
    inference_id bigint REFERENCES gw.inference);
INSERT INTO gw.inference SELECT g, 'a' || g, g, '2024-01-01 00:00+00'::timestamptz
    + g * interval '1h' FROM generate_series(1, 10) g;
INSERT INTO gw.outcome SELECT g, 'a' || g, g, '2024-01-01 00:00+00'::timestamptz + g * interval '1h'
    + interval '1s', CASE WHEN g > 5 THEN g END FROM generate_series(1, 10) g;
"""
MATCH = ("SELECT i.id FROM gw.inference i WHERE i.agent = t.agent AND i.cost = t.cost "
         "AND i.at BETWEEN t.at - interval '3 seconds' AND t.at + interval '3 seconds'")
LINKED = CheckRule("ck_outcome_linked", TableName("outcome", "gw"), "inference_id IS NOT NULL")


def relink(where: str | None = None) -> DeclaredRules:
    policies: tuple[Policy, ...] = (Relink(column="inference_id", match=MATCH, where=where),)
    return declared(CheckRule(LINKED.name, LINKED.table, LINKED.condition, policies))


@pytest.fixture
def gateway(engine: Engine) -> Engine:
    sql(engine, OUTCOMES)
    return engine


def outcome_links(engine: Engine) -> list[tuple]:
    return rows(engine, "SELECT id, inference_id FROM gw.outcome ORDER BY id")


def test_relink_a_bijection(gateway: Engine) -> None:
    sql(gateway, "UPDATE gw.outcome SET agent = 'nobody' WHERE id = 5")
    result = repair(gateway, relink(), apply=True, batch_size=2)
    policy = only(result)
    assert (policy.changed, policy.left, policy.ambiguous) == (4, 1, 0)
    assert policy.reasons == {"no candidate": 1}
    assert outcome_links(gateway)[:5] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, None)]


def test_relink_refuses_a_row_with_two_candidates_and_writes_nothing(gateway: Engine) -> None:
    sql(gateway, "INSERT INTO gw.inference VALUES (11, 'a2', 2, '2024-01-01 02:00:02+00')")
    before = outcome_links(gateway)
    plan = only(repair(gateway, relink()))
    assert (plan.changed, plan.ambiguous, plan.left) == (0, 1, 4)
    assert plan.samples["more than one candidate"] == ["2 (candidates {2,11})"]
    result = repair(gateway, relink(), apply=True)
    assert (only(result).changed, only(result).ambiguous, only(result).left) == (0, 1, 4)
    assert outcome_links(gateway) == before
    assert {r["action"] for r in log_rows(gateway, result.repair_id)} == {"ambiguous", "left"}


def test_relink_refuses_a_candidate_claimed_twice_and_writes_nothing(gateway: Engine) -> None:
    sql(gateway, "UPDATE gw.outcome SET agent = 'a1', cost = 1, at = '2024-01-01 01:00:02+00' "
                 "WHERE id = 2")
    before = outcome_links(gateway)
    result = repair(gateway, relink(), apply=True)
    policy = only(result)
    assert (policy.changed, policy.ambiguous) == (0, 2)
    assert policy.reasons["candidate claimed by another row too"] == 2
    assert outcome_links(gateway) == before


def test_relink_refuses_a_candidate_already_referenced(gateway: Engine) -> None:
    sql(gateway, "UPDATE gw.outcome SET inference_id = 3 WHERE id = 9")
    before = outcome_links(gateway)
    policy = only(repair(gateway, relink(), apply=True))
    assert (policy.changed, policy.ambiguous) == (0, 1)
    assert "candidate already referenced by another row" in policy.reasons
    assert outcome_links(gateway) == before


# --------------------------------------------------------------------------- Quarantine


def test_quarantine_moves_rows_to_an_archive_of_the_same_shape(shop: Engine) -> None:
    long = "order_with_a_name_long_enough_that_the_archive_name_is_truncated"[:63]
    sql(shop, f'CREATE TABLE "Shop".{long} (LIKE "Shop"."Order" INCLUDING ALL)')
    sql(shop, f'INSERT INTO "Shop".{long} SELECT * FROM "Shop"."Order"')
    rule = CheckRule("ck_long_qty", TableName(long, "Shop"), QTY, (Quarantine(),))
    result = repair(shop, declared(rule), apply=True)
    assert only(result).changed == 6
    archive = rows(shop, "SELECT relname FROM pg_class WHERE relname LIKE '%quarantine'")
    assert len(archive) == 1 and len(archive[0][0].encode()) <= 63
    moved = rows(shop, f'SELECT "Region", "No", qty FROM "Shop"."{archive[0][0]}" ORDER BY 1, 2')
    assert moved == [("EU", 2, -2), ("EU", 4, -4), ("EU", 6, -6),
                     ("US", 2, -2), ("US", 4, -4), ("US", 6, -6)]
    assert rows(shop, f'SELECT count(*) FROM "Shop".{long} WHERE qty <= 0') == [(0,)]
    logged = log_rows(shop, result.repair_id)
    assert {(r["action"], r["archive_table"]) for r in logged} == {("quarantine", archive[0][0])}


def test_quarantine_refuses_referenced_rows(shop: Engine) -> None:
    rule = qty_rule(Quarantine(archive="bad_orders", archive_schema="public"))
    policy = only(repair(shop, declared(rule), apply=True))
    assert (policy.changed, policy.refused) == (4, 2)
    assert rows(shop, "SELECT count(*) FROM public.bad_orders") == [(4,)]


# --------------------------------------------------------------------------- selection, hook


def test_rule_filter_and_unknown_rule(shop: Engine) -> None:
    both = declared(qty_rule(Delete()), NotNullRule(CUSTOMER, "Active", (SetValue(value=True),)))
    result = repair(shop, both, rules=["ck_order_qty"])
    assert [r.rule for r in result.rules] == ["ck_order_qty on Shop.Order"]
    with pytest.raises(ConfigurationError, match="no such rule"):
        repair(shop, both, rules=["nope"])


def test_no_policy_and_missing_table(shop: Engine) -> None:
    result = repair(shop, declared(qty_rule(), CheckRule("ck_x", TableName("gone"), "true")))
    by_name = {r.rule: r for r in result.rules}
    assert by_name["ck_order_qty on Shop.Order"].unmatched == 6
    assert by_name["ck_x"].skipped == "table gone does not exist"
    assert result.exit_code == 2  # as the audit: a rule that could not be repaired at all


def test_a_table_without_primary_key_is_refused_not_written(shop: Engine) -> None:
    sql(shop, 'CREATE TABLE "Shop".loose AS SELECT * FROM "Shop"."Order"')
    rule = CheckRule("ck_loose_qty", TableName("loose", "Shop"), QTY, (Delete(),))
    before = table_sum(shop, '"Shop".loose', '"Region", "No"')
    result = repair(shop, declared(rule), apply=True)
    policy = only(result)
    assert (policy.changed, policy.refused) == (0, 6)
    assert list(policy.reasons) == [
        "table has no primary key (repair logs and restores rows by key)"]
    assert table_sum(shop, '"Shop".loose', '"Region", "No"') == before


def test_bad_policy_sql_is_one_line(shop: Engine) -> None:
    with pytest.raises(IntegrityError, match="rejects the rule's SQL") as err:
        repair(shop, declared(qty_rule(Delete(where="no_such_column = 1"))))
    assert "\n" not in str(err.value)


def test_repair_rule_on_an_autocommit_connection(shop: Engine) -> None:
    rule = qty_rule(Invalidate(values={"qty": 1}, where="t.\"Region\" = 'US'"), Delete())
    with shop.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        result = repair_rule(conn, rule)
    assert [p.changed for p in result.rules[0].policies] == [3, 2]
    assert result.repair_id == 1
    with shop.connect() as conn, conn.begin(), pytest.raises(ConfigurationError,
                                                             match="AUTOCOMMIT"):
        repair_rule(conn, rule)


# --------------------------------------------------------------------------- the command

MODELS = '''
from sqlalchemy import BigInteger, Boolean, CheckConstraint, Column, MetaData, Table, Text
from alembic_integrity.rules.policies import Delete, Invalidate, Manual, on_violation

metadata = MetaData()
Table("Order", metadata, Column("Region", Text, primary_key=True),
      Column("No", BigInteger, primary_key=True), Column("qty", BigInteger),
      Column("invalidated", Boolean, nullable=False), Column("reason", Text),
      CheckConstraint("qty > 0", name="ck_order_qty", info=on_violation(
          Delete(where="t.\\"Region\\" = 'EU'"), Manual("US orders: ask finance"))),
      schema="Shop")
Table("job", metadata, Column("id", BigInteger, primary_key=True), Column("val", BigInteger),
      CheckConstraint("val >= 0", name="ck_job_val", info=on_violation(
          Delete(where="id %% 2 = 0 AND slow()"),
          Invalidate(values={"val": 0}, where="slow()"))))
'''


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "repair_models.py").write_text(MODELS.replace("%%", "%"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    return "repair_models:metadata"


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return int(done.value.code or 0)


def test_cli_dry_run_apply_report_and_json(shop: Engine, models: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    url = shop.url.render_as_string(hide_password=False)
    base = ["repair", "--url", url, "--metadata", models, "--rule", "ck_order_qty"]
    assert cli(*base) == 1
    out = capsys.readouterr().out
    assert "dry run" in out and "ask finance" in out
    assert not schema_exists(shop)
    report = tmp_path / "report.md"
    assert cli(*base, "--apply", "--report", str(report), "--format", "json") == 1
    data = json.loads(capsys.readouterr().out)
    assert data["applied"] and data["repair_id"] == 1
    assert data["restore"] == "alembic-integrity restore 1"
    text = report.read_text()
    assert "## Rows repaired per rule and policy" in text
    assert "| ck_order_qty on Shop.Order | Shop.Order | Delete where" in text
    assert "| Manual #2: US orders: ask finance | 3 |" in text
    assert "referenced by Shop.line" in text
    assert cli(*base, "--apply") == 1
    assert "alembic-integrity restore 2" in capsys.readouterr().out


def test_cli_exit_zero_when_nothing_left(shop: Engine, models: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    sql(shop, 'DELETE FROM "Shop".line; UPDATE "Shop"."Order" SET "Region" = \'EU\', '
              '"No" = "No" + 100 WHERE "Region" = \'US\'')
    url = shop.url.render_as_string(hide_password=False)
    assert cli("repair", "--url", url, "--metadata", models, "--rule", "ck_order_qty",
               "--apply") == 0
    assert "6 row(s) changed, 0 left" in capsys.readouterr().out


@pytest.fixture
def read_only_role(shop: Engine) -> Iterator[str]:
    role = f"ro_{os.getpid()}_{int(time.time() * 1000) % 100000}"
    database = shop.url.database
    sql(shop, f'CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE "{database}" TO {role}; '
              f'GRANT USAGE ON SCHEMA "Shop" TO {role}; '
              f'GRANT SELECT ON ALL TABLES IN SCHEMA "Shop" TO {role}')
    yield shop.url.set(username=role).render_as_string(hide_password=False)
    sql(shop, f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_read_only_role_gets_one_line_and_nothing_is_written(
        shop: Engine, read_only_role: str, models: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    before = table_sum(shop, '"Shop"."Order"')
    assert cli("repair", "--url", read_only_role, "--metadata", models, "--rule",
               "ck_order_qty", "--apply") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "permission denied" in err
    assert "DELETE on Shop.Order" in err and "CREATE on this database" in err
    assert table_sum(shop, '"Shop"."Order"') == before and not schema_exists(shop)
    # A dry run needs only SELECT.
    assert cli("repair", "--url", read_only_role, "--metadata", models, "--rule",
               "ck_order_qty") == 1


def test_read_only_session_gets_one_line(shop: Engine, models: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = shop.url.update_query_dict({"options": "-c default_transaction_read_only=on"})
    assert cli("repair", "--url", url.render_as_string(hide_password=False), "--metadata",
               models, "--rule", "ck_order_qty", "--apply") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "read-only" in err
    assert not schema_exists(shop)


# --------------------------------------------------------------------------- crash and resume

JOBS = """
CREATE FUNCTION slow() RETURNS boolean LANGUAGE plpgsql AS
    $$ BEGIN PERFORM pg_sleep(0.002); RETURN true; END $$;
CREATE TABLE job (id bigint PRIMARY KEY, val bigint, note text);
INSERT INTO job SELECT g, CASE WHEN g % 5 < 3 THEN -g ELSE g END, 'n' || g
    FROM generate_series(1, 5000) g;
"""


def snapshot(engine: Engine) -> dict[int, dict[str, Any]]:
    return {r[0]: r[1] for r in rows(engine, "SELECT id, to_jsonb(j) FROM job j")}


def wait_for_log(engine: Engine, at_least: int, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            count = rows(engine, f"SELECT coalesce(sum(rows), 0) FROM {LOG}")[0][0]
        except Exception:  # the log does not exist yet
            count = 0
        if count >= at_least:
            return count
        time.sleep(0.05)
    raise AssertionError(f"the repair never logged {at_least} rows (exit {proc.poll()})")


def test_kill_mid_run_loses_nothing_and_a_rerun_resumes(engine: Engine, models: str) -> None:
    sql(engine, JOBS)
    original = snapshot(engine)
    original_sum = table_sum(engine, "job", "id")
    violating = {i for i, row in original.items() if row["val"] < 0}
    assert len(violating) == 3000
    url = engine.url.render_as_string(hide_password=False)
    command = [sys.executable, "-c", "from alembic_integrity.cli import main; main()",
               "repair", "--url", url, "--metadata", models, "--rule", "ck_job_val",
               "--apply", "--batch-size", "50"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=os.environ.copy())
    try:
        wait_for_log(engine, 300, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    logged = rows(engine, f"SELECT coalesce(sum(rows), 0) FROM {LOG}")[0][0]
    assert 0 < logged < 3000, "the kill must land mid-run"
    assert rows(engine, f"SELECT status FROM {LOG}_runs") == [("running",)]
    _check_consistent(engine, original, complete=False)

    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert "repair 1 (resumed)" in done.stdout
    assert rows(engine, f"SELECT repair_id, status FROM {LOG}_runs") == [(1, "done")]
    _check_consistent(engine, original, complete=True)
    assert rows(engine, "SELECT count(*) FROM job WHERE val < 0") == [(0,)]
    resumed = table_sum(engine, "job", "id")

    # Restore gives back the original table; an uninterrupted run then ends the same.
    back = subprocess.run([*command[:3], "restore", "1", "--url", url], capture_output=True,
                          text=True, timeout=300, env=os.environ.copy())
    assert back.returncode == 0, back.stderr
    assert table_sum(engine, "job", "id") == original_sum
    again = subprocess.run(command, capture_output=True, text=True, timeout=300,
                           env=os.environ.copy())
    assert again.returncode == 0 and "repair 2:" in again.stdout, again.stderr
    assert table_sum(engine, "job", "id") == resumed


def _check_consistent(engine: Engine, original: dict[int, dict[str, Any]],
                      complete: bool) -> None:
    """Every original row is unchanged, or repaired with its exact image logged."""
    now = snapshot(engine)
    changes: dict[int, list[dict[str, Any]]] = {}
    for entry in images(engine, 1):
        changes.setdefault(entry["id"], []).append(entry)
    for key, before in original.items():
        logged = changes.get(key, [])
        assert len(logged) <= 1, f"row {key} logged twice: {logged}"
        if not logged:
            assert now.get(key) == before, f"row {key} changed without an image"
            assert not (complete and before["val"] < 0), f"row {key} never repaired"
            continue
        entry = logged[0]
        if entry["_ai_action"] == "delete":
            assert {k: entry[k] for k in before} == before
            assert key not in now and key % 2 == 0
        else:
            assert entry["_ai_action"] == "update" and entry["val"] == before["val"]
            assert now[key] == {**before, "val": 0} == {**before, "val": entry["_ai_new_val"]}
            assert key % 2 == 1
    assert set(now) <= set(original)


# --------------------------------------------------------------------------- reference scenarios

RETRIED = ("EXISTS (SELECT 1 FROM invocation r WHERE r.run_id = t.run_id AND r.id <> t.id "
           "AND r.sequence_number = t.sequence_number AND r.output_image IS NOT NULL "
           "AND r.input_invocation_id IS NOT DISTINCT FROM t.input_invocation_id)")
ORPHAN_MATCH = ("SELECT i.id FROM gateway.inferences i WHERE i.agent_id = t.agent_id "
                "AND i.model_id = t.model_id AND i.cost = t.cost "
                "AND i.created_at BETWEEN t.created_at - interval '3 seconds' "
                "AND t.created_at + interval '3 seconds'")


@pytest.fixture
def legacy(engine: Engine) -> tuple[Engine, Any]:
    """The reference schema at revision 0001 (no rules), with the incidents planted."""
    from alembic import command
    from alembic.config import Config

    from alembic_integrity.demo.datagen import generate
    from alembic_integrity.demo.project import MIGRATIONS

    root = Path(__file__).resolve().parents[1]
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["configure_logger"] = False
    config.attributes["url"] = engine.url.render_as_string(hide_password=False)
    command.upgrade(config, "0001")
    with engine.begin() as conn:
        manifest = generate(conn, rows=2000, dirty=True)
    return engine, manifest


def reference_rule(name: str, *policies: Policy) -> tuple[Rule, list[Rule]]:
    """A rule of the reference models with these policies, and the models' foreign keys."""
    from alembic_integrity.demo.models import metadata
    from alembic_integrity.rules.metadata import rules_from_metadata

    found = rules_from_metadata(metadata).rules
    rule = next(r for r in found if r.name == name)
    assert isinstance(rule, CheckRule)
    return (CheckRule(rule.name, rule.table, rule.condition, policies),
            [r for r in found if isinstance(r, ForeignKeyRule)])


def test_scenario_1_failed_invocations(legacy: tuple[Engine, Any]) -> None:
    engine, manifest = legacy
    rule, fks = reference_rule("ck_invocation_image_output", Delete(where=RETRIED),
                               Manual("not retried: a person decides"))
    assert not rows(engine, "SELECT 1 FROM pg_constraint WHERE contype = 'f' "
                            "AND conrelid = 'invocation'::regclass AND confrelid = conrelid")
    result = repair(engine, declared(rule, *fks), apply=True, rules=[rule.name])
    delete, manual = result.rules[0].policies
    assert (delete.changed, delete.refused, manual.left) == (15, 4, 5)
    gone = sorted(r["id"] for r in images(engine, result.repair_id, "delete"))
    assert gone == manifest.failed_deletable
    still = {r[0] for r in rows(engine, "SELECT id FROM invocation WHERE type = 'IMAGE' "
                                        "AND output_image IS NULL")}
    assert still == set(manifest.failed_referenced) | set(manifest.failed_not_retried)
    assert list(delete.reasons) == [
        "referenced by public.invocation.input_invocation_id "
        "(fk_invocation_input_invocation_id_invocation)"]


def test_scenario_3_orphaned_outcomes_relinked_one_to_one(legacy: tuple[Engine, Any]) -> None:
    engine, manifest = legacy
    rule, fks = reference_rule("ck_routing_outcomes_inference_linked",
                               Relink(column="inference_id", match=ORPHAN_MATCH))
    before = table_sum(engine, "gateway.routing_outcomes", "id")
    result = repair(engine, declared(rule, *fks), apply=True, rules=[rule.name])
    assert (only(result).changed, only(result).ambiguous, result.exit_code) == (27, 0, 0)
    linked = dict(rows(engine, "SELECT id, inference_id FROM gateway.routing_outcomes "
                               f"WHERE id IN ({', '.join(map(str, manifest.orphan_outcomes))})"))
    assert linked == manifest.orphan_matches
    no_candidate = rows(engine, "SELECT count(*) FROM gateway.routing_outcomes WHERE "
                                "inference_id IS NULL AND id IN "
                                f"({', '.join(map(str, manifest.no_candidate_outcomes))})")
    assert no_candidate == [(len(manifest.no_candidate_outcomes),)]
    from alembic_integrity.repair.restore import restore

    assert restore(engine, result.repair_id).restored == 27
    assert table_sum(engine, "gateway.routing_outcomes", "id") == before
