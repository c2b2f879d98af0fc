"""A declared rule compared with what the catalog has: same CHECK, same foreign key.

"Same" is decided by PostgreSQL's own normalisation, never by the text as typed,
and deciding it writes nothing (see :mod:`..pg.predicates`), so the audit,
drift, autogenerate and the operations' planning all compare the same way and
all run on a hot standby or as a read-only role.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from ..errors import CatalogError, PredicateError, first_line, sqlstate
from ..pg import predicates
from ..pg.catalog import (
    UNDEFINED_COLUMN,
    ConstraintState,
    ForeignKeyState,
    constraint,
    constraints,
    foreign_key_state,
    table_oid,
)
from ..pg.identifiers import TableName
from .kinds import CheckRule, ForeignKeyRule


def same_foreign_key_structure(live: ForeignKeyState, rule: ForeignKeyRule,
                               referent_oid: int | None, loose: bool = False) -> bool:
    """Same columns, referent, actions, MATCH type, DEFERRABLE and INITIALLY.

    ``loose``: only the columns and the referent, i.e. "the same foreign key,
    perhaps with other semantics" (to report it as another definition).
    """
    if not (live.columns == tuple(rule.columns) and live.referent_oid == referent_oid
            and live.referent_columns == tuple(rule.referent_columns)):
        return False
    return loose or (
        live.ondelete == rule.ondelete_code
        and live.onupdate == rule.onupdate_code
        and live.match == rule.match_code
        and live.deferrable == rule.is_deferrable
        and live.initially_deferred == rule.is_deferred
    )


def same_foreign_key(conn: Connection, state: ConstraintState, rule: ForeignKeyRule,
                     loose: bool = False) -> bool:
    if state.contype != "f":
        return False
    live = state.foreign_key or foreign_key_state(conn, state.oid)
    return same_foreign_key_structure(live, rule, table_oid(conn, rule.referent), loose)


def find_foreign_key(conn: Connection, oid: int, rule: ForeignKeyRule, loose: bool = False,
                     taken: frozenset[str] = frozenset()) -> ConstraintState | None:
    """A live FOREIGN KEY on the table with the rule's structure, whatever its name.

    The one named like the rule wins; ``taken`` names are never returned (a
    constraint another rule already claimed).
    """
    referent = table_oid(conn, rule.referent)
    found = [c for c in constraints(conn, oid, ["FOREIGN KEY"])
             if c.name not in taken and c.foreign_key is not None
             and same_foreign_key_structure(c.foreign_key, rule, referent, loose)]
    return next((c for c in found if c.name == rule.name), found[0] if found else None)


def normalized_live_checks(conn: Connection, table: TableName,
                           states: Sequence[ConstraintState]) -> dict[str, str | None]:
    """Live CHECKs' predicates as :func:`normalized_check` gives a rule's, by name."""
    checks = [s for s in states if s.contype == "c" and s.expression is not None]
    forms = predicates.normalize(conn, [(table, s.expression or "") for s in checks])
    return {s.name: f.text for s, f in zip(checks, forms, strict=True)}


def find_check(conn: Connection, oid: int, rule: CheckRule,
               taken: frozenset[str] = frozenset()) -> ConstraintState | None:
    """A live CHECK on the table with the rule's normalised definition, whatever its name."""
    wanted = normalized_check(conn, rule)
    live = [c for c in constraints(conn, oid, ["CHECK"]) if c.name not in taken]
    forms = normalized_live_checks(conn, rule.table, live)
    found = [c for c in live if forms.get(c.name) == wanted]
    return next((c for c in found if c.name == rule.name), found[0] if found else None)


def live_constraint(conn: Connection, oid: int, rule: CheckRule | ForeignKeyRule
                    ) -> ConstraintState | None:
    """The live constraint that stands for ``rule``: by name when the models name it,
    else by structure (FOREIGN KEY) or normalised definition (CHECK). For an
    unnamed FOREIGN KEY whose semantics changed, the one on the same columns
    and referent (its definition then differs)."""
    if rule.named:
        return constraint(conn, oid, rule.name)
    if isinstance(rule, ForeignKeyRule):
        return find_foreign_key(conn, oid, rule) or find_foreign_key(conn, oid, rule, loose=True)
    return find_check(conn, oid, rule)


def predicate_error(rule: CheckRule, failure: predicates.Normalized) -> PredicateError:
    """PostgreSQL's refusal of ``rule``'s predicate, as one line with what to do."""
    err = failure.error
    assert err is not None
    hint = ("; if a pending revision adds that column, this rule can only be checked "
            "after it (use repair=True on its ensure_* operation), else fix the condition"
            if sqlstate(err) == UNDEFINED_COLUMN else "; fix the condition text")
    return PredicateError(
        f"CHECK constraint {rule.name} on {rule.table}: PostgreSQL rejects the predicate "
        f"{rule.condition!r}: {first_line(err)}{hint}"
    )


def normalized_check(conn: Connection, rule: CheckRule) -> str:
    """``rule``'s predicate as PostgreSQL parses it; raises :class:`PredicateError`."""
    (found,) = predicates.normalize(conn, [(rule.table, rule.condition)])
    if found.text is None:
        raise predicate_error(rule, found)
    return found.text


@dataclass(frozen=True)
class CheckVerdict:
    """A CHECK rule against the live constraint of its name."""

    rule: CheckRule
    live: ConstraintState | None
    wanted: str  # the parsed predicate (for messages: without the wrapper)
    same: bool  # a CHECK with the same parsed predicate

    @property
    def shown_live(self) -> str:
        return self.live.definition if self.live is not None else ""


def _live_predicate(live: ConstraintState | None) -> str | None:
    return live.expression if live is not None and live.contype == "c" else None


def check_verdicts(conn: Connection,
                   pairs: Sequence[tuple[CheckRule, ConstraintState | None]], *,
                   parse_unmatched: bool = True) -> list[CheckVerdict | PredicateError]:
    """Compare many CHECK rules with their live constraints, in one statement per 64.

    A rule whose predicate PostgreSQL rejects gives a :class:`PredicateError`
    in its place; the others are still decided. A live predicate spelled
    exactly as wanted needs no parse. ``parse_unmatched=False`` skips parsing
    a wanted predicate that has no live CHECK to be compared with (the audit
    lets its counting statement parse it, and reports a refusal there).
    """
    items: list[tuple[TableName, str]] = []
    slots: list[tuple[int | None, int | None, bool]] = []  # wanted, live, same as typed
    for rule, live in pairs:
        theirs = _live_predicate(live)
        if theirs is not None and theirs in (rule.condition, f"({rule.condition})"):
            slots.append((None, None, True))
            continue
        wanted = None
        if parse_unmatched or theirs is not None:
            wanted = len(items)
            items.append((rule.table, rule.condition))
        if theirs is not None:
            items.append((rule.table, theirs))
        slots.append((wanted, len(items) - 1 if theirs is not None else None, False))
    results = predicates.normalize(conn, items)
    verdicts: list[CheckVerdict | PredicateError] = []
    for (rule, live), (wanted, live_at, typed_same) in zip(pairs, slots, strict=True):
        if wanted is None:
            verdicts.append(CheckVerdict(rule, live, rule.condition, typed_same))
        elif results[wanted].text is None:
            verdicts.append(predicate_error(rule, results[wanted]))
        else:
            same = live_at is not None and results[live_at].text == results[wanted].text
            verdicts.append(CheckVerdict(rule, live, results[wanted].shown, same))
    return verdicts


def check_verdict(conn: Connection, rule: CheckRule, live: ConstraintState | None
                  ) -> CheckVerdict:
    """One rule's :class:`CheckVerdict`; raises :class:`PredicateError` for a bad predicate."""
    (verdict,) = check_verdicts(conn, [(rule, live)])
    if isinstance(verdict, PredicateError):
        raise verdict
    return verdict


def other_kind_error(doing: str, name: str, table: object, wanted: str,
                     live: ConstraintState) -> CatalogError:
    """A same-name constraint of another kind is never replaced: say so and stop."""
    return CatalogError(
        f"{doing}: {table} already has a {live.kind} constraint named {name} "
        f"({live.definition}); it is not a {wanted} and is left as it is. Choose another "
        f"name, or drop it explicitly (op.ensure_constraint_dropped) if it should go"
    )
