"""`main.py archive` and `export`: the Parquet files read back with DuckDB equal the database's rows (SQLite
and PostgreSQL), a day leaves the database only after its files were verified, an archive killed half-way
(SIGKILL) leaves the database whole and a second run finishes it, and a plot of an archived day draws."""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np
import pytest
from sqlalchemy import Engine, select, text

import main
from sql.archive import DATASET, ArchiveError, archive, export, file_rows, remove_day, write_day
from sql.engine import make_engine
from sql.partitions import existing_partitions
from sql.record import describe, read_index_history
from sql.store import MinuteStore, snapshot_record
from sql.tables import option_quotes, surface_fits, surface_points, volatility_index
from tests.support.paths import REPO as REPO_ROOT
from tests.support.sql import AT, small_snapshot
from tests.support.waiting import wait_until

DAY1 = dt.date(2021, 7, 22)
DAY2 = dt.date(2021, 7, 23)
#: Two minutes on 2021-07-22 (23:00, 23:01) and two on 2021-07-23 (00:00, 00:01), BTC and ETH each.
MINUTES = (AT, AT + 60, AT + 3600, AT + 3660)


def _fill(url: str, spool: Path) -> None:
    store = MinuteStore(url, spool)
    store.open(now=AT)
    base = {c: small_snapshot(AT, c) for c in ("BTC", "ETH")}
    for at in MINUTES:
        for snapshot in base.values():
            assert store.record(snapshot_record(msgspec.structs.replace(snapshot, at=at)))
    store.close()


@pytest.fixture
def filled(db_url: str, tmp_path: Path) -> str:
    _fill(db_url, tmp_path / "spool")
    return db_url


def _database_quotes(engine: Engine, currency: str, day: dt.date) -> list[tuple[Any, ...]]:
    q = option_quotes.c
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    query = (select(q.minute, q.instrument, q.expiry, q.strike, q.option_type, q.underlying_price, q.index_price,
                    q.bid, q.bid_amount, q.bid_iv, q.ask, q.ask_amount, q.ask_iv, q.mid_iv, q.mark_price, q.mark_iv,
                    q.open_interest, q.stale, q.in_surface)
             .where(q.currency == currency, q.minute >= start, q.minute < start + dt.timedelta(days=1))
             .order_by(q.minute, q.instrument))
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


QUOTE_COLUMNS = ("minute, instrument, expiry, strike, option_type, underlying_price, index_price, bid, bid_amount, "
                 "bid_iv, ask, ask_amount, ask_iv, mid_iv, mark_price, mark_iv, open_interest, stale, in_surface")


def _parquet_quotes(out: Path, currency: str, day: dt.date) -> list[tuple[Any, ...]]:
    return duckdb.sql(
        f"SELECT {QUOTE_COLUMNS} FROM read_parquet('{out}/quotes/**/*.parquet', hive_partitioning = true) "
        f"WHERE currency = '{currency}' AND date = DATE '{day}' ORDER BY minute, instrument").fetchall()


def _seconds(value: dt.datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def _same(db: Any, parquet: Any, *, single: bool) -> bool:
    if isinstance(db, dt.datetime):
        return _seconds(db) == _seconds(parquet)
    if isinstance(db, float) and parquet is not None:
        expected = float(np.float32(db)) if single else db
        return math.isclose(expected, parquet, rel_tol=1e-12 if single else 1e-9, abs_tol=1e-9)
    if isinstance(db, bool | int) and isinstance(parquet, bool):
        return bool(db) == parquet
    return bool(db == parquet)


SINGLE = {"bid", "bid_amount", "bid_iv", "ask", "ask_amount", "ask_iv", "mid_iv", "mark_price", "mark_iv",
          "open_interest"}


def assert_quotes_equal(db_rows: list[tuple[Any, ...]], parquet_rows: list[tuple[Any, ...]]) -> None:
    names = [n.strip() for n in QUOTE_COLUMNS.split(",")]
    assert len(db_rows) == len(parquet_rows) > 0
    for db_row, pq_row in zip(db_rows, parquet_rows, strict=True):
        for name, a, b in zip(names, db_row, pq_row, strict=True):
            assert _same(a, b, single=name in SINGLE), (name, a, b, db_row[:2])


def _table_rows(engine: Engine, table: Any, currency: str, columns: list[str]) -> list[tuple[Any, ...]]:
    query = select(*(table.c[n] for n in columns)).where(table.c.currency == currency).order_by(
        *(table.c[n] for n in columns[:3]))
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def _parquet_rows(out: Path, dataset: str, currency: str, columns: list[str]) -> list[tuple[Any, ...]]:
    return duckdb.sql(
        f"SELECT {', '.join(columns)} FROM read_parquet('{out}/{dataset}/**/*.parquet', hive_partitioning = true) "
        f"WHERE currency = '{currency}' ORDER BY {', '.join(columns[:3])}").fetchall()


def assert_rows_equal(db_rows: list[tuple[Any, ...]], parquet_rows: list[tuple[Any, ...]]) -> None:
    assert len(db_rows) == len(parquet_rows) > 0
    for a_row, b_row in zip(db_rows, parquet_rows, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            assert (a is None and b is None) or _same(a, b, single=False), (a, b, a_row[:3])


POINT_COLUMNS = ["minute", "method", "tenor_days", "log_moneyness", "iv", "extrapolated"]
FIT_COLUMNS = ["minute", "expiry", "method", "years", "forward", "parameters", "rmse", "n_quotes", "butterfly_ok",
               "calendar_ok", "min_g", "wing_slope", "notes", "check_k_min", "check_k_max"]
INDEX_COLUMNS = ["minute", "value", "atm_iv_30d", "rr25_30d", "bf25_30d", "dvol", "dvol_at", "dvol_minus_index"]


def test_export_reads_back_with_duckdb_as_the_database_rows(filled: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    for what in ("quotes", "surface", "index"):
        status = main.main(["export", "--from", str(DAY1), "--to", str(DAY2), "--currency", "btc", "--what", what,
                            "--out", str(out), "--db", filled])
        assert status == 0, capsys.readouterr().err
    engine = make_engine(filled)
    try:
        for day in (DAY1, DAY2):
            assert_quotes_equal(_database_quotes(engine, "BTC", day), _parquet_quotes(out, "BTC", day))
        assert_rows_equal(_table_rows(engine, surface_points, "BTC", POINT_COLUMNS),
                          _parquet_rows(out, "surface_points", "BTC", POINT_COLUMNS))
        assert_rows_equal(_table_rows(engine, surface_fits, "BTC", FIT_COLUMNS),
                          _parquet_rows(out, "surface_fits", "BTC", FIT_COLUMNS))
        assert_rows_equal(_table_rows(engine, volatility_index, "BTC", INDEX_COLUMNS),
                          _parquet_rows(out, "volatility_index", "BTC", INDEX_COLUMNS))
        # Nothing of ETH asked, nothing written; nothing removed from the database.
        assert not (out / "quotes" / "currency=ETH").exists()
        assert len(_database_quotes(engine, "BTC", DAY1)) == 2 * len(small_snapshot().quotes)
    finally:
        engine.dispose()
    meta = describe(out / "quotes" / "currency=BTC" / f"date={DAY1}" / "part-0.parquet")
    assert meta["dataset"] == "quotes" and meta["currency"] == "BTC" and meta["date"] == str(DAY1)
    assert int(meta["rows"]) == 2 * len(small_snapshot().quotes) and "Black-76" in meta["greeks"]


def test_archive_writes_verifies_then_removes_the_days_before(filled: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(filled)
    before = {c: _database_quotes(engine, c, DAY1) for c in ("BTC", "ETH")}
    kept = {c: _database_quotes(engine, c, DAY2) for c in ("BTC", "ETH")}
    out = tmp_path / "archive"
    try:
        status = main.main(["archive", "--before", str(DAY2), "--out", str(out), "--db", filled])
        assert status == 0, capsys.readouterr().err
        for currency in ("BTC", "ETH"):
            assert_quotes_equal(before[currency], _parquet_quotes(out, currency, DAY1))
            assert _database_quotes(engine, currency, DAY1) == []
            assert _database_quotes(engine, currency, DAY2) == kept[currency]
        assert not (out / "quotes" / "currency=BTC" / f"date={DAY2}").exists()
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                for table in ("option_minutes", "surface_points", "chain_minutes"):
                    names = existing_partitions(conn, table)
                    assert f"{table}_p20210722" not in names and f"{table}_p20210723" in names
        # The history of the index reads the archived day and the database's together.
        history = read_index_history(filled, out, "BTC", dt.datetime(2021, 7, 22, tzinfo=dt.UTC),
                                     dt.datetime(2021, 7, 24, tzinfo=dt.UTC))
        assert [m.minute.timestamp() for m in history] == list(MINUTES)
        # Run again: nothing left before the date, nothing changes.
        assert main.main(["archive", "--before", str(DAY2), "--out", str(out), "--db", filled]) == 0
        assert _database_quotes(engine, "BTC", DAY2) == kept["BTC"]
        assert_quotes_equal(before["BTC"], _parquet_quotes(out, "BTC", DAY1))
    finally:
        engine.dispose()


def test_a_day_changed_after_its_files_were_written_is_not_removed(filled: str, tmp_path: Path) -> None:
    engine = make_engine(filled)
    out = tmp_path / "archive"
    try:
        with engine.connect() as conn, conn.begin():
            files = [write_day(conn, DATASET[name], currency, DAY1, out, "test")
                     for currency in ("BTC", "ETH") for name in DATASET]
        # A late minute of the day (a spool written back) lands after the files were written.
        store = MinuteStore(filled, tmp_path / "spool2")
        store.open(now=AT)
        assert store.record(snapshot_record(small_snapshot(AT + 120, "BTC")))
        store.close()
        rows_before = len(_database_quotes(engine, "BTC", DAY1))
        with pytest.raises(ArchiveError, match="nothing removed"):
            remove_day(engine, DAY1, files)
        assert len(_database_quotes(engine, "BTC", DAY1)) == rows_before == 3 * len(small_snapshot().quotes)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                assert "option_minutes_p20210722" in existing_partitions(conn, "option_minutes")
        # A file that does not say what it holds is refused before anything is removed.
        assert file_rows(files[0].path) == files[0].rows
    finally:
        engine.dispose()


def _duckdb(out: Path, dataset: str, sql: str) -> list[tuple[Any, ...]]:
    return duckdb.sql(sql.replace("DATA", f"read_parquet('{out}/{dataset}/**/*.parquet', hive_partitioning = true)")
                      ).fetchall()


def test_a_late_minute_of_an_archived_day_is_merged_into_its_files_never_twice(filled: str, tmp_path: Path) -> None:
    engine = make_engine(filled)
    out = tmp_path / "archive"
    n = len(small_snapshot().quotes)
    try:
        archived = {c: _database_quotes(engine, c, DAY1) for c in ("BTC", "ETH")}
        archive(engine, out, before=DAY2)
        assert _database_quotes(engine, "BTC", DAY1) == []
        # Late minutes of the archived day, spooled and written back after its partitions were dropped:
        # 23:02 never written before, and 23:01 again (a spool written back twice), into new partitions.
        store = MinuteStore(filled, tmp_path / "spool-late")
        store.open(now=AT)
        late = msgspec.structs.replace(small_snapshot(AT, "BTC"), at=AT + 120)
        late = msgspec.structs.replace(late, quotes=tuple(msgspec.structs.replace(q, bid_amount=q.bid_amount + 1.0)
                                                          for q in late.quotes))
        assert store.record(snapshot_record(late))
        assert store.record(snapshot_record(msgspec.structs.replace(small_snapshot(AT, "BTC"), at=AT + 60)))
        store.close()
        in_database = _database_quotes(engine, "BTC", DAY1)
        assert len(in_database) == 2 * n
        archive(engine, out, before=DAY2)
        assert _database_quotes(engine, "BTC", DAY1) == []
        # Each minute once, the late one there with its own values, the archived ones as they were.
        late_rows = [r for r in in_database if _seconds(r[0]) == AT + 120]
        expected = sorted(archived["BTC"] + late_rows, key=lambda r: (_seconds(r[0]), r[1]))
        assert_quotes_equal(expected, _parquet_quotes(out, "BTC", DAY1))
        counts = _duckdb(out, "quotes", "SELECT count(*), count(DISTINCT (instrument, minute)), count(DISTINCT minute) "
                                        f"FROM DATA WHERE currency = 'BTC' AND date = DATE '{DAY1}'")
        assert counts == [(3 * n, 3 * n, 3)]
        for dataset, key in (("surface_points", "(minute, method, tenor_days, log_moneyness)"),
                             ("volatility_index", "minute"), ("minute_coverage", "minute"),
                             ("surface_fits", "(minute, expiry)")):
            [(rows, keys, minutes)] = _duckdb(out, dataset, f"SELECT count(*), count(DISTINCT {key}), "
                                                            "count(DISTINCT minute) FROM DATA WHERE currency = 'BTC'")
            assert rows == keys and minutes == 3, dataset
        assert _duckdb(out, "volatility_index", "SELECT count(*) FROM DATA WHERE currency = 'BTC'") == [(3,)]
        # One file a day; the other currency's day untouched.
        assert [p.name for p in (out / "quotes" / "currency=BTC" / f"date={DAY1}").iterdir()] == ["part-0.parquet"]
        assert_quotes_equal(archived["ETH"], _parquet_quotes(out, "ETH", DAY1))
        meta = describe(out / "quotes" / "currency=BTC" / f"date={DAY1}" / "part-0.parquet")
        assert int(meta["rows"]) == 3 * n
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                assert "option_minutes_p20210722" not in existing_partitions(conn, "option_minutes")
    finally:
        engine.dispose()


def test_rows_twice_in_a_days_files_are_merged_away_by_its_next_archive(filled: str, tmp_path: Path) -> None:
    """A run killed between renaming the merged file into place and removing the day's other part files
    leaves rows twice; the next archive of the day (a late minute came) writes each once."""
    engine = make_engine(filled)
    out = tmp_path / "archive"
    n = len(small_snapshot().quotes)
    try:
        archive(engine, out, before=DAY2)
        day = out / "quotes" / "currency=BTC" / f"date={DAY1}"
        (day / "part-1.parquet").write_bytes((day / "part-0.parquet").read_bytes())
        assert _duckdb(out, "quotes", f"SELECT count(*) FROM DATA WHERE currency = 'BTC' AND date = DATE '{DAY1}'"
                       ) == [(4 * n,)]
        store = MinuteStore(filled, tmp_path / "spool-late")
        store.open(now=AT)
        assert store.record(snapshot_record(small_snapshot(AT + 120, "BTC")))
        store.close()
        days = archive(engine, out, before=DAY2)
        assert [f.rows for f in days[0].files if f.dataset == "quotes"] == [n]
        assert [f.file_rows for f in days[0].files if f.dataset == "quotes"] == [3 * n]
        assert sorted(p.name for p in day.iterdir()) == ["part-0.parquet"]
        assert _duckdb(out, "quotes", f"SELECT count(*), count(DISTINCT (instrument, minute)) FROM DATA "
                                      f"WHERE currency = 'BTC' AND date = DATE '{DAY1}'") == [(3 * n, 3 * n)]
    finally:
        engine.dispose()


KILLED_RUN = textwrap.dedent("""
    import sys, time, datetime as dt
    from pathlib import Path
    from sql.archive import archive
    from sql.engine import make_engine
    url, out, marker = sys.argv[1:4]
    seen = []
    def progress(item):
        seen.append(item)
        if len(seen) == 3:  # half-way through the first day's files: say so, then wait to be killed
            Path(marker).write_text("half-way")
            time.sleep(600)
    archive(make_engine(url), Path(out), before=dt.date(2021, 7, 23), progress=progress)
""")


def test_an_archive_killed_half_way_leaves_the_database_whole_and_runs_again(filled: str, tmp_path: Path) -> None:
    engine = make_engine(filled)
    out = tmp_path / "archive"
    marker = tmp_path / "half-way"
    before = {c: _database_quotes(engine, c, DAY1) for c in ("BTC", "ETH")}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, filled, str(out), str(marker)], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, timeout=120)
        assert marker.exists(), process.stderr.read().decode() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        for currency in ("BTC", "ETH"):
            assert _database_quotes(engine, currency, DAY1) == before[currency]
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                assert "option_minutes_p20210722" in existing_partitions(conn, "option_minutes")
        # Run again (the command line, in a process of its own): it finishes the day.
        again = subprocess.run([sys.executable, "main.py", "archive", "--before", str(DAY2), "--out", str(out),
                                "--db", filled], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        for currency in ("BTC", "ETH"):
            assert _database_quotes(engine, currency, DAY1) == []
            assert_quotes_equal(before[currency], _parquet_quotes(out, currency, DAY1))
        assert not list(out.rglob(".*.tmp-*"))
    finally:
        if process.poll() is None:
            process.kill()
        engine.dispose()


def test_a_plot_of_an_archived_day_reads_the_archive(filled: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "archive"
    engine = make_engine(filled)
    try:
        archive(engine, out, before=DAY2)
        assert _database_quotes(engine, "BTC", DAY1) == []
    finally:
        engine.dispose()
    png = tmp_path / "smile.png"
    status = main.main(["plot", "--what", "smile", "--currency", "BTC", "--at", "2021-07-22T23:30", "--out", str(png),
                        "--db", filled, "--set", f"recorder.archive_dir={out}", "--size", "600x400"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "at 2021-07-22 23:01 UTC" in printed.out
    assert png.stat().st_size > 10_000
    # The day still in the database is drawn from it, the archive's days from the archive.
    status = main.main(["plot", "--what", "term", "--currency", "BTC", "--out", str(png), "--db", filled,
                        "--set", f"recorder.archive_dir={out}", "--size", "600x400"])
    assert status == 0 and "at 2021-07-23 00:01 UTC" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["archive", "--before", "2021-02-30"], "expected a UTC date"),
    (["archive", "--before", "2999-01-01"], "after today"),
    (["export", "--from", "2021-07-23", "--to", "2021-07-22", "--currency", "BTC", "--what", "quotes",
      "--out", "OUT"], "before --from"),
])
def test_bad_dates_are_refused_with_status_2(tmp_path: Path, args: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'desk.sqlite3'}"
    _fill(url, tmp_path / "spool")
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    assert main.main([*args, "--db", url]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_database_and_an_unwritable_directory_are_refused(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"sqlite:///{tmp_path / 'none.sqlite3'}"
    assert main.main(["archive", "--before", "2021-07-23", "--db", missing, "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite3").exists()
    url = f"sqlite:///{tmp_path / 'desk.sqlite3'}"
    _fill(url, tmp_path / "spool")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main.main(["export", "--from", "2021-07-22", "--to", "2021-07-23", "--currency", "BTC", "--what",
                      "index", "--out", str(blocker / "out"), "--db", url]) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_an_unreachable_database_is_status_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.support.postgres import dead_url

    with dead_url() as url:
        assert main.main(["export", "--from", "2021-07-22", "--to", "2021-07-23", "--currency", "BTC", "--what",
                          "index", "--out", str(tmp_path), "--db", url]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_partitions_dropped_only_for_archived_days(pg_url: str, tmp_path: Path) -> None:
    """Empty partitions of days before the date go too; today's and the days ahead stay."""
    from tests.support.sql import private_schema

    with private_schema(pg_url) as url:
        _fill(url, tmp_path / "spool")
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                ahead = existing_partitions(conn, "option_minutes")
            assert "option_minutes_p20210725" in ahead  # made ahead, empty
            export(engine, tmp_path / "x", first=DAY1, last=DAY2, currency="ETH", what="index")
            archive(engine, tmp_path / "a", before=dt.date(2021, 7, 25))
            with engine.connect() as conn:
                left = existing_partitions(conn, "option_minutes")
                assert left == ["option_minutes_p20210725"]
                assert conn.execute(text("SELECT count(*) FROM option_minutes")).scalar() == 0
        finally:
            engine.dispose()


def test_the_recorders_daily_archive_runs_in_a_thread_of_its_own(tmp_path: Path) -> None:
    from sql.maintenance import DailyMaintenance

    url = f"sqlite:///{tmp_path / 'desk.sqlite3'}"
    _fill(url, tmp_path / "spool")
    out = tmp_path / "archive"
    daily = DailyMaintenance(url, out, keep_days=1, budget_s=60.0)
    now = dt.datetime(2021, 7, 24, 0, 20, tzinfo=dt.UTC).timestamp()  # keep 2021-07-23, archive the 22nd
    assert daily.tick(now)
    daily.join(timeout=120)
    assert not daily.running and daily.last_error == ""
    assert [d.day for d in daily.last_result or []] == [DAY1]
    assert not daily.tick(now + 60)  # once a day
    engine = make_engine(url)
    try:
        assert _database_quotes(engine, "BTC", DAY1) == [] and _database_quotes(engine, "BTC", DAY2)
    finally:
        engine.dispose()
    assert file_rows(out / "quotes" / "currency=BTC" / f"date={DAY1}" / "part-0.parquet") == 240
