"""Settings: precedence defaults < file < environment < command line; clear errors; masking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import SettingsError, load_settings, render_toml, settings_as_dict
from tests.support.paths import REPO


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(environ={}, cwd=tmp_path)
    assert s.venue == "simulator"
    assert s.currencies == ("BTC", "ETH")
    assert s.deribit.heartbeat_s == 10.0
    assert s.database_url.endswith("data/deribit.sqlite3") and s.database_url.startswith("sqlite:///")
    assert s.supervisor.rollover_utc == "08:00"


def test_precedence_file_then_environment_then_command_line(tmp_path: Path) -> None:
    f = write(tmp_path, '[deribit]\nheartbeat_s = 5\nclient_id = "from-file"\norder_burst = 3\n')
    env = {"DESK__DERIBIT__HEARTBEAT_S": "7", "DERIBIT_CLIENT_ID": "from-env"}
    s = load_settings(f, environ=env, overrides={"deribit.heartbeat_s": "9"})
    assert s.deribit.heartbeat_s == 9.0  # command line wins
    assert s.deribit.client_id == "from-env"  # environment beats the file
    assert s.deribit.order_burst == 3  # the file beats the defaults
    assert s.deribit.book_interval == "100ms"  # untouched default


def test_settings_toml_in_the_working_directory_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path, 'venue = "testnet"\n', "settings.toml")
    assert load_settings(environ={}, cwd=tmp_path).venue == "testnet"


def test_database_url_from_environment(tmp_path: Path) -> None:
    s = load_settings(environ={"DATABASE_URL": "postgresql+psycopg2://u:pw@h/db"}, cwd=tmp_path)
    assert s.database_url == "postgresql+psycopg2://u:pw@h/db"
    assert "pw" not in settings_as_dict(s)["database"]["url"]


def test_string_setting_from_environment_keeps_digits_as_text(tmp_path: Path) -> None:
    s = load_settings(environ={"DERIBIT_CLIENT_ID": "12345"}, cwd=tmp_path)
    assert s.deribit.client_id == "12345"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[deribit]\nheartbeat_s = \"soon\"\n", "deribit.heartbeat_s: expected `float`, got `str`"),
        ("[deribit]\nheartbeet_s = 5\n", "unknown key `heartbeet_s` in [deribit]"),
        ("colour = 1\n", "unknown key `colour`"),
        ('venue = "moon"\n', "venue: invalid enum value 'moon' (one of: simulator, testnet, mainnet)"),
        ('[supervisor]\nrollover_utc = "8am"\n', "HH:MM"),
        ("venue = \n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_file_the_key_and_what_was_expected(tmp_path: Path, text: str, expected: str) -> None:
    f = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(f, environ={})
    assert str(f) in str(info.value)
    assert expected in str(info.value)


def test_environment_error_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="environment variable DESK__DERIBIT__ORDER_BURST"):
        load_settings(environ={"DESK__DERIBIT__ORDER_BURST": "many"}, cwd=tmp_path)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_render_masks_secrets(tmp_path: Path) -> None:
    s = load_settings(environ={"DERIBIT_CLIENT_SECRET": "sup3r-s3cret-value"}, cwd=tmp_path)
    text = render_toml(settings_as_dict(s))
    assert "sup3r-s3cret-value" not in text
    assert 'client_secret = "***"' in text


def run_main(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env={**os.environ, **(env or {})}, timeout=60)


def test_bad_settings_file_exits_2_with_a_message(tmp_path: Path) -> None:
    f = write(tmp_path, "[deribit]\norder_burst = \"ten\"\n")
    result = run_main("config", "show", "--config", str(f), cwd=tmp_path)
    assert result.returncode == 2
    assert str(f) in result.stderr and "deribit.order_burst" in result.stderr and "int" in result.stderr


def test_config_show_prints_effective_settings_masked(tmp_path: Path) -> None:
    result = run_main("config", "show", "--venue", "testnet", "--set", "deribit.heartbeat_s=4",
                      env={"DERIBIT_CLIENT_SECRET": "very-secret-xyz"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'venue = "testnet"' in result.stdout
    assert "heartbeat_s = 4.0" in result.stdout
    assert "very-secret-xyz" not in result.stdout + result.stderr


def test_bad_set_flag(tmp_path: Path) -> None:
    result = run_main("config", "show", "--set", "nonsense", cwd=tmp_path)
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr
