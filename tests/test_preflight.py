"""preflight: 0 when no VALIDATE would fail, 1 when one would, 2 when it cannot tell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from alembic_integrity.cli import cli
from conftest import sql

MODELS = '''
from sqlalchemy import CheckConstraint, Column, Integer, MetaData, Table, Text
from alembic_integrity.rules.policies import Manual, SetValue, on_violation

metadata = MetaData()
Table("tickets", metadata,
      Column("id", Integer, primary_key=True),
      Column("state", Text, nullable=False, info=on_violation(SetValue(value="open"))),
      Column("seats", Integer),
      CheckConstraint("seats >= 0", name="ck_tickets_seats",
                      info=on_violation(Manual("a person checks the booking"))))
Table("notes", metadata, Column("id", Integer, primary_key=True),
      CheckConstraint("body <> ''", name="ck_notes_body"))
'''


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    module = tmp_path / "preflight_models.py"
    module.write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("preflight_models", None)
    return "preflight_models:metadata"


def run(url: str, models: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["preflight", "--url", url, "--metadata", models, *args])
    return result.exit_code, result.output


def test_exit_codes(engine: Engine, integrity_database_url: str, models: str) -> None:
    url = str(integrity_database_url)
    sql(engine, "CREATE TABLE tickets (id int PRIMARY KEY, state text, seats int);"
                "INSERT INTO tickets VALUES (1, NULL, 2), (2, 'open', -1), (3, NULL, 1)")
    code, out = run(url, models)
    assert code == 2 and "notes" in out  # a declared table the database lacks: cannot tell
    sql(engine, "CREATE TABLE notes (id int PRIMARY KEY, body text)")

    code, out = run(url, models)
    assert code == 1 and "not safe" in out  # NULL states and a negative seat count
    code, out = run(url, models, "--repair")
    assert code == 1, out  # SetValue fixed the states; the seat count is for a person
    assert sql(engine, "SELECT count(*) FROM tickets WHERE state IS NULL") == [(0,)]
    assert "left for a person" in out and "ck_tickets_seats" in out

    sql(engine, "UPDATE tickets SET seats = 0 WHERE seats < 0")
    code, out = run(url, models)
    assert code == 0 and "safe to migrate" in out
