"""Batched inserts that ignore conflicts: a minute, an order-audit entry or a settlement written twice
adds nothing.

``write_surface_snapshot(conn, snapshot, dvol)`` puts one currency-minute into ``option_quotes``
(since version 5 a view: the compact tables, :mod:`sql.option_rows`),
``minute_coverage``, ``surface_points``, ``surface_fits`` and ``volatility_index`` (one batch per
table; Deribit's DVOL at the minute beside the variance index, and their difference) inside the
caller's transaction. An incomplete minute writes its quotes and its ``minute_coverage`` row only: no
surface, fits or index row comes from it. ``write_audit(conn,
event)`` records an order command, its answer, the resolution of a lost answer or a later fill in
``orders_audit``, correlated by (origin, request_key) whichever arrives first (a fill by order
id). ``write_settlements(conn, history)`` adds the entries of a settlement history that
``settlements`` does not hold yet (its natural key: currency, instrument, type, timestamp).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from typing import Any, Literal, NamedTuple

import msgspec
from sqlalchemy import Column, Connection, MetaData, Table, and_, or_, select
from sqlalchemy.dialects import postgresql

from deribit.codec import command_method
from deribit.order_outcome import answer_outcome
from messages.account import OrderUpdate, Settlement, SettlementHistory
from messages.commands import (
    ANSWER_LOST,
    AuditOutcome,
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    OrderResolved,
    PlaceOrder,
)
from messages.surface import QuoteIV, SurfaceSnapshot
from sql.inserts import insert_ignoring_conflicts
from sql.option_rows import write_option_minute
from sql.partitions import ensure_partitions
from sql.tables import MINUTE_TABLES, option_quotes, orders_audit, settlements

UTC = dt.UTC
SVI_NAMES = ("a", "b", "rho", "m", "sigma")


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
                times_as_text: bool = False, with_quotes: bool = True) -> list[MinuteRows]:
    """The rows of one currency-minute, per table (:data:`sql.tables.MINUTE_TABLES`' order); ``dvol``
    the DVOL at the minute (None: missing). Times are UTC datetimes, or ISO-8601 text with the offset
    when ``times_as_text`` (for COPY). A snapshot from a producer that predates coverage (``coverage``
    None: a spooled batch of an older version) has no ``minute_coverage`` row. The ``option_quotes``
    rows are in their logical layout (the view's columns); ``with_quotes`` False leaves them out."""
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
    for q in snapshot.quotes if with_quotes else ():
        t = astuple(q)
        quotes.append((minute, t[0], currency, when(t[1] / 1000.0), *t[2:]))
    coverage_rows: Rows = []
    coverage = _finite(snapshot.coverage)
    if coverage is not None:
        coverage_rows.append((minute, currency, coverage, snapshot.complete, snapshot.listed, snapshot.usable))
    if not snapshot.complete:
        # Quotes only: the surface, fits and index of an incomplete minute are not data.
        return _parts((quotes, coverage_rows, [], [], []))
    method = snapshot.method
    points: Rows = [(minute, currency, method, p.tenor_days, p.log_moneyness, _finite(p.iv), p.extrapolated)
                    for p in snapshot.points]
    fits: Rows = [
        (minute, currency, when(f.expiry_ms / 1000.0), f.method, f.years, _finite(f.forward),
         json.dumps(dict(zip(SVI_NAMES, f.parameters, strict=True)) if f.parameters else {}),
         _finite(f.rmse), f.n_quotes, f.butterfly_ok, f.calendar_ok, _finite(f.min_g), _finite(f.wing_slope),
         "; ".join(f.notes) or None, _finite(f.check_k_min), _finite(f.check_k_max))
        for f in snapshot.fits
    ]
    dvol_value = _finite(dvol.value) if dvol is not None else None
    dvol_at = when(dvol.timestamp / 1000.0) if dvol is not None and dvol_value is not None else None
    value = _finite(snapshot.variance_index)
    difference = dvol_value - value if dvol_value is not None and value is not None else None
    index: Rows = [(minute, currency, value, _finite(snapshot.atm_iv_30d),
                    _finite(snapshot.rr25_30d), _finite(snapshot.bf25_30d), dvol_value, dvol_at, difference)]
    return _parts((quotes, coverage_rows, points, fits, index))


def _parts(rows: tuple[Rows, Rows, Rows, Rows, Rows]) -> list[MinuteRows]:
    return [MinuteRows(table, tuple(c.name for c in table.columns), table_rows)
            for table, table_rows in zip(MINUTE_TABLES, rows, strict=True)]


def write_surface_snapshot(conn: Connection, snapshot: SurfaceSnapshot,
                           dvol: DvolReading | None = None) -> dict[str, int]:
    """Insert one currency-minute (and the DVOL at it, if any) in the caller's transaction; returns
    rows offered per table.

    PostgreSQL: COPY into a session-private staging table, then one
    ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` per table (psycopg2's executemany is a round
    trip per row). SQLite: one executemany of ``INSERT ... ON CONFLICT DO NOTHING`` per table.
    The quotes (``option_quotes``, a view since version 5) go into the compact tables:
    :func:`sql.option_rows.write_option_minute`."""
    postgres = conn.dialect.name == "postgresql"
    counts: dict[str, int] = {}
    ensure_partitions(conn, [utc(snapshot.at).date()])
    for part in minute_rows(snapshot, dvol, times_as_text=postgres, with_quotes=False):
        counts[part.table.name] = len(part.rows)
        if part.table is option_quotes:
            write_option_minute(conn, snapshot)
            counts[part.table.name] = len(snapshot.quotes)
            continue
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

# What a database refuses in text: NUL (PostgreSQL) and lone surrogates (not UTF-8: neither
# driver can encode them); the backslash is escaped too so that every text reads back exactly.
_REFUSED_TEXT = re.compile("[\\\\\x00\ud800-\udfff]")
_ESCAPED_TEXT = re.compile(r"\\(\\|x00|u[0-9a-f]{4})")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return "\\\\" if char == "\\" else "\\x00" if char == "\x00" else f"\\u{ord(char):04x}"


def _unescape_char(match: re.Match[str]) -> str:
    code = match.group(1)
    return "\\" if code == "\\" else "\x00" if code == "x00" else chr(int(code[1:], 16))


def escape_text(text: str | None) -> str | None:
    """``text`` as stored in a plain text column: every database takes it; :func:`unescape_text`
    gives it back exactly."""
    return None if text is None else _REFUSED_TEXT.sub(_escape_char, text)


def unescape_text(text: str | None) -> str | None:
    return None if text is None else _ESCAPED_TEXT.sub(_unescape_char, text)


AuditKind = Literal["request", "answer", "resolution", "fill"]


class OrderAuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An order command seen on the bus, its answer, the resolution of a lost answer, or a fill of
    an order: one ``orders_audit`` row's worth (a fill: its ``order_id`` and ``filled_amount``)."""

    kind: AuditKind
    origin: str
    request_key: str
    method: str
    at: float
    payload: str
    outcome: AuditOutcome
    instrument: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    order_id: str | None = None
    filled_amount: float | None = None


def _json(message: msgspec.Struct) -> str:
    # ensure_ascii: NUL and lone surrogates inside the message come out as \u escapes.
    return json.dumps({"message": type(message).__name__, **msgspec.to_builtins(message)})


def audit_request(command: Command, at: float) -> OrderAuditEvent:
    instrument = getattr(command, "instrument_name", None)
    return OrderAuditEvent(kind="request", origin=command.origin, request_key=command.request_key,
                           method=command_method(command), at=at, payload=_json(command),
                           outcome=AuditOutcome.PENDING, instrument=instrument)


def audit_answer(answer: Answer, at: float) -> OrderAuditEvent:
    order = answer.order if isinstance(answer, CommandResult) else None
    error = (answer.code, answer.message) if isinstance(answer, CommandFailed) else (None, None)
    return OrderAuditEvent(kind="answer", origin=answer.origin, request_key=answer.request_key,
                           method=answer.method, at=at, payload=_json(answer), outcome=answer_outcome(answer),
                           error_code=error[0], error_message=error[1],
                           order_id=order.order_id if order is not None else None,
                           filled_amount=order.filled_amount if order is not None else None)


def audit_resolution(resolved: OrderResolved, at: float) -> OrderAuditEvent:
    order = resolved.order
    return OrderAuditEvent(kind="resolution", origin=resolved.origin, request_key=resolved.request_key,
                           method=resolved.method, at=at, payload=resolved.message, outcome=resolved.outcome,
                           order_id=order.order_id if order is not None else None,
                           filled_amount=order.filled_amount if order is not None else None)


def audit_fill(order: OrderUpdate, at: float) -> OrderAuditEvent:
    """An order of ours executed (in part): its placement's row says filled."""
    return OrderAuditEvent(kind="fill", origin="", request_key="", method="", at=at, payload="",
                           outcome=AuditOutcome.FILLED, order_id=order.order_id, filled_amount=order.filled_amount)


def write_audit(conn: Connection, event: OrderAuditEvent) -> None:
    """Record a request, an answer, a resolution or a fill; a request's answer may already be
    there (or come later). An outcome only moves forward: a resolution changes only an unknown
    outcome, a fill only a sent or filled placement with less filled."""
    t = orders_audit
    origin, request_key = escape_text(event.origin), escape_text(event.request_key)
    key = and_(t.c.origin == origin, t.c.request_key == request_key)
    when = utc(event.at)
    insert = insert_ignoring_conflicts(t, conn.dialect.name)
    method = escape_text(event.method)
    if event.kind == "fill":
        conn.execute(t.update().where(
            t.c.order_id == escape_text(event.order_id), t.c.method.in_(("private/buy", "private/sell")),
            t.c.outcome.in_((AuditOutcome.SENT.value, AuditOutcome.FILLED.value)),
            or_(t.c.filled_amount.is_(None), t.c.filled_amount < event.filled_amount),
        ).values(outcome=AuditOutcome.FILLED.value, filled_amount=event.filled_amount))
        return
    if event.kind == "request":
        values = {"requested_at": when, "request": event.payload, "instrument": escape_text(event.instrument)}
        row = {"origin": origin, "request_key": request_key, "method": method,
               "outcome": event.outcome.value, **values}
        conn.execute(insert, [row])
        conn.execute(t.update().where(key, t.c.request.is_(None)).values(**values))
        return
    order = {"order_id": escape_text(event.order_id), "filled_amount": _finite(event.filled_amount)}
    if event.kind == "resolution":
        values = {"outcome": event.outcome.value, "resolved_at": when, "resolution": escape_text(event.payload),
                  **order}
        conn.execute(insert, [{"origin": origin, "request_key": request_key, "method": method, **values}])
        conn.execute(t.update().where(key, t.c.outcome == AuditOutcome.UNKNOWN.value).values(**values))
        return
    values = {"answered_at": when, "answer": event.payload, "outcome": event.outcome.value, "method": method,
              "error_code": event.error_code, "error_message": escape_text(event.error_message), **order}
    conn.execute(insert, [{"origin": origin, "request_key": request_key, "instrument": None, **values}])
    conn.execute(t.update().where(key).values(**values))


def legacy_audit_outcome(outcome: str, method: str, error_code: int | None,
                         answer: str | None) -> dict[str, Any] | None:
    """A row of schema version 2 in today's outcomes (None: it stands): ``accepted`` is sent, or
    filled when the answer's order executed; ``refused`` with a lost answer (-2) is unknown."""
    if outcome == "refused":
        return {"outcome": AuditOutcome.UNKNOWN.value} if error_code == ANSWER_LOST else None
    if outcome != "accepted":
        return None
    try:
        order = (json.loads(answer) if answer else {}).get("order") or {}
        filled = float(order.get("filled_amount") or 0.0)
        order_id = order.get("order_id")
    except (ValueError, AttributeError, TypeError):
        return {"outcome": AuditOutcome.SENT.value}
    executed = method in ("private/buy", "private/sell", "private/edit") and filled > 0
    return {"outcome": (AuditOutcome.FILLED if executed else AuditOutcome.SENT).value,
            "order_id": escape_text(order_id) if isinstance(order_id, str) else None,
            "filled_amount": filled if order else None}


def legacy_audit_event(fields: dict[str, Any]) -> OrderAuditEvent:
    """An audit entry as schema version 2 spooled it, in today's outcomes (``ValueError`` when it
    is not one)."""
    outcome = fields.get("outcome")
    if isinstance(outcome, str):
        values = legacy_audit_outcome(outcome, str(fields.get("method", "")), fields.get("error_code"),
                                      fields.get("payload"))
        if values is not None:
            fields = {**fields, **values}
    try:
        return msgspec.convert(fields, OrderAuditEvent)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not an audit entry: {exc}") from exc


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
