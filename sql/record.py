"""Reading the record wherever a day lives: the database, or for days archived out of it the Parquet
archive (:mod:`sql.archive`, ``recorder.archive_dir``, default ``<data_dir>/archive``).

- :func:`minute_engine`: an engine the plots read one minute from, unchanged (:mod:`sql.plots` runs its
  own queries on it). The database's own when it holds the currency's minutes of the asked day (or,
  with no time asked, any minute); else an in-memory SQLite database of the schema's tables holding
  the archived minute the plot would draw (the latest recorded at or before the time) and the nearest
  complete one (what a refusal names), ``option_quotes`` as a table with the greeks computed as the
  view computes them (Black-76 at the mark vol).
- :func:`read_index_history`: the variance index (with DVOL) of a time range, archived days and the
  database's together, oldest first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Engine, create_engine, inspect, select
from sqlalchemy.pool import StaticPool

from quant.black76 import black76_greeks
from sql.archive import day_bounds
from sql.engine import make_engine
from sql.queries import IndexMinute, as_utc, read_volatility_index
from sql.tables import (
    chain_minutes,
    metadata,
    minute_coverage,
    option_quotes,
    surface_fits,
    surface_points,
    views,
    volatility_index,
)

UTC = dt.UTC
SECONDS_PER_YEAR = 365.0 * 86_400.0


class Archive:
    """The Parquet archive at ``directory`` (which may not exist: then it holds nothing)."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory else None

    def days(self, dataset: str, currency: str) -> list[dt.date]:
        if self.directory is None:
            return []
        base = self.directory / dataset / f"currency={currency}"
        if not base.is_dir():
            return []
        found = []
        for path in base.glob("date=*"):
            if any(path.glob("part-*.parquet")):
                try:
                    found.append(dt.date.fromisoformat(path.name.removeprefix("date=")))
                except ValueError:
                    continue
        return sorted(found)

    def read(self, dataset: str, currency: str, day: dt.date, columns: list[str] | None = None,
             where: Any = None) -> pa.Table:
        """The day's rows of ``dataset`` (the files' own columns, no currency or date)."""
        assert self.directory is not None
        directory = self.directory / dataset / f"currency={currency}" / f"date={day.isoformat()}"
        tables = [pq.read_table(path, columns=columns, filters=where)
                  for path in sorted(directory.glob("part-*.parquet"))]
        return pa.concat_tables(tables) if tables else pa.table({})


def _database_has(engine: Engine, currency: str, start: dt.datetime | None, end: dt.datetime | None) -> bool:
    """Whether the database holds a minute of ``currency`` from ``start`` to ``end`` (any when None)."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        for table in (chain_minutes, minute_coverage, surface_points):
            if not inspector.has_table(table.name):  # a database of an older schema: read as it is
                continue
            query = select(table.c.minute).where(table.c.currency == currency).limit(1)
            if start is not None and end is not None:
                query = query.where(table.c.minute >= start, table.c.minute <= end)
            if conn.execute(query).first() is not None:
                return True
    return False


def _minutes(table: pa.Table) -> list[dt.datetime]:
    return [as_utc(m) for m in table.column("minute").to_pylist()] if table.num_rows else []


def _archived_minutes(archive: Archive, currency: str,
                      at: dt.datetime | None) -> tuple[dt.datetime, dt.datetime | None]:
    """The minute a plot at ``at`` draws from the archive (the latest recorded at or before it) and the
    nearest complete minute (a finite grid point, not marked incomplete) of the days around it."""
    days = sorted(set(archive.days("surface_points", currency)) | set(archive.days("minute_coverage", currency)))
    if at is not None:
        days = [d for d in days if d <= at.date()]
    if not days:
        raise LookupError
    day = days[-1]
    recorded: list[dt.datetime] = []
    for dataset in ("surface_points", "minute_coverage"):
        if day in archive.days(dataset, currency):
            recorded += _minutes(archive.read(dataset, currency, day, ["minute"]))
    recorded = [m for m in recorded if at is None or m <= at]
    if not recorded:
        raise LookupError
    minute = max(recorded)
    complete: set[dt.datetime] = set()
    incomplete: set[dt.datetime] = set()
    for near in (d for d in archive.days("surface_points", currency) if abs((d - day).days) <= 1):
        points = archive.read("surface_points", currency, near, ["minute", "iv"])
        complete.update(_minutes(points.filter(pc.is_valid(points.column("iv")))))
    for near in (d for d in archive.days("minute_coverage", currency) if abs((d - day).days) <= 1):
        coverage = archive.read("minute_coverage", currency, near, ["minute", "complete"])
        incomplete.update(_minutes(coverage.filter(pc.invert(coverage.column("complete")))))
    good = complete - incomplete
    nearest = min(good, key=lambda m: abs((m - minute).total_seconds())) if good else None
    return minute, nearest


def _rows(table: pa.Table, currency: str) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for row in rows:
        row["currency"] = currency
    return rows


def _quote_rows(table: pa.Table, currency: str) -> list[dict[str, Any]]:
    rows = _rows(table, currency)
    if not rows:
        return rows
    minute = np.array([r["minute"].timestamp() for r in rows])
    expiry = np.array([r["expiry"].timestamp() for r in rows])
    years = np.maximum((expiry - minute) / SECONDS_PER_YEAR, 0.0)
    forward = np.array([np.nan if r["underlying_price"] is None else r["underlying_price"] for r in rows])
    vol = np.array([np.nan if r["mark_iv"] is None else r["mark_iv"] / 100.0 for r in rows])
    strike = np.array([r["strike"] for r in rows], dtype=float)
    is_call = np.array([str(r["option_type"]).lower().startswith("c") for r in rows])
    greeks = black76_greeks(forward, strike, years, vol, is_call)
    for n, row in enumerate(rows):
        for name in ("delta", "gamma", "vega", "theta"):
            value = float(np.asarray(getattr(greeks, name))[n])
            row[name] = value if np.isfinite(value) else None
    return rows


def _memory_engine() -> Engine:
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    with engine.begin() as conn:
        metadata.create_all(conn, tables=[surface_points, surface_fits, volatility_index, minute_coverage])
        views.create_all(conn)  # option_quotes as a table of the view's columns
    return engine


def archived_minutes_engine(archive: Archive, currency: str, minutes: list[dt.datetime]) -> Engine:
    """An in-memory SQLite database holding ``minutes`` of ``currency`` from the archive."""
    engine = _memory_engine()
    targets = {m: day for m in minutes for day in [m.date()]}
    with engine.begin() as conn:
        for minute, day in targets.items():
            where = [("minute", "=", pa.scalar(minute, type=pa.timestamp("ms", tz="UTC")))]
            for dataset, table in (("surface_points", surface_points), ("surface_fits", surface_fits),
                                   ("volatility_index", volatility_index), ("minute_coverage", minute_coverage),
                                   ("quotes", option_quotes)):
                if day not in archive.days(dataset, currency):
                    continue
                read = archive.read(dataset, currency, day, where=where)
                rows = _quote_rows(read, currency) if dataset == "quotes" else _rows(read, currency)
                if rows:
                    conn.execute(table.insert(), rows)
    return engine


@contextlib.contextmanager
def minute_engine(url: str, archive_dir: str | Path | None, currency: str,
                  at: dt.datetime | None) -> Iterator[Engine]:
    """The engine to read ``currency``'s minute at ``at`` (the latest when None) from: the database, or
    an in-memory one of the archived minute when the database does not hold that day."""
    database = make_engine(url)
    engine = database
    try:
        start = day_bounds(at.date())[0] if at is not None else None
        if not _database_has(database, currency, start, at):
            try:
                minute, nearest = _archived_minutes(Archive(archive_dir), currency, at)
            except LookupError:
                pass
            else:
                engine = archived_minutes_engine(Archive(archive_dir), currency,
                                                 [minute] + ([nearest] if nearest not in (None, minute) else []))
        yield engine
    finally:
        if engine is not database:
            engine.dispose()
        database.dispose()


def read_index_history(url: str, archive_dir: str | Path | None, currency: str, start: dt.datetime,
                       end: dt.datetime) -> list[IndexMinute]:
    """``currency``'s variance index from ``start`` to ``end`` (both included): the archived days' rows
    and the database's, oldest first (a minute in both: the database's)."""
    start, end = as_utc(start), as_utc(end)
    archive = Archive(archive_dir)
    found: dict[dt.datetime, IndexMinute] = {}
    for day in archive.days("volatility_index", currency):
        if not (start.date() <= day <= end.date()):
            continue
        for row in archive.read("volatility_index", currency, day).to_pylist():
            minute = as_utc(row["minute"])
            if start <= minute <= end:
                found[minute] = IndexMinute(minute, currency, row["value"], row["atm_iv_30d"], row["rr25_30d"],
                                            row["bf25_30d"], row["dvol"],
                                            None if row["dvol_at"] is None else as_utc(row["dvol_at"]),
                                            row["dvol_minus_index"])
    engine = make_engine(url)
    try:
        for item in read_volatility_index(engine, currency, start, end):
            found[item.minute] = item
    finally:
        engine.dispose()
    return [found[m] for m in sorted(found)]


def describe(path: str | Path) -> dict[str, str]:
    """A Parquet file's own metadata (dataset, currency, date, rows, first and last minute, ...)."""
    meta = pq.read_metadata(path).metadata or {}
    return {k.decode().removeprefix("deribit_desk."): v.decode() for k, v in meta.items()
            if k.startswith(b"deribit_desk.")}

