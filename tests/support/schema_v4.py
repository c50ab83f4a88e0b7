"""The database schema as version 4 of the program created it (sql/tables.py at commit 22624c7), kept
unchanged here so that the migration tests start from a real version-4 database: its tables, created
by version 4's own definitions, holding version 4's rows. Never edit it to follow sql/tables.py.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 4

metadata = MetaData()


def _utc() -> DateTime:
    return DateTime(timezone=True)


schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", _utc(), nullable=False),
)

option_quotes = Table(
    "option_quotes",
    metadata,
    Column("minute", _utc(), primary_key=True),
    Column("instrument", String(64), primary_key=True),
    Column("currency", String(8), nullable=False),
    Column("expiry", _utc(), nullable=False),
    Column("strike", Double, nullable=False),
    Column("option_type", String(4), nullable=False),
    Column("underlying_price", Double),
    Column("index_price", Double),
    Column("bid", Double),
    Column("bid_amount", Double, nullable=False),
    Column("bid_iv", Double),
    Column("ask", Double),
    Column("ask_amount", Double, nullable=False),
    Column("ask_iv", Double),
    Column("mid_iv", Double),
    Column("mark_price", Double),
    Column("mark_iv", Double),
    Column("open_interest", Double),
    Column("delta", Double),
    Column("gamma", Double),
    Column("vega", Double),
    Column("theta", Double),
    Column("stale", Boolean, nullable=False),
    Column("in_surface", Boolean, nullable=False),
    # The primary key (minute first) serves the per-minute reads; no other index, so that a minute's
    # 1,500 rows go in fast.
)

surface_points = Table(
    "surface_points",
    metadata,
    Column("minute", _utc(), primary_key=True),
    Column("currency", String(8), primary_key=True),
    Column("method", String(8), primary_key=True),
    Column("tenor_days", Double, primary_key=True),
    Column("log_moneyness", Double, primary_key=True),
    Column("iv", Double),
    # the node lies outside the data (tenor outside the fitted expiries, or k outside the quoted
    # strikes' range interpolated in time): quant.coverage. NULL on rows before version 4: unknown.
    Column("extrapolated", Boolean),
)

surface_fits = Table(
    "surface_fits",
    metadata,
    Column("minute", _utc(), primary_key=True),
    Column("currency", String(8), primary_key=True),
    Column("expiry", _utc(), primary_key=True),
    Column("method", String(8), nullable=False),
    Column("years", Double, nullable=False),
    Column("forward", Double),
    # JSON: {"a":..,"b":..,"rho":..,"m":..,"sigma":..} of the raw-SVI total variance; {} for linear
    Column("parameters", Text, nullable=False),
    Column("rmse", Double),
    Column("n_quotes", Integer, nullable=False),
    Column("butterfly_ok", Boolean, nullable=False),
    Column("calendar_ok", Boolean, nullable=False),
    Column("min_g", Double),
    Column("wing_slope", Double),
    Column("notes", Text),
    # the ln(K/F) range the butterfly check covered (NULL: not said, or a row before version 4)
    Column("check_k_min", Double),
    Column("check_k_max", Double),
)

volatility_index = Table(
    "volatility_index",
    metadata,
    Column("minute", _utc(), primary_key=True),
    Column("currency", String(8), primary_key=True),
    Column("value", Double),
    Column("atm_iv_30d", Double),
    Column("rr25_30d", Double),
    Column("bf25_30d", Double),
    # Deribit's DVOL of the currency's coin at the minute (the latest at or before it) and its own
    # exchange timestamp; both NULL when there was none, or the latest was older than
    # sql.recording.DVOL_STALE_AFTER_S at the minute: a stale figure is missing, not current.
    Column("dvol", Double),
    Column("dvol_at", _utc()),
    # DVOL minus our 30-day variance index (``value``), vol points; NULL when either is missing.
    Column("dvol_minus_index", Double),
)

# One row per currency-minute the SurfaceBuilder published (version 4): ``listed`` options in the
# chain, ``usable`` of them with a two-sided book and a ticker, ``coverage`` = usable / listed, and
# whether the minute was ``complete`` (coverage at least surface.min_coverage): an incomplete
# minute has its option_quotes rows but no surface_points, surface_fits or volatility_index row.
minute_coverage = Table(
    "minute_coverage",
    metadata,
    Column("minute", _utc(), primary_key=True),
    Column("currency", String(8), primary_key=True),
    Column("coverage", Double, nullable=False),
    Column("complete", Boolean, nullable=False),
    Column("listed", Integer, nullable=False),
    Column("usable", Integer, nullable=False),
)

settlements = Table(
    "settlements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # the currency whose history listed the entry (private/get_settlement_history_by_currency)
    Column("currency", String(16), nullable=False),
    # '' for an entry without an instrument (a bankruptcy): a key column is never NULL, since NULLs
    # never conflict and the same entry would go in again with each fetch
    Column("instrument", String(64), nullable=False),
    # settlement, delivery or bankruptcy
    Column("type", String(16), nullable=False),
    # Deribit's timestamp of the event
    Column("settled_at", _utc(), nullable=False),
    Column("position", Double),
    Column("mark_price", Double),
    Column("index_price", Double),
    Column("profit_loss", Double),
    Column("session_profit_loss", Double),
    Column("funding", Double),
    Column("funded", Double),
    Column("session_bankruptcy", Double),
    Column("session_tax", Double),
    Column("session_tax_rate", Double),
    Column("socialized", Double),
    # when the desk first received the history listing it (a later fetch of the same entry adds nothing)
    Column("recorded_at", _utc(), nullable=False),
    UniqueConstraint("currency", "instrument", "type", "settled_at", name="uq_settlements_entry"),
)

orders_audit = Table(
    "orders_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", String(32), nullable=False),
    Column("request_key", String(128), nullable=False),
    Column("method", String(64), nullable=False),
    Column("instrument", String(64)),
    Column("requested_at", _utc()),
    # the command as sent to the Connection (JSON)
    Column("request", Text),
    Column("answered_at", _utc()),
    # CommandResult / CommandFailed (JSON)
    Column("answer", Text),
    # messages.commands.AuditOutcome: pending (no answer yet), sent, filled, rejected (by the
    # exchange), refused (by the Connection: never sent), unknown (sent, answer lost; until resolved)
    Column("outcome", String(16), nullable=False),
    Column("error_code", Integer),
    # Text columns other than the JSON ones are stored escaped (sql.writers.escape_text): a NUL
    # from an exchange's error text would make PostgreSQL refuse the whole batch.
    Column("error_message", Text),
    # the exchange's order (from the answer, the resolution or a later fill) and what of it executed
    Column("order_id", String(64)),
    Column("filled_amount", Double),
    # when an unknown outcome was resolved from the exchange's order state, and how
    Column("resolved_at", _utc()),
    Column("resolution", Text),
    UniqueConstraint("origin", "request_key", name="uq_orders_audit_request"),
)

#: The tables a minute's rows go into, in the order written.
MINUTE_TABLES = (option_quotes, minute_coverage, surface_points, surface_fits, volatility_index)
