"""Options and loaders the subcommands share, so each command stays a few lines."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from sqlalchemy import Engine

from ..errors import ConfigurationError
from ..pg import database
from ..rules.metadata import (
    DeclaredRules,
    load_metadata,
    metadata_from_alembic,
    rules_from_metadata,
)
from ..verify.inputs import project_imports


@dataclass
class State:
    debug: bool = False


def url_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--url", envvar="DATABASE_URL", show_envvar=True,
                        help="Database URL (postgresql://...).")(fn)


def metadata_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--metadata", "metadata_spec", metavar="MODULE:ATTR",
                      help="SQLAlchemy MetaData declaring the rules; default: env.py's "
                           "target_metadata.")(fn)
    return click.option("-c", "--config", "config_path", default="alembic.ini",
                        show_default=True, help="Alembic config, to find target_metadata.")(fn)


def engine_for(url: str | None) -> Engine:
    return database.connect(database.resolve_url(url))


def declared_rules(metadata_spec: str | None, config_path: str) -> DeclaredRules:
    if metadata_spec:
        with project_imports(config_path):  # modules of the current folder and project root
            return rules_from_metadata(load_metadata(metadata_spec))
    if not os.path.exists(config_path):
        raise ConfigurationError(
            f"no --metadata given and no {config_path} here; pass --metadata module:attr "
            "or -c path/to/alembic.ini"
        )
    return rules_from_metadata(metadata_from_alembic(config_path))
