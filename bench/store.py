"""The record's size and speed on PostgreSQL, schema 5 against the present (version 4) layout, and its
Parquet archive: ``python -m bench store [--json] [--days N] [--minutes-per-day M] [--btc N] [--eth N]
[--pg-url URL]``.

Issue 21's benchmark. Input: one synthetic BTC and one ETH SurfaceSnapshot (bench.snapshot: the full
synthetic chain; ``--btc``/``--eth`` options, 700 and 500 by default: Deribit's about 1,200;
``--expiries`` 12 each), moved each minute as a market moves (:class:`MovingChain`: the forward a random
walk, the vols a common random walk plus noise, mark vols rounded to 0.01 as Deribit's, books on the
tick and changing some minutes, amounts some minutes, open interest rarely: identical minutes would
make the Parquet figure meaningless), written at ``--minutes-per-day`` minutes of each of ``--days``
days (30 by default; the minutes spread evenly over the day: 144 by default, every 10 minutes, so that
a run finishes in about ten minutes on a shared machine; 1,440 is every minute), both currencies each
minute:

- schema 5 with the Recorder's own code (:class:`sql.store.MinuteStore`, ``record``), into its own
  PostgreSQL schema (partitions made ahead by ``make_partitions`` as the Recorder does);
- version 4 in the same run with the same snapshots: its tables (tests.support.schema_v4, version 4's
  own definitions) and its writer's way (COPY into a staging table, ``INSERT ... ON CONFLICT DO
  NOTHING``), the same rows (:func:`sql.writers.minute_rows`).

Once written, every day of schema 5's fill is put in block order (:func:`sql.day_order.order_finished_days`),
as the Recorder's daily maintenance leaves each finished day: the figures are the record's steady state
(``bytes_per_option_minute_as_written`` is before).

Prints, for each: bytes per option-minute (``pg_total_relation_size``, indexes included, after
VACUUM ANALYZE) of the option tables alone and of the whole record (surface, fits, index and
coverage too; schema 5's by table), insert ms per minute (both currencies) on the first and the last
day written, the median ms of a whole chain at one minute (``option_quotes`` at a minute and currency;
``chain_at_minute_ms`` is the slowest of three: the 30 days, and a day of the full chain written every
minute of its own (:func:`_full_chain_day_figures`), as written and ordered) and of one instrument over
the whole fill on the sampled chain (``instrument_30d_ms_sampled``:
:func:`sql.queries.read_instrument_history` with greeks; ``instrument_30d_view_ms_sampled``: the
``option_quotes`` view, and ``instrument_30d_view_ms_projected`` its fixed part plus its part per row,
from the last day alone against the whole fill, at the rows full days would have). One instrument at
full density is measured, not projected (``instrument_30d_ms``, ``_no_greeks``, ``instrument_30d_view_ms``,
``full_density`` says what was written): a store of its own written every minute of every day by the
Recorder's code, its chain two expiries of BTC options (:func:`_full_density_figures`). Insert times
on a shared machine move with its load: ``insert_ms_per_minute_day30_over_day1_same_time`` compares the
last day's minutes with a second, empty schema 5 store's first day written in alternation with them.
Then schema 5's whole fill is archived
(:func:`sql.archive.archive`, every day, every currency, the partitions dropped): Parquet bytes per
option-minute (the quotes; ``parquet_record_bytes_per_option_minute`` with the surface, fits, index and
coverage) and option-minute rows archived per second. PostgreSQL: ``--pg-url``, else a throwaway
cluster of its own (tests.support.postgres.ThrowawayCluster: initdb and pg_ctl, as the postgres user
when run as root, fsync off), removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from typing import Any

import msgspec
import numpy as np
from sqlalchemy import Engine, text

from bench.snapshot import synthetic_chain_snapshot
from desk.surface_snapshot import build_surface_snapshot
from messages.surface import SurfaceSnapshot
from sql.archive import archive
from sql.day_order import order_finished_days
from sql.engine import make_engine
from sql.queries import read_instrument_history
from sql.store import MinuteStore, snapshot_record
from sql.writers import MinuteRows, _copy_ignoring_conflicts, minute_rows
from tests.support.sql import private_schema

START = 1_764_547_200.0  # 2025-12-01 00:00 UTC
#: "Now" for the daily maintenance once the fill is over: every day written is a finished day.
LATER = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
OPTION_TABLES_5 = ("option_minutes", "instruments", "expiry_minutes", "chain_minutes")
SURFACE_TABLES = ("surface_points", "surface_fits", "volatility_index", "minute_coverage")


def _log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _server(given: str | None) -> tuple[str, Any]:
    if given:
        return given, None
    from tests.support.postgres import ThrowawayCluster

    cluster = ThrowawayCluster()
    cluster.start()
    return cluster.url, cluster


class MovingChain:
    """A currency's snapshot moved minute by minute (seeded): the forward a random walk (0.08% a
    minute), the vols a common random walk (0.05 vol points a minute) plus each quote's noise, mark vols
    rounded to 0.01, mark prices moving with the forward, bids and asks on the 0.0001 tick changing at
    about half the minutes, amounts at a third, open interest at 2%."""

    def __init__(self, snapshot: SurfaceSnapshot, seed: int) -> None:
        self.base = snapshot
        self.rng = np.random.default_rng(seed)
        self.log_f = 0.0
        self.shift = 0.0
        q = snapshot.quotes
        self.n = len(q)

        def arr(name: str) -> np.ndarray:
            return np.array([np.nan if getattr(x, name) is None else getattr(x, name) for x in q], dtype=float)

        self.bid, self.ask, self.mark = arr("bid"), arr("ask"), arr("mark_price")
        self.bid_amount, self.ask_amount, self.oi = arr("bid_amount"), arr("ask_amount"), arr("open_interest")

    def at(self, at: float) -> SurfaceSnapshot:
        rng, n = self.rng, self.n
        self.log_f += rng.normal(0.0, 0.0008)
        self.shift += rng.normal(0.0, 0.05)
        f = float(np.exp(self.log_f))
        move = rng.random(n) < 0.5
        self.bid = np.where(move, np.round(self.bid * (1 + rng.normal(0, 0.004, n)), 4), self.bid)
        self.ask = np.where(move, np.round(self.ask * (1 + rng.normal(0, 0.004, n)), 4), self.ask)
        new_amount = rng.random(n) < 0.33
        self.bid_amount = np.where(new_amount, np.round(rng.lognormal(2.0, 1.0, n), 1), self.bid_amount)
        self.ask_amount = np.where(new_amount, np.round(rng.lognormal(2.0, 1.0, n), 1), self.ask_amount)
        self.oi = np.where(rng.random(n) < 0.02, self.oi + np.round(rng.uniform(-5, 5, n), 1), self.oi)
        mark = self.mark * (1 + rng.normal(0, 0.003, n)) * f
        noise = rng.normal(0, 0.03, (3, n))

        def vol(value: float | None, k: int, i: int, digits: int | None = None) -> float | None:
            if value is None:
                return None
            moved = value + self.shift + (0.0 if k < 0 else noise[k, i])
            return round(moved, digits) if digits is not None else moved

        def num(a: np.ndarray, i: int) -> float | None:
            return None if np.isnan(a[i]) else float(a[i])

        quotes = []
        for i, q in enumerate(self.base.quotes):
            quotes.append(msgspec.structs.replace(
                q, underlying_price=None if q.underlying_price is None else q.underlying_price * f,
                index_price=None if q.index_price is None else q.index_price * f,
                bid=None if q.bid is None else num(self.bid, i), ask=None if q.ask is None else num(self.ask, i),
                bid_amount=float(self.bid_amount[i]), ask_amount=float(self.ask_amount[i]),
                open_interest=num(self.oi, i), mark_price=None if q.mark_price is None else float(mark[i]),
                bid_iv=vol(q.bid_iv, 0, i), ask_iv=vol(q.ask_iv, 1, i), mid_iv=vol(q.mid_iv, 2, i),
                mark_iv=vol(q.mark_iv, -1, i, 2)))
        points = tuple(msgspec.structs.replace(p, iv=None if p.iv is None else p.iv + self.shift)
                       for p in self.base.points)
        index = self.base.variance_index
        return msgspec.structs.replace(
            self.base, at=at, quotes=tuple(quotes), points=points,
            index_price=None if self.base.index_price is None else self.base.index_price * f,
            variance_index=None if index is None else index + self.shift)


def _size(engine: Engine, tables: tuple[str, ...]) -> int:
    """Bytes of ``tables`` with their indexes (and of their partitions)."""
    total = 0
    with engine.connect() as conn:
        for table in tables:
            parts = conn.execute(text(
                "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass(:t)"), {"t": table}).scalars().all()
            for name in [table, *parts]:
                total += int(conn.execute(text("SELECT pg_total_relation_size(to_regclass(:t))"),
                                          {"t": name}).scalar_one() or 0)
    return total


def _vacuum(engine: Engine) -> None:
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("VACUUM ANALYZE")


def _timed(engine: Engine, sql: str, params: list[dict[str, Any]]) -> float:
    """Median ms of ``sql`` over ``params`` (each run once to warm the cache first)."""
    times = []
    with engine.connect() as conn:
        for p in params:
            conn.execute(text(sql), p).all()
        for p in params:
            t0 = time.perf_counter()
            rows = conn.execute(text(sql), p).all()
            times.append((time.perf_counter() - t0) * 1000)
            assert rows, (sql, p)
    return round(statistics.median(times), 2)


class PresentWriter:
    """Version 4's writer: each minute's rows into version 4's tables (COPY, INSERT ... ON CONFLICT)."""

    def __init__(self, url: str) -> None:
        from tests.support import schema_v4

        self.engine = make_engine(url)
        self.tables = schema_v4.metadata.tables
        with self.engine.begin() as conn:
            schema_v4.metadata.create_all(conn)

    def record(self, snapshot: SurfaceSnapshot) -> None:
        with self.engine.begin() as conn:
            for part in minute_rows(snapshot, None, times_as_text=True):
                if part.rows:
                    _copy_ignoring_conflicts(conn, MinuteRows(self.tables[part.table.name], part.columns, part.rows))


def run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench store")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--minutes-per-day", type=int, default=144)
    parser.add_argument("--btc", type=int, default=700)
    parser.add_argument("--eth", type=int, default=500)
    parser.add_argument("--expiries", type=int, default=12)
    parser.add_argument("--pg-url")
    args = parser.parse_args(argv)
    server, cluster = _server(args.pg_url)
    chains = {c: build_surface_snapshot(synthetic_chain_snapshot(currency=c, at=START, n_quotes=n,
                                                                 n_expiries=args.expiries))
              for c, n in (("BTC", args.btc), ("ETH", args.eth))}
    per_minute = sum(len(s.quotes) for s in chains.values())
    moving = {c: MovingChain(s, seed) for seed, (c, s) in enumerate(chains.items())}
    spacing = max(1, 1440 // args.minutes_per_day)
    try:
        with private_schema(server) as new_url, private_schema(server) as old_url, \
                private_schema(server) as fresh_url, tempfile.TemporaryDirectory() as spool, \
                tempfile.TemporaryDirectory() as fresh_spool:
            store = MinuteStore(new_url, spool, write_deadline_s=60.0, partition_days_ahead=args.days)
            store.open()
            store.make_partitions(START)
            present = PresentWriter(old_url)
            # A second schema 5, empty when the last day begins: its first day written in alternation
            # with the 30-day store's last day, so both see the same load of a shared machine.
            fresh = MinuteStore(fresh_url, fresh_spool, write_deadline_s=60.0, partition_days_ahead=1)
            fresh.open()
            fresh.make_partitions(START)
            fresh_ms: list[float] = []
            new_ms: list[float] = []
            old_ms: list[float] = []
            minutes = [START + d * 86_400 + m * spacing * 60 for d in range(args.days)
                       for m in range(args.minutes_per_day)]
            for n, at in enumerate(minutes):
                snaps = [m.at(at) for m in moving.values()]
                t0 = time.perf_counter()
                for s in snaps:
                    assert store.record(snapshot_record(s))
                t1 = time.perf_counter()
                for s in snaps:
                    present.record(s)
                t2 = time.perf_counter()
                new_ms.append((t1 - t0) * 1000)
                old_ms.append((t2 - t1) * 1000)
                if n >= len(minutes) - args.minutes_per_day:
                    day1 = [msgspec.structs.replace(s, at=at - (args.days - 1) * 86_400) for s in snaps]
                    t3 = time.perf_counter()
                    for s in day1:
                        assert fresh.record(snapshot_record(s))
                    fresh_ms.append((time.perf_counter() - t3) * 1000)
                if n % 60 == 59:
                    _log(f"{n + 1}/{len(minutes)} minutes: schema 5 {statistics.mean(new_ms[-60:]):.1f} ms, "
                         f"present {statistics.mean(old_ms[-60:]):.1f} ms a minute")
            rows = per_minute * len(minutes)
            _vacuum(store.engine)
            _vacuum(present.engine)
            as_written = _size(store.engine, OPTION_TABLES_5) / rows
            # Every finished day in block order, as the Recorder's daily maintenance keeps them (all of them:
            # the fill's days are over): the steady state of the record.
            ordered = order_finished_days(store.engine, LATER)
            assert len(ordered) == args.days, [d.day for d in ordered]
            _vacuum(store.engine)
            sizes = {
                "bytes_per_option_minute": _size(store.engine, OPTION_TABLES_5) / rows,
                "bytes_per_option_minute_as_written": as_written,
                "present_bytes_per_option_minute": _size(present.engine, ("option_quotes",)) / rows,
                "record_bytes_per_option_minute": _size(store.engine, (*OPTION_TABLES_5, *SURFACE_TABLES)) / rows,
                "present_record_bytes_per_option_minute": _size(present.engine, ("option_quotes", *SURFACE_TABLES))
                / rows,
                "option_minutes_heap_bytes_per_row": _heap(store.engine) / rows,
            }
            step = max(1, len(minutes) // 20)
            chain = [{"m": _iso(at), "c": c} for at in minutes[::step] for c in chains]
            names = [q.instrument_name for s in chains.values() for q in s.quotes[:: max(1, len(s.quotes) // 5)]]
            one = [{"n": name} for name in names]
            chain_sql = "SELECT * FROM option_quotes WHERE minute = CAST(:m AS timestamptz) AND currency = :c"
            instrument_sql = ("SELECT minute, bid, ask, mark_iv, underlying_price FROM option_quotes "
                              "WHERE instrument = :n ORDER BY minute")
            instrument_day_sql = ("SELECT minute, bid, ask, mark_iv, underlying_price FROM option_quotes "
                                  "WHERE instrument = :n AND minute >= CAST(:a AS timestamptz) ORDER BY minute")
            per_day = args.minutes_per_day
            last = args.days
            fresh.close()
            result = {
                **{k: round(v, 1) for k, v in sizes.items()},
                "bytes_by_table": {t: round(_size(store.engine, (t,)) / rows, 2)
                                   for t in (*OPTION_TABLES_5, *SURFACE_TABLES)},
                "option_minutes": rows,
                "options_per_minute": per_minute,
                "days": args.days,
                "minutes_per_day": per_day,
                "insert_ms_per_minute_day1": round(statistics.mean(new_ms[:per_day]), 2),
                f"insert_ms_per_minute_day{last}": round(statistics.mean(new_ms[-per_day:]), 2),
                "present_insert_ms_per_minute_day1": round(statistics.mean(old_ms[:per_day]), 2),
                f"present_insert_ms_per_minute_day{last}": round(statistics.mean(old_ms[-per_day:]), 2),
                f"chain_at_minute_ms_{last}d_sampled": _timed(store.engine, chain_sql, chain),
                "present_chain_at_minute_ms": _timed(present.engine, chain_sql, chain),
                "order_seconds_per_sampled_day": round(statistics.mean(d.seconds for d in ordered), 2),
                f"insert_ms_per_minute_day{last}_over_day1_same_time": round(
                    statistics.mean(new_ms[-per_day:]) / statistics.mean(fresh_ms), 3),
                "insert_ms_per_minute_day1_same_time": round(statistics.mean(fresh_ms), 2),
                f"instrument_{last}d_view_ms_sampled": _timed(store.engine, instrument_sql, one),
                "instrument_1d_view_ms_sampled": _timed(store.engine, instrument_day_sql,
                                                        [{**p, "a": _iso(minutes[-per_day])} for p in one]),
                f"instrument_{last}d_ms_sampled": _timed_history(store.engine, names, per_day * last),
                f"present_instrument_{last}d_ms": _timed(present.engine, instrument_sql, one),
            }
            result["sampling"] = (f"{per_day} of each day's 1440 minutes, every {spacing} minutes" if per_day < 1440
                                  else "every minute")
            result[f"instrument_{last}d_rows_sampled"] = per_day * last
            # The view's time is a fixed part (planning, the instrument) plus a part per row read: from the
            # last day alone and the whole fill, projected to 1,440 rows a day (measured below, at full density).
            whole, one_day = result[f"instrument_{last}d_view_ms_sampled"], result["instrument_1d_view_ms_sampled"]
            per_row = max(0.0, (whole - one_day) / (per_day * (last - 1))) if last > 1 else whole / per_day
            fixed = max(0.0, one_day - per_row * per_day)
            result[f"instrument_{last}d_view_ms_projected"] = round(fixed + per_row * 1440 * last, 1)
            result["instrument_view_us_per_row"] = round(per_row * 1000, 2)
            present.engine.dispose()
            result.update(_archive_figures(store.engine, rows))
            store.close()
            result.update(_full_density_figures(server, chains["BTC"], args.days))
            result.update(_full_chain_day_figures(server, chains))
            # the slowest of the three: a finished day and today's at full density, and the 30 days
            result["chain_at_minute_ms"] = max(result["chain_at_minute_ms_full_day"],
                                               result["chain_at_minute_ms_live_day"],
                                               result[f"chain_at_minute_ms_{args.days}d_sampled"])
            return result
    finally:
        if cluster is not None:
            cluster.destroy()


def _heap(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT coalesce(sum(pg_relation_size(c.oid)), 0) FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('option_minutes')")).scalar_one())


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


def _archive_figures(engine: Engine, rows: int) -> dict[str, Any]:
    """Archive every day of the fill (the partitions dropped); Parquet bytes and rows a second."""
    from pathlib import Path

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        days = archive(engine, Path(out), before=dt.date(2100, 1, 1), today=dt.date(2100, 1, 1))
        seconds = time.perf_counter() - t0
        files = [f for d in days for f in d.files]
        quotes = sum(f.bytes for f in files if f.dataset == "quotes")
        archived = sum(f.rows for f in files if f.dataset == "quotes")
        assert archived == rows, (archived, rows)
        return {
            "parquet_bytes_per_option_minute": round(quotes / rows, 2),
            "parquet_record_bytes_per_option_minute": round(sum(f.bytes for f in files) / rows, 2),
            "archive_rows_per_s": round(rows / seconds),
            "archive_seconds": round(seconds, 1),
            "archive_lock_ms_max": round(max(d.lock_ms for d in days), 1),
        }


def _timed_history(engine: Engine, names: list[str], rows: int, *, greeks: bool = True) -> float:
    """Median ms of :func:`sql.queries.read_instrument_history` over ``names`` (each run once first),
    each holding ``rows`` rows."""
    times = []
    for name in names:
        read_instrument_history(engine, name, greeks=greeks)
    for name in names:
        t0 = time.perf_counter()
        history = read_instrument_history(engine, name, greeks=greeks)
        times.append((time.perf_counter() - t0) * 1000)
        assert history is not None and len(history) == rows, (name, None if history is None else len(history), rows)
    return round(statistics.median(times), 2)


#: The full-density fill: the BTC options of the expiries from 40 to 80 days out at the start (two of the
#: synthetic chain's: 116 options), alive all month.
DENSE_EXPIRY_DAYS = (40.0, 80.0)


def _full_density_figures(server: str, btc: SurfaceSnapshot, days: int) -> dict[str, Any]:
    """One instrument over ``days`` days at full density, measured: a store of its own written every
    minute of every day (1,440 a day) with the Recorder's code (MinuteStore.record), its chain the BTC
    options of two expiries (:data:`DENSE_EXPIRY_DAYS`; the surface points and fits left out: they are
    not read). More than a heap page of rows a minute (about 97 rows fill an 8 kB page), so each of an
    instrument's minutes lies on a page of its own as in the full chain: the reads per row are the full
    chain's."""
    low, high = (START + d * 86_400 for d in DENSE_EXPIRY_DAYS)
    quotes = tuple(q for q in btc.quotes if low * 1000 <= q.expiry_ms <= high * 1000)
    dense = msgspec.structs.replace(btc, quotes=quotes, points=(), fits=())
    moving = MovingChain(dense, 7)
    per_day = 1440
    with private_schema(server) as url, tempfile.TemporaryDirectory() as spool:
        store = MinuteStore(url, spool, write_deadline_s=60.0, partition_days_ahead=days)
        store.open()
        store.make_partitions(START)
        t0 = time.perf_counter()
        for n in range(days * per_day):
            assert store.record(snapshot_record(moving.at(START + n * 60)))
            if n % 7200 == 7199:
                _log(f"full density: {n + 1}/{days * per_day} minutes, {time.perf_counter() - t0:.0f} s")
        _vacuum(store.engine)
        names = [q.instrument_name for q in quotes[:: max(1, len(quotes) // 5)]][:5]
        rows = days * per_day
        as_written = _timed_history(store.engine, names, rows)
        ordered = order_finished_days(store.engine, LATER)  # as the daily maintenance leaves finished days
        assert len(ordered) == days, [d.day for d in ordered]
        _vacuum(store.engine)
        view_sql = ("SELECT minute, bid, ask, mark_iv, underlying_price, delta, vega FROM option_quotes "
                    "WHERE instrument = :n ORDER BY minute")
        figures: dict[str, Any] = {
            "full_density": (f"a store of its own: {len(quotes)} BTC options (2 expiries, {DENSE_EXPIRY_DAYS[0]:.0f} "
                             f"to {DENSE_EXPIRY_DAYS[1]:.0f} days out at the start) every minute of {days} days "
                             f"({per_day} a day: {rows} minutes, {rows * len(quotes)} option rows) by "
                             "MinuteStore.record, no surface points or fits; the queried instruments have "
                             f"{rows} rows each; every day ordered (sql.day_order) as the Recorder's daily "
                             "maintenance leaves a finished day (_as_written: before)"),
            f"instrument_{days}d_ms": _timed_history(store.engine, names, rows),
            f"instrument_{days}d_ms_as_written": as_written,
            f"instrument_{days}d_rows": rows,
            f"instrument_{days}d_ms_no_greeks": _timed_history(store.engine, names, rows, greeks=False),
            f"instrument_{days}d_view_ms": _timed(store.engine, view_sql, [{"n": n} for n in names[:3]]),
            "full_density_option_minutes_bytes_per_row": round(
                _size(store.engine, ("option_minutes",)) / (rows * len(quotes)), 1),
        }
        store.close()
        return figures


def _full_chain_day_figures(server: str, chains: dict[str, SurfaceSnapshot]) -> dict[str, Any]:
    """A whole chain at one minute on a day written every minute for the full chain of both currencies
    (1,440 minutes: the rows a real day holds), as written (today's partition, in minute order) and once
    ordered (any finished day: sql.day_order); what ordering the day costs and holds it locked."""
    moving = {c: MovingChain(s, 11 + n) for n, (c, s) in enumerate(chains.items())}
    day = START + 40 * 86_400  # a day of its own, past the 30-day fill's
    with private_schema(server) as url, tempfile.TemporaryDirectory() as spool:
        store = MinuteStore(url, spool, write_deadline_s=60.0, partition_days_ahead=1)
        store.open()
        store.make_partitions(day)
        t0 = time.perf_counter()
        for n in range(1440):
            for m in moving.values():
                assert store.record(snapshot_record(m.at(day + n * 60)))
            if n % 240 == 239:
                _log(f"full chain day: {n + 1}/1440 minutes, {time.perf_counter() - t0:.0f} s")
        _vacuum(store.engine)
        rows = 1440 * sum(len(s.quotes) for s in chains.values())
        sql = "SELECT * FROM option_quotes WHERE minute = CAST(:m AS timestamptz) AND currency = :c"
        params = [{"m": _iso(day + n * 60), "c": c} for n in range(7, 1440, 1440 // 12) for c in chains]
        live = _timed(store.engine, sql, params)
        live_size = _size(store.engine, ("option_minutes",)) / rows
        ordered = order_finished_days(store.engine, LATER)
        assert len(ordered) == 1 and ordered[0].rows == rows, ordered
        _vacuum(store.engine)
        figures = {
            "chain_at_minute_ms_full_day": _timed(store.engine, sql, params),
            "chain_at_minute_ms_live_day": live,
            "full_day_option_rows": rows,
            "order_seconds_full_day": round(ordered[0].seconds, 2),
            "order_lock_ms_full_day": round(ordered[0].lock_ms, 1),
            "full_day_option_minutes_bytes_per_row": round(_size(store.engine, ("option_minutes",)) / rows, 1),
            "full_day_option_minutes_bytes_per_row_as_written": round(live_size, 1),
        }
        store.close()
        return figures
