"""How a long run over the database reports where it is: one shape for every command.

The audit (tables counted), repair (violating rows handled), restore (rows put back) and
the CLI's bar or log line all speak this, so one renderer serves them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` (None when not counted) ``unit`` so far on ``what``."""

    what: str
    done: int
    total: int | None
    rate: float = 0.0  # units per second since the run began
    unit: str = "rows"


ProgressCallback = Callable[[Progress], None]
