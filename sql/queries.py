"""What readers take from the database (the plots, a notebook): the 30-day variance index with
Deribit's DVOL beside it (and DVOL minus the index), minute by minute, each minute's coverage
(whether it was complete), and the recorded settlements and deliveries.

Every time comes back as an aware UTC datetime (SQLite hands back its stored UTC text as naive
datetimes). A DVOL that was missing or stale at its minute is ``None`` with ``dvol_at`` ``None``.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Connection, Engine, inspect, literal, select, text

from quant.black76 import black76_greeks
from sql.option_rows import LAST_SEEN_STEP_S
from sql.tables import (
    FLAG_IN_SURFACE,
    FLAG_SPAN,
    FLAG_STALE,
    instruments,
    minute_coverage,
    settlements,
    volatility_index,
)


def as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _maybe_utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else as_utc(value)


class IndexMinute(NamedTuple):
    """One currency-minute of ``volatility_index`` (vol points)."""

    minute: dt.datetime
    currency: str
    variance_index: float | None
    atm_iv_30d: float | None
    rr25_30d: float | None
    bf25_30d: float | None
    dvol: float | None
    dvol_at: dt.datetime | None
    #: DVOL minus the variance index (None: either missing, or a database before schema version 4)
    dvol_minus_index: float | None = None


def read_volatility_index(engine: Engine, currency: str, start: dt.datetime | None = None,
                          end: dt.datetime | None = None) -> list[IndexMinute]:
    """The minutes of ``currency`` from ``start`` to ``end`` (both included, either open), oldest first.
    A database of schema version 1 (not yet taken forward by a desk's start) reads with no DVOL."""
    t = volatility_index
    with engine.connect() as conn:
        present = {c["name"] for c in inspect(conn).get_columns(t.name)}
    dvol = [t.c[name] if name in present else literal(None).label(name)
            for name in ("dvol", "dvol_at", "dvol_minus_index")]
    query = select(t.c.minute, t.c.currency, t.c.value, t.c.atm_iv_30d, t.c.rr25_30d, t.c.bf25_30d,
                   *dvol).where(t.c.currency == currency).order_by(t.c.minute)
    if start is not None:
        query = query.where(t.c.minute >= as_utc(start))
    if end is not None:
        query = query.where(t.c.minute <= as_utc(end))
    with engine.connect() as conn:
        return [IndexMinute(as_utc(r.minute), r.currency, r.value, r.atm_iv_30d, r.rr25_30d, r.bf25_30d, r.dvol,
                            _maybe_utc(r.dvol_at), r.dvol_minus_index) for r in conn.execute(query)]


class CoverageMinute(NamedTuple):
    """One currency-minute of ``minute_coverage``: ``complete`` False means its quotes are recorded
    but no surface, fits or index (coverage below surface.min_coverage, or nothing usable)."""

    minute: dt.datetime
    currency: str
    coverage: float
    complete: bool
    listed: int
    usable: int


def read_minute_coverage(engine: Engine, currency: str, start: dt.datetime | None = None,
                         end: dt.datetime | None = None) -> list[CoverageMinute]:
    """The recorded coverage of ``currency``'s minutes from ``start`` to ``end`` (both included),
    oldest first; none for minutes recorded before schema version 4 (or a database without the table)."""
    t = minute_coverage
    with engine.connect() as conn:
        if not inspect(conn).has_table(t.name):
            return []
    query = select(t).where(t.c.currency == currency).order_by(t.c.minute)
    if start is not None:
        query = query.where(t.c.minute >= as_utc(start))
    if end is not None:
        query = query.where(t.c.minute <= as_utc(end))
    with engine.connect() as conn:
        return [CoverageMinute(as_utc(r.minute), r.currency, r.coverage, bool(r.complete), r.listed, r.usable)
                for r in conn.execute(query)]


class SettlementEntry(NamedTuple):
    """One recorded settlement, delivery or bankruptcy (``instrument`` ``''`` when it has none)."""

    currency: str
    instrument: str
    type: str
    settled_at: dt.datetime
    position: float | None
    mark_price: float | None
    index_price: float | None
    profit_loss: float | None
    session_profit_loss: float | None
    funding: float | None
    recorded_at: dt.datetime


def read_settlements(engine: Engine, currency: str | None = None, start: dt.datetime | None = None,
                     end: dt.datetime | None = None) -> list[SettlementEntry]:
    """The entries of ``currency`` (all when None) settled from ``start`` to ``end`` (both included),
    oldest first."""
    t = settlements
    query = select(t.c.currency, t.c.instrument, t.c.type, t.c.settled_at, t.c.position, t.c.mark_price,
                   t.c.index_price, t.c.profit_loss, t.c.session_profit_loss, t.c.funding,
                   t.c.recorded_at).order_by(t.c.settled_at, t.c.currency, t.c.instrument, t.c.type)
    if currency is not None:
        query = query.where(t.c.currency == currency)
    if start is not None:
        query = query.where(t.c.settled_at >= as_utc(start))
    if end is not None:
        query = query.where(t.c.settled_at <= as_utc(end))
    with engine.connect() as conn:
        return [SettlementEntry(r.currency, r.instrument, r.type, as_utc(r.settled_at), r.position, r.mark_price,
                                r.index_price, r.profit_loss, r.session_profit_loss, r.funding,
                                as_utc(r.recorded_at)) for r in conn.execute(query)]


# -- one instrument over time ---------------------------------------------------------------------------

#: The option-minute values read_instrument_history gives, as option_quotes names them.
HISTORY_VALUES = ("bid", "bid_amount", "bid_iv", "ask", "ask_amount", "ask_iv", "mid_iv", "mark_price", "mark_iv",
                  "open_interest")
HISTORY_GREEKS = ("delta", "gamma", "vega", "theta")


@dataclass(frozen=True)
class InstrumentHistory:
    """One option's minutes, oldest first, as columns (numpy arrays of one length; NaN where
    ``option_quotes`` says NULL): ``minute`` (unix seconds, UTC), the values of :data:`HISTORY_VALUES`,
    ``underlying_price`` (its ticker's), ``years`` (to expiry, 365-day years, not below 0), ``stale`` and
    ``in_surface`` (bool), and with ``greeks`` asked Deribit's greeks as the view computes them
    (quant.black76.black76_greeks at the mark vol: delta, gamma, vega per vol point, theta per day)."""

    instrument: str
    currency: str
    expiry: dt.datetime
    strike: float
    option_type: str
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["minute"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def minutes(self) -> list[dt.datetime]:
        return [dt.datetime.fromtimestamp(float(s), dt.UTC) for s in self.columns["minute"]]


def _sqlite_history_sql() -> str:
    """SQLite: the option rows of one instrument with its expiry's minutes, in minute order."""
    values = ", ".join(f"o.{name}" for name in HISTORY_VALUES)
    return ("SELECT CAST(strftime('%s', o.minute) AS INTEGER) AS minute, o.instrument_ref AS ref, "
            f"{values}, e.underlying_price + o.underlying_offset AS underlying_price, e.years AS years "
            "FROM option_minutes o JOIN expiry_minutes e ON e.minute = o.minute "
            "WHERE o.instrument_ref >= :lo AND o.instrument_ref < :hi AND e.currency = :currency "
            "AND e.expiry = :expiry AND o.minute >= :start AND o.minute <= :end ORDER BY o.minute")


_SQLITE_NAMES = ("minute", "ref", *HISTORY_VALUES, "underlying_price", "years")


def _fetch_sqlite(conn: Connection, params: dict[str, Any]) -> dict[str, np.ndarray]:
    params = {**params, **{k: params[k].astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ",
                                                                                        timespec="microseconds")
                           for k in ("expiry", "start", "end")}}  # SQLite keeps the times as naive UTC text
    rows = conn.execute(text(_sqlite_history_sql()), params).all()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in _SQLITE_NAMES]
    out = {name: np.array([np.nan if v is None else v for v in values], dtype=float)
           for name, values in zip(_SQLITE_NAMES, columns, strict=True)}
    out["ref"] = out["ref"].astype(np.int64)
    return out


#: PostgreSQL's binary COPY: the file header (signature, flags, header extension length) and a row's
#: field count; a timestamptz is int8 microseconds since 2000-01-01 UTC.
_COPY_HEADER = 19
_PG_EPOCH_S = 946_684_800


def _copy_binary(conn: Connection, sql: str, params: dict[str, Any], fields: list[tuple[str, str]]) -> np.ndarray:
    """``sql``'s rows by binary COPY, as a numpy record array of ``fields`` (name, big-endian fixed-width
    type): no value is formatted as text nor made a Python object. Every field must be non-NULL (the
    queries coalesce: NaN stands for NULL)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        sink = io.BytesIO()
        cursor.copy_expert(f"COPY ({cursor.mogrify(sql, params).decode()}) TO STDOUT WITH (FORMAT binary)", sink)
    finally:
        cursor.close()
    layout: list[tuple[str, str]] = [("n", ">i2")]
    for name, kind in fields:
        layout += [(f"{name}_length", ">i4"), (name, kind)]
    dtype = np.dtype(layout)
    data = sink.getbuffer()[_COPY_HEADER:-2]  # the header, and the trailer (-1 as int2)
    if len(data) % dtype.itemsize:
        raise ValueError(f"binary COPY of {len(data)} bytes is not rows of {dtype.itemsize}: a NULL?")
    rows = np.frombuffer(data, dtype=dtype)
    for name, kind in fields:
        if rows.size and not np.all(rows[f"{name}_length"] == np.dtype(kind).itemsize):
            raise ValueError(f"binary COPY: {name} is not {kind} in every row (a NULL?)")
    return rows


def as_decimal(values: np.ndarray) -> np.ndarray:
    """float4 values as the doubles of their shortest decimals (what PostgreSQL's ``real::text::float8``,
    the view's reading of a real, gives: 0.1 rather than float4's 0.100000001490116): each value rounded
    to the fewest significant digits (6 to 9) that give the float4 back. NaN and inf stay."""
    single = np.asarray(values, dtype=np.float32)
    out = single.astype(np.float64)
    # only the values still without their decimal are worked on at each number of digits (most prices,
    # amounts and vols have 6 or fewer)
    todo = np.flatnonzero(np.isfinite(out) & (out != 0.0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for digits in (6, 7, 8, 9):
            if not todo.size:
                break
            wide, one = out[todo], single[todo]
            # halfway to a neighbouring float4 reads back as this one by ties-to-even, but is not its
            # decimal (PostgreSQL's shortest output excludes the bounds)
            above = (wide + np.nextafter(one, np.float32(np.inf)).astype(np.float64)) / 2.0
            below = (wide + np.nextafter(one, np.float32(-np.inf)).astype(np.float64)) / 2.0
            shift = digits - 1 - np.floor(np.log10(np.abs(wide))).astype(np.int64)
            scale = np.power(10.0, np.abs(shift).astype(np.float64))
            scaled = np.where(shift >= 0, np.round(wide * scale) / scale, np.round(wide / scale) * scale)
            fits = (scaled.astype(np.float32) == one) & (scaled != above) & (scaled != below)
            out[todo[fits]] = scaled[fits]
            todo = todo[~fits]
    return out


def _fetch_postgres(conn: Connection, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Two reads, then joined in numpy by minute: the instrument's option rows (each day partition's
    instrument_ref index, a bitmap heap scan in minute order: no join, no sort in the database) and its
    expiry's minutes (one range of expiry_minutes' key). In this order under READ COMMITTED: a minute
    committed between the two has its expiry row seen by the second (one committed with its option rows)."""
    values = ", ".join(f"coalesce(o.{name}, 'NaN')" for name in (*HISTORY_VALUES, "underlying_offset"))
    options = _copy_binary(
        conn, f"SELECT o.minute, o.instrument_ref, {values} FROM option_minutes o WHERE o.instrument_ref >= %(lo)s "
        "AND o.instrument_ref < %(hi)s AND o.minute >= %(start)s AND o.minute <= %(end)s", params,
        [("minute", ">i8"), ("ref", ">i4"), *((name, ">f4") for name in (*HISTORY_VALUES, "underlying_offset"))])
    expiry = _copy_binary(
        conn, "SELECT e.minute, coalesce(e.underlying_price, 'NaN'), e.years FROM expiry_minutes e "
        "WHERE e.currency = %(currency)s AND e.expiry = %(expiry)s AND e.minute >= %(start)s "
        "AND e.minute <= %(end)s ORDER BY e.minute", params,
        [("minute", ">i8"), ("underlying_price", ">f8"), ("years", ">f8")])
    minute = options["minute"].astype(np.int64)
    order = np.argsort(minute, kind="stable")
    options, minute = options[order], minute[order]
    expiry_minute = expiry["minute"].astype(np.int64)
    at = np.clip(np.searchsorted(expiry_minute, minute), 0, max(len(expiry_minute) - 1, 0))
    # an option row without its expiry-minute (never written so) is left out, as the view's join does
    matched = (expiry_minute[at] == minute) if len(expiry_minute) else np.zeros(len(minute), dtype=bool)
    options, minute, at = options[matched], minute[matched], at[matched]
    out = {"minute": minute / 1e6 + _PG_EPOCH_S, "ref": options["ref"].astype(np.int64)}
    for name in HISTORY_VALUES:
        out[name] = as_decimal(options[name])
    out["underlying_price"] = expiry["underlying_price"].astype(np.float64)[at] + as_decimal(
        options["underlying_offset"])
    out["years"] = expiry["years"].astype(np.float64)[at]
    return out


def read_instrument_history(engine: Engine, instrument: str, start: dt.datetime | None = None,
                            end: dt.datetime | None = None, *, greeks: bool = False) -> InstrumentHistory | None:
    """``instrument``'s recorded minutes from ``start`` to ``end`` (both included, either open), oldest
    first; None when the instrument was never recorded. The same rows and values as ``option_quotes``
    (tested), read the way one instrument over time is fast: its id resolved once, its rows by the
    instrument_ref index of the day partitions from its first minute seen to a day after its expiry
    (PostgreSQL prunes the others), its expiry's forward and years from one range of expiry_minutes'
    key, the greeks (when asked) vectorised in numpy rather than per row in SQL."""
    i = instruments.c
    with engine.connect() as conn:
        found = conn.execute(select(i.id, i.currency, i.expiry, i.strike, i.option_type, i.first_seen, i.last_seen)
                             .where(i.name == instrument)).first()
        if found is None:
            return None
        expiry = as_utc(found.expiry)
        # No row of the option lies before its first minute seen, nor past its last seen by the step that
        # moves it on (sql.option_rows.LAST_SEEN_STEP_S): the day partitions outside are never read.
        seen_to = as_utc(found.last_seen) + dt.timedelta(seconds=LAST_SEEN_STEP_S)
        first = as_utc(found.first_seen) if start is None else max(as_utc(start), as_utc(found.first_seen))
        last = seen_to if end is None else min(as_utc(end), seen_to)
        params: dict[str, Any] = {"lo": found.id * FLAG_SPAN, "hi": (found.id + 1) * FLAG_SPAN,
                                  "currency": found.currency, "expiry": expiry, "start": first, "end": last}
        columns = (_fetch_postgres if conn.dialect.name == "postgresql" else _fetch_sqlite)(conn, params)
    flags = columns.pop("ref")
    columns["stale"] = (flags & FLAG_STALE) != 0
    columns["in_surface"] = (flags & FLAG_IN_SURFACE) != 0
    columns["years"] = np.maximum(columns["years"], 0.0)
    if greeks:
        g = black76_greeks(columns["underlying_price"], float(found.strike), columns["years"],
                           columns["mark_iv"] / 100.0, str(found.option_type).lower().startswith("c"))
        for name in HISTORY_GREEKS:
            columns[name] = np.broadcast_to(np.asarray(getattr(g, name), dtype=float), flags.shape).copy()
    return InstrumentHistory(instrument, found.currency, expiry, float(found.strike), str(found.option_type), columns)
