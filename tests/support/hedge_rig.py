"""A CurrencyHedger for BTC without threads, on a hand-moved clock, with what it publishes and logs
kept: the hedge controller's tests and the warm-up's."""

from __future__ import annotations

from typing import Any

from desk.hedge_order import OrderTag
from desk.hedging import DELTA_TAG, CurrencyHedger
from messages.account import OrderUpdate, Position
from messages.commands import PlaceOrder
from messages.hedging import HedgerControl, HedgerStatus
from messages.market import Greeks, Instrument, InstrumentsLoaded, Quote, Ticker
from messages.state import PortfolioChanged
from tests.support.settings import make_settings

T0 = 1_700_000_000.0  # 14 Nov 2023
CALL = "BTC-29DEC23-40000-C"
PERP = "BTC-PERPETUAL"
PRICE = 40000.0  # the perpetual's mid


class Log:
    """The hedger's event log (desk.hedging.EventLog), kept as (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append(("warning", event, fields))

    def names(self, level: str | None = None) -> list[str]:
        return [e for lv, e, _ in self.events if level in (None, lv)]


class Rig:
    """One CurrencyHedger for BTC with what it publishes collected, on a hand-moved clock."""

    def __init__(self, tag: OrderTag = DELTA_TAG, **hedger: Any) -> None:
        """``hedger`` are ``[hedger]`` settings over the defaults (and the exchange's deltas)."""
        settings = make_settings({"hedger.delta_source": "exchange",
                                  **{f"hedger.{key}": value for key, value in hedger.items()}}).hedger
        self.now = T0
        self.out: list[object] = []
        self.log = Log()
        self.numbers = iter(range(1, 10_000))
        self.h = CurrencyHedger("BTC", settings, self.out.append, self.log, lambda _now: next(self.numbers), T0,
                                tag=tag)
        self.option_size = 0.0
        self.hedge_size = 0.0

    # -- the world -------------------------------------------------------------------------------
    def tick(self, seconds: float = 0.1) -> None:
        self.now += seconds

    def ready(self, option_size: float = 1.0, hedge_size: float = 0.0, delta: float = 0.5) -> None:
        """Connected, instrument listed, fresh quotes, reconciled portfolio, hedging on (the plan it
        states confirmed when it asks for that: a ``hedge_size`` it did not make)."""
        self.h.on_connection(True, self.now)
        self.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),), at=self.now), self.now)
        self.quote()
        self.option_size, self.hedge_size = option_size, hedge_size
        self.h.on_ticker(option_ticker(delta), self.now)
        self.portfolio()
        self.h.on_control(HedgerControl(action="activate", origin="test"), self.now)
        if self.h.plan is not None:
            self.h.on_control(HedgerControl(action="confirm", origin="test", plan_id=self.h.plan.plan_id), self.now)

    def quote(self, bid: float = PRICE - 0.25, ask: float = PRICE + 0.25) -> None:
        self.h.on_quote(Quote(instrument_name=PERP, timestamp=int(self.now * 1000), best_bid_price=bid,
                              best_ask_price=ask), self.now)

    def portfolio(self, reconciled: bool = True, open_orders: tuple[OrderUpdate, ...] = ()) -> None:
        positions = []
        if self.option_size:
            positions.append(Position(instrument_name=CALL, kind="option", direction="buy", size=self.option_size))
        if self.hedge_size:
            positions.append(Position(instrument_name=PERP, kind="future",
                                      direction="buy" if self.hedge_size > 0 else "sell", size=self.hedge_size))
        self.h.on_portfolio(PortfolioChanged(currency="BTC", at=self.now, positions=tuple(positions),
                                             open_orders=open_orders, reconciled=reconciled), self.now)

    def delta(self, delta: float) -> None:
        self.h.on_ticker(option_ticker(delta), self.now)

    # -- what came out ---------------------------------------------------------------------------
    def sent(self, kind: type = PlaceOrder) -> list[Any]:
        return [m for m in self.out if isinstance(m, kind)]

    def last_status(self) -> HedgerStatus:
        return [m for m in self.out if isinstance(m, HedgerStatus)][-1]


def perpetual() -> Instrument:
    return Instrument(instrument_name=PERP, kind="future", base_currency="BTC", quote_currency="USD",
                      settlement_period="perpetual", tick_size=0.5, contract_size=10.0, min_trade_amount=10.0,
                      expiration_timestamp=32503680000000, creation_timestamp=1534167754000)


def option_ticker(delta: float, iv: float = 60.0, und: float = PRICE) -> Ticker:
    return Ticker(instrument_name=CALL, timestamp=int(T0 * 1000), state="open", mark_price=0.05, mark_iv=iv,
                  underlying_price=und, greeks=Greeks(delta=delta, gamma=0.0, vega=0.0, theta=0.0))
