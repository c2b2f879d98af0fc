"""The toolkit's audit versus hand-written counting queries, on one table of N rows.

The table carries five rules (two NOT NULL, three CHECK). In the ``sparse``
case (the one judged) each is broken by a few rows in ten thousand; in the
``dense`` case one column was never backfilled, so half the rows break its
NOT NULL. We time (median of 3 interleaved rounds, after one warm-up run):

* ``audit``             ``alembic_integrity.audit.core.audit()`` end to end: catalog reads, the
                        predicate parse checks, and the READ ONLY counting pass with the
                        first 5 violating keys of every rule;
* ``audit, no sample``  the same with ``sample=0`` (shows what collecting samples costs);
* ``one pass (floor)``  a hand-written ``SELECT count(*) FILTER (WHERE v1), ... FROM t``
                        counting all five rules in one scan: the least any audit can do;
* ``one pass + array_agg``  the naive way to add samples to the floor:
                        ``(array_agg(id ORDER BY id) FILTER (WHERE v))[1:5]`` over the whole
                        table (for information: ordered aggregates cannot run in parallel);
* ``one query per rule``  five ``SELECT count(*) ... WHERE v`` (five scans);
* ``count(*)``          a bare ``SELECT count(*) FROM t``.

Targets: ``audit`` <= 1.2 x the floor in the sparse case, and <= 1.5 x in the
dense case with samples on. The audit counts in one pass (the floor's query)
and then takes each sample as a bounded top-N in key order (``ORDER BY pk
LIMIT 5``, driven by the primary key index when violations are dense), never
sorting every violating key. The audit's counts are checked against the
floor's in both cases.

Run: ``.venv/bin/python bench/audit_bench.py [--rows N] [--url URL] [--json PATH]``.
Without ``--url`` a throwaway PostgreSQL is started and deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy
from rich.console import Console
from rich.table import Table as RichTable
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    create_engine,
)

import alembic_integrity
from alembic_integrity.audit.core import audit
from alembic_integrity.pg import raw
from alembic_integrity.pg.throwaway import throwaway_postgres
from alembic_integrity.rules.metadata import DeclaredRules, rules_from_metadata

DEFAULT_ROWS = 2_000_000
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "audit.json"
TABLE = "bench_audit"
REPEATS = 3
SAMPLE = 5
TARGET_RATIO = 1.2
TARGET_DENSE_RATIO = 1.5

console = Console(stderr=True)


# --------------------------------------------------------------------------- schema


def bench_metadata() -> MetaData:
    """The declared rules: NOT NULL price and created_at, three CHECKs."""
    metadata = MetaData(naming_convention={"ck": "ck_%(table_name)s_%(constraint_name)s"})
    Table(
        TABLE, metadata,
        Column("id", BigInteger, primary_key=True),
        Column("qty", Integer),
        Column("price", Numeric(10, 2), nullable=False),
        Column("status", Text),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("note", Text),
        CheckConstraint("qty >= 0", name="qty_nonnegative"),
        CheckConstraint("status IN ('new', 'paid', 'shipped')", name="status_known"),
        CheckConstraint("created_at > '2020-01-01' OR qty > 50", name="recent_or_large"),
    )  # fmt: skip
    return metadata


def exec_sql(engine: Engine, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements in one autocommit session; return the last statement's rows."""
    rows: list[tuple[Any, ...]] = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            result = raw.execute(conn, statement)
            rows = [tuple(r) for r in result] if result.returns_rows else []
    return rows


def build_table(engine: Engine, rows: int, dense: bool) -> float:
    """N rows without any constraint but the PK; each rule broken by ~0.04-0.1 % of rows,
    and with ``dense`` half the prices NULL."""
    began = time.perf_counter()
    null_price = "g % 2 = 0" if dense else "g % 1500 = 2"
    exec_sql(
        engine,
        f"DROP TABLE IF EXISTS {TABLE}",
        f"""CREATE TABLE {TABLE} (id bigint, qty integer, price numeric(10, 2), status text,
                                  created_at timestamptz, note text)""",
        "SET maintenance_work_mem = '256MB'",
        f"""INSERT INTO {TABLE}
            SELECT g,
                   CASE WHEN g % 1000 = 1 THEN -1 ELSE g % 100 END,
                   CASE WHEN {null_price} THEN NULL ELSE (g % 500)::numeric END,
                   CASE WHEN g % 2000 = 3 THEN 'bogus'
                        ELSE (ARRAY['new', 'paid', 'shipped'])[1 + g % 3] END,
                   CASE WHEN g % 2500 = 4 THEN NULL
                        WHEN g % 2500 = 5 THEN timestamptz '2019-06-01'
                        ELSE timestamptz '2024-01-01' + g * interval '1 second' END,
                   'note ' || g
            FROM generate_series(1, {rows}) g""",
        f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)",
        f"VACUUM (FREEZE, ANALYZE) {TABLE}",
        f"SELECT count(*) FROM {TABLE}",  # warm the cache the same way for every variant
    )  # fmt: skip
    return time.perf_counter() - began


# --------------------------------------------------------------------------- variants


def violation_predicates(declared: DeclaredRules) -> list[str]:
    return [rule.violation_sql("t") for rule in declared.rules]


def floor_sql(predicates: list[str]) -> str:
    counts = ", ".join(f"count(*) FILTER (WHERE {p})" for p in predicates)
    return f"SELECT {counts} FROM {TABLE} AS t"


def naive_sample_sql(predicates: list[str]) -> str:
    parts = ", ".join(
        f"count(*) FILTER (WHERE {p}), (array_agg(t.id ORDER BY t.id) FILTER (WHERE {p}))"
        f"[1:{SAMPLE}]"
        for p in predicates
    )
    return f"SELECT {parts} FROM {TABLE} AS t"


def variants(engine: Engine, declared: DeclaredRules,
             dense: bool) -> dict[str, Callable[[], list[int]]]:
    """Each variant returns the five counts, so the audit can be checked against the floor."""
    predicates = violation_predicates(declared)

    def audited(sample: int) -> Callable[[], list[int]]:
        def go() -> list[int]:
            report = audit(engine, declared, sample=sample)
            assert not report.problems, report.problems
            return [f.violations for f in report.findings]
        return go

    def one(sql: str, every: int = 1) -> Callable[[], list[int]]:
        def go() -> list[int]:
            row = exec_sql(engine, sql)[0]
            return [int(v) for v in row[::every]]
        return go

    def per_rule() -> list[int]:
        return [int(exec_sql(engine, f"SELECT count(*) FROM {TABLE} AS t WHERE {p}")[0][0])
                for p in predicates]

    found = {
        "audit": audited(SAMPLE),
        "audit, no sample": audited(0),
        "one pass (floor)": one(floor_sql(predicates)),
        "one pass + array_agg": one(naive_sample_sql(predicates), every=2),
        "one query per rule": per_rule,
        "count(*)": one(f"SELECT count(*) FROM {TABLE}"),
    }
    if dense:
        del found["one query per rule"]
    return found


def time_variants(found: dict[str, Callable[[], list[int]]]) -> dict[str, dict[str, Any]]:
    """One warm-up each, then REPEATS rounds that run every variant once (interleaved, so a
    change in the machine's load hits all variants alike); median per variant."""
    results = {name: {"counts": fn(), "runs_s": []} for name, fn in found.items()}
    for _ in range(REPEATS):
        for name, fn in found.items():
            began = time.perf_counter()
            fn()
            results[name]["runs_s"].append(time.perf_counter() - began)
    for r in results.values():
        r["median_s"] = statistics.median(r["runs_s"])
    return results


# --------------------------------------------------------------------------- report


def print_report(case: str, results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    floor = results["one pass (floor)"]["median_s"]
    bare = results["count(*)"]["median_s"]
    table = RichTable(title=f"{case}: audit of {meta['rows']:,} rows, 5 rules - PostgreSQL "
                            f"{meta['server_version']}, {meta['cpu_count']} cores "
                            f"(median of {REPEATS})")
    for header in ("variant", "median ms", "runs ms", "x floor", "x count(*)"):
        table.add_column(header, justify="left" if header == "variant" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['median_s'] * 1000:.0f}",
                      " / ".join(f"{s * 1000:.0f}" for s in r["runs_s"]),
                      f"{r['median_s'] / floor:.2f}", f"{r['median_s'] / bare:.2f}")
    out = Console()
    out.print(table)
    ratio = results["audit"]["median_s"] / floor
    target = TARGET_RATIO if case == "sparse" else TARGET_DENSE_RATIO
    verdict = "met" if ratio <= target else "MISSED"
    out.print(f"target ({case}) audit <= {target} x floor: {ratio:.2f} x ({verdict})")
    out.print(f"violations per rule: {results['audit']['counts']}")


def run_case(engine: Engine, declared: DeclaredRules, rows: int,
             dense: bool) -> tuple[float, dict[str, dict[str, Any]]]:
    console.log(f"building {TABLE} with {rows:,} rows ({'dense' if dense else 'sparse'})")
    build_s = build_table(engine, rows, dense)
    console.log("timing " + ", ".join(found := variants(engine, declared, dense)))
    results = time_variants(found)
    return build_s, results


def server_facts(engine: Engine) -> dict[str, Any]:
    version, number = exec_sql(engine, "SELECT version(), current_setting('server_version')")[0]
    return {"server_version": number, "version": version}


def run(url: str, rows: int, json_path: Path) -> int:
    engine = create_engine(url, pool_size=2)
    declared = rules_from_metadata(bench_metadata())
    try:
        meta: dict[str, Any] = {
            "rows": rows, "rules": len(declared.rules), "repeats": REPEATS, "sample": SAMPLE,
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "sqlalchemy": sqlalchemy.__version__,
            "alembic_integrity": alembic_integrity.__version__,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **server_facts(engine),
        }  # fmt: skip
        cases: dict[str, dict[str, dict[str, Any]]] = {}
        meta["build_seconds"] = {}
        for case in ("sparse", "dense"):
            meta["build_seconds"][case], cases[case] = run_case(engine, declared, rows,
                                                                dense=case == "dense")
            print_report(case, cases[case], meta)
        consistent = {case: r["audit"]["counts"] == r["one pass (floor)"]["counts"]
                      for case, r in cases.items()}
        ratios = {case: r["audit"]["median_s"] / r["one pass (floor)"]["median_s"]
                  for case, r in cases.items()}
        payload = {"meta": meta, "cases": cases, "audit_over_floor": ratios,
                   "target_ratio": TARGET_RATIO, "target_met": ratios["sparse"] <= TARGET_RATIO,
                   "target_dense_ratio": TARGET_DENSE_RATIO,
                   "target_dense_met": ratios["dense"] <= TARGET_DENSE_RATIO,
                   "counts_match_floor": consistent}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        console.log(f"wrote {json_path}")
        if not all(consistent.values()):
            console.log(f"audit counts differ from the floor's: {consistent}")
        return 0 if all(consistent.values()) else 1
    finally:
        with contextlib.suppress(Exception):
            exec_sql(engine, f"DROP TABLE IF EXISTS {TABLE}")
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"rows in the table (default {DEFAULT_ROWS:,})")
    parser.add_argument("--url", help="SQLAlchemy URL of an existing server to use; the table "
                                      f"{TABLE} is created and dropped (default: a throwaway "
                                      "PostgreSQL)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the figures (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    if args.rows < 10:
        parser.error("--rows must be at least 10")
    if args.url:
        return run(args.url, args.rows, args.json)
    with throwaway_postgres() as url:
        return run(url, args.rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
