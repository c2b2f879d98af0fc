"""The server in a Docker container, through testcontainers' ``PostgresContainer``."""

from __future__ import annotations

import os
import warnings
from typing import Any

from ...errors import ServerUnavailable
from .defaults import SERVER_SETTINGS, SUPERUSER

IMAGE_ENV = "ALEMBIC_INTEGRITY_PG_IMAGE"
"""Docker image for the container mode."""

DEFAULT_IMAGE = "postgres:16-alpine"


def docker_answers(timeout: float = 2.0) -> tuple[bool, str]:
    """Whether a Docker engine answers a ping, and if not, why (one short phrase)."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False, "the docker Python package is not installed (pip install testcontainers)"
    try:
        client = docker.from_env(timeout=max(1, round(timeout)))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means "no usable engine"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return False, f"Docker is not answering ({reason[:160]})"
    return True, "Docker answers"


class DockerServer:
    """One ``PostgresContainer`` with the throwaway :data:`SERVER_SETTINGS`."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.container: Any = None

    def start(self) -> str:
        """Start the container (removed again by :meth:`stop`); return its URL."""
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:
            try:
                from testcontainers.postgres import PostgresContainer
            except ImportError as exc:
                raise ServerUnavailable(
                    "Docker answers but testcontainers is not installed "
                    "(pip install 'testcontainers[postgres]')"
                ) from exc
        image = os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        container = PostgresContainer(
            image, username=SUPERUSER, password="throwaway", dbname=self.dbname, driver="psycopg"
        )
        container.with_command(
            "postgres " + " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
        )
        self.container = container
        try:
            container.start()
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ServerUnavailable(
                f"could not start a PostgreSQL container from {image}: {first[:300]}"
            ) from exc
        return str(container.get_connection_url())

    def stop(self) -> None:
        if self.container is not None:
            container, self.container = self.container, None
            try:
                container.stop()
            except Exception as exc:  # the Ryuk reaper removes it later anyway
                warnings.warn(f"could not remove the PostgreSQL container: {exc}", stacklevel=4)
