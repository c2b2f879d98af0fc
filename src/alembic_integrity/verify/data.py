"""SQL run by verify besides the revisions: a ``.sql`` file, a ``module:function`` or a callable.

Two uses: the data set of ``--with-data`` (loaded after a given revision) and the
base schema of ``--base-sql`` / ``--base-callable`` (what a project creates
outside Alembic, e.g. ``metadata.create_all``, before its first revision).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from .inputs import DATA, Setting, SettingError

DataLoader = Callable[[Connection], object]


def load_data_source(source: str | Path | DataLoader, setting: Setting = DATA,
                     what: str = "data set") -> DataLoader:
    """A ``.sql`` file, a ``module:function`` taking a Connection, or a callable, as a loader.

    ``setting`` and ``what`` name the input in errors (the data set, the base schema).
    """
    if callable(source):
        return source
    spec = str(source)
    if spec.endswith(".sql") or Path(spec).is_file():
        return _sql_file_loader(Path(spec), setting, what)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SettingError(f"{what} {spec!r}: expected a .sql file or module:function "
                           "(called with a SQLAlchemy Connection)", setting)
    try:
        target: Any = import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise SettingError(f"{what} {spec!r}: {err}", setting) from err
    if not callable(target):
        raise SettingError(f"{what} {spec!r} is not callable", setting)
    return target  # type: ignore[no-any-return]


def _sql_file_loader(path: Path, setting: Setting, what: str) -> DataLoader:
    if not path.is_file():
        raise SettingError(f"{what} {path}: no such file", setting)
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

