"""Every user error: one line on stderr, exit code 2, no traceback, never a password."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from alembic_integrity.cli import main
from conftest import sql

SECRET = "s3cr3t-pw"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2, (out, err)
    assert "Traceback" not in err and SECRET not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0]


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Importable model modules: one sound, one that raises at import, one with bad syntax."""
    (tmp_path / "cli_models_ok.py").write_text(
        "from sqlalchemy import CheckConstraint, Column, Integer, MetaData, Table\n"
        "metadata = MetaData()\n"
        "Table('gone', metadata, Column('id', Integer, primary_key=True),\n"
        "      Column('qty', Integer), CheckConstraint('qty > 0', name='ck_gone_qty'))\n")
    (tmp_path / "cli_models_raises.py").write_text(
        "raise RuntimeError('settings not configured')\n")
    (tmp_path / "cli_models_syntax.py").write_text("def broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


COMMANDS = [["audit"], ["repair"], ["repair", "--apply"], ["preflight"]]


@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_port_is_one_line_without_password(
        command: list[str], models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *command, "--url", f"postgresql://me:{SECRET}@localhost:5x/db",
                         "--metadata", "cli_models_ok:metadata")
    assert_one_line_error(code, out, err, "not a database URL", "me:***@")


def test_restore_malformed_url_is_one_line_without_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "restore", "1", "--url", f"postgresql://me:{SECRET}@h:port/db")
    assert_one_line_error(code, out, err, "not a database URL")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("module", "says"), [("cli_models_raises", "RuntimeError"),
                                              ("cli_models_syntax", "SyntaxError"),
                                              ("cli_models_absent", "ModuleNotFoundError")])
def test_metadata_module_that_fails_to_import(
        command: list[str], module: str, says: str, models: Path,
        integrity_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *command, "--url", str(integrity_database_url),
                         "--metadata", f"{module}:metadata")
    assert_one_line_error(code, out, err, module, says)


@pytest.mark.parametrize("command", COMMANDS)
def test_rule_on_a_missing_table_exits_2(
        command: list[str], models: Path, integrity_database_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *command, "--url", str(integrity_database_url),
                         "--metadata", "cli_models_ok:metadata")
    assert code == 2, (out, err)
    assert "Traceback" not in err and "gone" in out + err


def test_restore_without_a_log_exits_2(engine: Engine, integrity_database_url: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    sql(engine, "SELECT 1")
    code, out, err = run(capsys, "restore", "424242", "--url", str(integrity_database_url))
    assert_one_line_error(code, out, err, "no repair log")
