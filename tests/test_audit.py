"""The audit on a real PostgreSQL: states, exact counts and samples, one scan per table,
READ ONLY counting, one line per problem, and the command's formats and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Engine,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import URL

from alembic_integrity.audit.core import AuditReport, Finding, audit
from alembic_integrity.cli import main
from alembic_integrity.cli.render import audit_dict, audit_markdown
from alembic_integrity.demo.project import MIGRATIONS
from alembic_integrity.pg import raw
from alembic_integrity.pg.progress import Progress
from alembic_integrity.rules.metadata import DeclaredRules, rules_from_metadata
from alembic_integrity.rules.policies import Expectation, expect

ROOT = Path(__file__).resolve().parents[1]
NAMING = {"ck": "ck_%(table_name)s_%(constraint_name)s",
          "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s"}
ORDER = '"Sales"."Order"'
LINE = '"Sales"."LineItem"'

# The database as a legacy system left it: no rules but the primary keys (and
# the few set up per test), and rows that break the rules at known keys.
LEGACY_SCHEMA = f"""
CREATE SCHEMA "Sales";
CREATE TABLE {ORDER} (id bigint PRIMARY KEY, customer text NOT NULL, status text);
CREATE TABLE {LINE} (order_id bigint, line_no integer, qty integer, price numeric(10, 2),
                     sku text, PRIMARY KEY (order_id, line_no));
CREATE TABLE audit_log (event text, detail text);
"""
CLEAN_ROWS = f"""
INSERT INTO {ORDER} SELECT g, 'customer ' || g, 'paid' FROM generate_series(1, 20) g;
INSERT INTO {LINE} SELECT 1 + g % 20, g, 1 + g % 3, 9.99, 'sku-' || g
    FROM generate_series(1, 60) g;
INSERT INTO audit_log SELECT 'login', 'user ' || g FROM generate_series(1, 5) g;
"""
DIRTY_ROWS = f"""
UPDATE {ORDER} SET status = NULL WHERE id IN (3, 7);
UPDATE {ORDER} SET status = 'lost' WHERE id IN (4, 9, 15);
UPDATE {LINE} SET qty = 0 WHERE (order_id, line_no) IN ((11, 10), (3, 2), (3, 22));
UPDATE {LINE} SET price = NULL WHERE (order_id, line_no) IN ((5, 4), (5, 24));
UPDATE {LINE} SET sku = NULL WHERE (order_id, line_no) = (2, 1);
INSERT INTO {LINE} VALUES (100, 1, 1, 1, 'x'), (100, 2, 1, 1, 'x'), (101, 1, 1, 1, 'x');
INSERT INTO audit_log VALUES (NULL, 'who?');
"""


def sales_metadata(naming: dict[str, str] | None = None) -> MetaData:
    """The rules the team wants, declared in the models."""
    metadata = MetaData(naming_convention=NAMING if naming is None else naming)
    Table(
        "Order", metadata,
        Column("id", BigInteger, primary_key=True),
        Column("customer", Text, nullable=False),
        Column("status", Text, nullable=False),
        CheckConstraint("status IN ('new', 'paid', 'shipped')", name="status_known"),
        schema="Sales",
    )  # fmt: skip
    Table(
        "LineItem", metadata,
        Column("order_id", BigInteger, primary_key=True),
        Column("line_no", Integer, primary_key=True),
        Column("qty", Integer),
        Column("price", Numeric(10, 2)),
        Column("sku", Text, nullable=False),
        CheckConstraint("qty > 0", name="qty_positive"),
        ForeignKeyConstraint(["order_id"], ["Sales.Order.id"]),
        schema="Sales",
        info=expect(Expectation("line_priced", "price IS NOT NULL OR qty = 0")),
    )  # fmt: skip
    Table(
        "audit_log", metadata,
        Column("event", Text, nullable=False),
        Column("detail", Text),
        CheckConstraint("length(event) < 20", name="event_short"),
    )  # fmt: skip
    return metadata


METADATA = sales_metadata()  # for --metadata test_audit:METADATA
WITH_GHOST = sales_metadata()
Table("Ghost", WITH_GHOST, Column("id", BigInteger, primary_key=True),
      Column("name", Text, nullable=False), schema="Sales")

# label -> (state, violations, sample) on the dirty database with the rules of `prepared`.
EXPECTED: dict[str, tuple[str, int, list[Any]]] = {
    "Order.customer NOT NULL": ("valid", 0, []),
    "Order.status NOT NULL": ("not_valid", 2, [3, 7]),
    "ck_Order_status_known": ("not_valid", 3, [4, 9, 15]),
    "LineItem.sku NOT NULL": ("absent", 1, ["(2,1)"]),
    "ck_LineItem_qty_positive": ("other_definition", 3, ["(3,2)", "(3,22)", "(11,10)"]),
    "fk_LineItem_order_id_Order": ("absent", 3, ["(100,1)", "(100,2)", "(101,1)"]),
    "line_priced": ("audit_only", 2, ["(5,4)", "(5,24)"]),
    "audit_log.event NOT NULL": ("absent", 1, ["(0,6)"]),
    "ck_audit_log_event_short": ("valid", 0, []),
}


# --------------------------------------------------------------------------- helpers


def url_text(url: str | URL) -> str:
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def run_sql(engine: Engine, script: str) -> None:
    with engine.begin() as conn:
        for statement in filter(str.strip, script.split(";")):
            raw.execute(conn, statement)


def prepare(engine: Engine, dirty: bool = True) -> None:
    """Legacy schema and rows, plus one rule in each state the audit tells apart."""
    run_sql(engine, LEGACY_SCHEMA + CLEAN_ROWS + (DIRTY_ROWS if dirty else ""))
    run_sql(engine, f"""
        ALTER TABLE {ORDER} ADD CONSTRAINT "Order_status_not_null"
            CHECK (status IS NOT NULL) NOT VALID;
        ALTER TABLE {ORDER} ADD CONSTRAINT "ck_Order_status_known"
            CHECK (status IN ('new', 'paid', 'shipped')) NOT VALID;
        ALTER TABLE {LINE} ADD CONSTRAINT "ck_LineItem_qty_positive" CHECK (qty >= 0) NOT VALID;
        ALTER TABLE audit_log ADD CONSTRAINT ck_audit_log_event_short CHECK (length(event) < 20);
    """)


@pytest.fixture
def dirty(engine: Engine) -> Engine:
    prepare(engine)
    return engine


def by_label(report: AuditReport) -> dict[str, Finding]:
    return {f.label: f for f in report.findings}


def declared(metadata: MetaData | None = None) -> DeclaredRules:
    return rules_from_metadata(metadata if metadata is not None else sales_metadata())


class Statements:
    """Every statement sent, to prove how the tables were read."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sent: list[str] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sent.append(statement)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def counting(self) -> list[str]:
        """The statements of the last READ ONLY transaction (from SET TRANSACTION READ ONLY on)."""
        start = max(i for i, s in enumerate(self.sent) if s == "SET TRANSACTION READ ONLY")
        return self.sent[start:]


@pytest.fixture
def statements(engine: Engine) -> Iterator[Statements]:
    log = Statements(engine)
    yield log
    log.close()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``alembic-integrity audit ARGS`` in this process, as the console script does."""
    try:
        main(["audit", *args])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def script(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    env.pop("DATABASE_URL", None)
    if url is not None:
        env["DATABASE_URL"] = url
    return subprocess.run([str(Path(sys.executable).parent / "alembic-integrity"), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


# --------------------------------------------------------------------------- audit()


def test_states_counts_and_samples(dirty: Engine) -> None:
    report = audit(dirty, declared(), sample=5)
    assert report.problems == []
    found = {f.label: (f.state, f.violations, f.sample) for f in report.findings}
    assert found == EXPECTED
    assert report.violations_total == 15
    assert report.exit_code == 1


def test_findings_follow_the_declared_order_and_name_their_key(dirty: Engine) -> None:
    rules = declared()
    report = audit(dirty, rules)
    assert [f.rule for f in report.findings] == rules.rules
    findings = by_label(report)
    assert findings["Order.status NOT NULL"].key_columns == ["id"]
    assert findings["line_priced"].key_columns == ["order_id", "line_no"]
    assert findings["audit_log.event NOT NULL"].key_columns == ["ctid"]
    assert "qty >= 0" in findings["ck_LineItem_qty_positive"].detail


def test_sample_is_limited_and_can_be_switched_off(dirty: Engine) -> None:
    one = by_label(audit(dirty, declared(), sample=1))
    assert one["fk_LineItem_order_id_Order"].sample == ["(100,1)"]
    assert one["fk_LineItem_order_id_Order"].violations == 3
    none = by_label(audit(dirty, declared(), sample=0))
    assert none["ck_Order_status_known"].sample == []
    assert none["ck_Order_status_known"].violations == 3
    with pytest.raises(ValueError):
        audit(dirty, declared(), sample=-1)


def test_valid_states_and_a_clean_database(engine: Engine) -> None:
    prepare(engine, dirty=False)
    run_sql(engine, f"""
        ALTER TABLE {ORDER} VALIDATE CONSTRAINT "ck_Order_status_known";
        ALTER TABLE {ORDER} VALIDATE CONSTRAINT "Order_status_not_null";
        ALTER TABLE {LINE} ALTER COLUMN sku SET NOT NULL;
        ALTER TABLE {LINE} ADD CONSTRAINT "fk_LineItem_order_id_Order"
            FOREIGN KEY (order_id) REFERENCES {ORDER} (id);
    """)
    report = audit(engine, declared())
    states = {f.label: f.state for f in report.findings}
    assert states["ck_Order_status_known"] == "valid"
    assert states["Order.status NOT NULL"] == "valid"  # by its validated helper CHECK
    assert "SET NOT NULL" in by_label(report)["Order.status NOT NULL"].detail
    assert states["LineItem.sku NOT NULL"] == "valid"
    assert states["fk_LineItem_order_id_Order"] == "valid"
    assert report.violations_total == 0
    assert (report.problems, report.exit_code) == ([], 0)


def test_foreign_key_with_another_definition(dirty: Engine) -> None:
    run_sql(dirty, f"""ALTER TABLE {LINE} ADD CONSTRAINT "fk_LineItem_order_id_Order"
                           FOREIGN KEY (order_id) REFERENCES {ORDER} (id) ON DELETE CASCADE
                           NOT VALID""")
    finding = by_label(audit(dirty, declared()))["fk_LineItem_order_id_Order"]
    assert (finding.state, finding.violations) == ("other_definition", 3)
    assert "ON DELETE CASCADE" in finding.detail


def test_progress_is_reported_per_table(dirty: Engine) -> None:
    calls: list[Progress] = []
    rules = declared()
    audit(dirty, rules, progress=calls.append)
    tables = [str(t) for t in rules.tables]
    assert sorted(tables) == ["Sales.LineItem", "Sales.Order", "audit_log"]
    assert [(p.what, p.done, p.total, p.unit) for p in calls] == [
        (f"counting {t}", i, 3, "tables") for i, t in enumerate(tables)
    ] + [(f"counting {tables[-1]}", 3, 3, "tables")]


def test_one_scan_per_table_for_its_row_rules(dirty: Engine, statements: Statements) -> None:
    audit(dirty, declared())
    counting = statements.counting()
    # Order: customer NOT NULL is valid (not counted), status NOT NULL + status_known are;
    # audit_log: event_short is valid, event NOT NULL is counted.
    # One counting statement per table: its scan, plus one anti-join per foreign key.
    counts = [s for s in counting if s.startswith("SELECT * FROM (SELECT count(*) FILTER")]
    for table, rules in ((ORDER, 2), (LINE, 3), ("audit_log", 1)):
        scans = [s for s in counts if f"FROM {table} AS t)" in s]
        assert len(scans) == 1, (table, scans)
        assert scans[0].count("count(*) FILTER") == rules
    assert len(counts) == 3
    joins = [s for s in counts if "LEFT JOIN" in s]
    assert len(joins) == 1 and f"FROM {LINE} AS t LEFT JOIN {ORDER} AS r" in joins[0]
    # Samples only for rules with violations: a bounded top-N in key order, no full sort.
    samples = [s for s in counting if s.startswith("SELECT ARRAY(")]
    assert samples and all("LIMIT 5" in s and "ORDER BY t." in s for s in samples)
    assert all("MATERIALIZED" not in s for s in counting)


def test_valid_rules_are_counted_only_when_asked(dirty: Engine, statements: Statements) -> None:
    trusted = by_label(audit(dirty, declared()))["ck_audit_log_event_short"]
    assert (trusted.state, trusted.violations) == ("valid", 0)
    assert "not counted" in trusted.detail
    assert not any("length(event)" in s for s in statements.counting()
                   if not s.startswith("EXPLAIN"))


def test_counting_runs_read_only(dirty: Engine, statements: Statements) -> None:
    """Counting sees transaction_read_only = on, and a predicate that writes fails."""
    run_sql(dirty, "CREATE SEQUENCE probe_seq")
    metadata = sales_metadata()
    metadata.tables["audit_log"].info = expect(
        Expectation("read_write", "current_setting('transaction_read_only') = 'off'"),
        Expectation("writes", "nextval('probe_seq') > 0"),
    )
    report = audit(dirty, declared(metadata))
    assert by_label(report)["read_write"].violations == 6  # every row: the setting is "on"
    assert len(report.problems) == 1
    assert report.problems[0] == ("table audit_log: counting writes failed: cannot execute "
                                  "nextval() in a read-only transaction")
    assert by_label(report)["audit_log.event NOT NULL"].violations == 1  # the rest counted
    assert statements.counting()[0] == "SET TRANSACTION READ ONLY"
    with dirty.connect() as conn:
        assert tuple(raw.execute(conn, "SELECT last_value, is_called FROM probe_seq").one()) \
            == (1, False)


def test_statement_timeout_stops_a_slow_table_only(dirty: Engine, statements: Statements) -> None:
    metadata = sales_metadata()
    metadata.tables["audit_log"].info = expect(
        Expectation("slow", "pg_sleep(0.2) IS NOT NULL"))
    report = audit(dirty, declared(metadata), statement_timeout_ms=100)
    assert "SET LOCAL statement_timeout = 100" in statements.counting()
    assert len(report.problems) == 1
    assert report.problems[0].startswith("table audit_log: counting ")
    assert "statement timeout (100 ms)" in report.problems[0]
    assert "slow" in report.problems[0] and "audit_log.event NOT NULL" in report.problems[0]
    findings = by_label(report)
    assert "slow" not in findings and "audit_log.event NOT NULL" not in findings
    assert findings["ck_audit_log_event_short"].violations == 0  # valid: needs no scan
    assert findings["LineItem.sku NOT NULL"].violations == 1  # other tables counted
    assert report.exit_code == 2


# --------------------------------------------------------------------------- problems


def test_each_bad_declaration_is_one_line_and_the_rest_is_audited(dirty: Engine) -> None:
    metadata = sales_metadata(naming={})  # no convention: unnamed CHECK and FK stay unnamed
    Table("Shipment", metadata, Column("id", BigInteger, primary_key=True),
          Column("carrier", Text, nullable=False), schema="Sales")
    Table("audit_log", metadata, Column("severity", Text, nullable=False),
          CheckConstraint("severity IN ('info', 'error')"),
          CheckConstraint("detail >>> 'x'", name="detail_bad"), extend_existing=True)
    order = metadata.tables["Sales.Order"]
    order.append_constraint(CheckConstraint("status IN ('paid')"))
    order.append_column(Column("customer_ref", BigInteger))
    order.append_constraint(ForeignKeyConstraint(["customer_ref"], ["Sales.Shipment.id"],
                                                 name="fk_customer_ref"))
    report = audit(dirty, rules_from_metadata(metadata))
    assert len(report.problems) == 5, report.problems
    assert all("\n" not in p for p in report.problems)
    text = "\n".join(report.problems)
    assert "has no name" not in text  # unnamed constraints are audited (see test_unnamed_*)
    assert ("table Sales.Shipment does not exist in schema 'Sales'; not audited: "
            "Shipment.carrier NOT NULL") in text
    assert "rule audit_log.severity NOT NULL: table audit_log has no column 'severity'" in text
    assert "CHECK constraint audit_log_severity_check on audit_log: PostgreSQL rejects" in text
    assert ("foreign key fk_customer_ref on Sales.Order: table Sales.Order has no column "
            "'customer_ref'") in text
    assert "CHECK constraint detail_bad on audit_log: PostgreSQL rejects the predicate" in text
    findings = by_label(report)
    assert (findings["status_known"].state, findings["status_known"].violations) == ("absent", 3)
    assert findings["Order_status_check"].violations == 3  # the unnamed CHECK, counted
    assert findings["Order.status NOT NULL"].violations == 2
    assert findings["audit_log.event NOT NULL"].violations == 1
    assert findings["LineItem.sku NOT NULL"].violations == 1
    assert report.exit_code == 2


def test_missing_referenced_table_and_bad_expectation(dirty: Engine) -> None:
    metadata = sales_metadata()
    Table("Ghost", metadata, Column("id", BigInteger, primary_key=True), schema="Sales")
    Table("audit_log", metadata, ForeignKeyConstraint(["detail"], ["Sales.Ghost.id"]),
          extend_existing=True, info=expect(Expectation("nonsense", "event =! 'x'")))
    report = audit(dirty, rules_from_metadata(metadata))
    assert len(report.problems) == 2, report.problems
    text = "\n".join(report.problems)
    assert ("foreign key fk_audit_log_detail_Ghost on audit_log: the referenced table "
            "Sales.Ghost does not exist") in text
    assert "expectation nonsense on audit_log: PostgreSQL rejects the predicate" in text
    assert by_label(report)["audit_log.event NOT NULL"].violations == 1


def test_a_predicate_failing_at_run_time_is_isolated(dirty: Engine) -> None:
    metadata = sales_metadata()
    metadata.tables["Sales.LineItem"].info = expect(
        Expectation("ratio", "100 / (qty - 1) < 1000"))  # qty = 1 exists: division by zero
    report = audit(dirty, declared(metadata))
    assert len(report.problems) == 1
    assert report.problems[0] == ("table Sales.LineItem: counting ratio failed: "
                                  "division by zero")
    findings = by_label(report)
    assert "ratio" not in findings
    assert findings["ck_LineItem_qty_positive"].violations == 3
    assert findings["LineItem.sku NOT NULL"].violations == 1


# --------------------------------------------------------------------------- reports


def test_json_shape(dirty: Engine) -> None:
    document = audit_dict(audit(dirty, declared(), sample=2))
    assert set(document) == {"version", "database", "generated_at", "summary", "findings",
                             "problems"}
    assert document["version"] == 1
    assert document["summary"] == {"rules": 9, "violations": 15, "problems": 0}
    assert document["generated_at"].endswith("+00:00")
    fk = next(f for f in document["findings"] if f["rule"] == "fk_LineItem_order_id_Order")
    assert fk == {"rule": "fk_LineItem_order_id_Order", "kind": "foreign_key",
                  "table": "LineItem", "schema": "Sales", "state": "absent", "violations": 3,
                  "sample": ["(100,1)", "(100,2)"], "key": ["order_id", "line_no"],
                  "detail": ""}
    status = next(f for f in document["findings"] if f["rule"] == "Order.status NOT NULL")
    assert (status["kind"], status["sample"]) == ("not_null", [3, 7])
    json.dumps(document)


def test_markdown(dirty: Engine) -> None:
    text = audit_markdown(audit(dirty, declared(), sample=2))
    lines = text.splitlines()
    assert lines[0] == "## Integrity audit"
    assert "**9 rules audited, 15 violating rows, 0 problems**" in text
    assert "| rule | table | kind | state | violations | sample keys |" in lines
    assert "| ck_Order_status_known | Sales.Order | check | not_valid | 3 | 4, 9, ... |" in lines
    assert "### Problems" not in text


# --------------------------------------------------------------------------- command


def test_cli_exit_codes(engine: Engine, integrity_database_url: str | URL,
                        capsys: pytest.CaptureFixture[str]) -> None:
    url = url_text(integrity_database_url)
    prepare(engine, dirty=False)
    code, out, err = cli(capsys, "--url", url, "--metadata", "test_audit:METADATA",
                         "--format", "json")
    assert (code, err) == (0, "")
    assert json.loads(out)["summary"] == {"rules": 9, "violations": 0, "problems": 0}
    run_sql(engine, f"INSERT INTO {LINE} VALUES (999, 1, 1, 1, 'x')")  # the FK is absent
    code, out, err = cli(capsys, "--url", url, "--metadata", "test_audit:METADATA",
                         "--format", "json")
    assert (code, err) == (1, "")
    assert json.loads(out)["summary"] == {"rules": 9, "violations": 1, "problems": 0}
    code, out, err = cli(capsys, "--url", url, "--metadata", "test_audit:WITH_GHOST",
                         "--format", "markdown")
    assert (code, err) == (2, "")
    assert "### Problems" in out and "- table Sales.Ghost does not exist" in out


def sales_bad() -> None:
    """Not a MetaData: the command must say so in one line."""


def test_cli_table_and_output_file(dirty: Engine, integrity_database_url: str | URL,
                                   capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("DATABASE_URL", url_text(integrity_database_url))
    code, out, err = cli(capsys, "--metadata", "test_audit:METADATA", "--sample", "1",
                         "--statement-timeout", "30s")
    assert code == 1
    assert "ck_Order_status_known" in out and "other_definition" in out
    assert "9 rules audited, 15 violating rows, 0 problems" in out
    target = tmp_path / "audit.md"
    code, out, err = cli(capsys, "--metadata", "test_audit:METADATA", "--format", "markdown",
                         "-o", str(target))
    assert code == 1 and out == ""
    assert err.strip() == f"9 rules audited, 15 violating rows, 0 problems; report written " \
                          f"to {target}"
    assert target.read_text().startswith("## Integrity audit")


@pytest.mark.parametrize("args", [
    ["--format", "xml"],
    ["--sample", "-1"],
    ["--statement-timeout", "soon"],
    ["--output", "/no/such/dir/report.json"],
    ["--no-such-option"],
])
def test_cli_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = cli(capsys, "--url", "postgresql://nobody@127.0.0.1:1/x",
                         "--metadata", "test_audit:METADATA", *args)
    assert code == 2
    assert "Traceback" not in err


@pytest.mark.parametrize(("given", "ms"), [("30s", 30_000), ("500ms", 500), ("2min", 120_000),
                                          ("1500", 1500), ("0.5s", 500)])
def test_statement_timeout_values(given: str, ms: int) -> None:
    from alembic_integrity.cli.audit_cmd import Duration

    assert Duration().convert(given, None, None) == ms


def test_cli_bad_metadata_spec(integrity_database_url: str | URL,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = cli(capsys, "--url", url_text(integrity_database_url),
                         "--metadata", "test_audit:sales_bad")
    assert code == 2
    assert err.startswith("error: --metadata 'test_audit:sales_bad' is a function")
    assert len(err.strip().splitlines()) == 1


def test_script_wrong_url_is_one_line() -> None:
    done = script("audit", "--metadata", "test_audit:METADATA", "--url", "not-a-url")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: 'not-a-url' is not a database URL; expected postgresql://user@host:5432/dbname"]
    assert done.stdout == ""


def test_script_unreachable_server_is_one_line() -> None:
    done = script("audit", "--metadata", "test_audit:METADATA",
                  url="postgresql://postgres@127.0.0.1:1/x")  # via $DATABASE_URL
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: cannot connect to postgresql+psycopg://postgres@127.0.0.1:1/x")


def test_script_without_database_is_one_line() -> None:
    done = script("audit", "--metadata", "test_audit:METADATA")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no database given; pass --url or set DATABASE_URL"


# --------------------------------------------------------------------------- reference schema


def test_reference_legacy_schema_finds_exactly_the_planted_rows(
        integrity_database_url: str | URL) -> None:
    """Legacy schema (revision 0001) + dirty data: the audit finds the manifest, no more."""
    from alembic import command
    from alembic.config import Config

    from alembic_integrity.demo import datagen
    from alembic_integrity.demo.models import metadata

    url = url_text(integrity_database_url)
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes.update({"url": url, "configure_logger": False})
    command.upgrade(config, "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            manifest = datagen.generate(conn, rows=2000, dirty=True)
            datagen.insert_hand_patched_constraint(conn)
        report = audit(engine, rules_from_metadata(metadata), sample=100)
    finally:
        engine.dispose()
    expected = reference_expectations(manifest)
    findings = by_label(report)
    assert set(expected) <= set(findings)
    for label, finding in findings.items():
        if label in expected:
            assert finding.sample == expected[label], label
            assert finding.violations == len(expected[label]), label
        elif finding.kind != "expectation":  # an expectation added later names its own rows
            assert finding.violations == 0, (label, finding.sample)
    assert findings["ck_routing_outcomes_inference_linked"].state == "other_definition"
    assert findings["ck_invocation_image_output"].state == "absent"
    assert findings["experiment.name NOT NULL"].state == "valid"
    # 0001 has no failure_reason column yet: data_present is the one rule not audited.
    assert len(report.problems) == 1 and "data_present" in report.problems[0]
    assert report.exit_code == 2


def reference_expectations(manifest: Any) -> dict[str, list[int]]:
    """Rule label -> the planted primary keys that break it, from the generator's manifest."""
    return {
        "ck_invocation_image_output": manifest.failed_invocations,
        "run.experiment_id NOT NULL": manifest.runs_null_experiment,
        "run.started_at NOT NULL": manifest.runs_null_started_at,
        "invocation.started_at NOT NULL": manifest.invocations_null_started_at,
        "embedding.vector NOT NULL": manifest.embeddings_null_vector,
        "embedding.started_at NOT NULL": manifest.embeddings_null_started_at,
        "persistence_diagram.started_at NOT NULL": manifest.diagrams_null_started_at,
        "interactions.enabled NOT NULL": manifest.interactions_null_enabled,
        "interactions.invalidated NOT NULL": manifest.interactions_null_invalidated,
        "ck_interactions_invalidation_reason": manifest.interactions_invalidated_no_reason,
        "ck_interactions_status_known": manifest.interactions_unknown_status,
        "postings_staging.interaction_id NOT NULL": manifest.staging_null_interaction,
        "fk_postings_staging_interaction_id_interactions":
            manifest.staging_missing_interaction,
        "ck_routing_outcomes_inference_linked": manifest.orphan_outcomes,
        "ck_failure_counts_count_nonnegative": manifest.negative_failure_counts,
        "failure_logs.reason NOT NULL": manifest.null_failure_reasons,
    }
