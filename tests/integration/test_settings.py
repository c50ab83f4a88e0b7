"""Settings: precedence defaults < file < environment < command line; clear errors; masking."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from config.settings import SettingsError, credential_refusal, load_settings, render_toml, settings_as_dict
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


# -- constraints: declared on the types, refused at load, naming where the value came from -----------
# Each (dotted key, bad value as typed, what the message says). Among them every check the Connection
# (check_link_settings) and the Recorder (database.url) made when they started.
BAD_VALUES = [
    ("deribit.heartbeat_s", "0", "deribit.heartbeat_s: expected `float` > 0.0"),
    ("deribit.subscribe_requests_per_s", "-1.0", "deribit.subscribe_requests_per_s: expected `float` > 0.0"),
    ("deribit.order_requests_per_s", "0", "deribit.order_requests_per_s: expected `float` > 0.0"),
    ("deribit.reconnect_initial_s", "0", "deribit.reconnect_initial_s: expected `float` > 0.0"),
    ("deribit.request_timeout_s", "0", "deribit.request_timeout_s: expected `float` > 0.0"),
    ("deribit.subscribe_batch_size", "0", "deribit.subscribe_batch_size: expected `int` >= 1"),
    ("deribit.order_burst", "0", "deribit.order_burst: expected `int` >= 1"),
    ("deribit.reconnect_max_s", "0.1", "deribit.reconnect_max_s: must not be below reconnect_initial_s (0.5), got 0.1"),
    ("deribit.warm_up_ms", "-1.0", "deribit.warm_up_ms: expected `float` >= 0.0 (0 (off) or more)"),
    ("deribit.warm_up_ms", "nan", "deribit.warm_up_ms: expected `float` >= 0.0 (0 (off) or more)"),
    ("database.url", "mysql://desk:pw@db/x",
     "database.url: database URL 'mysql://desk:***@db/x': unsupported database 'mysql'; expected sqlite:///"),
    ("database.url", "postgresql+asyncpg://desk@db/x", "database.url: database URL 'postgresql+asyncpg://desk@db/x': "
                                                       "PostgreSQL is used through psycopg2"),
    ("recorder.retry_max_s", "0.5", "recorder.retry_max_s: must not be below retry_initial_s (1.0), got 0.5"),
    ("recorder.connect_timeout_s", "0", "recorder.connect_timeout_s: expected `float` > 0.0"),
    ("supervisor.backoff_max_s", "0.05", "supervisor.backoff_max_s: must not be below backoff_initial_s (0.1)"),
    ("supervisor.rollover_utc", "24:00", "supervisor.rollover_utc: expected `str` matching regex"),
    ("surface.tenor_days", "[7.0, 1.0, 30.0]", "surface.tenor_days: must be strictly increasing"),
    ("surface.tenor_days", "[1.0, 7.0]", "surface.tenor_days: must include 30"),
    ("surface.tenor_days", "[-1.0, 30.0]", "surface.tenor_days[0]: expected `float` > 0.0"),
    ("surface.log_moneyness", "[-0.1, 0.1]", "surface.log_moneyness: must be strictly increasing and include 0"),
    ("books.resync_retry_s", "0", "books.resync_retry_s: expected `float` > 0.0"),
    ("portfolio.mark_publish_s", "-1", "portfolio.mark_publish_s: expected `float` >= 0.0"),
    ("hedger.max_orders_per_minute", "0", "hedger.max_orders_per_minute: expected `int` >= 1"),
    ("hedger.max_reprices", "-1", "hedger.max_reprices: expected `int` >= 0"),
    ("hedger.stale_after_s", "0", "hedger.stale_after_s: expected `float` > 0.0"),
    ("hedger.instruments", '["BTC_USDC-PERPETUAL"]',
     "hedger.instruments[0]: expected `str` matching regex '^[^_-]+-[^-]+$' (a future or perpetual name"),
    ("hedger.instruments", '["BTC-PERPETUAL", "BTC-24SEP21"]', "hedger.instruments: two hedge instruments for BTC"),
    ("console.max_ladder_orders", "1", "console.max_ladder_orders: expected `int` >= 2"),
    ("console.size_multiplier", "-1", "console.size_multiplier: expected `float` >= 0.0 (0: asked at start-up, "
                                      "or above 0 and at most 100,000)"),
    ("console.size_multiplier", "nan", "console.size_multiplier: expected `float` >= 0.0 (0: asked"),
    ("console.size_multiplier", "inf", "console.size_multiplier: expected `float` <= 100000.0 (0: asked at start-up, "
                                       "or above 0 and at most 100,000)"),
    ("console.size_multiplier", "1e9", "console.size_multiplier: expected `float` <= 100000.0"),
    ("hedger.max_delta_mismatch", "0", "hedger.max_delta_mismatch: expected `float` > 0.0 (above 0 and at most 5 "
                                       "coins of delta)"),
    ("hedger.max_delta_mismatch", "560000", "hedger.max_delta_mismatch: expected `float` <= 5.0 (above 0 and at "
                                            "most 5 coins of delta)"),
    ("simulator.port", "70000", "simulator.port: expected `int` <= 65535"),
]


def env_name(dotted: str) -> str:
    return "DESK__" + "__".join(part.upper() for part in dotted.split("."))


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_a_bad_value_is_refused_at_load_naming_its_source(tmp_path: Path, key: str, value: str,
                                                          expected: str) -> None:
    section, name = key.split(".")
    try:  # in the file as the TOML value the text reads as, like the environment and the flag
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    f = write(tmp_path, tomli_w.dumps({section: {name: parsed}}))
    sources = [
        ({"config_file": f, "environ": {}}, f"settings file {f}: "),
        ({"environ": {env_name(key): value}}, f"environment variable {env_name(key)}: "),
        ({"environ": {}, "overrides": {key: value}}, f"command line (--set {key}): "),
    ]
    for kwargs, source in sources:
        with pytest.raises(SettingsError) as info:
            load_settings(cwd=tmp_path, **kwargs)
        assert str(info.value).startswith(source), str(info.value)
        assert expected in str(info.value)
        assert "pw" not in str(info.value)


def test_a_later_layer_may_mend_an_earlier_one_and_a_two_key_rule_names_the_last_to_touch_it(
        tmp_path: Path) -> None:
    f = write(tmp_path, "[deribit]\nreconnect_initial_s = 50.0\n")
    with pytest.raises(SettingsError, match=rf"^settings file {f}: deribit.reconnect_max_s: must not be below "
                                            r"reconnect_initial_s \(50.0\), got 30.0"):
        load_settings(f, environ={})
    # Validated once, after every layer: the command line's maximum makes the file's minimum fine.
    s = load_settings(f, environ={}, overrides={"deribit.reconnect_max_s": "100"})
    assert (s.deribit.reconnect_initial_s, s.deribit.reconnect_max_s) == (50.0, 100.0)
    with pytest.raises(SettingsError, match=r"^environment variable DESK__DERIBIT__RECONNECT_MAX_S: "):
        load_settings(f, environ={"DESK__DERIBIT__RECONNECT_MAX_S": "40"})
    # A bad value replaced by a later layer is no error at all.
    assert load_settings(write(tmp_path, "[deribit]\nheartbeat_s = 0\n", "zero.toml"), environ={},
                         overrides={"deribit.heartbeat_s": "3"}).deribit.heartbeat_s == 3.0


def test_the_flag_given_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^command line \(--db mysql://desk:\*\*\*@db/x\): database.url: "):
        load_settings(environ={}, cwd=tmp_path, overrides={"database.url": "mysql://desk:pw@db/x"},
                      flags={"database.url": "--db mysql://desk:***@db/x"})


def test_config_show_output_is_toml_that_loads_back_to_the_same_settings(tmp_path: Path) -> None:
    s = load_settings(environ={}, cwd=tmp_path, overrides={"venue": "testnet", "surface.tenor_days": [7.0, 30.0]})
    text = render_toml(settings_as_dict(s, mask=False))
    assert tomllib.loads(text)["surface"]["tenor_days"] == [7.0, 30.0]
    assert load_settings(write(tmp_path, text), environ={}) == s


def test_the_database_password_is_masked_and_scrubbed_from_logs(tmp_path: Path) -> None:
    s = load_settings(environ={"DATABASE_URL": "postgresql+psycopg2://desk:hunter2-pw@db/x"}, cwd=tmp_path)
    assert settings_as_dict(s)["database"]["url"] == "postgresql+psycopg2://desk:***@db/x"
    assert "hunter2-pw" in s.secrets()


# One subprocess per command and case: `config show` refuses exactly what `run` refuses, with the
# same message, before anything starts.
CLI_CASES = [
    (["--set", "deribit.heartbeat_s=0"], {}, None,
     "command line (--set deribit.heartbeat_s=0): deribit.heartbeat_s: expected `float` > 0.0"),
    ([], {"DESK__DERIBIT__WARM_UP_MS": "nan"}, None,
     "environment variable DESK__DERIBIT__WARM_UP_MS: deribit.warm_up_ms: expected `float` >= 0.0"),
    ([], {"DATABASE_URL": "mysql://desk:pw@db/x"}, None,
     "environment variable DATABASE_URL: database.url: database URL 'mysql://desk:***@db/x': unsupported"),
    (["--db", "mysql://desk:pw@db/x"], {}, None, "command line (--db mysql://desk:***@db/x): database.url: "),
    # A flag of `run`'s that `config show` takes as well, read as the console reads the multiplier.
    (["--size-multiplier", "-1"], {}, None,
     "command line (--size-multiplier -1): console.size_multiplier: size multiplier '-1' is not a plain decimal "
     "number. give a number above 0 and at most 100,000 in the digits 0-9"),
    ([], {}, "[deribit]\nreconnect_max_s = 0.2\n",
     "deribit.reconnect_max_s: must not be below reconnect_initial_s (0.5), got 0.2"),
]


@pytest.mark.parametrize(("args", "env", "file", "expected"), CLI_CASES)
def test_config_show_and_run_refuse_the_same_values(tmp_path: Path, args: list[str], env: dict[str, str],
                                                    file: str | None, expected: str) -> None:
    if file is not None:
        args = [*args, "--config", str(write(tmp_path, file))]
        expected = f"settings file {tmp_path / 's.toml'}: {expected}"
    results = [run_main(*command, *args, env=env, cwd=tmp_path) for command in (["config", "show"], ["run"])]
    for result in results:
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.startswith(f"settings error: {expected}"), result.stderr
        assert "pw@" not in result.stderr
    assert results[0].stderr == results[1].stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()  # nothing started


# -- credentials never from the command line ----------------------------------------------------------
SECRET = "hunter2-from-the-command-line"


@pytest.mark.parametrize("item", [f"deribit.client_secret={SECRET}", f"deribit.client_id={SECRET}",
                                  f'deribit={{client_secret="{SECRET}"}}', f" deribit.client_secret ={SECRET}"])
def test_credentials_are_refused_from_the_command_line_without_echoing_them(tmp_path: Path, item: str) -> None:
    for command in (["config", "show"], ["run"]):
        result = run_main(*command, "--set", item, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("settings error: command line (--set deribit"), result.stderr
        assert "never taken from the command line" in result.stderr
        assert "in the environment" in result.stderr and "in a settings file (--config FILE)" in result.stderr
        assert "DERIBIT_CLIENT_SECRET" in result.stderr or "DERIBIT_CLIENT_ID" in result.stderr
        assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()  # nothing started


def test_a_malformed_set_flag_does_not_echo_a_secret(tmp_path: Path) -> None:
    result = run_main("config", "show", "--set", f"deribit.client_secret:{SECRET}", cwd=tmp_path)
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr and SECRET not in result.stderr


def test_the_credential_refusal_names_the_environment_variables_of_the_keys(tmp_path: Path) -> None:
    assert credential_refusal("deribit.heartbeat_s") is None and credential_refusal("deribit.client") is None
    secret = credential_refusal("deribit.client_secret")
    assert secret is not None
    assert "set DERIBIT_CLIENT_SECRET in the environment, or client_secret under [deribit] in a settings file" in secret
    whole = credential_refusal("deribit")
    assert whole is not None and "DERIBIT_CLIENT_ID and DERIBIT_CLIENT_SECRET" in whole
    # The environment and a settings file still give them.
    f = write(tmp_path, '[deribit]\nclient_id = "from-file"\n')
    s = load_settings(f, environ={"DERIBIT_CLIENT_SECRET": SECRET})
    assert (s.deribit.client_id, s.deribit.client_secret) == ("from-file", SECRET)


# -- the size multiplier flag: read as the console reads it ------------------------------------------
@pytest.mark.parametrize(("value", "reason"), [
    ("nan", "size multiplier 'nan' is not a plain decimal number"),
    ("inf", "size multiplier 'inf' is not a plain decimal number"),
    ("1e9", "size multiplier '1e9' is not a plain decimal number"),
    ("0", "size multiplier 0 is not above 0"),
    ("100000.5", "size multiplier 100000.5 is above 100,000, the maximum"),
    ("\u0661\u0660", "is a digit outside 0-9"),
])
def test_a_bad_size_multiplier_flag_exits_2_saying_what_is_allowed(tmp_path: Path, value: str, reason: str) -> None:
    result = run_main("config", "show", "--size-multiplier", value, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"settings error: command line (--size-multiplier {value}): "
                                    "console.size_multiplier: "), result.stderr
    assert reason in result.stderr and "above 0 and at most 100,000" in result.stderr


def test_a_size_multiplier_flag_in_range_is_taken(tmp_path: Path) -> None:
    result = run_main("config", "show", "--size-multiplier", "12.5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["console"]["size_multiplier"] == 12.5


# -- currency families -----------------------------------------------------------------------------------
def test_a_usdc_settled_linear_family_is_a_currency_setting(tmp_path: Path) -> None:
    f = write(tmp_path, 'currencies = ["BTC", "SOL_USDC", "BTC_USDC"]\n')
    s = load_settings(f, environ={})
    assert s.currencies == ("BTC", "SOL_USDC", "BTC_USDC")
    assert s.hedger.currencies == ("BTC", "ETH")  # hedging stays with the inverse families


@pytest.mark.parametrize(("value", "said"), [
    ('["SOL"]', "'SOL' has no inverse (coin-settled) family on Deribit: write one of BTC, ETH, or SOL_USDC"),
    ('["btc"]', "'btc' is not a currency family: write a coin for its inverse family (BTC or ETH"),
    ('["SOL_USDT"]', "'SOL_USDT' is not a currency family"),
    ('["BTC", "SOL_USDC", "BTC"]', "BTC named twice; name each family once"),
])
def test_a_currency_that_is_no_family_is_refused_saying_what_to_write(tmp_path: Path, value: str, said: str) -> None:
    f = write(tmp_path, f"currencies = {value}\n")
    with pytest.raises(SettingsError) as refused:
        load_settings(f, environ={})
    text = str(refused.value)
    assert text.startswith(f"settings file {f}: currencies: ") and said in text


def test_hedging_a_linear_family_is_refused_at_start_up(tmp_path: Path) -> None:
    f = write(tmp_path, 'currencies = ["BTC", "SOL_USDC"]\n[hedger]\ncurrencies = ["BTC", "SOL_USDC"]\n')
    with pytest.raises(SettingsError) as refused:
        load_settings(f, environ={})
    assert str(refused.value) == (f"settings file {f}: hedger.currencies: hedging SOL_USDC is not supported yet: "
                                  "remove it from [hedger] currencies")
    with pytest.raises(SettingsError, match=r"command line \(--set hedger.currencies\): hedger.currencies: "
                                            r"'ETH_USD' is not a currency family"):
        load_settings(environ={}, cwd=tmp_path, overrides={"hedger.currencies": '["ETH_USD"]'})
