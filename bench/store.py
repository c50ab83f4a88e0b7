"""The record's size and speed on PostgreSQL, schema 5 against the present (version 4) layout:
``python -m bench store [--json] [--days N] [--minutes-per-day M] [--btc N] [--eth N] [--pg-url URL]``.

A first version of issue 21's benchmark (no archive yet). Input: one synthetic BTC and one ETH
SurfaceSnapshot (bench.snapshot: the full synthetic chain; ``--btc``/``--eth`` options, 700 and 500
by default: Deribit's about 1,200; ``--expiries`` 12 each: the real capture of 2021-07-22 listed 10
per currency, more daily expiries are listed now), written at each minute of ``--days`` days
(``--minutes-per-day`` of each day, 1,440 by default), both currencies each minute:

- schema 5 with the Recorder's own code (:class:`sql.store.MinuteStore`, ``record``), into its own
  PostgreSQL schema (partitions made ahead by ``make_partitions`` as the Recorder does);
- version 4 in the same run with the same snapshots: its tables (tests.support.schema_v4, version 4's
  own definitions) and its writer's way (COPY into a staging table, ``INSERT ... ON CONFLICT DO
  NOTHING``), the same rows (:func:`sql.writers.minute_rows`).

Prints, for each: bytes per option-minute (``pg_total_relation_size``, indexes included, after
VACUUM ANALYZE) of the option tables alone and of the whole record (surface, fits, index and
coverage too; schema 5's by table), insert ms per minute (both currencies) on the first and the last
day written,
the median ms of a whole chain at one minute (``option_quotes`` at a minute and currency) and of
one instrument over the whole fill (``option_quotes`` of one name, ordered by minute), through the
view that readers use. PostgreSQL: ``--pg-url``, else ``TEST_DATABASE_URL``, else 127.0.0.1:5432,
else a throwaway cluster; the schemas are dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
from sqlalchemy import Engine, text

from bench.snapshot import synthetic_chain_snapshot
from desk.surface_snapshot import build_surface_snapshot
from messages.surface import SurfaceSnapshot
from sql.engine import make_engine
from sql.store import MinuteStore, snapshot_record
from sql.writers import MinuteRows, _copy_ignoring_conflicts, minute_rows

START = 1_764_547_200.0  # 2025-12-01 00:00 UTC
OPTION_TABLES_5 = ("option_minutes", "instruments", "expiry_minutes", "chain_minutes")
SURFACE_TABLES = ("surface_points", "surface_fits", "volatility_index", "minute_coverage")


def _log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _schema(server: str) -> Iterator[str]:
    name = f"bench_store_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in server else "?"
    try:
        yield f"{server}{sep}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def _server(given: str | None) -> tuple[str, Any]:
    if given:
        return given, None
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url, None
    from tests.support.postgres import DEFAULT_URL, ThrowawayCluster, can_connect

    if can_connect(DEFAULT_URL):
        return DEFAULT_URL, None
    cluster = ThrowawayCluster()
    cluster.start()
    return cluster.url, cluster


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
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--minutes-per-day", type=int, default=1440)
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
    try:
        with _schema(server) as new_url, _schema(server) as old_url, tempfile.TemporaryDirectory() as spool:
            store = MinuteStore(new_url, spool, write_deadline_s=60.0, partition_days_ahead=args.days)
            store.open()
            store.make_partitions(START)
            present = PresentWriter(old_url)
            new_ms: list[float] = []
            old_ms: list[float] = []
            minutes = [START + d * 86_400 + m * 60 for d in range(args.days) for m in range(args.minutes_per_day)]
            for n, at in enumerate(minutes):
                snaps = [msgspec.structs.replace(s, at=at) for s in chains.values()]
                t0 = time.perf_counter()
                for s in snaps:
                    assert store.record(snapshot_record(s))
                t1 = time.perf_counter()
                for s in snaps:
                    present.record(s)
                t2 = time.perf_counter()
                new_ms.append((t1 - t0) * 1000)
                old_ms.append((t2 - t1) * 1000)
                if n % 60 == 59:
                    _log(f"{n + 1}/{len(minutes)} minutes: schema 5 {statistics.mean(new_ms[-60:]):.1f} ms, "
                         f"present {statistics.mean(old_ms[-60:]):.1f} ms a minute")
            rows = per_minute * len(minutes)
            _vacuum(store.engine)
            _vacuum(present.engine)
            sizes = {
                "bytes_per_option_minute": _size(store.engine, OPTION_TABLES_5) / rows,
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
            per_day = args.minutes_per_day
            last = args.days
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
                "chain_at_minute_ms": _timed(store.engine, chain_sql, chain),
                "present_chain_at_minute_ms": _timed(present.engine, chain_sql, chain),
                f"instrument_{last}d_ms": _timed(store.engine, instrument_sql, one),
                f"present_instrument_{last}d_ms": _timed(present.engine, instrument_sql, one),
            }
            # A finished day's indexes rebuilt (REINDEX: packed and deduplicated at once, where a day of
            # inserts in a thousand places leaves its pages part-filled): what a daily job would keep.
            with store.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("REINDEX TABLE option_minutes")
            result["bytes_per_option_minute_reindexed"] = round(_size(store.engine, OPTION_TABLES_5) / rows, 1)
            store.close()
            present.engine.dispose()
            return result
    finally:
        if cluster is not None:
            cluster.stop()


def _heap(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT coalesce(sum(pg_relation_size(c.oid)), 0) FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('option_minutes')")).scalar_one())


def _iso(at: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
