"""The main job: the four reference scenarios, end to end, on a throwaway PostgreSQL.

Legacy schema, dirty data with the incidents' numbers, the audit, the repair
plan, the repair, a restore shown to put every row back, the repair again,
production's hand-made CHECK with the older predicate, a person's logged
decisions for what the policies leave, ``alembic upgrade head`` (which
replaces that CHECK), the same revisions again (nothing to do), and a clean
pre-flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from ..audit.core import audit
from ..audit.preflight import preflight
from ..cli import render
from ..pg import database, raw
from ..pg.throwaway import ThrowawayServer
from ..repair import RepairResult, repair
from ..repair.restore import restore
from ..rules.metadata import DeclaredRules, metadata_from_alembic, rules_from_metadata
from . import datagen, decisions


@dataclass
class Demo:
    console: Console
    config_path: Path
    rows: int
    timings: list[tuple[str, float]] = field(default_factory=list)
    step_no: int = 0

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.step_no += 1
        self.console.rule(f"[bold]{self.step_no}. {title}", align="left")
        started = time.perf_counter()
        yield
        self.timings.append((title, time.perf_counter() - started))

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def show_repair(self, result: RepairResult) -> None:
        render.print_repair(self.console, result)


def run(config_path: Path, rows: int, url: str | None, console: Console) -> int:
    demo = Demo(console, config_path, rows)
    if url is not None:
        return _story(demo, url)
    with ThrowawayServer() as server:
        with demo.step("Start a throwaway PostgreSQL"):
            demo.say(f"{database.shown(server.url)} ({server.mode}, first query after "
                     f"{server.startup_seconds:.2f} s)")
        demo.timings[-1] = (demo.timings[-1][0], server.startup_seconds or 0.0)
        return _story(demo, server.url)


def _story(demo: Demo, url: str) -> int:
    cfg = _alembic_config(demo.config_path, url)
    engine = database.connect(url)
    try:
        with _show_migration_log(demo.console):
            return _chapters(demo, cfg, engine)
    finally:
        engine.dispose()
        _print_timings(demo)


def _chapters(demo: Demo, cfg: Config, engine: Engine) -> int:
    declared = rules_from_metadata(metadata_from_alembic(str(demo.config_path)))
    with demo.step("Legacy schema: alembic upgrade 0001 (the tables as the systems had them)"):
        command.upgrade(cfg, "0001")
    with demo.step(f"Data: {demo.rows:,} clean rows around the scenarios' incidents"):
        _load(demo, engine)
    with demo.step("Audit: each declared rule's state and the rows that break it"):
        demo.console.print(render.audit_table(audit(engine, declared)))
    with demo.step("Repair plan (dry run: nothing is written)"):
        demo.show_repair(repair(engine, declared))
    _repair_and_restore(demo, engine, declared)
    with demo.step("Meanwhile, in production, someone adds the scenario 3 CHECK by hand"):
        with engine.begin() as conn:
            datagen.insert_hand_patched_constraint(conn)
        demo.say("ck_routing_outcomes_inference_linked, NOT VALID, with the older predicate "
                 "decision_rule <> 'cheapest_clearing_floor' OR inference_id IS NOT NULL")
    with demo.step("A person decides what the policies left (reference/decisions.py)"):
        _decide(demo, engine, declared)
    with demo.step("alembic upgrade head"):
        command.upgrade(cfg, "head")
    with demo.step("The same revisions again, as if never recorded "
                   "(alembic stamp 0001 && alembic upgrade head)"):
        command.stamp(cfg, "0001", purge=True)
        command.upgrade(cfg, "head")
    with demo.step("Pre-flight at head: would any VALIDATE fail?"):
        final = preflight(engine, declared)
        demo.console.print(render.audit_table(final.final))
        demo.say("clean: nothing would fail" if final.exit_code == 0 else "NOT clean")
    return final.exit_code


def _load(demo: Demo, engine: Engine) -> None:
    with engine.begin() as conn:
        manifest = datagen.generate(conn, rows=demo.rows, dirty=True)
    table = Table("incident planted", "rows", title="planted", title_justify="left")
    for kind, count in manifest.summary().items():
        table.add_row(kind, f"{count:,}")
    demo.console.print(table)
    seqs = sorted(_sequence_numbers(engine, manifest.failed_invocations))
    demo.say(f"failed SDXLTurbo invocations' sequence numbers: {', '.join(map(str, seqs))}")


def _sequence_numbers(engine: Engine, ids: list[int]) -> list[int]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(
            "SELECT sequence_number FROM invocation WHERE id = ANY(%(ids)s)", {"ids": ids}
        ).scalars())


def _repair_and_restore(demo: Demo, engine: Engine, declared: DeclaredRules) -> None:
    before = table_checksums(engine)
    with demo.step("Repair (--apply): every changed row's before-image is logged first"):
        first = repair(engine, declared, apply=True)
        demo.show_repair(first)
        assert first.repair_id is not None, "an applied repair always has an id"
    with demo.step(f"Restore repair {first.repair_id}, compare every table with before"):
        restored = restore(engine, first.repair_id)
        same = table_checksums(engine) == before
        demo.say(f"{restored.restored} row(s) put back, {restored.conflicts} conflict(s); "
                 f"all {len(before)} tables identical to before the repair: "
                 f"{'yes' if same else 'NO'}")
    with demo.step("Repair again, for real"):
        demo.show_repair(repair(engine, declared, apply=True))


def _decide(demo: Demo, engine: Engine, declared: DeclaredRules) -> None:
    with engine.begin() as conn:
        decisions.prepare(conn)
    rules = decisions.decisions(declared)
    for name in decisions.decision_names():
        demo.show_repair(repair(engine, rules, apply=True, rules=[name]))


def table_checksums(engine: Engine) -> dict[str, str]:
    """An md5 of every reference table's full contents, to prove a restore exact."""
    with engine.connect() as conn:
        tables = raw.execute(conn,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname IN ('public', 'gateway') AND tablename <> 'alembic_version' "
            "AND tablename NOT LIKE '%quarantine' ORDER BY 1").scalars().all()
        return {t: raw.execute(conn,
            f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM {t} x"
        ).scalar_one() for t in tables}


def _alembic_config(config_path: Path, url: str) -> Config:
    cfg = Config(str(config_path))
    cfg.attributes["configure_logger"] = False
    cfg.attributes["url"] = url
    return cfg


class _ConsoleHandler(logging.Handler):
    BOILERPLATE = ("Context impl", "Will assume", "Generating static SQL")

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith(self.BOILERPLATE):
            self.console.print("    " + message, markup=False, highlight=False)


@contextmanager
def _show_migration_log(console: Console) -> Iterator[None]:
    """What each migration step did, from Alembic's and the operations' own logs."""
    handler = _ConsoleHandler(console)
    loggers: list[Any] = [logging.getLogger("alembic_integrity"),
                          logging.getLogger("alembic.runtime.migration")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)


def _print_timings(demo: Demo) -> None:
    table = Table("step", "seconds", title="time per step", title_justify="left")
    for title, seconds in demo.timings:
        table.add_row(title, f"{seconds:.2f}")
    demo.console.print(table)
