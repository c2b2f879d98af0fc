"""Take a lock only when no long transaction is in the way, so writers never queue.

PostgreSQL grants locks in arrival order: once our ``ALTER TABLE`` waits for
its lock behind a long report query, every writer that arrives after it
waits behind *us*, for as long as we wait. ``lock_timeout`` alone bounds that
stall per attempt but does not avoid it. So, before each attempt, we *look*
(``pg_locks`` joined to ``pg_stat_activity``, one query that takes no lock on
the tables): if a session that has been in its transaction longer than the
short ``lock_timeout`` holds a lock that conflicts with the one the step needs,
or a session is already queued for one, we do not ask at all; we pause and
look again. Holders younger than that are not waited out: on a table busy
with many short transactions each of them ends within milliseconds, so we
attempt at once and get the lock promptly. The attempt itself runs under that
short ``lock_timeout``, which only guards the race between the look and the
lock (a long transaction that started just after we looked). Timed-out
attempts escalate ``lock_timeout`` up to ``lock_timeout_max`` and pauses grow
up to ``backoff_max``, as GitLab's ``with_lock_retries`` does; when the budget
is spent the error names the sessions in the way (pid, what they hold, for how
long, their query).

Who is "long" is known from ``pg_stat_activity.xact_start`` when this role may
see the session (its own sessions; every session for superusers and members
of ``pg_read_all_stats``). For sessions it may not see, we measure from our
own looks: a holder seen in the same transaction (``virtualtransaction``) for
longer than ``lock_timeout`` is long, and before attempting past a holder we
could not age, we look once more.

Both the DDL steps of the operations and the repair's batches run through
:func:`with_lock_retries`; callers that declare no relations get the short,
escalating ``lock_timeout`` and the retries, without the look.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import LockRetriesExhausted, sqlstate
from ..settings import Settings
from .catalog import RelationLock, relation_locks
from .identifiers import TableName

log = logging.getLogger("alembic_integrity")

LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"
RETRYABLE = frozenset({LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED})

T = TypeVar("T")

ACCESS_SHARE = "AccessShareLock"
ROW_SHARE = "RowShareLock"
ROW_EXCLUSIVE = "RowExclusiveLock"
SHARE_UPDATE_EXCLUSIVE = "ShareUpdateExclusiveLock"
SHARE = "ShareLock"
SHARE_ROW_EXCLUSIVE = "ShareRowExclusiveLock"
EXCLUSIVE = "ExclusiveLock"
ACCESS_EXCLUSIVE = "AccessExclusiveLock"

# PostgreSQL's table-level conflict matrix (docs: "Explicit Locking"), symmetric.
_CONFLICTS: dict[str, frozenset[str]] = {
    ACCESS_SHARE: frozenset({ACCESS_EXCLUSIVE}),
    ROW_SHARE: frozenset({EXCLUSIVE, ACCESS_EXCLUSIVE}),
    ROW_EXCLUSIVE: frozenset({SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}),
    SHARE_UPDATE_EXCLUSIVE: frozenset({SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE,
                                       EXCLUSIVE, ACCESS_EXCLUSIVE}),
    SHARE: frozenset({ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE,
                      ACCESS_EXCLUSIVE}),
    SHARE_ROW_EXCLUSIVE: frozenset({ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE,
                                    SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}),
    EXCLUSIVE: frozenset({ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE,
                          SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}),
    ACCESS_EXCLUSIVE: frozenset({ACCESS_SHARE, ROW_SHARE, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE,
                                 SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE}),
}

_QUERY_SHOWN = 120  # characters of a blocker's query in the error


def conflicts(held: str, wanted: str) -> bool:
    """Whether a lock in mode ``held`` (or queued for it) makes ``wanted`` wait.

    Modes outside the table-level eight (there are none on relations) never conflict.
    """
    return held in _CONFLICTS.get(wanted, frozenset())


@dataclass(frozen=True)
class LockNeed:
    """A relation a step locks, and in which mode (as ``pg_locks.mode`` spells it).

    ``relation`` is a table name, or an oid when only that is known (the
    referent of a live foreign key). Its partitions and inheritance children
    are looked at too: ``ALTER TABLE`` recurses into them.
    """

    relation: TableName | int
    mode: str


@dataclass(frozen=True)
class Blocker:
    """A session that makes us wait: it holds a conflicting lock, or is queued for one."""

    pid: int | None
    relation: str
    mode: str
    granted: bool
    age_s: float | None
    state: str | None
    query: str | None
    backend_type: str | None

    def describe(self) -> str:
        """One line for a person: who, what, how long, and the query when visible."""
        who = f"pid {self.pid}" if self.pid is not None else "a prepared transaction"
        if self.backend_type and self.backend_type != "client backend":
            who += f" ({self.backend_type})"
        what = "holds" if self.granted else "is queued for"
        age = "" if self.age_s is None else f" for {self.age_s:.1f} s"
        text = f"{who} {what} {self.mode} on {self.relation}{age}"
        if self.query is None:
            return text + " (query not visible to this role: it needs pg_read_all_stats)"
        query = " ".join(self.query.split())
        if len(query) > _QUERY_SHOWN:
            query = query[:_QUERY_SHOWN - 3] + "..."
        state = f"{self.state}, " if self.state else ""
        return f"{text} ({state}query: {query})"


@dataclass
class LockLook:
    """The looks of one step: which relations in which modes, and who we saw when."""

    conn: Connection
    needs: Sequence[LockNeed]
    long_s: float
    first_seen: dict[tuple[str, str, str, bool], float] = field(default_factory=dict)
    looks: int = 0
    last_look: float | None = None

    def relations(self) -> list[TableName | int]:
        out: list[TableName | int] = []
        for need in self.needs:
            if need.relation not in out:
                out.append(need.relation)
        return out

    def in_the_way(self) -> list[set[str]]:
        """Per relation, the modes that conflict with what the step wants there."""
        relations = self.relations()
        out: list[set[str]] = [set() for _ in relations]
        for need in self.needs:
            out[relations.index(need.relation)] |= _CONFLICTS.get(need.mode, frozenset())
        return out

    def rows(self) -> list[RelationLock]:
        return relation_locks(self.conn, self.relations(), self.in_the_way())

    def look(self) -> tuple[list[Blocker], list[Blocker]]:
        """(sessions in the way for long, sessions in the way we could not age yet)."""
        self.looks += 1
        now = time.monotonic()
        # A hidden holder new since a look made moments ago began after that look: young.
        recent = self.last_look is not None and now - self.last_look <= 2 * self.long_s + 0.05
        self.last_look = now
        seen: dict[tuple[str, str, str, bool], float] = {}
        long: list[Blocker] = []
        unknown: list[Blocker] = []
        for row in self.rows():
            key = (row.vxid, row.relation, row.mode, row.granted)
            seen[key] = self.first_seen.get(key, now)
            observed = now - seen[key]
            age = _age(row, observed)
            blocker = Blocker(row.pid, row.relation, row.mode, row.granted, age, row.state,
                              row.query, row.backend_type)
            if _is_long(row, age, observed, self.long_s):
                long.append(blocker)
            elif _hidden(row) and key not in self.first_seen and not recent:
                unknown.append(blocker)
        self.first_seen = seen
        return long, unknown

    def everyone(self) -> list[Blocker]:
        """Every session in the way now, long or not: for the final error."""
        long, unknown = self.look()
        if long or unknown:
            return long + unknown
        return [Blocker(r.pid, r.relation, r.mode, r.granted, r.xact_age, r.state, r.query,
                        r.backend_type) for r in self.rows()]


def _age(row: RelationLock, observed: float) -> float | None:
    """The longest age we know for this lock: its transaction's, or since we first saw it."""
    known = row.xact_age if row.granted or row.wait_age is None else row.wait_age
    if known is None:
        return observed if observed > 0 else None
    return max(known, observed)


def _hidden(row: RelationLock) -> bool:
    return row.xact_age is None


def _is_long(row: RelationLock, age: float | None, observed: float, long_s: float) -> bool:
    """A holder in an old transaction, or a waiter queued long or behind an old transaction.

    A prepared transaction (no pid) holds its locks until someone commits it: long.
    """
    if row.pid is None:
        return True
    if age is not None and age > long_s:
        return True
    return not row.granted and row.blocker_age is not None and row.blocker_age > long_s


def is_lock_error(err: BaseException) -> bool:
    return sqlstate(err) in RETRYABLE


def with_lock_retries(attempt: Callable[[int], T], settings: Settings, doing: str, *,
                      conn: Connection | None = None, needs: Sequence[LockNeed] = (),
                      hint: str = "") -> tuple[T, int]:
    """``attempt(lock_timeout_ms)`` once nothing long is in the way; its result and tries.

    ``attempt`` must run one whole transaction under ``SET LOCAL lock_timeout``
    with the value it is given, and leave none open when it raises. ``conn``
    (in autocommit mode, outside any transaction) is where we look at
    ``pg_locks`` for ``needs``. Raises :class:`LockRetriesExhausted` (with
    ``hint`` appended) when ``settings.lock_wait_ms`` passes or the retries run
    out; any error that is not a lock timeout or deadlock is raised at once.
    """
    looker = LockLook(conn, needs, settings.lock_timeout_ms / 1000.0) \
        if conn is not None and needs else None
    deadline = time.monotonic() + settings.lock_wait_ms / 1000.0
    failed = pauses = 0
    reported: set[int | None] = set()
    while True:
        if looker is not None:
            long, unknown = looker.look()
            if long or unknown:
                if time.monotonic() >= deadline:
                    raise _exhausted(doing, settings, failed, long or unknown, hint,
                                     waited=True)
                new = {b.pid for b in long} - reported
                if new:
                    reported |= new
                    log.info("  %s: waiting, not queueing: %s", doing,
                             "; ".join(b.describe() for b in long))
                pause = settings.lock_timeout_ms / 1000.0 if not long else \
                    settings.delay_s(pauses)
                time.sleep(min(pause, max(0.0, deadline - time.monotonic()) + 0.001))
                pauses += 1
                continue
        lock_timeout = settings.attempt_lock_timeout_ms(failed)
        try:
            return attempt(lock_timeout), failed + 1
        except DBAPIError as err:
            if not is_lock_error(err):
                raise
            failed += 1
            if failed > settings.retries or time.monotonic() >= deadline:
                blockers = looker.everyone() if looker is not None else []
                raise _exhausted(doing, settings, failed, blockers, hint,
                                 waited=False) from err
            delay = settings.delay_s(pauses)
            pauses += 1
            log.info("  %s: lock not granted within lock_timeout=%dms (attempt %d of %d), "
                     "looking again in %.2fs", doing, lock_timeout, failed,
                     settings.retries + 1, delay)
            time.sleep(delay)


def _exhausted(doing: str, settings: Settings, failed: int, blockers: list[Blocker],
               hint: str, *, waited: bool) -> LockRetriesExhausted:
    """The one-line error: why we stopped, who was in the way, what to do."""
    if waited:
        why = (f"other sessions held conflicting locks for the whole lock_wait="
               f"{_duration(settings.lock_wait_ms)}, so the lock was "
               + ("never requested" if not failed else
                  f"requested only {failed} time(s), each given up after lock_timeout"))
    else:
        why = (f"the lock was not granted in {failed} attempt(s) (lock_timeout "
               f"{_duration(settings.lock_timeout_ms)} up to "
               f"{_duration(settings.lock_timeout_max_ms)})")
    shown = blockers[:3]
    more = f" and {len(blockers) - 3} more" if len(blockers) > 3 else ""
    who = ("; in the way: " + "; ".join(b.describe() for b in shown) + more) if shown else ""
    tail = (" End or wait for that session (pg_cancel_backend / pg_terminate_backend), or "
            "raise lock_wait in [alembic_integrity]") if shown else (
        " Try again when the table is less busy, or raise retries / lock_timeout_max in "
        "[alembic_integrity]")
    message = f"{doing}: {why}{who}. Nothing of this step was changed.{tail}"
    return LockRetriesExhausted(message + (f"; {hint}" if hint else ""))


def _duration(ms: int) -> str:
    """A setting's value as a person would write it in alembic.ini."""
    return f"{ms // 1000}s" if ms >= 1000 and ms % 1000 == 0 else f"{ms}ms"
