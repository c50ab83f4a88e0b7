"""One instrument over time (sql.queries.read_instrument_history): the same rows and values as the
option_quotes view, greeks as the view's, on SQLite and PostgreSQL; ranges across day partitions; a
migrated version 4 database; reals read back as their shortest decimals (as_decimal against
PostgreSQL's own real::text::float8)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import msgspec
import numpy as np
import pytest
from sqlalchemy import Engine, select, text

from messages.surface import SurfaceSnapshot
from sql.engine import create_schema, make_engine
from sql.queries import HISTORY_VALUES, as_decimal, read_instrument_history
from sql.store import MinuteStore, snapshot_record
from sql.tables import option_quotes
from sql.writers import minute_rows
from tests.support import schema_v4
from tests.support.sql import AT, small_snapshot

UTC = dt.UTC
#: Minutes of 2021-07-22 23:00 to 2021-07-24 01:00: three day partitions.
MINUTES = (AT, AT + 60, AT + 1800, AT + 3600, AT + 3660, AT + 86_400, AT + 93_600)


def _snapshots() -> list[SurfaceSnapshot]:
    base = small_snapshot()
    quotes = list(base.quotes)
    # its ticker's underlying off its expiry's; a book with nothing but amounts; a stale one; a value in
    # float4's seventh digit and past it
    quotes[0] = msgspec.structs.replace(quotes[0], underlying_price=(quotes[0].underlying_price or 0.0) + 3.25,
                                        open_interest=12_345_678.0, bid_amount=0.1)
    quotes[1] = msgspec.structs.replace(quotes[1], bid=None, ask=None, bid_iv=None, ask_iv=None, mid_iv=None,
                                        mark_price=None, mark_iv=None, open_interest=None, stale=True,
                                        in_surface=False)
    quotes[2] = msgspec.structs.replace(quotes[2], stale=True, mark_iv=71.23456789)
    base = msgspec.structs.replace(base, quotes=tuple(quotes))
    out = []
    for n, at in enumerate(MINUTES):
        moved = tuple(msgspec.structs.replace(q, bid_amount=q.bid_amount + n, mark_iv=None if q.mark_iv is None
                                              else q.mark_iv + 0.01 * n) for q in base.quotes)
        # the third minute leaves the second option out: its history has a gap
        out.append(msgspec.structs.replace(base, at=at, quotes=moved if n != 2 else moved[:1] + moved[2:]))
    out.append(small_snapshot(AT, "ETH"))
    return out


@pytest.fixture
def engine(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    store = MinuteStore(db_url, tmp_path_factory.mktemp("spool"))
    store.open(now=AT)
    for snapshot in _snapshots():
        assert store.record(snapshot_record(snapshot))
    store.close()
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _view(engine: Engine, name: str, start: dt.datetime | None = None,
          end: dt.datetime | None = None) -> list[dict[str, object]]:
    q = option_quotes.c
    query = select(option_quotes).where(q.instrument == name).order_by(q.minute)
    if start is not None:
        query = query.where(q.minute >= start)
    if end is not None:
        query = query.where(q.minute <= end)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _assert_same(engine: Engine, name: str, start: dt.datetime | None = None, end: dt.datetime | None = None) -> int:
    rows = _view(engine, name, start, end)
    history = read_instrument_history(engine, name, start, end, greeks=True)
    assert history is not None
    assert len(history) == len(rows)
    assert history.minutes() == [_as_utc(r["minute"]) for r in rows]  # type: ignore[arg-type]
    for column in (*HISTORY_VALUES, "underlying_price"):
        expected = np.array([np.nan if r[column] is None else r[column] for r in rows], dtype=float)
        assert np.array_equal(history[column], expected, equal_nan=True), column  # exactly the view's
    for column in ("stale", "in_surface"):
        assert history[column].tolist() == [bool(r[column]) for r in rows], column
    # the view's greeks are quant.black76's to 1e-9 (sql.views; the last day's theta is intrinsic - price,
    # a difference of numbers of the forward's size)
    for column, atol in (("delta", 1e-12), ("gamma", 1e-15), ("vega", 1e-12), ("theta", 1e-9)):
        expected = np.array([np.nan if r[column] is None else r[column] for r in rows], dtype=float)
        assert np.allclose(history[column], expected, rtol=1e-9, atol=atol, equal_nan=True), column
    return len(rows)


def test_one_instrument_over_time_is_the_views_rows_and_values(engine: Engine) -> None:
    quotes = _snapshots()[0].quotes
    for q in quotes[:4]:
        assert _assert_same(engine, q.instrument_name) in (len(MINUTES), len(MINUTES) - 1)
    # the gap: the option left out of the third minute
    assert _assert_same(engine, quotes[1].instrument_name) == len(MINUTES) - 1
    history = read_instrument_history(engine, quotes[0].instrument_name)
    assert history is not None and history.currency == "BTC" and history.strike == quotes[0].strike
    assert history.expiry.timestamp() * 1000 == quotes[0].expiry_ms
    assert "delta" not in history.columns  # greeks only when asked
    assert read_instrument_history(engine, "BTC-1JAN00-1-C") is None


def test_a_range_reads_the_minutes_in_it_across_day_partitions(engine: Engine) -> None:
    name = _snapshots()[0].quotes[3].instrument_name
    start = dt.datetime.fromtimestamp(AT + 60, UTC)
    end = dt.datetime.fromtimestamp(AT + 86_400, UTC)
    assert _assert_same(engine, name, start, end) == 5  # 23:01, 23:30, 00:00, 00:01, 23:00; both ends in
    assert _assert_same(engine, name, start=end) == 2
    assert _assert_same(engine, name, end=start) == 2
    history = read_instrument_history(engine, name, end, start)
    assert history is not None and len(history) == 0
    assert [m.timestamp() for m in history.minutes()] == []


def test_a_migrated_version_4_database_reads_the_same(db_url: str) -> None:
    eng = make_engine(db_url)
    try:
        with eng.begin() as conn:  # what version 4 of the program left: its tables, versions and rows
            schema_v4.metadata.create_all(conn)
            conn.execute(schema_v4.schema_version.insert(), [
                {"version": v, "applied_at": dt.datetime.fromtimestamp(AT - 86_400, UTC)} for v in (1, 2, 3, 4)])
            for snapshot in _snapshots()[:3]:
                for part in minute_rows(snapshot):
                    if part.rows:
                        conn.execute(schema_v4.metadata.tables[part.table.name].insert(),
                                     [dict(zip(part.columns, row, strict=True)) for row in part.rows])
        assert create_schema(eng) == 5
        name = _snapshots()[0].quotes[0].instrument_name
        assert _assert_same(eng, name) == 3
    finally:
        eng.dispose()


def test_reals_read_back_as_postgresqls_shortest_decimals(pg_url: str) -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(0.0, 6.0, 4000), -rng.lognormal(0.0, 3.0, 1000),
                             np.round(rng.uniform(0, 1, 1000), 4), np.round(rng.lognormal(8, 3, 1000), 1),
                             10 ** rng.uniform(6, 12, 2000), [0.0, -0.0, 1.0, 0.1, 1e-38, 3.4e38, 97867424.0]]
                            ).astype(np.float32)
    eng = make_engine(pg_url)
    try:
        with eng.connect() as conn:
            expected = conn.execute(text(
                "SELECT CAST(CAST(v AS text) AS double precision) FROM unnest(CAST(:a AS real[])) WITH ORDINALITY "
                "AS t(v, n) ORDER BY n"), {"a": [float(v) for v in values]}).scalars().all()
    finally:
        eng.dispose()
    assert np.array_equal(as_decimal(values), np.array(expected, dtype=float))
    nan = as_decimal(np.array([np.nan, np.inf], dtype=np.float32))
    assert np.isnan(nan[0]) and nan[1] == np.inf
