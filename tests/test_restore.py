"""restore on a real PostgreSQL: every table back to its checksum, conflicts reported and
left alone unless --force, clear errors for an unknown repair."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from alembic_integrity.errors import CatalogError, IntegrityError
from alembic_integrity.pg.identifiers import TableName
from alembic_integrity.repair import repair
from alembic_integrity.repair.restore import restore
from alembic_integrity.rules.kinds import CheckRule, ForeignKeyRule, NotNullRule
from alembic_integrity.rules.policies import Delete, Invalidate, Quarantine, Relink, SetValue
from conftest import sql
from test_repair import (
    CUSTOMER,
    INVOCATION,
    LOG,
    MATCH,
    ORDER,
    OUTCOMES,
    SHOP,
    cli,
    declared,
    qty_rule,
    rows,
    table_sum,
)

TABLES = {'"Shop"."Customer"': "id", '"Shop"."Order"': '"Region", "No"', '"Shop".line': "id",
          '"Shop".invocation': "id", "gw.inference": "id", "gw.outcome": "id"}


@pytest.fixture
def world(engine: Engine) -> Engine:
    sql(engine, SHOP + OUTCOMES)
    return engine


def checksums(engine: Engine) -> dict[str, str]:
    return {table: table_sum(engine, table, order) for table, order in TABLES.items()}


def every_policy() -> list:
    """One rule per policy kind, over identity, generated, composite and mixed-case columns."""
    fk = ForeignKeyRule("fk_invocation_input", INVOCATION, ("input_id",), INVOCATION, ("id",))
    return [
        NotNullRule(CUSTOMER, "Active", (SetValue(expression="DEFAULT"),)),
        CheckRule("ck_customer_gold", CUSTOMER, "tier IS NULL OR id < 18", (Delete(),)),
        qty_rule(Delete(where="t.\"Region\" = 'EU'", cascade=True), Quarantine()),
        NotNullRule(INVOCATION, "output", (Delete(),)),
        fk,
        CheckRule("ck_outcome_linked", TableName("outcome", "gw"), "inference_id IS NOT NULL",
                  (Relink(column="inference_id", match=MATCH),)),
        CheckRule("ck_order_status", ORDER, "status <> 'open' OR \"No\" < 9",
                  (Invalidate(values={"status": "void", "reason": "late"}),)),
    ]


def test_restore_brings_every_table_back_to_its_checksum(world: Engine) -> None:
    before = checksums(world)
    result = repair(world, declared(*every_policy()), apply=True, batch_size=3)
    kinds: dict[str, int] = {}
    for policy in (p for r in result.rules for p in r.policies):
        kinds[policy.kind] = kinds.get(policy.kind, 0) + policy.changed + policy.cascaded
    assert kinds == {"SetValue": 3, "Delete": 3 + 2 + 4, "Quarantine": 2, "Relink": 5,
                     "Invalidate": 4}
    assert checksums(world) != before
    assert rows(world, 'SELECT count(*) FROM "Shop"."Order_quarantine"') == [(2,)]

    undone = restore(world, result.repair_id, batch_size=2)
    assert (undone.conflicts, undone.exit_code, undone.status) == (0, 0, "restored")
    assert undone.restored == rows(world, f"SELECT sum(rows) FROM {LOG} WHERE action IN "
                                          "('update', 'delete', 'cascade', 'quarantine')")[0][0]
    assert checksums(world) == before
    assert rows(world, 'SELECT count(*) FROM "Shop"."Order_quarantine"') == [(0,)]
    assert rows(world, f"SELECT count(*) FROM {LOG} WHERE restored_at IS NULL AND action IN "
                       "('update', 'delete', 'cascade', 'quarantine')") == [(0,)]
    # New identity values do not collide with the restored ones.
    assert rows(world, 'INSERT INTO "Shop"."Customer" ("Name") VALUES (\'n\') RETURNING id '
                       '> 20') == [(True,)]
    again = restore(world, result.repair_id)
    assert (again.restored, again.groups, again.status) == (0, [], "restored")


def _invalidate_and_delete(world: Engine) -> int:
    rules = [qty_rule(Invalidate(values={"qty": 1, "reason": "fixed"},
                                 where="t.\"Region\" = 'EU'"), Delete())]
    return repair(world, declared(*rules), apply=True).repair_id


def test_a_conflict_is_reported_and_left_alone_until_force(world: Engine) -> None:
    before = checksums(world)
    repair_id = _invalidate_and_delete(world)
    sql(world, 'UPDATE "Shop"."Order" SET reason = \'by hand\' WHERE ("Region", "No") = '
               "('EU', 4)")
    sql(world, 'INSERT INTO "Shop"."Order" ("Region", "No", qty) VALUES (\'US\', 6, 60)')
    result = restore(world, repair_id)
    assert (result.conflicts, result.exit_code, result.status) == (2, 1, "done")
    by_action = {g.action: g for g in result.groups}
    assert (by_action["update"].conflicts, by_action["update"].samples) == (
        1, ['{"No": 4, "Region": "EU"}'])
    assert (by_action["delete"].restored, by_action["delete"].conflicts) == (1, 1)
    assert rows(world, 'SELECT reason FROM "Shop"."Order" WHERE ("Region", "No") = '
                       "('EU', 4)") == [("by hand",)]
    assert rows(world, 'SELECT qty FROM "Shop"."Order" WHERE ("Region", "No") = '
                       "('US', 6)") == [(60,)]
    assert rows(world, 'SELECT qty FROM "Shop"."Order" WHERE ("Region", "No") = '
                       "('EU', 6)") == [(-6,)]

    forced = restore(world, repair_id, force=True)
    assert (forced.restored, forced.conflicts, forced.status) == (2, 0, "restored")
    assert sum(g.overwritten for g in forced.groups) == 2
    assert checksums(world) == before


def test_an_updated_row_deleted_since_stays_a_conflict_even_with_force(world: Engine) -> None:
    """An update logs the key and the changed columns only: a row deleted since cannot be
    rebuilt from them, and restore says so instead of inventing the other columns."""
    repair_id = _invalidate_and_delete(world)
    # EU 2 was updated by the repair, then deleted by hand (its lines with it).
    sql(world, 'DELETE FROM "Shop".line; DELETE FROM "Shop"."Order" WHERE "No" = 2')
    first = restore(world, repair_id)
    assert first.conflicts == 1 and any("deleted since the repair" in n for n in first.notes)
    forced = restore(world, repair_id, force=True)
    assert (forced.restored, forced.conflicts, forced.status) == (0, 1, "done")
    assert rows(world, 'SELECT count(*) FROM "Shop"."Order" '
                       "WHERE (\"Region\", \"No\") = ('EU', 2)") == [(0,)]
    assert rows(world, 'SELECT "No", qty, reason FROM "Shop"."Order" WHERE "Region" = \'EU\' '
                       'AND "No" IN (4, 6) ORDER BY 1') == [(4, -4, None), (6, -6, None)]


def test_a_rule_added_since_the_repair_makes_restore_fail_in_one_line(world: Engine) -> None:
    result = repair(world, declared(NotNullRule(CUSTOMER, "Active",
                                                (SetValue(expression="DEFAULT"),))), apply=True)
    sql(world, 'ALTER TABLE "Shop"."Customer" ALTER COLUMN "Active" SET NOT NULL')
    with pytest.raises(IntegrityError, match="a constraint rejects the rows") as err:
        restore(world, result.repair_id)
    assert "\n" not in str(err.value)
    assert rows(world, f"SELECT count(*) FROM {LOG} WHERE restored_at IS NOT NULL") == [(0,)]


def test_unknown_repair_and_missing_log_are_clear_errors(world: Engine) -> None:
    with pytest.raises(CatalogError, match=r"no repair log alembic_integrity\.repair_log"):
        restore(world, 1)
    repair_id = _invalidate_and_delete(world)
    with pytest.raises(CatalogError, match=f"repair 99 not found .*ids: {repair_id}"):
        restore(world, 99)


def test_restore_command_exit_codes(world: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    url = world.url.render_as_string(hide_password=False)
    assert cli("restore", "7", "--url", url) == 2
    assert capsys.readouterr().err.strip().startswith("error: no repair log")
    repair_id = _invalidate_and_delete(world)
    assert cli("restore", "99", "--url", url) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "repair 99 not found" in err
    sql(world, 'UPDATE "Shop"."Order" SET reason = \'by hand\' WHERE ("Region", "No") = '
               "('EU', 4)")
    assert cli("restore", str(repair_id), "--url", url) == 1
    assert "CONFLICT" not in capsys.readouterr().err
    assert cli("restore", str(repair_id), "--url", url, "--force", "--format", "json") == 0
    assert '"status": "restored"' in capsys.readouterr().out
