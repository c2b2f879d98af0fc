"""verify's inputs: the models to compare with, and the database to run on (never a full one)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

from sqlalchemy import Engine, MetaData, text

from ..errors import ConfigurationError, IntegrityError
from ..pg.database import shown
from ..rules.metadata import load_metadata, metadata_from_alembic


def resolve_metadata(metadata: MetaData | str | None, config_path: str,
                      skip_drift: bool) -> MetaData | None:
    if skip_drift:
        return None
    if isinstance(metadata, MetaData):
        return metadata
    if metadata:
        return load_metadata(metadata)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return metadata_from_alembic(config_path)  # runs env.py offline; keep it quiet
    except IntegrityError:
        raise
    except Exception as err:
        raise ConfigurationError(
            f"cannot read target_metadata from {config_path}'s env.py offline "
            f"({type(err).__name__}: {err}); pass --metadata module:attr or --skip-drift"
        ) from err


def require_empty(engine: Engine) -> None:
    """Verify downgrades to base: never let it near a database that holds anything."""
    with engine.connect() as conn:
        names = conn.execute(text(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT LIKE 'pg!_%' "
            "ESCAPE '!' AND n.nspname <> 'information_schema' ORDER BY 1 LIMIT 6")).scalars().all()
    if names:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ConfigurationError(
            f"{shown(engine.url)} is not empty ({listed}); verify upgrades and downgrades the "
            "database it is given: pass the URL of an EMPTY database, or no --url to use a "
            "throwaway server"
        )


@contextlib.contextmanager
def target_database(url: str | None,
                    docker: bool | None) -> Iterator[tuple[str, str, float | None]]:
    """``(url, description, start seconds)``: the given URL, or a throwaway server's."""
    if url is not None:
        yield url, "given", None
        return
    from ..pg.throwaway import ThrowawayServer

    with ThrowawayServer(docker=docker) as server:
        yield server.url, f"throwaway ({server.mode})", server.startup_seconds
