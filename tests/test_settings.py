"""Settings resolve as keyword argument > [alembic_integrity] in alembic.ini > default."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.config import Config

from alembic_integrity.errors import ConfigurationError
from alembic_integrity.settings import Settings, resolve


def config_with(tmp_path: Path, body: str) -> Config:
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = x\n\n[alembic_integrity]\n{body}\n")
    return Config(str(ini))


def test_ini_then_keyword(tmp_path: Path) -> None:
    body = ("lock_timeout = 2s\nretries = 3\nvalidate_statement_timeout = 1min\n"
            "lock_timeout_max = 4s\nlock_wait = 2min")
    config = config_with(tmp_path, body)
    from_ini = resolve(config)
    assert (from_ini.lock_timeout_ms, from_ini.retries) == (2000, 3)
    assert (from_ini.lock_timeout_max_ms, from_ini.lock_wait_ms) == (4000, 120000)
    assert from_ini.validate_statement_timeout_ms == 60000
    overridden = resolve(config, lock_timeout="250ms", retries=0)
    assert (overridden.lock_timeout_ms, overridden.retries) == (250, 0)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("lock_timout", "1s", "unknown alembic_integrity setting 'lock_timout'"),
    ("lock_timeout", "soon", "not a number or duration"),
    ("retries", "2s", "plain count"),
    ("backoff", -1, "must not be negative"),
])
def test_bad_settings_are_named(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        resolve(None, **{key: value})


def test_backoff_doubles_and_is_capped() -> None:
    settings = Settings(backoff_ms=100, backoff_max_ms=400)
    delays = [settings.delay_s(k) for k in range(5)]
    assert 0.075 <= delays[0] <= 0.125
    assert all(d <= 0.5 for d in delays)
    assert delays[4] >= 0.3
