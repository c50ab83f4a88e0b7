"""A CurrencyHedger for BTC without threads, on a hand-moved clock, with what it publishes and logs
kept: the hedge controller's tests and the warm-up's."""

from __future__ import annotations

from typing import Any

from desk.hedge_order import OrderTag
from desk.hedging import DELTA_TAG, CurrencyHedger
from messages.account import OrderUpdate, Position, UserTrade
from messages.commands import PlaceOrder
from messages.hedging import HedgerControl, HedgerStatus
from messages.market import Greeks, IndexPrice, Instrument, InstrumentsLoaded, Quote, Ticker
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
        # The fills the rig's portfolio holds (PortfolioChanged.recent_trade_ids), oldest first.
        self.shown: list[str] = []

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
        self.activate()

    def activate(self) -> None:
        """Hedging on, the plan it states confirmed when it asks for that."""
        self.h.on_control(HedgerControl(action="activate", origin="test"), self.now)
        if self.h.plan is not None:
            self.h.on_control(HedgerControl(action="confirm", origin="test", plan_id=self.h.plan.plan_id), self.now)

    def quote(self, bid: float = PRICE - 0.25, ask: float = PRICE + 0.25) -> None:
        """The perpetual's quote, after the index of the same moment (the live feed's order)."""
        self.h.on_index(IndexPrice(index_name="btc_usd", price=PRICE, timestamp=int(self.now * 1000)), self.now)
        self.h.on_quote(Quote(instrument_name=PERP, timestamp=int(self.now * 1000), best_bid_price=bid,
                              best_ask_price=ask), self.now)

    def portfolio(self, reconciled: bool = True, open_orders: tuple[OrderUpdate, ...] = (),
                  reconciled_at: float | None = None, reconcile_requested_at: float | None = None,
                  reconciling: bool = False) -> None:
        positions = []
        if self.option_size:
            positions.append(Position(instrument_name=CALL, kind="option", direction="buy", size=self.option_size))
        if self.hedge_size:
            positions.append(Position(instrument_name=PERP, kind="future",
                                      direction="buy" if self.hedge_size > 0 else "sell", size=self.hedge_size))
        self.h.on_portfolio(PortfolioChanged(currency="BTC", at=self.now, positions=tuple(positions),
                                             open_orders=open_orders, reconciled=reconciled,
                                             reconciling=reconciling, reconciled_at=reconciled_at,
                                             reconcile_requested_at=reconcile_requested_at,
                                             recent_trade_ids=tuple(self.shown)), self.now)

    def show(self, trade: UserTrade) -> None:
        """The portfolio takes in one of our fills and publishes its picture."""
        self.hedge_size += trade.amount if trade.direction == "buy" else -trade.amount
        self.shown.append(trade.trade_id)
        self.portfolio()

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


def hedge_fill(command: PlaceOrder, amount: float | None = None, trade_id: str | None = None, order_id: str = "o-1",
               state: str = "filled", timestamp: int = 1) -> UserTrade:
    """A fill of the hedger's order ``command`` (all of it unless ``amount`` says)."""
    return UserTrade(trade_id=trade_id or f"t-{command.label}", order_id=order_id,
                     instrument_name=command.instrument_name, timestamp=timestamp, direction=command.side, price=PRICE,
                     amount=command.amount if amount is None else amount, fee=0.0, fee_currency="BTC", state=state,
                     label=command.label)
