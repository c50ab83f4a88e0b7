"""The ``option_quotes`` view: the option-minutes in schema 4's columns, over the compact tables.

Readers (the plots, a notebook, ``SELECT * FROM option_quotes``) see what they saw before version 5:
one row per option-minute with its name, currency, expiry, strike, type, underlying and index price,
book, vols, greeks and flags. The view joins ``option_minutes`` to ``instruments``,
``expiry_minutes`` and ``chain_minutes`` (a filter on ``minute`` reaches every table, so PostgreSQL
reads only that day's partitions, pruned when the query is planned) and gives back

- NULL for the NaN that stands for a missing value in ``option_minutes``;
- on PostgreSQL each ``real`` as the decimal it holds (through its shortest text: ``0.1455``, not
  ``0.14550000429153442``), as a double;
- the underlying price as the expiry's plus the row's offset; the index price is the currency's at
  the minute (``chain_minutes``: the chain's own, or for rows of older versions the most common
  among the options' tickers);
- Deribit's greeks as Black-76 at the mark vol, the underlying price and the years to expiry, with
  :func:`quant.black76.black76_greeks`' conventions (vega per vol point, theta per day, the last
  day's theta the time value lost by expiring): within 1e-9 of that function (the normal CDF is
  Hart's double-precision approximation), within 1e-5 of Deribit's ticker delta.

Made of SQLAlchemy expressions compiled for the database at hand: the same definition on SQLite and
PostgreSQL. SQLite needs its math functions (``exp``, ``ln``, ``sqrt``; built in since 3.35, added
by :func:`sql.engine.make_engine` where missing).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Connection, Double, and_, case, cast, func, literal, literal_column, select
from sqlalchemy.sql import ColumnElement
from sqlalchemy.types import Text

from sql.tables import (
    FLAG_IN_SURFACE,
    FLAG_SPAN,
    FLAG_STALE,
    chain_minutes,
    expiry_minutes,
    instruments,
    option_minutes,
    option_quotes,
)

DAYS_PER_YEAR = 365.0
#: Hart's double-precision rational approximation of the normal CDF (as given by G. West, "Better
#: approximations to cumulative normal functions", 2005): numerator and denominator coefficients,
#: highest power first, for |x| below 7.07; a continued fraction beyond.
_HART_P = (3.52624965998911e-02, 0.700383064443688, 6.37396220353165, 33.912866078383, 112.079291497871,
           221.213596169931, 220.206867912376)
_HART_Q = (8.83883476483184e-02, 1.75566716318264, 16.064177579207, 86.7807322029461, 296.564248779674,
           637.333633378831, 793.826512519948, 440.413735824752)
#: exp() of less than this is 0 (PostgreSQL raises an underflow instead).
_EXP_FLOOR = -700.0


def _number(value: float) -> ColumnElement[Any]:
    return literal_column(repr(float(value)), Double)


def _real(column: Any, postgres: bool) -> ColumnElement[Any]:
    """A ``real`` column as the double it stands for, NULL for NaN."""
    value = func.nullif(column, literal_column("'NaN'"))
    return cast(cast(value, Text), Double) if postgres else value


def _exp(x: ColumnElement[Any], postgres: bool) -> ColumnElement[Any]:
    floor = _number(_EXP_FLOOR)
    return func.exp(func.greatest(x, floor) if postgres else func.max(x, floor))


def _horner(x: ColumnElement[Any], coefficients: tuple[float, ...]) -> ColumnElement[Any]:
    value: ColumnElement[Any] = _number(coefficients[0])
    for c in coefficients[1:]:
        value = value * x + _number(c)
    return value


def _cdf(x: ColumnElement[Any], postgres: bool) -> ColumnElement[Any]:
    """The standard normal CDF to double precision (Hart's approximation, :data:`_HART_P`): the
    lower tail at |x|, mirrored for x > 0; 0 or 1 past |x| = 37."""
    a = func.abs(x)
    gauss = _exp(_number(-0.5) * a * a, postgres)
    near = gauss * _horner(a, _HART_P) / _horner(a, _HART_Q)
    fraction: ColumnElement[Any] = a + _number(0.65)
    for n in (4.0, 3.0, 2.0, 1.0):
        fraction = a + _number(n) / fraction
    far = gauss / fraction / _number(math.sqrt(2.0 * math.pi))
    tail = case((a > _number(37.0), _number(0.0)), (a < _number(7.07106781186547), near), else_=far)
    return case((x > 0, _number(1.0) - tail), else_=tail)


def _kept_apart(postgres: bool) -> list[ColumnElement[Any]]:
    """On PostgreSQL, a volatile column (never read) that keeps a level of the view from being merged
    into the next: merged, each level's expressions would be copied into every use (the CDF uses its
    argument a dozen times), a thousand-fold larger expression to plan and evaluate per row. Filters
    on the minute, currency or instrument still reach the tables (they do not touch this column)."""
    return [func.random().label("kept_apart")] if postgres else []


def _of_instrument(ref: Any, instrument_id: Any) -> ColumnElement[Any]:
    """``ref`` (option_minutes.instrument_ref) is the instrument's: its id by division (a hash join or a
    primary-key lookup from the rows) and the range of its refs (an index range scan from the
    instrument: SQLite uses no expression index in a join)."""
    span: ColumnElement[Any] = literal_column(str(FLAG_SPAN))
    return and_(instrument_id == ref.op("/")(span), ref >= instrument_id * span,
                ref < instrument_id * span + span)


def option_quotes_select(dialect_name: str) -> Any:
    """The view's SELECT for ``dialect_name`` (postgresql or sqlite)."""
    postgres = dialect_name == "postgresql"
    o, i, e, c = option_minutes.c, instruments.c, expiry_minutes.c, chain_minutes.c
    ref = o.instrument_ref
    joined = option_minutes.join(instruments, _of_instrument(ref, i.id))
    on_expiry = and_(e.minute == o.minute, e.currency == i.currency, e.expiry == i.expiry)
    on_chain = and_(c.minute == o.minute, c.currency == i.currency)
    # Plain joins (each key is unique): a filter on the minute reaches expiry_minutes and chain_minutes
    # by equality, so a chain at a minute reads one day's partition of each, pruned when planned. (A
    # LATERAL probe per row, which one instrument over a month through the view favours, 386 ms against
    # 557, re-prunes the partitions at each of a chain's rows: 700 probes, 2 ms more; one instrument over
    # time has its own reader, sql.queries.read_instrument_history.)
    joined = joined.join(expiry_minutes, on_expiry).outerjoin(chain_minutes, on_chain)
    underlying, years_, index_price = e.underlying_price, e.years, c.index_price
    base = (
        select(
            o.minute.label("minute"), i.name.label("instrument"), i.currency.label("currency"),
            i.expiry.label("expiry"), i.strike.label("strike"), i.option_type.label("option_type"),
            (underlying + _real(o.underlying_offset, postgres)).label("underlying_price"),
            index_price.label("index_price"),
            *(_real(o[name], postgres).label(name) for name in (
                "bid", "bid_amount", "bid_iv", "ask", "ask_amount", "ask_iv", "mid_iv", "mark_price", "mark_iv",
                "open_interest")),
            ((ref.op("&")(literal_column(str(FLAG_STALE)))) != 0).label("stale"),
            ((ref.op("&")(literal_column(str(FLAG_IN_SURFACE)))) != 0).label("in_surface"),
            years_.label("years"),
        )
        .select_from(joined)
    ).subquery("b")
    b = base.c
    years = case((b.years > 0, b.years), else_=_number(0.0))
    sigma = b.mark_iv / _number(100.0)
    shaped = select(
        *b, func.sqrt(years).label("sqrt_t"), (sigma * func.sqrt(years)).label("s"), sigma.label("sigma"),
        *_kept_apart(postgres),
    ).subquery("s1")
    s1 = shaped.c
    live = and_(s1.s > 0, s1.underlying_price > 0, s1.strike > 0)
    d1 = case((live, func.ln(s1.underlying_price / s1.strike) / s1.s + _number(0.5) * s1.s))
    with_d = select(*(c for c in s1 if c.name != "kept_apart"), d1.label("d1"), *_kept_apart(postgres)
                    ).subquery("s2")
    s2 = with_d.c
    d2 = s2.d1 - s2.s
    normal = select(
        *(c for c in s2 if c.name != "kept_apart"), *_kept_apart(postgres),
        _cdf(s2.d1, postgres).label("n_d1"), _cdf(-s2.d1, postgres).label("n_md1"),
        _cdf(d2, postgres).label("n_d2"), _cdf(-d2, postgres).label("n_md2"),
        (_number(1.0 / math.sqrt(2.0 * math.pi)) * _exp(_number(-0.5) * s2.d1 * s2.d1, postgres)).label("pdf"),
    ).subquery("s3")
    n = normal.c
    f, k = n.underlying_price, n.strike
    call = n.option_type == literal("call")
    known = and_(n.s.is_not(None), f.is_not(None))
    step = case((f > k, _number(1.0)), (f < k, _number(0.0)), else_=_number(0.5))
    delta = case((~known, None), (n.d1.is_not(None), case((call, n.n_d1), else_=-n.n_md1)),
                 else_=case((call, step), else_=step - _number(1.0)))
    zero = _number(0.0)
    gamma = case((~known, None), (n.d1.is_not(None), n.pdf / (f * n.s)), else_=zero)
    vega = case((~known, None), (n.d1.is_not(None), f * n.pdf * n.sqrt_t * _number(0.01)), else_=zero)
    price = case((call, f * n.n_d1 - k * n.n_d2), else_=k * n.n_md2 - f * n.n_md1)
    intrinsic = case((call, case((f > k, f - k), else_=zero)), else_=case((k > f, k - f), else_=zero))
    theta = case((~known, None),
                 (and_(n.d1.is_not(None), n.years < _number(1.0 / DAYS_PER_YEAR)), intrinsic - price),
                 (n.d1.is_not(None), -f * n.pdf * n.sigma / (_number(2.0) * n.sqrt_t) / _number(DAYS_PER_YEAR)),
                 else_=zero)
    greeks = {"delta": delta, "gamma": gamma, "vega": vega, "theta": theta}
    return select(*((greeks[col.name] if col.name in greeks else n[col.name]).label(col.name)
                    for col in option_quotes.columns))


def create_views(conn: Connection) -> None:
    """(Re)create the ``option_quotes`` view over the compact tables (after every migration)."""
    body = option_quotes_select(conn.dialect.name).compile(dialect=conn.dialect,
                                                           compile_kwargs={"literal_binds": True})
    conn.exec_driver_sql("DROP VIEW IF EXISTS option_quotes")
    conn.exec_driver_sql(f"CREATE VIEW option_quotes AS {body}")
