"""Small pieces the subcommands share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class State:
    debug: bool = False
