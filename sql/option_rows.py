"""A currency-minute's options in the compact tables of version 5 (:mod:`sql.tables`).

:func:`write_option_minute` is what the writer (:func:`sql.writers.write_surface_snapshot`) does
with a snapshot's quotes, inside the minute's transaction:

1. the day's partitions exist (:func:`sql.partitions.ensure_partitions`; PostgreSQL);
2. the ``chain_minutes`` row goes in first, ``ON CONFLICT DO NOTHING``: when it was there already the
   minute was written before and nothing more is written (a minute written twice adds nothing);
3. instruments seen for the first time get their row and id; ``last_seen`` moves on when it is
   :data:`LAST_SEEN_STEP_S` behind (``first_seen`` back, for a spooled minute older than it);
4. one ``expiry_minutes`` row per expiry: the underlying price most of its options' tickers had
   (the others keep their difference from it) and the years to expiry;
5. the option rows: COPY on PostgreSQL (straight into the partitioned table: no conflict is possible
   after step 2), executemany on SQLite. A missing value is NaN on PostgreSQL (no null bitmap), NULL
   on SQLite (which stores NaN as NULL anyway); the flags ride in ``instrument_ref`` (id * 4 + flags).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, text, update

from messages.surface import QuoteIV, SurfaceSnapshot
from sql.inserts import insert_ignoring_conflicts
from sql.partitions import ensure_partitions
from sql.tables import (
    FLAG_IN_SURFACE,
    FLAG_SPAN,
    FLAG_STALE,
    chain_minutes,
    expiry_minutes,
    instruments,
    option_minutes,
)

UTC = dt.UTC
SECONDS_PER_YEAR = 365.0 * 86_400.0
#: ``instruments.last_seen`` is written again once the minute is this far past it (not every minute:
#: 1,500 updated rows a minute for a figure that is wanted to the hour).
LAST_SEEN_STEP_S = 3600.0
NAN = float("nan")
#: option_minutes' value columns, in QuoteIV's names, after minute and instrument_ref.
VALUE_FIELDS = ("bid", "bid_amount", "bid_iv", "ask", "ask_amount", "ask_iv", "mid_iv", "mark_price", "mark_iv",
                "open_interest")
COLUMNS = ("minute", "instrument_ref", *VALUE_FIELDS, "underlying_offset")
assert tuple(c.name for c in option_minutes.columns) == COLUMNS, "option_minutes vs COLUMNS"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


#: The largest finite float4 and the smallest normal one: past the first a value is not stored (NaN),
#: below the second it is 0 (PostgreSQL refuses a real out of its range, and with it the minute).
REAL_MAX = 3.4028234e38
REAL_TINY = 1.1754944e-38


def as_real(value: float | None) -> float | None:
    """``value`` as a ``real`` column can hold it: None when missing, not finite or too large; 0 for
    a magnitude below float4's normal range."""
    if value is None or not math.isfinite(value) or abs(value) > REAL_MAX:
        return None
    return 0.0 if abs(value) < REAL_TINY else value


def most_common(values: Sequence[float | None]) -> float | None:
    """The finite value most of ``values`` hold (the first of equally common ones); None if none."""
    counts = Counter(v for v in values if v is not None and math.isfinite(v))
    return counts.most_common(1)[0][0] if counts else None


def settlement_of(snapshot: SurfaceSnapshot) -> str:
    return snapshot.price_currency or snapshot.currency.partition("_")[0]


def write_option_minute(conn: Connection, snapshot: SurfaceSnapshot) -> int:
    """Write ``snapshot``'s quotes into the compact tables; returns the option rows written (0: the
    currency-minute was there already)."""
    postgres = conn.dialect.name == "postgresql"
    minute = dt.datetime.fromtimestamp(snapshot.at, UTC)
    currency = snapshot.currency
    ensure_partitions(conn, [minute.date()])  # one catalog query when they are there
    # An option listed twice in one minute is written once, as schema 4's key did: the first.
    first: dict[str, QuoteIV] = {}
    for q in snapshot.quotes:
        first.setdefault(q.instrument_name, q)
    quotes = tuple(first.values())
    index_price = _finite(snapshot.index_price)
    if index_price is None:
        index_price = most_common([q.index_price for q in quotes])
    went_in = conn.execute(insert_ignoring_conflicts(chain_minutes, conn.dialect.name).values(
        minute=minute, currency=currency, index_price=index_price)).rowcount
    if not went_in or not quotes:
        return 0
    ids = instrument_ids(conn, snapshot, minute)
    by_expiry: dict[int, list[QuoteIV]] = {}
    for q in quotes:
        by_expiry.setdefault(q.expiry_ms, []).append(q)
    underlying: dict[int, float | None] = {}
    expiry_rows = []
    for expiry_ms, group in by_expiry.items():
        underlying[expiry_ms] = most_common([q.underlying_price for q in group])
        expiry_rows.append({"minute": minute, "currency": currency,
                            "expiry": dt.datetime.fromtimestamp(expiry_ms / 1000.0, UTC),
                            "underlying_price": underlying[expiry_ms],
                            "years": (expiry_ms / 1000.0 - snapshot.at) / SECONDS_PER_YEAR})
    conn.execute(insert_ignoring_conflicts(expiry_minutes, conn.dialect.name), expiry_rows)
    missing: Any = NAN if postgres else None
    rows = []
    for q in quotes:
        values = [getattr(q, name) for name in VALUE_FIELDS]
        reference = underlying[q.expiry_ms]
        offset = (q.underlying_price - reference if q.underlying_price is not None and reference is not None
                  else None)
        flags = (FLAG_STALE if q.stale else 0) | (FLAG_IN_SURFACE if q.in_surface else 0)
        rows.append((minute, ids[q.instrument_name] * FLAG_SPAN + flags,
                     *(missing if (r := as_real(v)) is None else r for v in (*values, offset))))
    if postgres:
        _copy(conn, rows)
    else:
        conn.execute(option_minutes.insert(), [dict(zip(COLUMNS, row, strict=True)) for row in rows])
    return len(rows)


def _copy(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    buffer = io.StringIO()
    text_minute = rows[0][0].isoformat()
    csv.writer(buffer, lineterminator="\n").writerows((text_minute, *row[1:]) for row in rows)
    buffer.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY option_minutes ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)", buffer)
    finally:
        cursor.close()


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def instrument_ids(conn: Connection, snapshot: SurfaceSnapshot, minute: dt.datetime) -> dict[str, int]:
    """Each quote's instrument id, the instruments new at this minute added; first and last seen
    kept up to date (:data:`LAST_SEEN_STEP_S`)."""
    i = instruments.c
    names = [q.instrument_name for q in snapshot.quotes]

    def known() -> dict[str, tuple[int, dt.datetime, dt.datetime]]:
        if conn.dialect.name == "postgresql":  # one array parameter: 1,500 bound names parse slowly
            rows = conn.execute(text("SELECT name, id, first_seen, last_seen FROM instruments "
                                     "WHERE name = ANY(:names)"), {"names": names})
        else:
            rows = conn.execute(select(i.name, i.id, i.first_seen, i.last_seen).where(i.name.in_(names)))
        return {r.name: (r.id, _utc(r.first_seen), _utc(r.last_seen)) for r in rows}

    found = known()
    new = [q for q in snapshot.quotes if q.instrument_name not in found]
    if new:
        settlement = settlement_of(snapshot)
        conn.execute(insert_ignoring_conflicts(instruments, conn.dialect.name), [
            {"name": q.instrument_name, "currency": snapshot.currency, "kind": "option",
             "expiry": dt.datetime.fromtimestamp(q.expiry_ms / 1000.0, UTC), "strike": q.strike,
             "option_type": q.option_type, "settlement_currency": settlement, "first_seen": minute,
             "last_seen": minute} for q in {q.instrument_name: q for q in new}.values()])
        found = known()
    behind = minute - dt.timedelta(seconds=LAST_SEEN_STEP_S)
    later = [v[0] for v in found.values() if v[2] <= behind]
    if later:
        conn.execute(update(instruments).where(i.id.in_(later), i.last_seen < minute).values(last_seen=minute))
    earlier = [v[0] for v in found.values() if v[1] > minute]
    if earlier:
        conn.execute(update(instruments).where(i.id.in_(earlier), i.first_seen > minute).values(first_seen=minute))
    return {name: v[0] for name, v in found.items()}
