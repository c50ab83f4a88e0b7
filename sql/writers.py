"""Batched inserts that ignore conflicts: a minute, an order-audit entry or a settlement written twice
adds nothing.

``write_surface_snapshot(conn, snapshot, dvol)`` puts one currency-minute into ``option_quotes``,
``surface_points``, ``surface_fits`` and ``volatility_index`` (one batch per table; Deribit's DVOL
at the minute beside the variance index) inside the caller's transaction. ``write_audit(conn,
event)`` records an order command or its answer in ``orders_audit``, correlated by (origin,
request_key) whichever arrives first. ``write_settlements(conn, history)`` adds the entries of a
settlement history that ``settlements`` does not hold yet (its natural key: currency, instrument,
type, timestamp).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from typing import Any, Literal, NamedTuple

import msgspec
from sqlalchemy import Column, Connection, MetaData, Table, and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from deribit.codec import command_method
from messages.account import Settlement, SettlementHistory
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    PlaceOrder,
)
from messages.surface import QuoteIV, SurfaceSnapshot
from sql.tables import MINUTE_TABLES, option_quotes, orders_audit, settlements

UTC = dt.UTC
SVI_NAMES = ("a", "b", "rho", "m", "sigma")


def insert_ignoring_conflicts(table: Table, dialect_name: str) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect_name!r}: only sqlite and postgresql")


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# option_quotes holds, after (minute, instrument, currency, expiry), a QuoteIV's fields in its order:
# rows are built from msgspec's astuple without a per-field Python step.
_QUOTE_TAIL = tuple(f for f in msgspec.structs.fields(QuoteIV) if f.name not in ("instrument_name", "expiry_ms"))
assert [c.name for c in option_quotes.columns][4:] == [f.name for f in _QUOTE_TAIL], "option_quotes vs QuoteIV"


Rows = list[tuple[Any, ...]]


class DvolReading(msgspec.Struct, frozen=True, kw_only=True):
    """Deribit's DVOL written beside one minute's variance index: the value (vol points) and the
    exchange's own timestamp of it (unix ms)."""

    value: float
    timestamp: int


class MinuteRows(NamedTuple):
    table: Table
    columns: tuple[str, ...]
    rows: Rows


def minute_rows(snapshot: SurfaceSnapshot, dvol: DvolReading | None = None, *,
                times_as_text: bool = False) -> list[MinuteRows]:
    """The rows of one currency-minute, per table; ``dvol`` the DVOL at the minute (None: missing).
    Times are UTC datetimes, or ISO-8601 text with the offset when ``times_as_text`` (for COPY)."""
    cache: dict[float, Any] = {}

    def when(seconds: float) -> Any:
        found = cache.get(seconds)
        if found is None:
            found = utc(seconds)
            if times_as_text:
                found = found.isoformat()
            cache[seconds] = found
        return found

    minute = when(snapshot.at)
    currency = snapshot.currency
    astuple = msgspec.structs.astuple
    quotes: Rows = []
    for q in snapshot.quotes:
        t = astuple(q)
        quotes.append((minute, t[0], currency, when(t[1] / 1000.0), *t[2:]))
    method = snapshot.method
    points: Rows = [(minute, currency, method, p.tenor_days, p.log_moneyness, _finite(p.iv))
                    for p in snapshot.points]
    fits: Rows = [
        (minute, currency, when(f.expiry_ms / 1000.0), f.method, f.years, _finite(f.forward),
         json.dumps(dict(zip(SVI_NAMES, f.parameters, strict=True)) if f.parameters else {}),
         _finite(f.rmse), f.n_quotes, f.butterfly_ok, f.calendar_ok, _finite(f.min_g), _finite(f.wing_slope),
         "; ".join(f.notes) or None)
        for f in snapshot.fits
    ]
    dvol_value = _finite(dvol.value) if dvol is not None else None
    dvol_at = when(dvol.timestamp / 1000.0) if dvol is not None and dvol_value is not None else None
    index: Rows = [(minute, currency, _finite(snapshot.variance_index), _finite(snapshot.atm_iv_30d),
                    _finite(snapshot.rr25_30d), _finite(snapshot.bf25_30d), dvol_value, dvol_at)]
    return [MinuteRows(table, tuple(c.name for c in table.columns), rows)
            for table, rows in zip(MINUTE_TABLES, (quotes, points, fits, index), strict=True)]


def write_surface_snapshot(conn: Connection, snapshot: SurfaceSnapshot,
                           dvol: DvolReading | None = None) -> dict[str, int]:
    """Insert one currency-minute (and the DVOL at it, if any) in the caller's transaction; returns
    rows offered per table.

    PostgreSQL: COPY into a session-private staging table, then one
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` per table (psycopg2's executemany is a round
    trip per row). SQLite: one executemany of ``INSERT ... ON CONFLICT DO NOTHING`` per table."""
    postgres = conn.dialect.name == "postgresql"
    counts: dict[str, int] = {}
    for part in minute_rows(snapshot, dvol, times_as_text=postgres):
        counts[part.table.name] = len(part.rows)
        if not part.rows:
            continue
        if postgres:
            _copy_ignoring_conflicts(conn, part)
        else:
            conn.execute(insert_ignoring_conflicts(part.table, conn.dialect.name),
                         [dict(zip(part.columns, row, strict=True)) for row in part.rows])
    return counts


def _staging(conn: Connection, table: Table) -> Table:
    """A temporary table shaped like ``table``, emptied at each commit. Created in every
    transaction (IF NOT EXISTS): one created in a transaction that rolled back is gone."""
    name = f"staging_{table.name}"
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} (LIKE {table.name}) ON COMMIT DELETE ROWS")
    return Table(name, MetaData(), *(Column(c.name, c.type) for c in table.columns))


def _copy_ignoring_conflicts(conn: Connection, part: MinuteRows) -> None:
    staging = _staging(conn, part.table)
    buffer = io.StringIO()
    # QUOTE_MINIMAL leaves None as an unquoted empty field, which COPY reads as NULL; no text
    # column written here holds an empty string (notes are NULL when there are none).
    csv.writer(buffer, lineterminator="\n").writerows(part.rows)
    buffer.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY {staging.name} ({', '.join(part.columns)}) FROM STDIN WITH (FORMAT csv)", buffer)
    finally:
        cursor.close()
    columns = [part.table.c[name] for name in part.columns]
    conn.execute(postgresql.insert(part.table).from_select(columns, select(*(staging.c[n] for n in part.columns)))
                 .on_conflict_do_nothing())


# -- orders audit ----------------------------------------------------------------------------------
Command = PlaceOrder | EditOrder | CancelOrder | CancelAll | CancelByLabel
Answer = CommandResult | CommandFailed


class OrderAuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An order command seen on the bus, or its answer: one ``orders_audit`` row's worth."""

    kind: Literal["request", "answer"]
    origin: str
    request_key: str
    method: str
    at: float
    payload: str
    outcome: str
    instrument: str | None = None
    error_code: int | None = None
    error_message: str | None = None


def audit_request(command: Command, at: float) -> OrderAuditEvent:
    instrument = getattr(command, "instrument_name", None)
    payload = {"message": type(command).__name__, **msgspec.to_builtins(command)}
    return OrderAuditEvent(kind="request", origin=command.origin, request_key=command.request_key,
                           method=command_method(command), at=at, payload=json.dumps(payload),
                           outcome="pending", instrument=instrument)


def audit_answer(answer: Answer, at: float) -> OrderAuditEvent:
    payload = {"message": type(answer).__name__, **msgspec.to_builtins(answer)}
    if isinstance(answer, CommandResult):
        return OrderAuditEvent(kind="answer", origin=answer.origin, request_key=answer.request_key,
                               method=answer.method, at=at, payload=json.dumps(payload), outcome="accepted")
    # A negative code is the Connection's own refusal: the command never reached the exchange.
    return OrderAuditEvent(kind="answer", origin=answer.origin, request_key=answer.request_key,
                           method=answer.method, at=at, payload=json.dumps(payload),
                           outcome="refused" if answer.code < 0 else "rejected",
                           error_code=answer.code, error_message=answer.message)


def write_audit(conn: Connection, event: OrderAuditEvent) -> None:
    """Record a request or an answer; the other half may already be there (or come later)."""
    key = and_(orders_audit.c.origin == event.origin, orders_audit.c.request_key == event.request_key)
    when = utc(event.at)
    if event.kind == "request":
        values = {"requested_at": when, "request": event.payload, "instrument": event.instrument}
        row = {"origin": event.origin, "request_key": event.request_key, "method": event.method,
               "outcome": event.outcome, **values}
        conn.execute(insert_ignoring_conflicts(orders_audit, conn.dialect.name), [row])
        conn.execute(orders_audit.update().where(key, orders_audit.c.request.is_(None)).values(**values))
        return
    values = {"answered_at": when, "answer": event.payload, "outcome": event.outcome, "method": event.method,
              "error_code": event.error_code, "error_message": event.error_message}
    row = {"origin": event.origin, "request_key": event.request_key, "instrument": None, **values}
    conn.execute(insert_ignoring_conflicts(orders_audit, conn.dialect.name), [row])
    conn.execute(orders_audit.update().where(key).values(**values))


# -- settlements -----------------------------------------------------------------------------------
#: An entry's natural key: currency, instrument ('' when none: a bankruptcy), type, timestamp (ms).
SettlementKey = tuple[str, str, str, int]


def settlement_key(currency: str, entry: Settlement) -> SettlementKey:
    return currency, entry.instrument_name or "", entry.type, entry.timestamp


def settlement_rows(history: SettlementHistory) -> list[dict[str, Any]]:
    """One ``settlements`` row per entry (an entry listed twice, once); ``recorded_at`` is when the
    history arrived."""
    recorded_at = utc(history.at)
    rows: dict[SettlementKey, dict[str, Any]] = {}
    for entry in history.settlements:
        key = settlement_key(history.currency, entry)
        rows.setdefault(key, {
            "currency": history.currency, "instrument": key[1], "type": entry.type,
            "settled_at": utc(entry.timestamp / 1000.0), "position": _finite(entry.position),
            "mark_price": _finite(entry.mark_price), "index_price": _finite(entry.index_price),
            "profit_loss": _finite(entry.profit_loss), "session_profit_loss": _finite(entry.session_profit_loss),
            "funding": _finite(entry.funding), "funded": _finite(entry.funded),
            "session_bankruptcy": _finite(entry.session_bankruptcy), "session_tax": _finite(entry.session_tax),
            "session_tax_rate": _finite(entry.session_tax_rate), "socialized": _finite(entry.socialized),
            "recorded_at": recorded_at})
    return list(rows.values())


def write_settlements(conn: Connection, history: SettlementHistory) -> int:
    """Insert the entries ``settlements`` does not hold yet, in the caller's transaction; returns
    the entries offered."""
    rows = settlement_rows(history)
    if rows:
        conn.execute(insert_ignoring_conflicts(settlements, conn.dialect.name), rows)
    return len(rows)
