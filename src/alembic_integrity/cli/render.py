"""Render reports for people (a terminal table, Markdown for a CI run) and for programs (JSON).

One section per report kind; each has a table, a JSON and a Markdown renderer.

Audit JSON (``alembic-integrity audit --format json``), version 1
-----------------------------------------------------------------

A stable shape: fields may be added in a later version, none is renamed or
removed without raising ``version``::

    {
      "version": 1,
      "database": "postgresql+psycopg://app@db:5432/prod",   # the URL, password hidden
      "generated_at": "2025-01-31T12:00:00+00:00",            # ISO 8601, UTC
      "summary": {"rules": 12, "violations": 53, "problems": 1},
      "findings": [
        {
          "rule": "ck_invocation_image_output",   # constraint name; "table.column NOT NULL"
                                                  # for a NOT NULL rule
          "kind": "check",                # check | not_null | foreign_key | expectation
          "table": "invocation",          # the table's name, unquoted
          "schema": null,                 # its schema, or null for the search_path
          "state": "not_valid",           # absent | not_valid | valid | other_definition
                                          # | audit_only (an expectation)
          "violations": 24,               # rows that break the rule now
          "sample": [80, 100, 210],       # primary keys of the first violating rows, in key
                                          # order (at most --sample); a composite key is
                                          # one string "(1,2)"; no PK: the ctid "(0,1)"
          "key": ["id"],                  # the columns "sample" holds (["ctid"]: no PK)
          "detail": ""                    # a note on the state, e.g. the definition the
                                          # database has instead; "" when none
        }
      ],
      "problems": ["table gateway.x does not exist in schema 'gateway'; not audited: ..."]
    }

``summary.rules`` counts the audited rules (the findings); a rule that could
not be audited is a line in ``problems`` instead. Exit codes of the command:
0 no violations and no problems, 1 violations, 2 problems (or an error).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..audit.core import AuditReport, Finding
from ..repair import RepairResult, RuleOutcome
from ..repair.restore import RestoreResult

JSON_VERSION = 1
AUDIT_FORMATS = ("table", "json", "markdown")

_STATE_STYLE = {
    "valid": "green",
    "not_valid": "yellow",
    "absent": "red",
    "other_definition": "magenta",
    "audit_only": "cyan",
}


# --------------------------------------------------------------------------- shared


def sample_text(sample: list[Any], total: int) -> str:
    """Sample keys on one line; "..." says there are more than shown."""
    shown = ", ".join(str(key) for key in sample)
    return shown + (", ..." if total > len(sample) and sample else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _md_cell(value: object) -> str:
    """Markdown table cells: a pipe or a newline would break the row."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- audit


def audit_summary(report: AuditReport) -> str:
    return (f"{_plural(len(report.findings), 'rule')} audited, "
            f"{_plural(report.violations_total, 'violating row')}, "
            f"{_plural(len(report.problems), 'problem')}")


def needs_attention(finding: Finding) -> bool:
    """Violating rows, or a rule the database does not (fully) have yet."""
    return finding.violations > 0 or finding.state not in {"valid", "audit_only"}


def audit_table(report: AuditReport, show_all: bool = False) -> RenderableType:
    """The terminal view: a row per rule needing attention (all with ``show_all``), problems."""
    table = Table(title=f"audit of {escape(report.database)}", title_justify="left")
    for header in ("rule", "table", "kind", "state", "violations", "sample keys"):
        table.add_column(header, justify="right" if header == "violations" else "left",
                         overflow="fold")
    shown = [f for f in report.findings if show_all or needs_attention(f)]
    for finding in shown:
        table.add_row(*_audit_cells(finding))
    parts: list[RenderableType] = [table] if shown else []
    parts.append(Text(audit_summary(report)))
    if len(shown) < len(report.findings):
        parts.append(Text(f"{len(report.findings) - len(shown)} rule(s) valid with no "
                          "violating rows are not shown (--all shows them)", style="dim"))
    parts += [Text(f"problem: {line}", style="red") for line in report.problems]
    return Group(*parts)


def _audit_cells(finding: Finding) -> list[RenderableType]:
    state = Text(finding.state, style=_STATE_STYLE.get(finding.state, ""))
    count = Text(str(finding.violations), style="bold red" if finding.violations else "green")
    return [escape(finding.label), escape(str(finding.table)), finding.kind, state, count,
            escape(sample_text(finding.sample, finding.violations))]


def audit_dict(report: AuditReport) -> dict[str, Any]:
    """The JSON document described in this module's docstring."""
    return {
        "version": JSON_VERSION,
        "database": report.database,
        "generated_at": report.generated_at.isoformat(),
        "summary": {"rules": len(report.findings), "violations": report.violations_total,
                    "problems": len(report.problems)},
        "findings": [_finding_dict(f) for f in report.findings],
        "problems": list(report.problems),
    }


def _finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "rule": finding.label,
        "kind": finding.kind,
        "table": finding.table.name,
        "schema": finding.table.schema,
        "state": finding.state,
        "violations": finding.violations,
        "sample": [_json_key(k) for k in finding.sample],
        "key": list(finding.key_columns),
        "detail": finding.detail,
    }


def _json_key(key: Any) -> Any:
    """Numbers and strings as they are; anything else (uuid, date, ...) as its text."""
    return key if isinstance(key, int | float | str | bool) or key is None else str(key)


def audit_json(report: AuditReport) -> str:
    return json.dumps(audit_dict(report), indent=2, ensure_ascii=False) + "\n"


def audit_markdown(report: AuditReport) -> str:
    """A report to attach to a CI run: heading, summary, a table, problems."""
    lines = ["## Integrity audit", "",
             f"`{report.database}` at {report.generated_at:%Y-%m-%d %H:%M:%S %Z}: "
             f"**{audit_summary(report)}**.", ""]
    if report.findings:
        lines += ["| rule | table | kind | state | violations | sample keys |",
                  "|---|---|---|---|---:|---|"]
        lines += [_audit_md_row(f) for f in report.findings]
        lines.append("")
    if report.problems:
        lines += ["### Problems", ""] + [f"- {_md_cell(p)}" for p in report.problems] + [""]
    return "\n".join(lines)


def _audit_md_row(finding: Finding) -> str:
    cells = [finding.label, str(finding.table), finding.kind, finding.state,
             finding.violations, sample_text(finding.sample, finding.violations)]
    return "| " + " | ".join(_md_cell(c) for c in cells) + " |"


# --------------------------------------------------------------------------- repair


def print_repair(console: Console, result: RepairResult) -> None:
    print_with_footer(console, repair_view(result), result.to_text())


def print_restore(console: Console, result: RestoreResult) -> None:
    print_with_footer(console, restore_view(result), result.to_text())


def repair_view(result: RepairResult) -> RenderableType:
    """What each policy did (or would do) to each rule with violating rows, then who is left."""
    verb = "changed" if result.applied else "would change"
    title = "repair" if result.applied else "repair plan (dry run: nothing written)"
    table = Table(title=title, title_justify="left")
    for name in ("rule", "policy", verb, "cascaded", "refused", "ambiguous", "left"):
        table.add_column(name, justify="left" if name in ("rule", "policy") else "right",
                         overflow="fold")
    quiet = 0
    for rule in result.rules:
        if not rule.skipped and not rule.violating:
            quiet += 1
            continue
        for row in _repair_rows(rule):
            table.add_row(*row)
    parts: list[RenderableType] = [table]
    if quiet:
        parts.append(Text(f"{quiet} rule(s) with no violating rows are not shown", style="dim"))
    left = _left_for_person(result)
    if left is not None:
        parts.append(left)
    return Group(*parts)


def print_with_footer(console: Console, view: RenderableType, text: str) -> None:
    """The view, then the result's last line unwrapped: it holds a command to copy."""
    console.print(view)
    console.print(text.splitlines()[-1], markup=False, highlight=False, soft_wrap=True)


def _repair_rows(rule: RuleOutcome) -> list[list[str]]:
    label = escape(rule.rule)
    if rule.skipped:
        return [[label, escape(f"skipped: {rule.skipped}"), "", "", "", "", ""]]
    if not rule.policies:
        return [[label, "(no policy)", "0", "", "", "", str(rule.unmatched)]]
    return [[label, escape(p.description), str(p.changed), str(p.cascaded or ""),
             str(p.refused or ""), str(p.ambiguous or ""), str(p.left or "")]
            for p in rule.policies]


def _left_for_person(result: RepairResult) -> Table | None:
    left = [(rule.rule, reason, count, samples) for rule in result.rules
            for reason, count, samples in rule.left_reasons()]
    if not left:
        return None
    people = Table(title="left for a person", title_justify="left")
    for name in ("rule", "why", "rows", "examples (primary key)"):
        people.add_column(name, justify="right" if name == "rows" else "left", overflow="fold")
    for rule_name, reason, count, samples in left:
        more = ", ..." if count > len(samples) else ""
        people.add_row(escape(rule_name), escape(reason), str(count),
                       escape(", ".join(samples) + more))
    return people


# --------------------------------------------------------------------------- restore


def restore_view(result: RestoreResult) -> RenderableType:
    parts: list[RenderableType] = []
    if result.groups:
        table = Table(title=f"restore of repair {result.repair_id}", title_justify="left")
        for name in ("table", "action", "restored", "conflicts", "examples (primary key)"):
            table.add_column(name)
        for g in result.groups:
            more = ", ..." if g.conflicts > len(g.samples) else ""
            table.add_row(escape(g.table), g.action, str(g.restored), str(g.conflicts or ""),
                          escape(", ".join(g.samples) + more))
        parts.append(table)
    return Group(*parts)
