"""The database schema as version 1 of the program created it (sql/tables.py at commit a1fb04b), kept
unchanged here so that the migration tests start from a real version-1 database: its tables, created
by version 1's own definitions, holding version 1's rows. Never edit it to follow sql/tables.py.
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

SCHEMA_VERSION = 1

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
    # pending (no answer yet), accepted, rejected (by the exchange), refused (locally, never sent)
    Column("outcome", String(16), nullable=False),
    Column("error_code", Integer),
    Column("error_message", Text),
    UniqueConstraint("origin", "request_key", name="uq_orders_audit_request"),
)
