"""The applied repair: preflight, the log and the repair record, then rule by rule."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import IntegrityError
from ..pg import raw
from ..pg.progress import ProgressCallback
from ..settings import Settings
from .batch import Batch
from .log import LogTables, TableInfo, exclusive, lit, run_short, transaction, translate
from .result import RepairResult, RuleOutcome
from .summary import summarise
from .tables import Target
from .targets import count_violations, has_violations


def preflight(conn: Connection, targets: Sequence[Target], log: LogTables) -> None:
    """Fail with one line before writing anything if this session cannot do the repair."""
    if raw.execute(conn, "SHOW transaction_read_only").scalar() == "on":
        raise IntegrityError(
            "repair --apply: this session is read-only (default_transaction_read_only is on, "
            "or the server is a standby); connect as a role that may write. Nothing was written"
        )
    missing = _missing_log_privileges(conn, log)
    for target in targets:
        for plan in target.plans():
            for granted, needed in plan.privileges():
                if not raw.execute(conn, f"SELECT {granted}").scalar():
                    missing.append(f"{needed} (for {plan.description} of {target.rule_id})")
    if missing:
        user = raw.execute(conn, "SELECT current_user").scalar()
        raise IntegrityError(f"repair --apply: permission denied: role {user} lacks "
                             f"{'; '.join(dict.fromkeys(missing))}. Nothing was written")


def _missing_log_privileges(conn: Connection, log: LogTables) -> list[str]:
    if log.exists(conn):
        create = raw.execute(conn, f"SELECT has_schema_privilege({lit(log.schema)}, 'CREATE')")
        images = [] if create.scalar() else [f"CREATE on schema {log.schema} (for the image "
                                             "tables of the repair log)"]
        return images + [f"{privilege} on {name}"
                for name, sql in ((log.label, log.log_sql),
                                  (f"{log.schema}.{log.runs_name}", log.runs_sql))
                for privilege in ("SELECT", "INSERT", "UPDATE")
                if not raw.execute(conn, f"SELECT has_table_privilege({lit(sql)}, "
                                         f"{lit(privilege)})").scalar()]
    schema_exists = raw.execute(conn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname "
                                      f"= {lit(log.schema)})").scalar()
    if schema_exists:
        ok = raw.execute(conn, f"SELECT has_schema_privilege({lit(log.schema)}, 'CREATE')")
        return [] if ok.scalar() else [f"CREATE on schema {log.schema} (for the repair log)"]
    ok = raw.execute(conn, "SELECT has_database_privilege(current_database(), 'CREATE')")
    return [] if ok.scalar() else ["CREATE on this database (to create the repair log schema "
                                   f"{log.schema})"]


def apply_all(conn: Connection, targets: Sequence[Target], log: LogTables,
              result: RepairResult, *, batch_size: int, settings: Settings,
              progress: ProgressCallback | None) -> None:
    """Probe, check privileges, then repair rule by rule; a no-op run writes nothing."""
    with transaction(conn, read_only=True):
        todo = {id(t) for t in targets if has_violations(conn, t)}
        total = sum(count_violations(conn, t) for t in targets if id(t) in todo) \
            if progress is not None and todo else None
    if not todo:
        result.rules += [RuleOutcome(t.rule_id, t.rule.kind, t.table.label) for t in targets]
        return
    preflight(conn, [t for t in targets if id(t) in todo], log)
    with exclusive(conn, log, "repair --apply"):
        run_short(conn, log.create_sql(), settings, f"creating the repair log {log.label}")
        _create_images(conn, [t for t in targets if id(t) in todo], log, settings)
        ids = sorted(t.rule_id for t in targets)
        result.repair_id, result.resumed = _repair_record(conn, log, ids, batch_size, settings)
        batch = Batch(conn, log, result.repair_id, batch_size, settings, progress,
                      resumed=result.resumed, total=total)
        if result.resumed:
            batch.analyze()  # before the first look-up of the log: its real size
        for target in targets:
            if id(target) in todo:
                result.rules.append(_apply_rule(conn, target, batch))
            else:
                result.rules.append(RuleOutcome(target.rule_id, target.rule.kind,
                                                target.table.label))
        summary = json.dumps(result.to_dict(), default=str)
        run_short(conn, f"UPDATE {log.runs_sql} SET status = 'done', finished_at = now(), "
                        f"summary = {raw.param('summary')}::jsonb "
                        f"WHERE repair_id = {result.repair_id}",
                  settings, "finishing the repair record", params={"summary": summary})


def _create_images(conn: Connection, targets: Sequence[Target], log: LogTables,
                   settings: Settings) -> None:
    """The image table of every table a plan writes, with the new-value columns of
    every column an update changes: DDL before the first batch, never inside one."""
    wanted: dict[int, tuple[TableInfo, set[str]]] = {}
    for target in targets:
        if target.table.pk:  # the summary looks rows up in it, whatever the policies
            wanted.setdefault(target.table.oid, (target.table, set()))
        for plan in target.plans():
            for table in plan.image_tables():
                _, columns = wanted.setdefault(table.oid, (table, set()))
                if table.oid == plan.table.oid:
                    columns.update(plan.changed_columns)
    for table, columns in wanted.values():
        run_short(conn, log.image_ddl(table, sorted(columns)), settings,
                  f"creating the image table of {table.label} in {log.schema}")


def _apply_rule(conn: Connection, target: Target, batch: Batch) -> RuleOutcome:
    batch.start_rule()
    for plan in target.plans():
        try:
            plan.apply(batch)
        except DBAPIError as err:
            raise translate(err, f"repair {target.rule_id}, {plan.description}") from err
    return summarise(conn, target, batch)


def _repair_record(conn: Connection, log: LogTables, ids: list[str], batch_size: int,
                   settings: Settings) -> tuple[int, bool]:
    """Resume a crashed repair of the same rules, else start a new one.

    We hold the log's advisory lock, so a record still ``running`` belongs to a
    process that died: its committed batches are complete, and each policy of the
    new run starts after the last key its batches logged.
    """
    rules = {"rules": json.dumps(ids)}
    found = run_short(conn, f"SELECT repair_id FROM {log.runs_sql} WHERE status = 'running' "
                            f"AND rules = {raw.param('rules')}::jsonb ORDER BY repair_id DESC "
                            "LIMIT 1", settings, "looking for an interrupted repair",
                      params=rules)
    if found:
        return int(found[0][0]), True
    created = run_short(conn, f"INSERT INTO {log.runs_sql} (rules, batch_size) VALUES "
                              f"({raw.param('rules')}::jsonb, {int(batch_size)}) "
                              "RETURNING repair_id", settings, "starting the repair record",
                        params=rules)
    return int(created[0][0]), False
