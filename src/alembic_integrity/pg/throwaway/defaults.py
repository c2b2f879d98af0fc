"""What every throwaway server shares: the superuser, the server settings, the timeouts."""

from __future__ import annotations

SUPERUSER = "postgres"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# Durability is worthless for a server we delete afterwards; dropping it makes
# DDL-heavy tests several times faster.
SERVER_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}
