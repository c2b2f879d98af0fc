"""How long DDL may wait for locks, how it escalates, how long VALIDATE may run.

Resolution order: keyword arguments of the operation, then the
``[alembic_integrity]`` section of ``alembic.ini``, then the defaults below.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import ConfigurationError

SECTION = "alembic_integrity"
# Keys of the same section read by verify, not by the operations (see verify/baseline.py).
VERIFY_KEYS = frozenset({"idempotent_since"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min)?\s*$")
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "min": 60000.0, None: 1.0}


@dataclass(frozen=True)
class Settings:
    """Lock and retry budget of the toolkit's DDL (and of the repair's batches).

    Durations are milliseconds. Before each attempt the toolkit looks at
    ``pg_locks``: while a session that has been in its transaction longer than
    ``lock_timeout_ms`` holds (or waits for) a conflicting lock on a table the
    step needs, it does not ask for the lock at all, so writers never queue
    behind it; it looks again after a pause. Attempts run under a short
    ``lock_timeout`` that only guards the race between the look and the lock:
    ``lock_timeout_ms`` for the first, doubled after each timed-out attempt up to
    ``lock_timeout_max_ms`` (GitLab's escalation, bounded so no attempt can make
    writers wait longer than that). The pause before look *k* is
    ``backoff_ms * 2**k`` capped at ``backoff_max_ms``, with +-25 % jitter so
    that two deploys do not look in step. A step gives up after ``retries``
    timed-out attempts beyond the first, or when ``lock_wait_ms`` has passed
    without getting its locks; the error names the blocking sessions.
    ``validate_statement_timeout_ms`` 0 means VALIDATE may scan as long
    as it needs (it holds only SHARE UPDATE EXCLUSIVE, which writers ignore).
    ``ddl_statement_timeout_ms`` bounds each short DDL step (lock wait included):
    those steps never scan, so hitting it means something would have held a
    strong lock for long, and stopping is the safe answer.
    """

    lock_timeout_ms: int = 50
    lock_timeout_max_ms: int = 200
    lock_wait_ms: int = 60000
    retries: int = 10
    backoff_ms: int = 20
    backoff_max_ms: int = 500
    validate_statement_timeout_ms: int = 0
    ddl_statement_timeout_ms: int = 5000

    def delay_s(self, attempt: int) -> float:
        base = min(self.backoff_ms * (2**min(attempt, 30)), self.backoff_max_ms)
        return float(base * random.uniform(0.75, 1.25) / 1000.0)

    def attempt_lock_timeout_ms(self, failed: int) -> int:
        """``lock_timeout`` of the attempt after ``failed`` timed-out ones: doubled, capped."""
        ceiling = max(self.lock_timeout_max_ms, self.lock_timeout_ms)
        return int(min(self.lock_timeout_ms * (2**min(failed, 30)), ceiling))

    def merged(self, overrides: Mapping[str, Any]) -> Settings:
        known = {f.name: f.name for f in fields(self)}
        aliases = {name.removesuffix("_ms"): name for name in known}
        values: dict[str, int] = {}
        for key, raw in overrides.items():
            if raw is None:
                continue
            target = known.get(key) or aliases.get(key)
            if target is None:
                raise ConfigurationError(
                    f"unknown alembic_integrity setting {key!r}; known: "
                    + ", ".join(sorted(aliases))
                )
            values[target] = parse_value(target, raw)
        return replace(self, **values)


def parse_value(name: str, raw: Any) -> int:
    """A setting's value in ms (or a count): ``500``, ``500ms``, ``2s``, ``1min``."""
    if isinstance(raw, bool):
        raise ConfigurationError(f"setting {name} must be a number, not {raw!r}")
    if isinstance(raw, int | float):
        value = float(raw)
    else:
        match = _DURATION.match(str(raw))
        if not match:
            raise ConfigurationError(
                f"setting {name}={raw!r} is not a number or duration such as 500ms or 2s"
            )
        unit = match.group(2)
        if name == "retries" and unit:
            raise ConfigurationError(f"setting retries={raw!r} must be a plain count")
        value = float(match.group(1)) * _UNIT_MS[unit]
    if value < 0:
        raise ConfigurationError(f"setting {name}={raw!r} must not be negative")
    return int(value)


def from_ini(config: Any | None) -> dict[str, str]:
    """The ``[alembic_integrity]`` section of an Alembic ``Config``, if it has one."""
    if config is None:
        return {}
    section = config.get_section(SECTION) or {}
    skipped = set(config.file_config.defaults()) | VERIFY_KEYS  # defaults: %(here)s, ...
    return {key: value for key, value in section.items() if key not in skipped}


def resolve(config: Any | None = None, **overrides: Any) -> Settings:
    return Settings().merged(from_ini(config)).merged(overrides)
