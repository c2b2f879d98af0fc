"""Quoting and naming rules for PostgreSQL identifiers.

Names are always quoted by the dialect's preparer, never pasted, and checked
against PostgreSQL's 63-byte limit: the server silently truncates longer
names, which would make an idempotent operation look for a name that can
never exist.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..compat import pg_dialect
from ..errors import ConfigurationError

MAX_IDENTIFIER_BYTES = 63
_PREPARER = pg_dialect().identifier_preparer


def quote(name: str) -> str:
    """Quote one identifier if PostgreSQL needs it quoted, as PostgreSQL reads it.

    The dialect's preparer also doubles ``%`` for pyformat drivers; our literal SQL goes
    out verbatim (``pg.raw``) and text() escapes ``%`` itself, so that is undone here.
    """
    return str(_PREPARER.quote(name)).replace("%%", "%")


def check_length(name: str, what: str = "name") -> str:
    size = len(name.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        raise ConfigurationError(
            f"{what} {name!r} is {size} bytes; PostgreSQL keeps only the first "
            f"{MAX_IDENTIFIER_BYTES} bytes of a name. Choose a name of at most "
            f"{MAX_IDENTIFIER_BYTES} bytes (or use truncated_name())."
        )
    return name


def truncated_name(base: str, suffix: str = "") -> str:
    """A deterministic name of at most 63 bytes: ``base`` cut, plus a hash, plus suffix."""
    full = base + suffix
    if len(full.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return full
    digest = hashlib.sha1(full.encode("utf-8")).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode("utf-8")) - len(digest) - 1
    cut = base.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return f"{cut}_{digest}{suffix}"


@dataclass(frozen=True)
class TableName:
    """A table, with its schema if one was given (else the search path decides)."""

    name: str
    schema: str | None = None

    def __post_init__(self) -> None:
        check_length(self.name, "table name")
        if self.schema is not None:
            check_length(self.schema, "schema name")

    @property
    def sql(self) -> str:
        if self.schema:
            return f"{quote(self.schema)}.{quote(self.name)}"
        return quote(self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name
