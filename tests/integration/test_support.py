"""The tests' own support: a run's database is its own and goes when the run ends; the settings builder;
the capture's message when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import text

from config.settings import SettingsError
from sql.engine import make_engine
from tests.support import paths
from tests.support.postgres import can_connect, dead_url, run_database, server_url
from tests.support.settings import make_settings


def databases(url: str) -> set[str]:
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
    finally:
        eng.dispose()


def test_the_run_has_a_database_of_its_own(pg_url: str) -> None:
    eng = make_engine(pg_url)
    try:
        with eng.connect() as conn:
            name = conn.execute(text("SELECT current_database()")).scalar_one()
    finally:
        eng.dispose()
    assert name.startswith(f"deskt_{os.getpid()}_")


def test_two_run_databases_at_once_are_apart_and_both_dropped() -> None:
    server, cluster = server_url()
    try:
        with run_database(server) as first, run_database(server) as second:
            assert first != second
            for url in (first, second):  # the same table name in each, as two runs' tests would make
                eng = make_engine(url)
                with eng.begin() as conn:
                    conn.execute(text("CREATE TABLE shared_name (who text)"))
                    conn.execute(text("INSERT INTO shared_name VALUES (:who)"), {"who": url})
                eng.dispose()
            for url in (first, second):
                eng = make_engine(url)
                with eng.connect() as conn:
                    assert conn.execute(text("SELECT who FROM shared_name")).scalars().all() == [url]
                eng.dispose()
            # A connection left open (a test that failed before disposing its engine) does not stop the drop.
            left_open = psycopg2.connect(first.replace("postgresql+psycopg2://", "postgresql://", 1))
            names = {url.rsplit("/", 1)[1] for url in (first, second)}
            assert names <= databases(server)
        left_open.close()
        assert not names & databases(server)
    finally:
        if cluster is not None:
            cluster.destroy()


def test_a_dead_url_refuses_connections_while_held() -> None:
    with dead_url() as url:
        assert not can_connect(url, timeout_s=1)


def test_make_settings_takes_dotted_keys_and_top_level_keywords(tmp_path: Path) -> None:
    s = make_settings({"deribit.heartbeat_s": 5, "hedger.max_delta_mismatch": 0.01}, currencies=["BTC"])
    assert (s.deribit.heartbeat_s, s.hedger.max_delta_mismatch, s.currencies) == (5, 0.01, ("BTC",))
    placed = make_settings(tmp_path=tmp_path)
    assert (placed.data_dir, placed.logging.dir) == (str(tmp_path / "data"), str(tmp_path / "logs"))
    assert make_settings({"data_dir": "elsewhere"}, tmp_path=tmp_path).data_dir == "elsewhere"
    with pytest.raises(SettingsError, match=r"deribit\.heartbeat_s"):
        make_settings({"deribit.heartbeat_s": "often"})


def test_make_settings_ignores_the_environment_and_any_settings_file(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text('venue = "mainnet"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DERIBIT_VENUE", "mainnet")
    assert make_settings().venue == make_settings(environ={}).venue != "mainnet"


def test_a_missing_capture_fails_the_test_saying_where_it_should_be(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(paths, "SHARED_FIXTURES", tmp_path / "shared" / "fixtures" / "deribit")
    with pytest.raises(pytest.fail.Exception, match=r"the real Deribit capture is missing: .*instruments-BTC"):
        paths.capture("instruments-BTC-2021-07-22.json")
