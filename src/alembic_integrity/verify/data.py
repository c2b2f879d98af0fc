"""The data set of ``--with-data``: a ``.sql`` file, a ``module:function`` or a callable."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from ..errors import ConfigurationError

DataLoader = Callable[[Connection], object]


def load_data_source(source: str | Path | DataLoader) -> DataLoader:
    """A ``.sql`` file, a ``module:function`` taking a Connection, or a callable, as a loader."""
    if callable(source):
        return source
    spec = str(source)
    if spec.endswith(".sql") or Path(spec).is_file():
        return _sql_file_loader(Path(spec))
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--with-data {spec!r}: expected a .sql file or "
                                 "module:function (called with a SQLAlchemy Connection)")
    try:
        target: Any = import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ConfigurationError(f"--with-data {spec!r}: {err}") from err
    if not callable(target):
        raise ConfigurationError(f"--with-data {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def _sql_file_loader(path: Path) -> DataLoader:
    if not path.is_file():
        raise ConfigurationError(f"--with-data {path}: no such file")
    sql = path.read_text(encoding="utf-8")

    def load(conn: Connection) -> None:
        # On the driver's connection, without parameters: psycopg then sends the file as
        # one simple query (several statements allowed) and leaves '%' alone.
        conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]

    load.__name__ = f"load {path.name}"
    return load


def data_label(data: str | Path | DataLoader | None) -> str:
    if data is None or isinstance(data, str | Path):
        return Path(str(data)).name if str(data).endswith(".sql") else str(data)
    return getattr(data, "__qualname__", None) or repr(data)

