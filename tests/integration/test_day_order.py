"""Finished days' option rows put in block order on PostgreSQL (sql.day_order): every row and every read
(option_quotes, one instrument's history) the same after as before, the rows on disk by 15-minute block,
instrument and minute, the day's partition attached in its place with the table's indexes under their
names, a day ordered once, today's never, a late minute still written and read; a busy table or a run
killed half-way (SIGKILL) leaves the day as it was, and a second run orders it. SQLite has nothing to do."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from sqlalchemy import Engine, text

import sql.day_order as day_order
from sql.day_order import ORDERED, OrderingError, days_to_order, order_day, order_finished_days
from sql.engine import make_engine
from sql.maintenance import DailyMaintenance
from sql.queries import read_instrument_history
from sql.store import MinuteStore, snapshot_record
from tests.support.paths import REPO as REPO_ROOT
from tests.support.sql import private_schema, small_snapshot
from tests.support.waiting import wait_until

DAY1 = dt.date(2021, 7, 22)
START = dt.datetime(2021, 7, 22, tzinfo=dt.UTC).timestamp()
#: Every 10 minutes from 00:00 to 01:50 of day 1 (eight 15-minute blocks), and two minutes of day 2.
MINUTES = [START + n * 600 for n in range(12)] + [START + 86_400, START + 86_460]
PARTITION = "option_minutes_p20210722"
NOW = dt.datetime(2021, 7, 23, 12, 0, tzinfo=dt.UTC)  # day 1 over, day 2 not


def _fill(url: str, spool: Path, minutes: list[float]) -> None:
    store = MinuteStore(url, spool)
    store.open(now=minutes[0])
    base = {c: small_snapshot(minutes[0], c) for c in ("BTC", "ETH")}
    for at in minutes:
        for snapshot in base.values():
            assert store.record(snapshot_record(msgspec.structs.replace(snapshot, at=at)))
    store.close()


@pytest.fixture
def filled(pg_url: str, tmp_path: Path) -> Iterator[Engine]:
    with private_schema(pg_url) as url:
        _fill(url, tmp_path / "spool", MINUTES)
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _quotes(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM option_quotes ORDER BY minute, instrument"))]


def _names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT name FROM instruments ORDER BY id")).scalars())


def _histories(engine: Engine, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name in names:
        history = read_instrument_history(engine, name, greeks=True)
        assert history is not None
        out[name] = history.columns
    return out


def _indexes(engine: Engine, table: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(str(n), str(d).replace(f" ON {table} ", " ON T ").split(" ON ", 1)[1]) for n, d in conn.execute(text(
            "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
            "WHERE x.indrelid = to_regclass(:t) ORDER BY c.relname"), {"t": table})]


def _state(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        bound = conn.execute(text("SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c "
                                  "WHERE c.oid = to_regclass(:p)"), {"p": PARTITION}).scalar()
        staged = conn.execute(text("SELECT to_regclass(:s)"), {"s": PARTITION + "_ordering"}).scalar()
        comment = conn.execute(text("SELECT obj_description(to_regclass(:p), 'pg_class')"), {"p": PARTITION}).scalar()
    return bound, staged, comment


def _disk_order(engine: Engine) -> list[tuple[int, int, float]]:
    with engine.connect() as conn:
        return [(int(m // (60 * day_order.BLOCK_MINUTES)), int(r) // 4, float(m)) for m, r in conn.execute(text(
            f"SELECT extract(epoch FROM minute), instrument_ref FROM {PARTITION} ORDER BY ctid"))]


def test_a_finished_day_is_ordered_and_every_read_is_the_same(filled: Engine, tmp_path: Path) -> None:
    engine = filled
    names = _names(engine)[::17]
    quotes, histories, indexes = _quotes(engine), _histories(engine, names), _indexes(engine, PARTITION)
    bound = _state(engine)[0]
    assert _disk_order(engine) != sorted(_disk_order(engine))  # as written: by minute
    assert days_to_order(engine, NOW) == [DAY1]

    done = order_finished_days(engine, NOW)

    assert [d.day for d in done] == [DAY1]
    assert done[0].rows == sum(1 for q in quotes if q[0].date() == DAY1)
    assert _quotes(engine) == quotes
    for name, before in _histories(engine, names).items():
        assert before.keys() == histories[name].keys()
        for column, values in before.items():
            np.testing.assert_array_equal(values, histories[name][column], err_msg=f"{name} {column}")
    order = _disk_order(engine)
    assert order == sorted(order) and len(order) == done[0].rows
    assert _indexes(engine, PARTITION) == indexes  # the table's indexes, under the old partition's names
    assert _state(engine) == (bound, None, ORDERED)
    # once: and the day not over yet (day 2) is never ordered
    assert days_to_order(engine, NOW) == []
    assert order_day(engine, DAY1) is None
    assert days_to_order(engine, NOW + dt.timedelta(days=1)) == [DAY1 + dt.timedelta(days=1)]

    # a minute of the day written late lands (at the end) and is read
    late = START + 86_400 - 60
    _fill(str(engine.url.render_as_string(hide_password=False)), tmp_path / "late", [late])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM option_quotes WHERE minute = to_timestamp(:t)"),
                            {"t": late}).scalar() == 240
        name = conn.execute(text("SELECT min(instrument) FROM option_quotes WHERE minute = to_timestamp(:t)"),
                            {"t": late}).scalar()
    history = read_instrument_history(engine, name)
    assert history is not None and late in history["minute"]


def test_a_busy_table_leaves_the_day_as_it_was(filled: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(day_order, "LOCK_TRIES", 2)
    monkeypatch.setattr(day_order, "LOCK_TIMEOUT_MS", 100)
    quotes, state = _quotes(filled), _state(filled)
    reader = filled.connect()
    try:
        reader.begin()
        reader.execute(text("SELECT count(*) FROM option_minutes")).scalar()  # a long read holds the table
        with pytest.raises(OrderingError, match="the day is unchanged"):
            order_day(filled, DAY1)
    finally:
        reader.close()
    assert _quotes(filled) == quotes and _state(filled) == state
    assert order_day(filled, DAY1) is not None  # once the reader is gone


def test_todays_minutes_never_wait_and_a_late_minute_of_the_day_is_kept(filled: Engine, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """While a day's rows are being copied in order (held here once copied, before the swap), a minute of
    today is written at once; a late minute of the day being ordered waits past its deadline, is
    spooled, and is written once the ordering is over."""
    url = filled.url.render_as_string(hide_password=False)
    copy, held, release = day_order._copy_ordered, threading.Event(), threading.Event()

    def stalled(conn: Any, day: dt.date, name: str, staged: str) -> int:
        rows = copy(conn, day, name, staged)
        held.set()
        release.wait(60)
        return rows

    monkeypatch.setattr(day_order, "_copy_ordered", stalled)
    result: list[Any] = []
    ordering = threading.Thread(target=lambda: result.append(order_day(filled, DAY1)), daemon=True)
    ordering.start()
    try:
        assert held.wait(60)
        store = MinuteStore(url, tmp_path / "during", write_deadline_s=1.0)
        store.open(now=MINUTES[-1])
        today = small_snapshot(MINUTES[-1] + 60, "BTC")
        t0 = time.monotonic()
        assert store.record(snapshot_record(today))  # day 2's partition: not held
        assert time.monotonic() - t0 < 1.0
        late = msgspec.structs.replace(today, at=START + 3 * 3600)  # day 1, 03:00: held
        assert not store.record(snapshot_record(late))
        assert store.backlog == 1 and store.rejected == 0  # spooled, never moved aside
    finally:
        release.set()
        ordering.join(60)
    assert result and result[0] is not None and result[0].rows == 12 * 240
    wait_until(lambda: store.due() and (store.catch_up() or not store.backlog), timeout=60, what="the late minute")
    store.close()
    with filled.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM option_quotes WHERE minute = to_timestamp(:t)"),
                            {"t": START + 3 * 3600}).scalar() == 120
    assert _state(filled)[2] == ORDERED


KILLED_RUN = textwrap.dedent("""
    import sys, time, datetime as dt
    from pathlib import Path
    import sql.day_order as day_order
    from sql.engine import make_engine
    url, marker = sys.argv[1:3]
    swap = day_order._swap
    def stalled(conn, day, name, staged):
        swap(conn, day, name, staged)  # swapped, not committed: say so, then wait to be killed
        Path(marker).write_text("swapped")
        time.sleep(600)
    day_order._swap = stalled
    day_order.order_day(make_engine(url), dt.date(2021, 7, 22))
""")


def test_a_run_killed_half_way_leaves_the_day_whole_and_runs_again(filled: Engine, tmp_path: Path) -> None:
    url = filled.url.render_as_string(hide_password=False)
    marker = tmp_path / "swapped"
    quotes, state = _quotes(filled), _state(filled)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, url, str(marker)], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, timeout=120)
        assert marker.exists(), process.stderr.read().decode() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # the server ends the dead session's transaction: the day as it was, no staged table
        wait_until(lambda: _state(filled) == state, timeout=30, what="the killed run rolled back")
        assert _quotes(filled) == quotes
        again = order_day(filled, DAY1)
        assert again is not None and _state(filled)[2] == ORDERED and _quotes(filled) == quotes
    finally:
        if process.poll() is None:
            process.kill()


def test_the_daily_maintenance_orders_the_finished_days(filled: Engine, tmp_path: Path) -> None:
    daily = DailyMaintenance(filled.url.render_as_string(hide_password=False), tmp_path / "archive", keep_days=0,
                             budget_s=60.0)
    assert daily.tick(dt.datetime(2021, 7, 23, 0, 20, tzinfo=dt.UTC).timestamp())  # day 2, past the grace
    daily.join(timeout=60)
    assert not daily.running and daily.last_error == ""
    assert [d.day for d in daily.last_ordered or []] == [DAY1]
    assert daily.last_result is None and not (tmp_path / "archive").exists()  # the archive is off


def test_sqlite_keeps_the_simple_layout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'desk.sqlite3'}"
    _fill(url, tmp_path / "spool", MINUTES[:2])
    engine = make_engine(url)
    try:
        assert days_to_order(engine, NOW) == [] and order_day(engine, DAY1) is None
    finally:
        engine.dispose()
