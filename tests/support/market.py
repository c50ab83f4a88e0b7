"""The BTC market of the real capture (2021-07-22) as the console's tests see it: its instruments,
a trading context on the perpetual, and the bus messages of a small portfolio and chain.

The instruments are read on first use (:mod:`tests.support.capture`), so a module importing these
loads without ``../shared``; only the tests that call them fail, with the capture's message.
"""

from __future__ import annotations

from functools import cache

from console.orders import OrderLimits, TradingContext
from messages.account import OrderUpdate, Position
from messages.market import Instrument
from messages.state import OptionQuote, PortfolioChanged
from tests.support import capture

PERP = "BTC-PERPETUAL"
PUT = "BTC-24SEP21-40000-P"
NOW = 1626940800.0  # 2021-07-22 08:00 UTC
LIMITS = OrderLimits(max_notional_usd=1_000_000, max_price_deviation_pct=3.0, max_option_price_deviation_pct=50.0,
                     max_ladder_orders=20)


def btc() -> tuple[Instrument, ...]:
    """Every BTC instrument of the capture, in its order."""
    return capture.instruments("BTC")


def btc_futures() -> list[Instrument]:
    return [i for i in btc() if i.kind == "future"]


def perpetual() -> Instrument:
    return capture.instruments_by_name("BTC")[PERP]


def option() -> Instrument:
    """A listed BTC put (24 Sep 2021, strike 40000)."""
    return capture.instruments_by_name("BTC")[PUT]


@cache
def market() -> TradingContext:
    """A BTC-PERPETUAL market: bid 18990, ask 19000, mark 18995; size multiplier 10 (frozen, so shared)."""
    return TradingContext(instrument=perpetual(), size_multiplier=10, bid=18990.0, ask=19000.0, mark=18995.0,
                          index_price=18990.0, limits=LIMITS)


def portfolio(positions: tuple[Position, ...] = (), orders: tuple[OrderUpdate, ...] = ()) -> PortfolioChanged:
    return PortfolioChanged(currency="BTC", at=NOW, positions=positions, open_orders=orders, equity=10.0,
                            balance=10.0, available_funds=9.5, initial_margin=0.5, maintenance_margin=0.3,
                            reconciled=True)


def position(size: float) -> Position:
    return Position(instrument_name=PERP, kind="future", direction="buy" if size > 0 else "sell", size=size,
                    average_price=60000.0, mark_price=59995.0, delta=size / 60000.0)


def open_order(order_id: str, label: str, direction: str = "buy", price: float = 1000.0) -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name=PERP, order_state="open", order_type="limit",
                       direction=direction, amount=10.0, price=price, label=label, post_only=True)  # type: ignore[arg-type]


def quote(strike: float, option_type: str, bid: float | None, ask: float, stale: bool = False) -> OptionQuote:
    return OptionQuote(instrument_name=f"BTC-24SEP21-{strike:g}-{option_type[0].upper()}", expiry_ms=1632470400000,
                       strike=strike, option_type=option_type, bid=bid, bid_amount=1, ask=ask,  # type: ignore[arg-type]
                       ask_amount=1, mark_price=ask - 0.001, mark_iv=80.5, underlying_price=32000.0,
                       index_price=31900.0, open_interest=1.0, delta=0.5, gamma=None, vega=None, theta=None, age_s=1.0,
                       stale=stale)
