"""Which revisions must survive being run twice: the re-run rule a project with history can adopt.

The rule, first match wins, for each revision:

1. the revision file says so itself, with a module-level ``idempotent = True``
   (the re-run is required) or ``idempotent = False`` (it is not: say why in a
   comment beside it);
2. a baseline is recorded, ``idempotent_since = <rev>`` in the
   ``[alembic_integrity]`` section of alembic.ini (or the pytest ini option
   ``alembic_integrity_idempotent_since``, which wins over it): that revision
   and its ancestors are history, and their re-run is not required; every other
   revision (whatever is written after the baseline, on any branch) must re-run;
3. no baseline: every revision must re-run (``idempotent_since = base`` says
   the same explicitly).

Revisions whose re-run is not required still get every other check (upgrade,
downgrade, upgrade again, drift); the report lists their re-run as skipped and
says why. ``verify --set-baseline`` records the current head as the baseline,
so a project adopting the tool gets exit 0 on day one if its migrations are
otherwise sound, and every revision written from then on must be re-runnable.
Why opt-outs are allowed at all: PostgreSQL runs each revision's DDL in one
transaction, so a plain ``op.create_table`` cannot be half applied; the re-run
guards against deployments re-run after a failure outside that transaction.
"""

from __future__ import annotations

import configparser
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..settings import SECTION
from .inputs import BASELINE, SettingError
from .report import NOT_REQUIRED

BASELINE_KEY = "idempotent_since"
MARKER = "idempotent"
BASE = "base"


@dataclass
class RerunPolicy:
    """Decides per revision whether its re-run is required, and says why when it is not."""

    baseline: str | None = None  # full revision id; None: every revision must re-run
    exempt: frozenset[str] = field(default_factory=frozenset)  # the baseline and its ancestors
    source: str = ""  # where the baseline was read, for the report

    def not_required(self, script: Any) -> str | None:
        """None when the re-run of ``script`` is required, else the reason it is not."""
        marker = getattr(getattr(script, "module", None), MARKER, None)
        if marker is True:
            return None
        if marker is False:
            return f"{NOT_REQUIRED}: the revision file sets {MARKER} = False"
        if script.revision in self.exempt:
            return (f"{NOT_REQUIRED}: at or before the baseline "
                    f"{BASELINE_KEY} = {self.baseline} ({self.source})")
        return None


def read_baseline(config: Any) -> str | None:
    """``idempotent_since`` from the ``[alembic_integrity]`` section of an Alembic Config."""
    section = config.get_section(SECTION) or {}
    value = str(section.get(BASELINE_KEY) or "").strip()
    return value or None


def policy(script_directory: Any, baseline: str | None, source: str) -> RerunPolicy:
    """The policy for ``baseline`` (a revision id, prefix, branch label, or ``base``)."""
    if baseline is None or baseline.strip().lower() == BASE:
        return RerunPolicy()
    from alembic.util import CommandError

    try:
        found = script_directory.get_revision(baseline.strip())
    except CommandError as err:
        found, problem = None, str(err)
    else:
        problem = "not a revision of this project"
    if found is None:
        raise SettingError(f"{BASELINE_KEY} = {baseline} ({source}): {problem}; use a "
                           "revision id or 'base' (verify --set-baseline records the head)",
                           BASELINE)
    revision = str(found.revision)
    exempt = frozenset(s.revision for s in script_directory.walk_revisions("base", revision))
    return RerunPolicy(revision, exempt, source)


def current_head(script_directory: Any) -> str:
    heads = list(script_directory.get_heads())
    if len(heads) != 1:
        raise ConfigurationError(
            f"--set-baseline needs exactly one head, the project has {len(heads)}"
            + (f" ({', '.join(heads)}); merge them first" if heads else ""))
    return str(heads[0])


_SECTION_LINE = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_KEY_LINE = re.compile(rf"^\s*{BASELINE_KEY}\s*[=:]")


def write_baseline(config_path: str | Path, revision: str) -> None:
    """Set ``idempotent_since = revision`` in alembic.ini, keeping every other line as it is.

    configparser would drop the file's comments, so the line is edited in the
    text: replaced where it is, else added under ``[alembic_integrity]``, else
    added with a new section at the end.
    """
    path = Path(config_path)
    text = _with_baseline(path.read_text(encoding="utf-8"), revision)
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_file(io.StringIO(text))  # never leave an alembic.ini that does not parse
    if parser.get(SECTION, BASELINE_KEY, fallback=None) != revision:
        raise ConfigurationError(f"could not record {BASELINE_KEY} in {path}; add "
                                 f"'{BASELINE_KEY} = {revision}' under [{SECTION}] by hand")
    path.write_text(text, encoding="utf-8")


def _with_baseline(text: str, revision: str) -> str:
    lines = text.splitlines(keepends=True)
    new = f"{BASELINE_KEY} = {revision}\n"
    section_at = None
    current = None
    for index, line in enumerate(lines):
        match = _SECTION_LINE.match(line)
        if match:
            current = match.group("name").strip()
            if current == SECTION:
                section_at = index
            continue
        if current == SECTION and _KEY_LINE.match(line):
            lines[index] = new
            return "".join(lines)
    if section_at is not None:
        lines.insert(section_at + 1, _COMMENT + new)
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"\n[{SECTION}]\n{_COMMENT}{new}")
    return "".join(lines)


_COMMENT = ("# Revisions up to this one (and its ancestors) need not survive a re-run;\n"
            "# every later revision must. Written by alembic-integrity verify --set-baseline.\n")

