"""Short transactions that give up on a lock quickly and try again later.

Both the DDL steps of the operations and the repair's batches run this way:
under ``lock_timeout``, so a long query on the table never makes every other
session queue behind us, and retried with backoff on ``lock_not_available``
(and deadlocks), up to the ``retries`` of the settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from ..errors import sqlstate
from ..settings import Settings

log = logging.getLogger("alembic_integrity")

LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"
RETRYABLE = frozenset({LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED})

T = TypeVar("T")


def is_lock_error(err: BaseException) -> bool:
    return sqlstate(err) in RETRYABLE


def with_lock_retries(attempt: Callable[[], T], settings: Settings, doing: str
                      ) -> tuple[T, int]:
    """``attempt()`` and the number of tries it took.

    ``attempt`` must run one whole transaction and leave none open when it
    raises. When the retries run out, the last lock error is raised for the
    caller to explain; any other error is raised at once.
    """
    tries = settings.retries + 1
    for number in range(1, tries + 1):
        try:
            return attempt(), number
        except DBAPIError as err:
            if not is_lock_error(err) or number == tries:
                raise
            delay = settings.delay_s(number - 1)
            log.info("  %s: lock not available (attempt %d of %d), retrying in %.2fs",
                     doing, number, tries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
