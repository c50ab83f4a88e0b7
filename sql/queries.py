"""What readers take from the database (the plots, a notebook): the 30-day variance index with
Deribit's DVOL beside it (and DVOL minus the index), minute by minute, each minute's coverage
(whether it was complete), and the recorded settlements and deliveries.

Every time comes back as an aware UTC datetime (SQLite hands back its stored UTC text as naive
datetimes). A DVOL that was missing or stale at its minute is ``None`` with ``dvol_at`` ``None``.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from sqlalchemy import Engine, inspect, literal, select

from sql.tables import minute_coverage, settlements, volatility_index


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
