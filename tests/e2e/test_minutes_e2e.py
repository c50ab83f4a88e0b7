"""End to end: a generated wire log replayed through the whole program leaves every full minute in the
database exactly once, on SQLite and on PostgreSQL, also across a database outage.

The truth is computed from the log itself, independently of the program: each option's book is
rebuilt from its snapshot and changes, and an option counts as quoted at minute M when its book
(as of the frames before M) has a bid or an ask.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

import main
from actors.connection import GetReplaySummary
from actors.recorder import GetRecorderStatus
from runtime.clock import ReplayClock
from simulator import generate_wire_log
from simulator.settings import SimSettings
from sql.engine import create_schema, make_engine
from sql.tables import option_quotes, surface_points, volatility_index
from tests.support.paths import REPO
from tests.support.postgres import ThrowawayCluster
from tests.support.settings import make_settings

GRID_POINTS = 10 * 21  # the default [surface] grid
START = 1_795_260_900.0  # a whole minute


def quoted_per_minute(log: Path) -> dict[tuple[float, str], set[str]]:
    """(minute, currency) -> option instruments with a bid or an ask, for every full minute of the log."""
    books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    out: dict[tuple[float, str], set[str]] = {}
    next_minute: float | None = None

    def sample(minute: float) -> None:
        for currency in ("BTC", "ETH"):
            out[(minute, currency)] = {
                name for name, (bids, asks) in books.items()
                if name.startswith(currency + "-") and name[-2:] in ("-C", "-P") and (bids or asks)
            }

    with log.open() as fh:
        for line in fh:
            record = json.loads(line)
            t = record["t"]
            if next_minute is None:
                next_minute = (math.floor(t / 60) + 1) * 60.0
            while t >= next_minute:  # the program's tick at M sees the frames before M
                sample(next_minute)
                next_minute += 60.0
            frame = record.get("frame")
            if record["dir"] != "in" or not frame or '"channel":"book.' not in frame:
                continue
            data = json.loads(frame)["params"]["data"]
            sides = books.setdefault(data["instrument_name"], ({}, {}))
            if data["type"] == "snapshot":
                sides[0].clear()
                sides[1].clear()
            for side, levels in ((sides[0], data["bids"]), (sides[1], data["asks"])):
                for action, price, amount in levels:
                    if action == "delete" or amount == 0:
                        side.pop(price, None)
                    else:
                        side[price] = amount
    return out


def rows_per_minute(engine: Engine, table: object) -> dict[tuple[float, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.minute, table.c.currency, func.count())  # type: ignore[attr-defined]
                            .group_by(table.c.minute, table.c.currency)).all()  # type: ignore[attr-defined]
    return {(_seconds(m), c): n for m, c, n in rows}


def instruments_at(engine: Engine, minute: float, currency: str) -> set[str]:
    when = dt.datetime.fromtimestamp(minute, dt.UTC)
    with engine.connect() as conn:
        return set(conn.execute(select(option_quotes.c.instrument).where(
            option_quotes.c.minute == when, option_quotes.c.currency == currency)).scalars())


def _seconds(value: dt.datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def assert_every_minute_once(url: str, truth: dict[tuple[float, str], set[str]], minutes: set[float]) -> None:
    engine = make_engine(url)
    try:
        quotes = rows_per_minute(engine, option_quotes)
        points = rows_per_minute(engine, surface_points)
        index = rows_per_minute(engine, volatility_index)
        expected = {key for key in truth if key[0] in minutes}
        assert set(quotes) == expected, "every currency-minute of the log, and nothing else"
        for key in sorted(expected):
            assert truth[key], f"the log has quoted options at {key}"
            # One row per quoted option: the primary key makes a second one impossible, so equal
            # counts and equal names mean exactly once each.
            assert quotes[key] == len(truth[key]), key
            assert instruments_at(engine, *key) == truth[key], key
            assert points[key] == GRID_POINTS, key
            assert index[key] == 1, key
    finally:
        engine.dispose()


# -- the acceptance: generate, replay, replay again ---------------------------------------------------------
@pytest.fixture(scope="module")
def full_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "log.jsonl"
    generate_wire_log(path, 3, seed=1, start=START)
    return path


@pytest.fixture(scope="module")
def full_truth(full_log: Path) -> dict[tuple[float, str], set[str]]:
    return quoted_per_minute(full_log)


def replay(log: Path, url: str, workdir: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "replay", str(log), "--db", url,
         "--set", f"data_dir={workdir / 'data'}", "--set", f"logging.dir={workdir / 'logs'}"],
        cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])



def test_replaying_a_generated_log_records_every_full_minute_once(
        full_log: Path, full_truth: dict[tuple[float, str], set[str]], db_url: str, tmp_path: Path) -> None:
    minutes = {START + 60, START + 120, START + 180}
    assert {m for m, _ in full_truth} == minutes  # the log's full minutes
    summary = replay(full_log, db_url, tmp_path)
    assert summary["minutes"] == 3 and summary["errors"] == 0
    assert_every_minute_once(db_url, full_truth, minutes)
    assert not list((tmp_path / "data" / "spool").glob("*.msgpack"))
    # The same log again adds no row.
    replay(full_log, db_url, tmp_path)
    assert_every_minute_once(db_url, full_truth, minutes)


# -- outages during a paced replay ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "log.jsonl"
    generate_wire_log(path, 5.5, seed=2, start=START, settings=SimSettings(chain="small"), updates_per_s=0.5)
    return path


def run_replay_with_outage(log: Path, url: str, workdir: Path, outage: object, speed: float = 30.0) -> None:
    """Replay ``log`` at ``speed``; once the first minute is written, hold the database down (``outage``
    is a context manager) for three minutes of replayed time; then let the Recorder catch up."""
    settings = make_settings({  # data/ and logs/ under workdir
        "database.url": url, "recorder.retry_initial_s": 0.2, "recorder.retry_max_s": 1.0,
        "recorder.sqlite_busy_timeout_s": 0.2,
    }, tmp_path=workdir)
    clock = ReplayClock(START)
    supervisor = main.make_supervisor(settings, main.actor_specs(settings, replay_file=str(log), replay_speed=speed),
                                      clock, replay=True)

    def recorder_status() -> object:
        return supervisor.refs()["recorder"].ask(GetRecorderStatus(), timeout=30)

    def wait(predicate: object, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    supervisor.start()
    try:
        wait(lambda: recorder_status().written_minutes >= 2, "the first minute written")  # type: ignore[attr-defined]
        with outage:  # type: ignore[attr-defined]
            down_at = clock.now()
            wait(lambda: clock.now() >= down_at + 180.0, "three minutes of replayed time")
            status = recorder_status()
            assert not status.reachable and status.backlog_minutes >= 4, status  # type: ignore[attr-defined]
        wait(lambda: supervisor.refs()["connection"].ask(GetReplaySummary(), timeout=30) is not None, "the log's end")
        supervisor.drain()
        wait(lambda: recorder_status().backlog_batches == 0, "the spool written back")  # type: ignore[attr-defined]
        assert recorder_status().reachable  # type: ignore[attr-defined]
    finally:
        supervisor.stop(reason="test over", timeout_s=10.0)


class ClusterDown:
    def __init__(self, cluster: ThrowawayCluster) -> None:
        self.cluster = cluster

    def __enter__(self) -> None:
        self.cluster.stop()

    def __exit__(self, *exc: object) -> None:
        self.cluster.start()


class SqliteLocked:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.holder: sqlite3.Connection | None = None

    def __enter__(self) -> None:
        self.holder = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.holder.execute("BEGIN EXCLUSIVE")

    def __exit__(self, *exc: object) -> None:
        assert self.holder is not None
        self.holder.execute("ROLLBACK")
        self.holder.close()


@pytest.mark.slow
def test_postgres_stopped_for_three_replayed_minutes_loses_and_duplicates_nothing(
        small_log: Path, tmp_path: Path) -> None:
    truth = quoted_per_minute(small_log)
    cluster = ThrowawayCluster().start()
    try:
        run_replay_with_outage(small_log, cluster.url, tmp_path, ClusterDown(cluster))
        assert_every_minute_once(cluster.url, truth, {m for m, _ in truth})
    finally:
        cluster.destroy()


@pytest.mark.slow
def test_a_locked_sqlite_file_for_three_replayed_minutes_loses_and_duplicates_nothing(
        small_log: Path, tmp_path: Path) -> None:
    truth = quoted_per_minute(small_log)
    path = tmp_path / "desk.sqlite3"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    create_schema(engine)  # the file exists before the lock is taken
    engine.dispose()
    run_replay_with_outage(small_log, url, tmp_path, SqliteLocked(path))
    assert_every_minute_once(url, truth, {m for m, _ in truth})
