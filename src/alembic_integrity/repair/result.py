"""What a repair did, or in a dry run would do: per rule, per policy, and what is left.

:class:`RepairResult` holds one :class:`RuleOutcome` per rule, each with one
:class:`PolicyOutcome` per policy; it renders as text (the CLI), as a dict
(``--json``, the repair record's summary) and as Markdown (``--report``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .log import DEFAULT_LOG_TABLE, SAMPLE, format_key

NO_POLICY = "no policy"
STILL_VIOLATES = "changed by its policy but still breaks the rule"


@dataclass
class PolicyOutcome:
    """What one policy of one rule did (or, in a dry run, would do)."""

    index: int
    kind: str
    description: str
    changed: int = 0
    cascaded: int = 0
    refused: int = 0
    ambiguous: int = 0
    left: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def for_person(self) -> int:
        return self.refused + self.ambiguous + self.left

    def add(self, action: str, note: str | None, count: int, samples: Iterable[str] = ()) -> None:
        if action in ("update", "delete", "quarantine"):
            self.changed += count
        elif action == "cascade":
            self.cascaded += count
        else:
            setattr(self, action, getattr(self, action) + count)
            reason = note or action
            self.reasons[reason] = self.reasons.get(reason, 0) + count
            kept = self.samples.setdefault(reason, [])
            kept.extend(list(samples)[: SAMPLE - len(kept)])

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "policy": self.description, "kind": self.kind,
                "changed": self.changed, "cascaded": self.cascaded, "refused": self.refused,
                "ambiguous": self.ambiguous, "left": self.left, "reasons": self.reasons,
                "samples": self.samples}


@dataclass
class RuleOutcome:
    """One rule: its violating rows, per policy, and what is left for a person."""

    rule: str
    kind: str
    table: str
    violating: int = 0
    policies: list[PolicyOutcome] = field(default_factory=list)
    unmatched: int = 0
    unmatched_samples: list[str] = field(default_factory=list)
    still_violating: int = 0
    still_samples: list[str] = field(default_factory=list)
    remaining: int | None = None
    skipped: str | None = None

    @property
    def for_person(self) -> int:
        return sum(p.for_person for p in self.policies) + self.unmatched + self.still_violating

    @property
    def changed(self) -> int:
        return sum(p.changed + p.cascaded for p in self.policies)

    def left_reasons(self) -> list[tuple[str, int, list[str]]]:
        """(reason, rows, sample keys) for every row left for a person."""
        found = [(f"{p.kind} #{p.index + 1}: {reason}", count, p.samples.get(reason, []))
                 for p in self.policies for reason, count in p.reasons.items()]
        if self.unmatched:
            found.append((NO_POLICY, self.unmatched, self.unmatched_samples))
        if self.still_violating:
            found.append((STILL_VIOLATES, self.still_violating, self.still_samples))
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "table": self.table,
                "violating": self.violating, "policies": [p.to_dict() for p in self.policies],
                "unmatched": self.unmatched, "unmatched_samples": self.unmatched_samples,
                "still_violating": self.still_violating, "still_samples": self.still_samples,
                "remaining": self.remaining, "skipped": self.skipped,
                "for_person": self.for_person}


@dataclass
class RepairResult:
    """A dry run's plan or an applied repair's summary; ``repair_id`` is for ``restore``."""

    applied: bool
    log_table: str
    rules: list[RuleOutcome] = field(default_factory=list)
    repair_id: int | None = None
    resumed: bool = False

    @property
    def for_person(self) -> int:
        return sum(r.for_person for r in self.rules)

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.rules)

    @property
    def exit_code(self) -> int:
        """As the audit's: 2 when a rule could not be repaired at all (its table or column
        is missing, or unreadable), 1 when rows are (or would be) left for a person, else 0."""
        if any(rule.skipped for rule in self.rules):
            return 2
        return 1 if self.for_person else 0

    @property
    def restore_command(self) -> str | None:
        if self.repair_id is None:
            return None
        extra = "" if self.log_table == DEFAULT_LOG_TABLE else f" --log-table {self.log_table}"
        return f"alembic-integrity restore {self.repair_id}{extra}"

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "repair_id": self.repair_id, "resumed": self.resumed,
                "log_table": self.log_table, "changed": self.changed,
                "for_person": self.for_person, "restore": self.restore_command,
                "rules": [r.to_dict() for r in self.rules]}

    def to_text(self) -> str:
        verb = "changed" if self.applied else "would change"
        lines = []
        for rule in self.rules:
            if rule.skipped:
                lines.append(f"{rule.rule}: skipped ({rule.skipped})")
                continue
            lines.append(f"{rule.rule}: {rule.violating} violating row(s)")
            for p in rule.policies:
                cascade = f" (+{p.cascaded} referencing rows)" if p.cascaded else ""
                lines.append(f"  {p.index + 1}. {p.description}: {verb} {p.changed}{cascade}, "
                             f"refused {p.refused}, ambiguous {p.ambiguous}, left {p.left}")
            for reason, count, samples in rule.left_reasons():
                lines.append(f"  left for a person: {count} ({reason}){_keys(samples, count)}")
        lines.append(self._footer())
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The ``--report FILE.md`` text: rows repaired per rule and policy, then what is left."""
        title = "Repair report" if self.applied else "Repair plan (dry run: nothing written)"
        out = [f"# {title}", ""]
        if self.repair_id is not None:
            out += [f"Repair id **{self.repair_id}**" + (" (resumed)" if self.resumed else "")
                    + f"; log `{self.log_table}`; undo with `{self.restore_command}`.", ""]
        out += [f"- rows {'changed' if self.applied else 'to change'}: {self.changed}",
                f"- rows left for a person: {self.for_person}", "",
                "## Rows repaired per rule and policy", "",
                "| rule | table | policy | changed | cascaded | refused | ambiguous | left |",
                "|---|---|---|---:|---:|---:|---:|---:|"]
        for rule in self.rules:
            if rule.skipped:
                out.append(f"| {_md(rule.rule)} | {_md(rule.table)} | skipped: "
                           f"{_md(rule.skipped)} | | | | | |")
            for p in rule.policies:
                out.append(f"| {_md(rule.rule)} | {_md(rule.table)} | {_md(p.description)} | "
                           f"{p.changed} | {p.cascaded} | {p.refused} | {p.ambiguous} | {p.left} |")
            if not rule.policies and not rule.skipped:
                out.append(f"| {_md(rule.rule)} | {_md(rule.table)} | (none) | 0 | 0 | 0 | 0 "
                           f"| {rule.unmatched} |")
        out += ["", "## Rows left for a person", ""]
        left = [(rule, reason, count, samples) for rule in self.rules
                for reason, count, samples in rule.left_reasons()]
        if not left:
            out.append("None.")
        else:
            out += ["| rule | why | rows | examples (primary key) |", "|---|---|---:|---|"]
            out += [f"| {_md(rule.rule)} | {_md(reason)} | {count} | "
                    f"{_md(', '.join(samples))}{', ...' if count > len(samples) else ''} |"
                    for rule, reason, count, samples in left]
        return "\n".join(out) + "\n"

    def _footer(self) -> str:
        if not self.applied:
            return f"dry run: nothing written; {self.for_person} row(s) would be left for a person"
        if self.repair_id is None:
            return "nothing to repair; nothing written"
        return (f"repair {self.repair_id}{' (resumed)' if self.resumed else ''}: "
                f"{self.changed} row(s) changed, {self.for_person} left for a person; "
                f"undo with: {self.restore_command}")


def _keys(samples: Sequence[str], count: int) -> str:
    if not samples:
        return ""
    return ": " + ", ".join(samples) + (", ..." if count > len(samples) else "")


def _md(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def key_samples(keys: Sequence[Any] | None, details: Sequence[str | None] | None) -> list[str]:
    details = list(details or [])
    out = []
    for i, key in enumerate(keys or []):
        detail = details[i] if i < len(details) else None
        out.append(format_key(key) + (f" ({detail})" if detail else ""))
    return out
