"""Repair touches exactly the violating rows, and restore gives back exactly what was there.

Each test reproduces a way the engine used to break that promise: rows picked by
``ctid`` alone on partitioned and inherited tables, batches that followed the
plan's order instead of the key's, values with ``%`` and ``:`` rewritten, a bad
``where`` found after earlier rules were applied, and a restore that went through
text and JSON (JSON null, duplicate keys, array bounds, session settings).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from alembic_integrity.errors import PredicateError
from alembic_integrity.pg.identifiers import TableName
from alembic_integrity.repair import repair
from alembic_integrity.repair.restore import restore
from alembic_integrity.rules.kinds import CheckRule, NotNullRule
from alembic_integrity.rules.policies import Delete, Invalidate, Manual, SetValue, Sql
from conftest import sql
from test_repair import LOG, cli, declared, images, rows, schema_exists, table_sum


def with_settings(engine: Engine, **settings: str) -> Engine:
    """Another engine on the same database whose sessions use these settings."""
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    url = engine.url.render_as_string(hide_password=False)
    return create_engine(url, connect_args={"options": options})


# --------------------------------------------------------------------------- row targeting

PARTITIONED = """
CREATE TABLE orders (region text, id integer, qty integer, PRIMARY KEY (region, id))
    PARTITION BY LIST (region);
CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('EU');
CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('US');
INSERT INTO orders SELECT 'EU', g, -g FROM generate_series(1, 10) g;
INSERT INTO orders SELECT 'US', g, g FROM generate_series(1, 10) g;
"""


def test_partitioned_table_only_violating_rows_are_deleted_and_restored(engine: Engine) -> None:
    """The ctids of orders_eu and orders_us are the same (0,1)..(0,10): by ctid alone
    the valid US rows went with the violating EU ones."""
    sql(engine, PARTITIONED)
    before = table_sum(engine, "orders", "region, id")
    rule = CheckRule("ck_orders_qty", TableName("orders"), "qty > 0", (Delete(),))
    result = repair(engine, declared(rule), apply=True, batch_size=3)
    assert (result.changed, result.exit_code) == (10, 0)
    assert rows(engine, "SELECT region, count(*) FROM orders GROUP BY 1") == [("US", 10)]
    assert sorted(r["id"] for r in images(engine, result.repair_id, "delete")) == list(
        range(1, 11))
    assert restore(engine, result.repair_id).restored == 10
    assert table_sum(engine, "orders", "region, id") == before


INHERITED = """
CREATE TABLE item (id integer PRIMARY KEY, qty integer);
CREATE TABLE item_special (extra text, PRIMARY KEY (id)) INHERITS (item);
CREATE TABLE item_loose () INHERITS (item);
INSERT INTO item SELECT g, CASE WHEN g % 2 = 0 THEN -g ELSE g END FROM generate_series(1, 10) g;
INSERT INTO item_special SELECT g, CASE WHEN g % 2 = 1 THEN -g ELSE g END, 'x' || g
    FROM generate_series(1, 10) g;
INSERT INTO item_loose VALUES (1, -1);
"""


def test_inheritance_children_are_repaired_each_with_its_own_key_and_columns(
        engine: Engine) -> None:
    """Parent and children share ids and ctids; each member is its own unit, a child's
    extra column is in its image, and a child without a key is refused, not written."""
    sql(engine, INHERITED)
    sums = {t: table_sum(engine, f"ONLY {t}", "id") for t in ("item", "item_special")}
    rule = CheckRule("ck_item_qty", TableName("item"), "qty > 0", (Delete(),))
    result = repair(engine, declared(rule), apply=True, batch_size=2)
    by_table = {r.table: r for r in result.rules}
    assert by_table["public.item"].changed == 5
    assert by_table["public.item_special"].changed == 5
    assert by_table["public.item_loose"].policies[0].refused == 1
    assert rows(engine, "SELECT count(*) FROM item WHERE qty <= 0") == [(1,)]
    assert rows(engine, "SELECT id FROM ONLY item ORDER BY id") == [(1,), (3,), (5,), (7,), (9,)]
    assert rows(engine, "SELECT id, extra FROM item_special ORDER BY id LIMIT 2") == [
        (2, "x2"), (4, "x4")]
    special = [r for r in images(engine, result.repair_id, "delete")
               if r["_table"] == "item_special"]
    assert sorted((r["id"], r["extra"]) for r in special)[:2] == [(1, "x1"), (3, "x3")]
    assert restore(engine, result.repair_id).restored == 10
    assert {t: table_sum(engine, f"ONLY {t}", "id") for t in sums} == sums


def test_index_on_the_rule_column_with_tiny_batches_repairs_every_row(engine: Engine) -> None:
    """With an index on qty the planner walks it (qty order, not ctid order): a ctid
    cursor then jumped past rows; a key cursor cannot."""
    sql(engine, "CREATE TABLE stock (id integer PRIMARY KEY, qty integer, pad text); "
                "INSERT INTO stock SELECT g, CASE WHEN g % 200 = 0 THEN -g ELSE g END, "
                "repeat('p', 50) FROM generate_series(1, 10000) g; "
                "CREATE INDEX stock_qty ON stock (qty); ANALYZE stock")
    plan = rows(engine, "EXPLAIN SELECT ctid FROM stock t WHERE NOT (qty > 0)")
    assert "stock_qty" in " ".join(r[0] for r in plan)
    rule = CheckRule("ck_stock_qty", TableName("stock"), "qty > 0", (SetValue(column="qty",
                                                                             value=0),))
    rule_fixed = CheckRule("ck_stock_qty", TableName("stock"), "qty >= 0", rule.policies)
    result = repair(engine, declared(rule_fixed), apply=True, batch_size=5)
    assert (result.changed, result.for_person, result.exit_code) == (50, 0, 0)
    assert rows(engine, "SELECT count(*) FROM stock WHERE qty < 0") == [(0,)]
    deleted = repair(engine, declared(CheckRule("ck_stock_pos", TableName("stock"), "qty > 0",
                                                (Delete(),))), apply=True, batch_size=5)
    assert (deleted.changed, deleted.exit_code) == (50, 0)
    assert rows(engine, "SELECT count(*) FROM stock") == [(9950,)]


# --------------------------------------------------------------------------- verbatim values


def test_percent_and_colon_in_values_reasons_and_predicates_stay_verbatim(
        engine: Engine) -> None:
    sql(engine, "CREATE TABLE promo (id integer PRIMARY KEY, label text, note text, "
                "reason text, flagged boolean NOT NULL DEFAULT false); "
                "INSERT INTO promo VALUES (1, NULL, 'a:b%c', NULL, false), "
                "(2, NULL, 'plain', NULL, false), (3, 'ok', 'x', NULL, false)")
    label = NotNullRule(TableName("promo"), "label", (
        SetValue(value="50% off: now", where="t.note LIKE '%:b\\%%' ESCAPE '\\'"),
        Manual("ask: the 10% team")))
    flag = CheckRule("ck_promo_note", TableName("promo"), "note <> 'x'", (
        Invalidate(values={"note": "100% :done", "reason": "%s %(x)s :name"}),))
    result = repair(engine, declared(label, flag), apply=True)
    assert rows(engine, "SELECT id, label, note, reason FROM promo ORDER BY id") == [
        (1, "50% off: now", "a:b%c", None), (2, None, "plain", None),
        (3, "ok", "100% :done", "%s %(x)s :name")]
    manual = result.rules[0].policies[1]
    assert manual.reasons == {"ask: the 10% team": 1}
    assert rows(engine, "SELECT count(*) FROM promo WHERE label = '50% off: now'") == [(1,)]
    summary = rows(engine, f"SELECT summary::text FROM {LOG}_runs")[0][0]
    assert "ask: the 10% team" in summary and "10%% team" not in summary


def test_a_bad_where_on_a_later_rule_writes_nothing(engine: Engine, capsys: pytest.CaptureFixture[
        str], tmp_path: object) -> None:
    sql(engine, PARTITIONED)
    before = table_sum(engine, "orders", "region, id")
    good = CheckRule("ck_orders_qty", TableName("orders"), "qty > 0", (Delete(),))
    bad = CheckRule("ck_orders_id", TableName("orders"), "id < 5",
                    (Delete(where="t.no_such_column = 1"),))
    with pytest.raises(PredicateError, match="no_such_column") as err:
        repair(engine, declared(good, bad), apply=True)
    assert "\n" not in str(err.value) and "ck_orders_id" in str(err.value)
    assert table_sum(engine, "orders", "region, id") == before
    assert not schema_exists(engine)  # no log, no `running` record


def test_a_bad_where_exits_2_with_one_line(engine: Engine, tmp_path: object,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    sql(engine, PARTITIONED)
    before = table_sum(engine, "orders", "region, id")
    folder = Path(str(tmp_path))
    (folder / "bad_models.py").write_text(
        "from sqlalchemy import CheckConstraint, Column, Integer, MetaData, Table, Text\n"
        "from alembic_integrity.rules.policies import Delete, on_violation\n"
        "metadata = MetaData()\n"
        "Table('orders', metadata, Column('region', Text, primary_key=True),\n"
        "      Column('id', Integer, primary_key=True), Column('qty', Integer),\n"
        "      CheckConstraint('qty > 0', name='ck_a', info=on_violation(Delete())),\n"
        "      CheckConstraint('id < 5', name='ck_b', info=on_violation(\n"
        "          Delete(where='t.nope = 1'))))\n")
    monkeypatch.syspath_prepend(str(folder))
    url = engine.url.render_as_string(hide_password=False)
    assert cli("repair", "--url", url, "--metadata", "bad_models:metadata", "--apply") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err
    assert table_sum(engine, "orders", "region, id") == before and not schema_exists(engine)


# --------------------------------------------------------------------------- restore round trip

ODD_VALUES = r"""
CREATE TABLE odd (
    id integer PRIMARY KEY, kind text,
    j jsonb, js json, arr integer[], ts timestamptz, iv interval, f double precision,
    n numeric, b bytea, txt text, d date);
INSERT INTO odd VALUES
    (1, 'bad', 'null', '{"a": 1, "a": 2,  "b" : [1,2]}', '[0:2]={1,2,3}',
     '2024-03-31 01:59:59.123456+00', '1 year 2 months 3 days 04:05:06.789', 0.1 + 0.2,
     1.10, '\x00ff10', E'it''s "quoted"\nnew line\ttab ünïcödé ✓ 𝄞', '2024-01-02'),
    (2, 'fix', '{"k": null}', '  [ ]  ', '[-3:-2][1:1]={{7},{8}}',
     '1999-12-31 23:59:59+14', '-1 days +02:00:00', 1e-300, 123456789012345678901234.5678,
     '', '', '0001-01-01'),
    (3, 'bad', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (4, 'fix', '"text"', 'null', '{}', 'infinity', '@ 1 minute ago', 'NaN', 'NaN', '\x',
     'x', 'infinity'),
    (5, 'ok', '1.0', '1.0', '{1}', now(), '0', -0.0, 0, '\x01', 'keep', now());
CREATE TABLE odd_copy AS SELECT * FROM odd;
"""

REPAIR_SETTINGS = {"TimeZone": "Pacific/Chatham", "DateStyle": "SQL,DMY",
                   "IntervalStyle": "sql_standard", "extra_float_digits": "-15"}
RESTORE_SETTINGS = {"TimeZone": "America/St_Johns", "DateStyle": "German,MDY",
                    "IntervalStyle": "iso_8601", "extra_float_digits": "0"}


@pytest.fixture
def odd(engine: Engine) -> Iterator[tuple[Engine, Engine]]:
    sql(engine, ODD_VALUES)
    repairing = with_settings(engine, **REPAIR_SETTINGS)
    restoring = with_settings(engine, **RESTORE_SETTINGS)
    yield repairing, restoring
    repairing.dispose()
    restoring.dispose()


def identical(engine: Engine) -> bool:
    """Every row of odd equal, byte for byte, to its copy (and no row missing)."""
    return rows(engine, "SELECT count(*) = 5 AND bool_and(record_image_eq(o, c)) FROM odd o "
                        "FULL JOIN odd_copy c ON c.id = o.id")[0][0]


def test_restore_round_trip_is_exact_under_other_session_settings(
        engine: Engine, odd: tuple[Engine, Engine]) -> None:
    repairing, restoring = odd
    before = table_sum(engine, "odd", "id")
    rules = declared(
        CheckRule("ck_odd_bad", TableName("odd"), "kind <> 'bad'", (Delete(),)),
        CheckRule("ck_odd_fix", TableName("odd"), "kind <> 'fix'", (Invalidate(values={
            "kind": "fixed", "j": Sql("'{}'::jsonb"), "js": Sql("'[]'::json"),
            "arr": Sql("'{9}'"), "ts": Sql("now()"), "iv": Sql("interval '1 day'"), "f": 0.5,
            "n": 2, "b": Sql("'\\x00'::bytea"), "txt": "x", "d": Sql("current_date")}),)))
    result = repair(repairing, rules, apply=True, batch_size=1)
    assert (result.changed, result.exit_code) == (4, 0)
    assert not identical(engine)
    undone = restore(restoring, result.repair_id)
    assert (undone.restored, undone.conflicts, undone.notes) == (4, 0, [])
    assert identical(engine)
    assert table_sum(engine, "odd", "id") == before
    assert rows(engine, "SELECT j IS NOT NULL AND j = 'null'::jsonb, js::text, arr::text "
                        "FROM odd WHERE id = 1") == [
        (True, '{"a": 1, "a": 2,  "b" : [1,2]}', "[0:2]={1,2,3}")]


def test_no_false_conflict_under_another_time_zone(engine: Engine,
                                                   odd: tuple[Engine, Engine]) -> None:
    """Updated rows with a timestamptz compare as values, not as text in a time zone."""
    repairing, restoring = odd
    rule = CheckRule("ck_odd_fix", TableName("odd"), "kind <> 'fix'",
                     (Invalidate(values={"kind": "fixed", "ts": Sql("ts + interval '1 hour'"),
                                         "f": Sql("f * 3"), "iv": Sql("iv * 2")}),))
    result = repair(repairing, declared(rule), apply=True)
    undone = restore(restoring, result.repair_id)
    assert (undone.restored, undone.conflicts) == (2, 0)
    assert identical(engine)


def test_restore_by_column_name_after_columns_were_added_and_dropped(engine: Engine) -> None:
    sql(engine, ODD_VALUES)
    rule = CheckRule("ck_odd_bad", TableName("odd"), "kind <> 'bad'", (Delete(),))
    result = repair(engine, declared(rule), apply=True)
    sql(engine, "ALTER TABLE odd ADD COLUMN added integer DEFAULT 7; "
                "ALTER TABLE odd DROP COLUMN txt")
    undone = restore(engine, result.repair_id)
    assert undone.restored == 2
    assert rows(engine, "SELECT id, added, kind FROM odd WHERE id IN (1, 3) ORDER BY id") == [
        (1, 7, "bad"), (3, 7, "bad")]
    assert any("odd.added did not exist at the repair" in n for n in undone.notes)
    assert any("odd.txt was dropped since the repair" in n for n in undone.notes)
    assert "note: " in undone.to_text()


# --------------------------------------------------------------------------- progress


def test_progress_counts_rows_done_of_all_and_logs_lines_off_a_terminal(
        engine: Engine, tmp_path: object, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from alembic_integrity.cli import progress as cli_progress
    from alembic_integrity.pg.progress import Progress

    sql(engine, PARTITIONED)
    seen: list[Progress] = []
    rule = CheckRule("ck_orders_qty", TableName("orders"), "qty > 0", (Delete(),))
    result = repair(engine, declared(rule), apply=True, batch_size=4, progress=seen.append)
    assert [(p.done, p.total) for p in seen] == [(4, 10), (8, 10), (10, 10), (10, 10)]
    assert all(p.rate > 0 for p in seen)

    folder = Path(str(tmp_path))
    (folder / "orders_models.py").write_text(
        "from sqlalchemy import CheckConstraint, Column, Integer, MetaData, Table, Text\n"
        "from alembic_integrity.rules.policies import Delete, on_violation\n"
        "metadata = MetaData()\n"
        "Table('orders', metadata, Column('region', Text, primary_key=True),\n"
        "      Column('id', Integer, primary_key=True), Column('qty', Integer),\n"
        "      CheckConstraint('qty < 5', name='ck_small', info=on_violation(Delete())))\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(cli_progress, "LOG_EVERY_S", 0.0)
    url = engine.url.render_as_string(hide_password=False)
    assert cli("repair", "--url", url, "--metadata", "orders_models:metadata", "--apply",
               "--batch-size", "3") == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("repairing: ck_small on public.orders: Delete: "
                                          "6 of 6 rows, ")
    assert cli("restore", "2", "--url", url) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "restoring: public.orders: 6 of 6 rows")
    assert result.repair_id == 1
