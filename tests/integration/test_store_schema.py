"""Schema 5 (issue 21's foundation): compact option rows, day partitions on PostgreSQL, the
migration from version 4, and the readers answering as before; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from sqlalchemy import Engine, func, inspect, select, text

from actors.recorder import GetRecorderStatus, Recorder
from messages.surface import SurfaceSnapshot
from messages.system import DailyRollover, MinuteTick
from runtime.actor import ActorContext
from runtime.clock import ReplayClock
from sql.engine import create_schema, make_engine
from sql.partitions import existing_partitions, partition_name
from sql.plots import _read_quotes
from sql.store import MinuteStore
from sql.tables import (
    PARTITIONED,
    SCHEMA_VERSION,
    chain_minutes,
    expiry_minutes,
    instruments,
    minute_coverage,
    option_minutes,
    option_quotes,
    surface_fits,
    surface_points,
    volatility_index,
)
from sql.writers import minute_rows, write_surface_snapshot
from tests.support import schema_v4
from tests.support.settings import make_settings
from tests.support.sql import AT, Bus, count, option_row_kept, small_snapshot

# AT is 2021-07-22 23:00 UTC: minutes an hour later are the next day's.
NEXT_DAY = AT + 3600.0
DAY = dt.date(2021, 7, 22)


def _snapshots() -> list[SurfaceSnapshot]:
    btc = small_snapshot()
    quotes = list(btc.quotes)
    # One option whose ticker had another underlying price than its expiry's others, and one with
    # nothing but its amounts (a book without prices, no vols).
    quotes[0] = msgspec.structs.replace(quotes[0], underlying_price=(quotes[0].underlying_price or 0.0) + 3.25)
    quotes[1] = msgspec.structs.replace(quotes[1], bid=None, ask=None, bid_iv=None, ask_iv=None, mid_iv=None,
                                        mark_price=None, mark_iv=None, open_interest=None, stale=True,
                                        in_surface=False)
    btc = msgspec.structs.replace(btc, quotes=tuple(quotes))
    return [btc, msgspec.structs.replace(btc, at=AT + 60), small_snapshot(currency="ETH"),
            msgspec.structs.replace(btc, at=NEXT_DAY), small_snapshot(at=NEXT_DAY, currency="ETH")]


@pytest.fixture(scope="module")
def snapshots() -> list[SurfaceSnapshot]:
    return _snapshots()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def v4_database(engine: Engine, snapshots: list[SurfaceSnapshot]) -> None:
    """What version 4 of the program left: its tables (its own definitions), versions 1 to 4 and its
    rows of ``snapshots``."""
    with engine.begin() as conn:
        schema_v4.metadata.create_all(conn)
        conn.execute(schema_v4.schema_version.insert(), [
            {"version": v, "applied_at": dt.datetime.fromtimestamp(AT - 86_400, dt.UTC)} for v in (1, 2, 3, 4)])
        for snap in snapshots:
            for part in minute_rows(snap):
                table = schema_v4.metadata.tables[part.table.name]
                if part.rows:
                    conn.execute(table.insert(), [dict(zip(part.columns, row, strict=True)) for row in part.rows])


def _rows(engine: Engine, table: Any) -> list[tuple[Any, ...]]:
    """A table's rows, times as naive UTC (SQLite reads them naive)."""
    with engine.connect() as conn:
        return [tuple(v.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(v, dt.datetime) and v.tzinfo else v
                      for v in row) for row in conn.execute(select(table))]


def _listed(values: np.ndarray) -> list[Any]:
    """An array as a list to compare: floats as float4 (version 5 stores reals), NaN as None."""
    if values.dtype == bool:
        return values.tolist()
    return [None if np.isnan(v) else v for v in values.astype(np.float32).tolist()]


def reads(engine: Engine, snapshots: list[SurfaceSnapshot]) -> list[Any]:
    """What the readers take of each minute: the smile plot's quotes (float4-rounded arrays) and the
    option_quotes rows as version 5 keeps them."""
    found: list[Any] = []
    for snap in snapshots:
        minute = dt.datetime.fromtimestamp(snap.at, dt.UTC)
        quotes = _read_quotes(engine, snap.currency, minute)
        found.append({expiry: {name: _listed(getattr(q, name))
                               for name in ("strike", "is_call", "underlying", "bid", "ask", "mid", "mark")}
                      for expiry, q in quotes.items()})
        q = option_quotes
        with engine.connect() as conn:
            rows = conn.execute(select(q).where(q.c.minute == minute, q.c.currency == snap.currency)).all()
        columns = [c.name for c in q.columns]
        found.append(sorted((option_row_kept(columns, tuple(r)) for r in rows), key=repr))
    return found


def test_a_version_4_database_is_migrated_and_the_readers_answer_as_before(
        engine: Engine, snapshots: list[SurfaceSnapshot]) -> None:
    v4_database(engine, snapshots)
    before = reads(engine, snapshots)
    assert all(before)
    others = (minute_coverage, surface_points, surface_fits, volatility_index)
    rows_before = {t.name: sorted(map(repr, _rows(engine, t))) for t in others}
    assert all(rows_before.values())
    assert create_schema(engine) == SCHEMA_VERSION == 5
    assert reads(engine, snapshots) == before
    assert {t.name: sorted(map(repr, _rows(engine, t))) for t in others} == rows_before
    if engine.dialect.name == "postgresql":  # the other per-minute tables are partitioned by day too
        with engine.connect() as conn:
            query = text("SELECT relname, relkind FROM pg_class WHERE relname = ANY(:n) "
                         "AND relnamespace = to_regnamespace(current_schema())")
            kinds: dict[str, str] = dict(conn.execute(query, {"n": list(PARTITIONED)}).all())
            assert kinds == dict.fromkeys(PARTITIONED, "p")
            assert existing_partitions(conn, "surface_points") == [
                partition_name("surface_points", d) for d in (DAY, DAY + dt.timedelta(days=1))]
    with engine.connect() as conn:
        inspector = inspect(conn)
        assert "option_quotes" not in inspector.get_table_names()  # copied, verified, dropped
        assert "option_quotes" in inspector.get_view_names()
        names = {q.instrument_name for s in snapshots for q in s.quotes}
        assert count(engine, instruments) == len(names)
        seen = {r.name: (r.first_seen, r.last_seen) for r in conn.execute(select(instruments))}
        ids = conn.execute(select(instruments.c.id)).scalars().all()
    assert len(set(ids)) == len(ids)
    btc = snapshots[0].quotes[5].instrument_name
    assert [value.replace(tzinfo=None) for value in seen[btc]] == [
        dt.datetime.fromtimestamp(t, dt.UTC).replace(tzinfo=None) for t in (AT, NEXT_DAY)]
    assert count(engine, option_minutes) == sum(len(s.quotes) for s in snapshots)
    assert count(engine, chain_minutes) == len(snapshots)
    assert count(engine, expiry_minutes) == sum(len({q.expiry_ms for q in s.quotes}) for s in snapshots)
    # The odd option reads back its own underlying price and its missing values as missing.
    odd, empty = snapshots[0].quotes[0], snapshots[0].quotes[1]
    with engine.connect() as conn:
        rows = {r.instrument: r for r in conn.execute(select(option_quotes).where(
            option_quotes.c.minute == dt.datetime.fromtimestamp(AT, dt.UTC), option_quotes.c.currency == "BTC"))}
    assert rows[odd.instrument_name].underlying_price == pytest.approx(odd.underlying_price, rel=1e-9)
    assert rows[empty.instrument_name].underlying_price == empty.underlying_price
    missing = rows[empty.instrument_name]
    assert (missing.bid, missing.ask, missing.mark_iv, missing.delta, missing.stale, missing.in_surface) == (
        None, None, None, None, True, False)
    # Written again after the migration, the same minutes add nothing.
    counts = {t.name: count(engine, t) for t in (option_minutes, chain_minutes, expiry_minutes, instruments)}
    with engine.begin() as conn:
        for snap in snapshots:
            write_surface_snapshot(conn, snap)
    assert {t.name: count(engine, t) for t in (option_minutes, chain_minutes, expiry_minutes, instruments)} == counts
    assert create_schema(engine) == SCHEMA_VERSION  # again: nothing to do
    assert reads(engine, snapshots) == before
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            assert set(existing_partitions(conn, "option_minutes")) == {
                partition_name("option_minutes", d) for d in (DAY, DAY + dt.timedelta(days=1))}
            per_partition: dict[str, int] = dict(conn.execute(text(
                "SELECT tableoid::regclass::text, count(*) FROM option_minutes GROUP BY 1")).all())
        assert per_partition == {
            partition_name("option_minutes", DAY): sum(len(s.quotes) for s in snapshots if s.at < NEXT_DAY),
            partition_name("option_minutes", DAY + dt.timedelta(days=1)): sum(
                len(s.quotes) for s in snapshots if s.at >= NEXT_DAY)}


def test_a_new_database_reads_what_a_version_4_database_read(
        db_url: str, tmp_path: Path, snapshots: list[SurfaceSnapshot]) -> None:
    """The same snapshots written by version 4 (its tables, its writer's rows) and by this version."""
    old_url = f"sqlite:///{tmp_path / 'v4.sqlite3'}"
    old, new = make_engine(old_url), make_engine(db_url)
    try:
        v4_database(old, snapshots)
        create_schema(new)
        with new.begin() as conn:
            for snap in snapshots:
                write_surface_snapshot(conn, snap)
        assert reads(new, snapshots) == reads(old, snapshots)
        # The greeks: the snapshot's (as Deribit's ticker gave them) to the mark vol's rounding; none
        # without a mark vol (Deribit's ticker always has one).
        with old.connect() as a, new.connect() as b:
            q = option_quotes.c
            query = select(q.instrument, q.minute, q.mark_iv, q.delta)

            def rows(conn: Any) -> list[Any]:
                return sorted(conn.execute(query).all(), key=lambda r: (r.minute.replace(tzinfo=None), r.instrument))

            was, now = rows(a), rows(b)
        assert [(r.instrument, r.minute.replace(tzinfo=None)) for r in was] == [
            (r.instrument, r.minute.replace(tzinfo=None)) for r in now]
        moved = snapshots[0].quotes[0].instrument_name  # its greeks were at its expiry's underlying price
        for w, n in zip(was, now, strict=True):
            if w.instrument == moved or w.minute.replace(tzinfo=dt.UTC).timestamp() != AT:
                continue  # the snapshots copied to later minutes kept the greeks of AT
            if w.mark_iv is None:
                assert n.delta is None
            else:
                assert n.delta == pytest.approx(w.delta, abs=1e-4)
    finally:
        old.dispose()
        new.dispose()


def test_a_minute_written_twice_adds_nothing_and_instruments_keep_first_and_last_seen(
        engine: Engine, snapshots: list[SurfaceSnapshot]) -> None:
    create_schema(engine)
    btc = snapshots[0]
    later = msgspec.structs.replace(btc, at=AT + 2 * 3600)
    twice = msgspec.structs.replace(btc, quotes=(*btc.quotes, btc.quotes[7]))  # one option listed twice
    for snap in (later, twice, btc, msgspec.structs.replace(btc, quotes=btc.quotes[:5])):
        with engine.begin() as conn:
            write_surface_snapshot(conn, snap)
    assert count(engine, option_minutes) == 2 * len(btc.quotes)
    assert count(engine, chain_minutes) == 2
    assert count(engine, surface_points) == 2 * len(btc.points)
    name = btc.quotes[3].instrument_name
    with engine.connect() as conn:
        row = conn.execute(select(instruments).where(instruments.c.name == name)).one()
    assert (row.first_seen.replace(tzinfo=None), row.last_seen.replace(tzinfo=None)) == (
        dt.datetime(2021, 7, 22, 23, 0), dt.datetime(2021, 7, 23, 1, 0))
    assert (row.currency, row.kind, row.option_type, row.settlement_currency) == ("BTC", "option",
                                                                                   btc.quotes[3].option_type, "BTC")
    # last_seen moves on once it is an hour behind, not every minute.
    with engine.begin() as conn:
        write_surface_snapshot(conn, msgspec.structs.replace(btc, at=AT + 2 * 3600 + 60))
    with engine.connect() as conn:
        assert conn.execute(select(instruments.c.last_seen).where(instruments.c.name == name)).scalar_one(
        ).replace(tzinfo=None) == dt.datetime(2021, 7, 23, 1, 0)


def test_sqlite_has_the_tables_without_partitions(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'desk.sqlite3'}")
    try:
        create_schema(eng)
        with eng.begin() as conn:
            write_surface_snapshot(conn, small_snapshot())
        with eng.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        assert set(PARTITIONED) <= tables and not [t for t in tables if "_p2021" in t]
        assert count(eng, option_quotes) == len(small_snapshot().quotes)
    finally:
        eng.dispose()


# -- partitions (PostgreSQL) -----------------------------------------------------------------------------
@pytest.fixture
def pg(pg_url: str) -> Iterator[str]:
    from tests.support.sql import private_schema

    with private_schema(pg_url) as url:
        yield url


def _partitions(url: str) -> dict[str, list[str]]:
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return {t: existing_partitions(conn, t) for t in PARTITIONED}
    finally:
        eng.dispose()


def test_the_store_makes_today_and_the_next_days_partitions_once_a_day(pg: str, tmp_path: Path) -> None:
    store = MinuteStore(pg, tmp_path / "spool", partition_days_ahead=2)
    try:
        store.open()
        created = store.make_partitions(AT)
        days = [DAY + dt.timedelta(days=n) for n in range(3)]
        assert sorted(created) == sorted(partition_name(t, d) for t in PARTITIONED for d in days)
        assert store.make_partitions(AT + 60) == []  # the same day: nothing asked
        assert store.make_partitions(NEXT_DAY) == [partition_name(t, DAY + dt.timedelta(days=3))
                                                   for t in PARTITIONED]
    finally:
        store.close()
    assert _partitions(pg) == {t: [partition_name(t, DAY + dt.timedelta(days=n)) for n in range(4)]
                               for t in PARTITIONED}


def test_the_recorder_makes_the_coming_days_partitions_at_start_and_on_a_new_day(pg: str, tmp_path: Path) -> None:
    clock = ReplayClock(AT)
    settings = make_settings({"database.url": pg, "recorder.spool_dir": str(tmp_path / "spool"),
                              "recorder.partition_days_ahead": 1})
    ref: Any = Recorder.start(ActorContext(name="recorder", clock=clock, settings=settings, publish=Bus().publish))
    try:
        ref.ask(GetRecorderStatus(), timeout=10)
        assert _partitions(pg)["option_minutes"] == [partition_name("option_minutes", DAY + dt.timedelta(days=n))
                                                     for n in range(2)]
        clock.advance_to(NEXT_DAY + 60)
        ref.tell(MinuteTick(at=NEXT_DAY + 60))
        ref.ask(GetRecorderStatus(), timeout=10)
        assert _partitions(pg)["option_minutes"] == [partition_name("option_minutes", DAY + dt.timedelta(days=n))
                                                     for n in range(3)]
    finally:
        ref.stop()
    assert DailyRollover in Recorder.subscriptions()


def test_a_minute_whose_partition_is_missing_makes_it_and_lands_in_it(pg: str) -> None:
    eng = make_engine(pg)
    far = AT + 400 * 86_400.0  # no partition made ahead that far
    try:
        create_schema(eng)
        with eng.begin() as conn:
            write_surface_snapshot(conn, small_snapshot(at=far))
            write_surface_snapshot(conn, small_snapshot(at=AT))
        with eng.connect() as conn:
            per_partition: dict[str, int] = dict(conn.execute(text(
                "SELECT tableoid::regclass::text, count(*) FROM option_minutes GROUP BY 1")).all())
            total = conn.execute(select(func.count()).select_from(option_quotes)).scalar_one()
    finally:
        eng.dispose()
    n = len(small_snapshot().quotes)
    far_day = dt.datetime.fromtimestamp(far, dt.UTC).date()
    assert per_partition == {partition_name("option_minutes", far_day): n, partition_name("option_minutes", DAY): n}
    assert total == 2 * n


def test_a_copy_that_does_not_match_keeps_the_old_table_and_version_and_the_next_start_completes_it(
        engine: Engine, snapshots: list[SurfaceSnapshot], monkeypatch: pytest.MonkeyPatch) -> None:
    import sql.migrations

    v4_database(engine, snapshots[:3])
    before = reads(engine, snapshots[:3])
    real_count = sql.migrations._count

    def short(conn: Any, query: Any) -> int:  # one option row fewer counted in the copy
        found = real_count(conn, query)
        return found - 1 if "option_minutes" in str(query) else found

    monkeypatch.setattr(sql.migrations, "_count", short)
    with pytest.raises(sql.migrations.MigrationCheckFailed, match=r"option_minutes: \d+ rows, expected \d+"):
        create_schema(engine)
    with engine.connect() as conn:
        assert "option_quotes" in inspect(conn).get_table_names()
        assert conn.execute(text("SELECT max(version) FROM schema_version")).scalar_one() == 4
    monkeypatch.setattr(sql.migrations, "_count", real_count)
    assert create_schema(engine) == SCHEMA_VERSION
    assert reads(engine, snapshots[:3]) == before
    assert count(engine, option_minutes) == sum(len(s.quotes) for s in snapshots[:3])


def test_values_a_real_cannot_hold_neither_refuse_the_minute_nor_its_migration(engine: Engine) -> None:
    """Past float4's range a value is missing, below its normal range 0: a minute (or an old row)
    holding one is still written, never refused."""
    snap = small_snapshot()
    odd = msgspec.structs.replace(snap.quotes[0], bid_iv=1e39, mid_iv=1e-45, ask_iv=float("inf"),
                                  open_interest=-1e40)
    snap = msgspec.structs.replace(snap, quotes=(odd, *snap.quotes[1:]))
    later = msgspec.structs.replace(snap, at=AT + 60)
    v4_database(engine, [snap])
    create_schema(engine)
    with engine.begin() as conn:
        write_surface_snapshot(conn, later)
    q = option_quotes.c
    with engine.connect() as conn:
        rows = conn.execute(select(q.minute, q.bid_iv, q.mid_iv, q.ask_iv, q.open_interest)
                            .where(q.instrument == odd.instrument_name).order_by(q.minute)).all()
    assert [tuple(r)[1:] for r in rows] == [(None, 0.0, None, None)] * 2
    assert count(engine, option_quotes) == 2 * len(snap.quotes)


def test_the_views_greeks_are_black76_at_the_mark_vol_also_on_the_last_day_at_expiry_and_at_zero_vol(
        engine: Engine) -> None:
    from quant.black76 import black76_greeks

    base = small_snapshot().quotes[10]
    cases = []
    for n, (hours, vol) in enumerate([(24 * 30, 60.0), (24 * 30, 250.0), (12, 80.0), (0.5, 150.0), (0, 80.0),
                                      (-3, 80.0), (24 * 7, 0.0), (24 * 300, 45.5)]):
        for strike in (20_000.0, 32_000.0, 45_000.0):
            for kind in ("call", "put"):
                cases.append(msgspec.structs.replace(
                    base, instrument_name=f"BTC-X{n}-{strike:.0f}-{kind[0].upper()}", strike=strike, option_type=kind,
                    expiry_ms=int((AT + hours * 3600) * 1000), mark_iv=vol))
    create_schema(engine)
    with engine.begin() as conn:
        write_surface_snapshot(conn, msgspec.structs.replace(small_snapshot(), quotes=tuple(cases)))
    with engine.connect() as conn:
        rows = {r.instrument: r for r in conn.execute(select(option_quotes))}
    for q in cases:
        r = rows[q.instrument_name]
        years = (q.expiry_ms / 1000 - AT) / (365 * 86_400)
        want = black76_greeks(r.underlying_price, q.strike, years, q.mark_iv / 100, q.option_type == "call")
        for name in ("delta", "gamma", "vega", "theta"):
            assert getattr(r, name) == pytest.approx(float(getattr(want, name)), rel=1e-9, abs=1e-9), (
                q.instrument_name, name)
