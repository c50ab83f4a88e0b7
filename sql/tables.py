"""The database's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Every time is a UTC instant (``DateTime(timezone=True)``: ``timestamptz`` on PostgreSQL; SQLite
keeps the UTC text). ``minute`` is the minute tick the row belongs to. Volatilities are in percent
(vol points), prices as Deribit quotes them (coin for options). The natural keys are primary keys,
so a minute written twice (a replay, a spool written again after a crash) adds nothing: the
writers insert with ``ON CONFLICT DO NOTHING``.

``SCHEMA_VERSION`` is recorded in ``schema_version``; raise it (and add the step that takes a database of
the version before forward, in ``sql/migrations.py``) when a table changes.

Versions: 1 the minute tables and the orders audit; 2 Deribit's DVOL beside the variance index
(``volatility_index.dvol``, ``dvol_at``) and the ``settlements`` table; 3 the orders audit's outcomes
(sent, filled, rejected, refused, unknown) with the order id, filled amount and the resolution of an
unknown outcome (``order_id``, ``filled_amount``, ``resolved_at``, ``resolution``); 4 honest minutes
and a surface that says what it knows: ``minute_coverage`` (each currency-minute's coverage and
whether it was complete), ``surface_points.extrapolated``, ``surface_fits.check_k_min`` /
``check_k_max`` (the butterfly check's range) and ``volatility_index.dvol_minus_index`` (NULL on the
rows of older versions: not known); 5 compact option rows, partitioned by day on PostgreSQL (below).

Version 5: the option-minutes. ``option_quotes`` is no longer a table but a view of the same name
and columns (:mod:`sql.views`) over

- ``instruments``: one row per option ever recorded (a small integer ``id``, the name, currency,
  kind, expiry, strike, type, settlement currency, first and last minute seen);
- ``chain_minutes``: one row per currency-minute written, with the currency's index price at the
  minute. Its key is also what makes a minute written twice add nothing: the writer inserts it
  first (``ON CONFLICT DO NOTHING``) and writes the minute's option and expiry rows only when it
  went in (:mod:`sql.option_rows`);
- ``expiry_minutes``: one row per expiry-minute: the expiry's underlying (forward) price, the most
  common among its options' tickers, and the years to expiry;
- ``option_minutes``: one row per option-minute with only what changes each minute, as ``real``
  (float4: 7 significant digits, more than a Deribit price, amount or vol has), the option's
  underlying price as its difference from the expiry's (a few dollars at most: its ticker's time) and
  the instrument's id with the row's two flags in one integer (``instrument_ref``: id * 4 + flags; a
  smallint of its own would take 8 bytes a row with the alignment: 92 bytes a row instead of 84). A
  missing value is NaN, not NULL, on PostgreSQL: a row without NULLs has no null bitmap, so its
  header is 24 bytes, not 32 (the view gives NULL back; SQLite stores NULL). No primary key: a
  minute's rows are unique by ``chain_minutes``' key, and a unique (instrument, minute) btree would
  cost 28 bytes a row. Deribit's greeks are not stored: they are Black-76 at the mark vol, the forward and the time to
  expiry (Deribit's ticker delta matches within 1e-5), and the view computes them.

On PostgreSQL every per-minute table (those above, ``minute_coverage``, ``surface_points``,
``surface_fits`` and ``volatility_index``) is partitioned by day (``RANGE (minute)``, one partition
per UTC day, :mod:`sql.partitions`): the Recorder creates today's and the next days' partitions
at start and at each new day, and the writer creates a missing one before it writes into it. SQLite
has the same tables, unpartitioned.
"""

from __future__ import annotations

from sqlalchemy import (
    REAL,
    Boolean,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 5

metadata = MetaData()
#: What readers see that is not a table (created by sql.views after the tables): the option-minutes
#: in their logical layout, the columns of schema 4's table.
views = MetaData()


def _utc() -> DateTime:
    return DateTime(timezone=True)


schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", _utc(), nullable=False),
)

#: option_minutes.instrument_ref = instruments.id * FLAG_SPAN + flags: the quote's book was stale, the
#: quote was in the surface's input.
FLAG_STALE = 1
FLAG_IN_SURFACE = 2
FLAG_SPAN = 4
#: Tables partitioned by day on PostgreSQL (sql.partitions), in the order a minute writes them.
PARTITIONED = ("chain_minutes", "expiry_minutes", "option_minutes", "minute_coverage", "surface_points", "surface_fits",
               "volatility_index")

instruments = Table(
    "instruments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("currency", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("expiry", _utc()),
    Column("strike", Double),
    Column("option_type", String(4)),
    # what its prices and settlement are in: the coin (inverse), or USDC (linear)
    Column("settlement_currency", String(16), nullable=False),
    # the first and last minute recorded (last_seen is moved on at most once an hour:
    # sql.option_rows.LAST_SEEN_STEP_S)
    Column("first_seen", _utc(), nullable=False),
    Column("last_seen", _utc(), nullable=False),
)
# A chain's instruments by their expiries at a minute (a year lists tens of thousands of options).
Index("ix_instruments_expiry", instruments.c.currency, instruments.c.expiry)

chain_minutes = Table(
    "chain_minutes",
    metadata,
    Column("minute", _utc(), primary_key=True),
    Column("currency", String(16), primary_key=True),
    Column("index_price", Double),
    postgresql_partition_by="RANGE (minute)",
)

expiry_minutes = Table(
    "expiry_minutes",
    metadata,
    Column("minute", _utc(), nullable=False),
    Column("currency", String(16), nullable=False),
    Column("expiry", _utc(), nullable=False),
    Column("underlying_price", Double),
    # (expiry - minute) in years of 365 days: the T of the view's greeks
    Column("years", Double, nullable=False),
    # expiry first: one option over time finds its expiry's minutes in one range; a chain at a
    # minute probes its dozen expiries
    PrimaryKeyConstraint("currency", "expiry", "minute", name="expiry_minutes_pkey"),
    postgresql_partition_by="RANGE (minute)",
)

option_minutes = Table(
    "option_minutes",
    metadata,
    Column("minute", _utc(), nullable=False),
    # instruments.id * FLAG_SPAN + (FLAG_STALE, FLAG_IN_SURFACE)
    Column("instrument_ref", Integer, nullable=False),
    Column("bid", REAL),
    Column("bid_amount", REAL),
    Column("bid_iv", REAL),
    Column("ask", REAL),
    Column("ask_amount", REAL),
    Column("ask_iv", REAL),
    Column("mid_iv", REAL),
    Column("mark_price", REAL),
    Column("mark_iv", REAL),
    Column("open_interest", REAL),
    # the option's ticker's underlying price minus its expiry's (expiry_minutes.underlying_price)
    Column("underlying_offset", REAL),
    postgresql_partition_by="RANGE (minute)",
)
# A whole chain at one minute: the rows of a minute lie together (written in minute order), so a
# BRIN index of the minute finds them in a few pages at almost no size; SQLite gets a btree.
Index("ix_option_minutes_minute", option_minutes.c.minute, postgresql_using="brin",
      postgresql_with={"pages_per_range": 8})
# One instrument over time: a btree of instrument_ref (an instrument's rows are the range id * 4 to
# id * 4 + 3, which the view's join also states), its entries deduplicated into posting lists of the
# partition's rows (at most 4 values an instrument), in minute order.
Index("ix_option_minutes_instrument", option_minutes.c.instrument_ref)

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
    postgresql_partition_by="RANGE (minute)",
)
# One grid point over time (the primary key, minute first, serves a whole grid at one minute); its
# entries deduplicated into posting lists of the day's minutes.
Index("ix_surface_points_node", surface_points.c.currency, surface_points.c.tenor_days,
      surface_points.c.log_moneyness)

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
    postgresql_partition_by="RANGE (minute)",
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
    postgresql_partition_by="RANGE (minute)",
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
    postgresql_partition_by="RANGE (minute)",
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

option_quotes = Table(
    "option_quotes",
    views,
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
    # A view since version 5 (sql.views): option_minutes with its instrument, expiry and chain.
)

#: The tables a minute's rows go into, in the order written (option_quotes: their logical layout,
#: written into the compact tables above by sql.option_rows).
MINUTE_TABLES = (option_quotes, minute_coverage, surface_points, surface_fits, volatility_index)
