"""What a verify run found: its steps, the report, and the report as JSON or JUnit XML."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any
from xml.etree import ElementTree

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
MAX_DETAILS = 30  # lines of a schema diff kept per step; the rest is counted
NOT_REQUIRED = "re-run not required"  # how a re-run exempted by the baseline rule is reported


@dataclass
class Step:
    """One check: a revision's upgrade, its re-run, a downgrade, the drift check..."""

    name: str
    kind: str  # heads | base | upgrade | rerun | data | drift | downgrade | reupgrade
    revision: str | None = None
    status: str = PASSED
    seconds: float = 0.0
    message: str = ""
    statement: str | None = None
    details: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""  # what Alembic / env.py printed, kept for failed steps

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def fail(self, message: str, details: Iterable[str] = ()) -> None:
        self.status = FAILED
        self.message = message
        self.details.extend(capped(list(details)))


@dataclass
class VerifyReport:
    config_path: str
    database: str = ""
    server: str = ""
    server_seconds: float | None = None
    seconds: float = 0.0
    heads: list[str] = field(default_factory=list)
    revisions: list[str] = field(default_factory=list)
    idempotent_since: str | None = None  # the re-run baseline in force, if any
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def failures(self) -> list[Step]:
        return [s for s in self.steps if s.status == FAILED]

    def step(self, kind: str, revision: str | None = None) -> Step | None:
        """The step of that kind (and revision), for tests that assert on one check."""
        return next((s for s in self.steps if s.kind == kind and s.revision == revision), None)

    def summary(self) -> str:
        counts = {status: sum(s.status == status for s in self.steps)
                  for status in (PASSED, FAILED, SKIPPED)}
        exempt = sum(s.kind == "rerun" and s.status == SKIPPED and NOT_REQUIRED in s.message
                     for s in self.steps)
        parts = [f"{counts[PASSED]} passed"]
        parts += [f"{counts[s]} {s}" for s in (FAILED, SKIPPED) if counts[s]]
        if exempt:  # say why, so skipped re-runs do not read as checks that could not run
            parts[-1] += f" ({plural(exempt, 're-run')} not required)"
        start = f", server start {self.server_seconds:.2f} s" if self.server_seconds else ""
        verdict = "OK" if self.ok else "FAILED"
        return f"verify {verdict}: {', '.join(parts)} in {self.seconds:.2f} s{start}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, exit_code=self.exit_code, summary=self.summary())
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def capped(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_DETAILS:
        return lines
    return [*lines[:MAX_DETAILS], f"... and {len(lines) - MAX_DETAILS} more"]


def junit_xml(report: VerifyReport) -> str:
    """JUnit XML, one testcase per step, for CI systems that show test results."""
    suite = ElementTree.Element("testsuite", {
        "name": "alembic-integrity verify",
        "tests": str(len(report.steps)),
        "failures": str(len(report.failures)),
        "errors": "0",
        "skipped": str(sum(s.status == SKIPPED for s in report.steps)),
        "time": f"{report.seconds:.3f}",
    })
    for step in report.steps:
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": f"alembic-integrity.verify.{step.kind}",
            "name": step.name,
            "time": f"{step.seconds:.3f}",
        })
        if step.status == FAILED:
            failure = ElementTree.SubElement(case, "failure", {"message": step.message})
            failure.text = "\n".join(_failure_lines(step))
        elif step.status == SKIPPED:
            ElementTree.SubElement(case, "skipped", {"message": step.message})
        if step.warnings:
            ElementTree.SubElement(case, "system-out").text = "\n".join(step.warnings)
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _failure_lines(step: Step) -> list[str]:
    lines = [step.message]
    if step.statement:
        lines += ["statement:", step.statement.strip()]
    lines += step.details
    return lines
