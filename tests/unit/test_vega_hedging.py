"""The vega hedger's logic without threads (desk/vega_hedging.py): the option it chooses, the
vega it sums, the order it sizes, every gate and hostile input, one order in flight, its own
fills only, switching itself off; and that the delta hedger counts the vega hedge's option."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest

from deribit.instruments import parse_instrument_name
from desk.hedging import DELTA_TAG
from desk.vega_hedging import (
    VEGA_TAG,
    SeenTicker,
    VegaHedger,
    choose_option,
    decide_vega,
    portfolio_vega,
)
from messages.account import ExchangeState, OrderUpdate, Position, UserTrade
from messages.commands import CancelOrder, CommandFailed, CommandResult, PlaceOrder, ReconcilePortfolio
from messages.exposure import (
    PlanState,
    PlanStatus,
    SetVegaBand,
    VegaHedgeCode,
    VegaHedgerControl,
    VegaHedgerStatus,
)
from messages.market import Greeks, Instrument, InstrumentsLoaded, PlatformState, Ticker
from messages.state import PortfolioChanged
from tests.support.hedge_rig import CALL, Log, Rig, option_ticker
from tests.support.paths import WIRE_SAMPLE, capture
from tests.support.settings import make_settings

T0 = 1_700_000_000.0  # 14 Nov 2023 22:13 UTC
HELD = "BTC-29DEC23-40000-C"  # 45 days
HEDGE = "BTC-15DEC23-40000-C"  # 30.4 days: the 30-day ATM call at a forward of 39,990
FORWARD = 39_990.0
Code = VegaHedgeCode


def option(name: str, min_trade: float = 0.1, tick: float = 0.0005) -> Instrument:
    parsed = parse_instrument_name(name)
    assert parsed.expiry_ms is not None
    return Instrument(instrument_name=name, kind="option", base_currency="BTC", quote_currency="BTC",
                      settlement_period="month", tick_size=tick, contract_size=1.0, min_trade_amount=min_trade,
                      expiration_timestamp=parsed.expiry_ms, creation_timestamp=1, strike=parsed.strike,
                      option_type="call" if name.endswith("-C") else "put")


CHAIN = tuple(option(n) for n in (
    "BTC-15NOV23-40000-C", "BTC-24NOV23-40000-C", "BTC-24NOV23-40000-P",
    "BTC-15DEC23-38000-C", "BTC-15DEC23-38000-P", "BTC-15DEC23-40000-C", "BTC-15DEC23-40000-P",
    "BTC-15DEC23-42000-C", "BTC-15DEC23-42000-P", HELD, "BTC-29DEC23-40000-P"))


def ticker(name: str, vega: float = 50.0, bid: float | None = 0.049, ask: float | None = 0.051,
           mark: float = 0.05, iv: float | None = 60.0, at: float = T0, forward: float = FORWARD,
           delta: float = 0.5) -> Ticker:
    return Ticker(instrument_name=name, timestamp=int(at * 1000), state="open", mark_price=mark, mark_iv=iv,
                  best_bid_price=bid, best_ask_price=ask, best_bid_amount=5.0, best_ask_amount=5.0,
                  underlying_price=forward, index_price=40_000.0,
                  greeks=Greeks(delta=delta if name.endswith("-C") else delta - 1.0, gamma=0.0001, vega=vega,
                                theta=-20.0))


class VegaRig:
    """One VegaHedger for BTC with what it publishes collected, on a hand-moved clock."""

    def __init__(self, **hedger: Any) -> None:
        values = {"hedger.vega_band_usd": 200.0, "hedger.vega_max_order_coins": 20.0,
                  **{f"hedger.{key}": value for key, value in hedger.items()}}
        self.settings = make_settings(values).hedger
        self.now = T0
        self.out: list[object] = []
        self.log = Log()
        self.numbers = iter(range(1, 10_000))
        self.h = VegaHedger("BTC", self.settings, self.out.append, self.log, lambda _now: next(self.numbers), T0)
        self.sizes: dict[str, float] = {HELD: -10.0}  # short 10 calls: -600 USD/vol pt at 60 a coin
        self.shown: list[str] = []

    def ready(self, held_vega: float = 60.0, hedge_vega: float = 50.0, activate: bool = True) -> None:
        h = self.h
        h.on_connection(True, self.now)
        h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=CHAIN, at=self.now), self.now)
        self.tickers(held_vega, hedge_vega)
        self.portfolio()
        if activate:
            h.on_control(VegaHedgerControl(action="activate", origin="test"), self.now)

    def tickers(self, held_vega: float = 60.0, hedge_vega: float = 50.0, **hedge: Any) -> None:
        hedge = {"vega": hedge_vega, "at": self.now, **hedge}
        self.h.on_ticker(ticker(HEDGE, **hedge), self.now)
        self.h.on_ticker(ticker(HELD, vega=held_vega, at=self.now), self.now)

    def portfolio(self, reconciled: bool = True, reconciling: bool = False,
                  open_orders: tuple[OrderUpdate, ...] = (), reconciled_at: float | None = None) -> None:
        positions = tuple(Position(instrument_name=n, kind="option", direction="buy" if s > 0 else "sell", size=s)
                          for n, s in self.sizes.items() if s)
        self.h.on_portfolio(PortfolioChanged(currency="BTC", at=self.now, positions=positions,
                                             open_orders=open_orders, reconciled=reconciled, reconciling=reconciling,
                                             reconciled_at=reconciled_at, recent_trade_ids=tuple(self.shown)),
                            self.now)

    def fill(self, command: PlaceOrder, amount: float | None = None, order_id: str = "v-1") -> UserTrade:
        """The exchange's answer to ``command``: filled (``amount`` of it; the rest cancelled, IOC)."""
        filled = command.amount if amount is None else amount
        trade = UserTrade(trade_id=f"t-{command.label}", order_id=order_id, instrument_name=command.instrument_name,
                          timestamp=1, direction=command.side, price=command.price or 0.0, amount=filled, fee=0.0,
                          fee_currency="BTC", state="filled" if filled == command.amount else "cancelled",
                          label=command.label)
        state = "filled" if filled == command.amount else "cancelled"
        self.h.on_result(CommandResult(
            request_key=command.request_key, origin="vega-hedger", method=f"private/{command.side}", result="{}",
            order=update(command, state, filled, order_id), trades=(trade,) if filled else ()), self.now)
        return trade

    def show(self, trade: UserTrade) -> None:
        self.sizes[trade.instrument_name] = self.sizes.get(trade.instrument_name, 0.0) + (
            trade.amount if trade.direction == "buy" else -trade.amount)
        self.shown.append(trade.trade_id)
        self.portfolio()

    def tick(self, seconds: float = 0.1) -> None:
        self.now += seconds

    def sent(self, kind: type = PlaceOrder) -> list[Any]:
        return [m for m in self.out if isinstance(m, kind)]

    def last_status(self) -> VegaHedgerStatus:
        return [m for m in self.out if isinstance(m, VegaHedgerStatus)][-1]


def update(command: PlaceOrder, state: str, filled: float = 0.0, order_id: str = "v-1",
           label: str | None = None) -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name=command.instrument_name, order_state=state,
                       order_type="limit", direction=command.side, amount=command.amount, filled_amount=filled,
                       label=command.label if label is None else label, price=command.price,
                       time_in_force="immediate_or_cancel")


# -- choosing the option ------------------------------------------------------------------------------
def test_chooses_the_atm_option_of_the_expiry_nearest_the_tenor() -> None:
    forwards = {o.expiration_timestamp: FORWARD for o in CHAIN}
    chosen = choose_option(CHAIN, 30.0, 2.0, forwards.get, T0)
    assert chosen is not None and chosen.instrument_name == HEDGE  # 40,000 >= 39,990: the call
    put_side = choose_option(CHAIN, 30.0, 2.0, {k: 40_010.0 for k in forwards}.get, T0)
    assert put_side is not None and put_side.instrument_name == "BTC-15DEC23-40000-P"
    week = choose_option(CHAIN, 7.0, 2.0, forwards.get, T0)
    assert week is not None and week.instrument_name == "BTC-24NOV23-40000-C"
    # The expiry within vega_min_days is never chosen, however near the tenor.
    day = choose_option(CHAIN, 1.0, 2.0, forwards.get, T0)
    assert day is not None and day.instrument_name.startswith("BTC-24NOV23")
    # No forward yet for the expiry nearest the tenor: nothing (not another expiry meanwhile).
    only_dec29 = {parse_instrument_name(HELD).expiry_ms or 0: FORWARD}
    assert choose_option(CHAIN, 30.0, 2.0, only_dec29.get, T0) is None
    chosen = choose_option(CHAIN, 40.0, 2.0, only_dec29.get, T0)
    assert chosen is not None and chosen.instrument_name == HELD
    nothing: dict[int, float] = {}
    assert choose_option(CHAIN, 30.0, 2.0, nothing.get, T0) is None
    assert choose_option((), 30.0, 2.0, forwards.get, T0) is None
    nan_forward = {k: math.nan for k in forwards}
    assert choose_option(CHAIN, 30.0, 2.0, nan_forward.get, T0) is None


# -- the vega and the decision ---------------------------------------------------------------------------
def test_portfolio_vega_sums_size_times_the_tickers_vega() -> None:
    positions = [Position(instrument_name=HELD, kind="option", direction="sell", size=-10.0),
                 Position(instrument_name=HEDGE, kind="option", direction="buy", size=4.0),
                 Position(instrument_name="BTC-PERPETUAL", kind="future", direction="buy", size=1000.0)]
    seen = {HELD: SeenTicker(ticker(HELD, vega=60.0), T0), HEDGE: SeenTicker(ticker(HEDGE, vega=50.0), T0)}
    assert portfolio_vega(positions, seen, T0, 10.0) == (pytest.approx(-400.0), Code.NONE, "")
    assert portfolio_vega(positions, {HELD: seen[HELD]}, T0, 10.0)[1] is Code.NO_TICKER
    assert portfolio_vega(positions, seen, T0 + 10.5, 10.0)[1] is Code.STALE_TICKER
    nan = {**seen, HEDGE: SeenTicker(ticker(HEDGE, vega=math.nan), T0)}
    assert portfolio_vega(positions, nan, T0, 10.0)[1] is Code.NO_VEGA
    assert portfolio_vega([], {}, T0, 10.0)[0] == 0.0
    # An option past its expiry (its delivery not booked yet) has no vega and needs no ticker.
    expired = Position(instrument_name="BTC-10NOV23-40000-C", kind="option", direction="buy", size=5.0)
    assert portfolio_vega([*positions, expired], seen, T0, 10.0)[0] == pytest.approx(-400.0)


def decide(vega: float, hedge: Ticker | None = None, band: float = 200.0, now: float = T0, received: float = T0,
           max_coins: float = 20.0, instrument: Instrument | None = None) -> Any:
    seen = SeenTicker(hedge if hedge is not None else ticker(HEDGE), received)
    return decide_vega(vega, 0.0, band, instrument or option(HEDGE), seen, now, 10.0, max_coins, 0.10)


def test_order_sizing_and_the_band() -> None:
    assert decide(-150.0).code is Code.WITHIN_BAND
    assert decide(200.0).code is Code.WITHIN_BAND  # at the edge: within
    buy = decide(-600.0)  # short vega: buy 600 / 50 = 12 at the ask
    assert (buy.code, buy.side, buy.amount, buy.price) == (Code.TRADE, "buy", 12.0, 0.051)
    assert buy.after == pytest.approx(0.0)
    sell = decide(433.0)  # 8.66 coins -> 8.7 (the nearest 0.1), at the bid
    assert (sell.side, sell.amount, sell.price) == ("sell", 8.7, 0.049)
    capped = decide(-5000.0, max_coins=20.0)
    assert capped.amount == 20.0 and capped.after == pytest.approx(-4000.0)
    # A minimum trade worth more than twice the gap: nothing (it would swing past the target).
    lots = option(HEDGE, min_trade=10.0)
    assert decide(-240.0, band=200.0, instrument=lots).code is Code.BELOW_MIN_AMOUNT
    assert decide(-260.0, band=200.0, instrument=lots).code is Code.TRADE  # 10 coins: -260 -> +240, smaller


@pytest.mark.parametrize("vega", [5e-324, 1e-12, 1.0, 200.0, 1e6])
def test_a_hedge_option_vega_far_from_black76_at_its_mark_iv_is_refused(vega: float) -> None:
    # Its Black-76 vega at 60% is 45.9 USD/vol pt: a ticker's vega of 1e-12 sized the order at the
    # cap for no change of the book's vega; 5e-324 overflowed the sizing (the Hedger failed).
    decision = decide(-600.0, ticker(HEDGE, vega=vega))
    assert decision.code is Code.NO_VEGA and decision.amount == 0.0 and "Black-76" in decision.reason


@pytest.mark.parametrize(
    ("hedge", "code"),
    [
        (ticker(HEDGE, vega=0.0), Code.NO_VEGA),
        (ticker(HEDGE, vega=math.nan), Code.NO_VEGA),
        (ticker(HEDGE, vega=math.inf), Code.NO_VEGA),
        (ticker(HEDGE, vega=-5.0), Code.NO_VEGA),
        (ticker(HEDGE, ask=None), Code.NO_BOOK),
        (ticker(HEDGE, ask=0.0), Code.NO_BOOK),
        (ticker(HEDGE, ask=math.nan), Code.NO_BOOK),
        (ticker(HEDGE, ask=0.08), Code.PRICE_DEVIATION),  # 60% above the mark
    ],
)
def test_no_order_from_hostile_hedge_option_data(hedge: Ticker, code: VegaHedgeCode) -> None:
    decision = decide(-600.0, hedge)
    assert decision.code is code and decision.side is None and decision.amount == 0.0


def test_no_order_on_a_stale_hedge_ticker() -> None:
    assert decide(-600.0, now=T0 + 10.5).code is Code.STALE_TICKER
    assert decide(-600.0, now=T0 + 9.9).code is Code.TRADE


# -- the hedger: one order, its own fills, settling -----------------------------------------------------
def test_places_an_ioc_limit_at_the_touch_and_waits_for_the_portfolio() -> None:
    rig = VegaRig()
    rig.ready()
    [command] = rig.sent()
    assert (command.instrument_name, command.side, command.amount, command.price) == (HEDGE, "buy", 12.0, 0.051)
    assert command.type == "limit" and command.time_in_force == "immediate_or_cancel" and not command.post_only
    assert command.origin == "vega-hedger" and command.label == "vega-1" == command.request_key
    status = rig.last_status()
    assert status.active and status.in_flight and status.option == HEDGE and status.code is Code.TRADE
    # The market keeps moving: still one order in flight.
    for vega in (70.0, 80.0):
        rig.tick()
        rig.tickers(held_vega=vega)
    rig.portfolio()
    assert len(rig.sent()) == 1
    trade = rig.fill(command)
    assert rig.h.order is not None and rig.h.order.phase == "settling"
    rig.tick()
    rig.tickers()
    rig.portfolio()  # the fill not in the picture yet: still settling, nothing new
    assert len(rig.sent()) == 1
    rig.show(trade)  # now the portfolio holds +12 of the hedge option: -600 + 600 = 0
    assert rig.h.order is None and rig.h.code is Code.WITHIN_BAND and len(rig.sent()) == 1
    assert rig.last_status().vega == pytest.approx(0.0)
    # The vol moves the held option's vega: a second order, sized on the new gap.
    rig.tick()
    rig.tickers(held_vega=90.0)  # -900 + 600 = -300: buy 6 more
    [_, second] = rig.sent()
    assert (second.side, second.amount, second.label) == ("buy", 6.0, "vega-2")


def test_takes_only_its_own_order_updates_answers_and_fills() -> None:
    rig = VegaRig()
    rig.ready()
    [command] = rig.sent()
    # A delta hedger's and a trader's orders on the same option are not ours.
    for label in ("hedge-7", "manual_api_3", "plan-1-1"):
        rig.h.on_order_update(update(command, "filled", 12.0, order_id="other", label=label), rig.now)
        rig.h.on_user_trade(UserTrade(trade_id=f"x-{label}", order_id="other", instrument_name=HEDGE, timestamp=1,
                                      direction="buy", price=0.05, amount=12.0, fee=0.0, fee_currency="BTC",
                                      label=label, state="filled"), rig.now)
    rig.h.on_result(CommandResult(request_key=command.request_key, origin="hedger", method="private/buy", result="{}",
                                  order=update(command, "filled", 12.0)), rig.now)
    assert rig.h.order is not None and rig.h.order.phase == "sent" and rig.h.order.filled == 0.0
    # The tags: neither owns the other's labels.
    assert VEGA_TAG.owns("vega-12") and not VEGA_TAG.owns("hedge-12") and not DELTA_TAG.owns("vega-12")
    # Our own update closes it.
    rig.h.on_order_update(update(command, "filled", 12.0), rig.now)
    assert rig.h.order.phase == "settling"


def test_the_delta_hedger_counts_the_vega_hedge_option() -> None:
    rig = Rig(active_on_start=False)
    rig.ready(option_size=1.0, delta=0.5)
    [first] = rig.sent()
    assert first.side == "sell"
    # The vega hedge's option (another option of the currency) is an option position like any other.
    rig.h.on_ticker(msgspec.structs.replace(option_ticker(0.5), instrument_name="BTC-29DEC23-42000-C"), rig.now)
    rig.h.on_portfolio(PortfolioChanged(currency="BTC", at=rig.now, reconciled=True, open_orders=(), positions=(
        Position(instrument_name=CALL, kind="option", direction="buy", size=1.0),
        Position(instrument_name="BTC-29DEC23-42000-C", kind="option", direction="buy", size=2.0))), rig.now)
    decision = rig.h.current_decision(rig.now)
    assert decision.options_delta == pytest.approx(1.5)


# -- gates ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        (lambda rig: rig.h.on_connection(False, rig.now), Code.DISCONNECTED),
        (lambda rig: rig.portfolio(reconciled=False), Code.UNRECONCILED),
        (lambda rig: rig.portfolio(reconciling=True), Code.RECONCILING),
        (lambda rig: rig.h.on_platform_state(PlatformState(price_index="btc_usd", locked=True), rig.now),
         Code.PLATFORM_LOCKED),
        (lambda rig: rig.h.on_control(VegaHedgerControl(action="deactivate", origin="t"), rig.now), Code.OFF),
    ],
)
def test_no_order_on_bad_state(spoil: Any, code: VegaHedgeCode) -> None:
    rig = VegaRig()
    rig.ready(held_vega=5.0)  # -50: within the band
    assert rig.sent() == []
    spoil(rig)
    rig.tick()
    rig.tickers(held_vega=60.0)  # -600: far outside
    rig.portfolio(reconciled=code is not Code.UNRECONCILED, reconciling=code is Code.RECONCILING)
    assert rig.sent() == []
    assert rig.h.code is code


@pytest.mark.parametrize(
    ("hedge", "code"),
    [
        ({"vega": math.nan}, Code.IMPLAUSIBLE_DATA),
        ({"vega": math.inf}, Code.IMPLAUSIBLE_DATA),
        ({"vega": -1.0}, Code.IMPLAUSIBLE_DATA),
        ({"vega": 0.0}, Code.NO_VEGA),
        ({"bid": 0.052, "ask": 0.051}, Code.IMPLAUSIBLE_DATA),  # crossed
        ({"bid": 0.051, "ask": 0.051}, Code.IMPLAUSIBLE_DATA),  # locked
        ({"iv": 5000.0}, Code.IMPLAUSIBLE_DATA),  # above hedger.max_iv_pct
        ({"iv": 0.0}, Code.IMPLAUSIBLE_DATA),
        ({"iv": math.nan}, Code.IMPLAUSIBLE_DATA),
        ({"mark": math.nan}, Code.IMPLAUSIBLE_DATA),
        ({"forward": math.inf}, Code.IMPLAUSIBLE_DATA),
        ({"at": T0 + 60.0}, Code.IMPLAUSIBLE_DATA),  # stamped a minute ahead of our clock
    ],
)
def test_hostile_hedge_option_tickers_refused(hedge: dict[str, Any], code: VegaHedgeCode) -> None:
    rig = VegaRig()
    rig.ready(held_vega=5.0)
    rig.tick()
    rig.tickers(held_vega=60.0, **hedge)
    assert rig.sent() == [] and rig.h.code is code
    if code is Code.IMPLAUSIBLE_DATA:
        assert "vega_input_refused" in rig.log.names("warning")
    rig.tickers(held_vega=60.0)  # sane data again: trades
    assert len(rig.sent()) == 1


def test_a_hostile_hedge_option_ticker_before_activation_blocks_the_first_order() -> None:
    rig = VegaRig()
    rig.ready(activate=False)
    rig.tickers(bid=0.052, ask=0.051)  # crossed, before the option is even chosen
    rig.h.on_control(VegaHedgerControl(action="activate", origin="test"), rig.now)
    assert rig.h.option is not None and rig.h.option.instrument_name == HEDGE
    assert rig.sent() == [] and rig.h.code is Code.IMPLAUSIBLE_DATA and "crossed" in rig.h.reason
    rig.tickers()
    assert len(rig.sent()) == 1


def test_a_hostile_held_option_ticker_blocks() -> None:
    rig = VegaRig()
    rig.ready(held_vega=5.0)
    rig.h.on_ticker(ticker(HELD, vega=math.nan), rig.now)
    rig.h.on_ticker(ticker(HEDGE), rig.now)
    assert rig.sent() == [] and rig.h.code is Code.IMPLAUSIBLE_DATA


def test_stale_tickers_block() -> None:
    rig = VegaRig()
    rig.ready(held_vega=5.0)
    rig.tick(10.5)
    rig.h.on_ticker(ticker(HEDGE, at=rig.now), rig.now)  # the held option's is 10.5 s old
    assert rig.h.code is Code.STALE_TICKER and rig.sent() == []


def test_limits_orders_per_minute_day_and_volume() -> None:
    rig = VegaRig(vega_max_orders_per_minute=2, vega_max_daily_volume_coins=20.0)

    def round_trip(held_vega: float) -> None:
        rig.tick()
        rig.tickers(held_vega=held_vega)
        rig.portfolio()
        command = rig.sent()[-1]
        if rig.h.order is not None:
            rig.show(rig.fill(command))

    rig.ready()  # buys 12
    rig.show(rig.fill(rig.sent()[-1]))
    round_trip(100.0)  # -1000 + 600: buys 8 (20 coins today: the day's volume)
    assert [c.amount for c in rig.sent()] == [12.0, 8.0]
    rig.tick()
    rig.tickers(held_vega=140.0)
    assert rig.h.code is Code.RATE_LIMIT and len(rig.sent()) == 2
    rig.tick(60.0)
    rig.tickers(held_vega=140.0)
    rig.h.on_time(rig.now)
    assert rig.h.code is Code.DAILY_VOLUME and len(rig.sent()) == 2
    rig.h.on_rollover(rig.now)
    rig.tickers(held_vega=140.0)
    assert len(rig.sent()) == 3


def test_max_orders_per_day() -> None:
    rig = VegaRig(vega_max_orders_per_day=1)
    rig.ready()
    rig.show(rig.fill(rig.sent()[-1]))
    rig.tick()
    rig.tickers(held_vega=100.0)
    assert rig.h.code is Code.DAILY_ORDERS and len(rig.sent()) == 1


# -- failures -----------------------------------------------------------------------------------------
def test_repeated_rejections_and_unfilled_orders_switch_it_off_with_an_alert() -> None:
    rig = VegaRig(max_rejections=3, retry_after_reject_s=1.0)
    rig.ready()
    rig.h.on_failed(CommandFailed(request_key="vega-1", origin="vega-hedger", method="private/buy", code=10009,
                                  message="not_enough_funds"), rig.now)
    assert rig.h.code is Code.COOLDOWN and rig.h.order is None and len(rig.sent()) == 1
    rig.tick(1.1)
    rig.h.on_time(rig.now)
    rig.tickers()
    rig.fill(rig.sent()[-1], amount=0.0)  # IOC closed unfilled: the touch moved
    assert rig.h.active and rig.h.rejections == 2
    rig.tick(1.1)
    rig.h.on_time(rig.now)
    rig.tickers()
    rig.h.on_result(CommandResult(request_key="vega-3", origin="vega-hedger", method="private/buy", result="{}",
                                  order=update(rig.sent()[-1], "rejected")), rig.now)
    status = rig.last_status()
    assert not status.active and status.code is Code.SWITCHED_OFF and "3 vega hedge orders failed" in status.alert
    assert rig.h.volume_today == 0.0
    rig.tick(5.0)
    rig.tickers()
    assert len(rig.sent()) == 3  # off: nothing more
    rig.h.on_control(VegaHedgerControl(action="activate", origin="test"), rig.now)
    assert len(rig.sent()) == 4 and rig.last_status().alert == ""


def test_safe_shutdown_switches_off_with_an_alert() -> None:
    rig = VegaRig()
    rig.ready(held_vega=5.0)
    rig.h.safe_shutdown("restart intensity", rig.now)
    assert not rig.h.active and "safe shutdown" in rig.last_status().alert
    rig.tickers(held_vega=60.0)
    assert rig.sent() == []


def test_a_lost_answer_blocks_until_the_exchange_says() -> None:
    rig = VegaRig()
    rig.ready()
    [command] = rig.sent()
    rig.h.on_failed(CommandFailed(request_key="vega-1", origin="vega-hedger", method="private/buy", code=-2,
                                  message="answer lost"), rig.now)
    assert rig.h.order is not None and rig.h.order.phase == "unknown"
    assert rig.sent(ReconcilePortfolio)
    rig.tick()
    rig.tickers(held_vega=80.0)
    assert len(rig.sent()) == 1  # nothing while its fate is unknown
    rig.sizes[HEDGE] = 12.0  # it filled, the exchange says
    state_at = rig.now
    rig.h.on_exchange_state(ExchangeState(currency="BTC", positions=(
        Position(instrument_name=HEDGE, kind="option", direction="buy", size=12.0),), open_orders=(), summary=None,
        at=state_at), rig.now)
    assert rig.h.order.phase == "settling"
    rig.portfolio(reconciled_at=state_at)
    assert rig.h.order is None or rig.h.order.label != command.label


def test_a_fill_awaited_over_a_link_loss_is_awaited_again_after_it() -> None:
    rig = VegaRig()
    rig.ready()
    [command] = rig.sent()
    trade = rig.fill(command)
    order = rig.h.order
    assert order is not None and order.phase == "settling"
    rig.h.on_connection(False, rig.now)
    rig.tick(11.0)
    rig.h.on_time(rig.now)  # its wait ran out while no picture could come: not given up
    assert rig.h.order is order and order.due is None and rig.sent(ReconcilePortfolio) == []
    rig.h.on_connection(True, rig.now)
    assert order.due == pytest.approx(rig.now + rig.settings.fill_wait_s)
    rig.show(trade)
    assert rig.h.order is None and rig.h.active


def test_a_found_open_order_is_cancelled() -> None:
    rig = VegaRig()
    rig.ready()
    [command] = rig.sent()
    rig.h.on_connection(False, rig.now)
    assert rig.h.order is not None and rig.h.order.phase == "unknown"
    rig.h.on_connection(True, rig.now)
    rig.h.on_exchange_state(ExchangeState(currency="BTC", positions=(), open_orders=(update(command, "open"),),
                                          summary=None, at=rig.now), rig.now)
    [cancel] = rig.sent(CancelOrder)
    assert cancel.order_id == "v-1" and cancel.origin == "vega-hedger"


def test_orphans_of_an_earlier_run_are_cancelled_never_anyone_elses() -> None:
    rig = VegaRig()
    mine = OrderUpdate(order_id="old-1", instrument_name=HEDGE, order_state="open", order_type="limit",
                       direction="buy", amount=1.0, label="vega-5")
    delta = OrderUpdate(order_id="d-1", instrument_name=HEDGE, order_state="open", order_type="limit",
                        direction="buy", amount=1.0, label="hedge-5")
    rig.ready(activate=False)
    rig.portfolio(open_orders=(mine, delta))
    rig.h.on_control(VegaHedgerControl(action="activate", origin="test"), rig.now)
    assert [c.order_id for c in rig.sent(CancelOrder)] == ["old-1"]
    assert rig.sent() == [] and rig.h.code is Code.ORPHAN_ORDERS


# -- beside the exposure assistant -------------------------------------------------------------------
def plan_status(state: PlanState, plan_id: int = 7, currency: str = "BTC") -> PlanStatus:
    return PlanStatus(plan_id=plan_id, currency=currency, state=state, at=T0)


def test_it_holds_while_a_plan_of_its_currency_is_worked_and_goes_on_once_it_ended() -> None:
    """Its orders would trade a plan's fills back toward its target: it holds (PLAN_WORKING) while
    the assistant works a plan of its currency; another currency's plan is no bar."""
    rig = VegaRig()
    rig.ready(activate=False)
    rig.h.on_plan_status(plan_status(PlanState.WORKING), rig.now)
    rig.h.on_plan_status(plan_status(PlanState.WORKING, plan_id=8, currency="ETH"), rig.now)
    # Activated meanwhile: held likewise, and its status says why.
    rig.h.on_control(VegaHedgerControl(action="activate", origin="test"), rig.now)
    assert rig.sent() == [] and rig.h.active
    status = rig.last_status()
    assert status.code is Code.PLAN_WORKING and "exposure plan 7 of BTC is worked" in status.reason
    for vega in (70.0, 90.0):  # the plan's fills move the book's vega: nothing is traded back
        rig.tick()
        rig.tickers(held_vega=vega)
        rig.portfolio()
    assert rig.sent() == []
    rig.h.on_plan_status(plan_status(PlanState.STOPPED, plan_id=8, currency="ETH"), rig.now)
    assert rig.sent() == []
    rig.h.on_plan_status(plan_status(PlanState.DONE), rig.now)
    assert [c.instrument_name for c in rig.sent()] == [HEDGE]


def test_an_assistant_that_works_no_plan_releases_it() -> None:
    rig = VegaRig()
    rig.ready(activate=False)
    rig.h.on_plan_status(plan_status(PlanState.WORKING), rig.now)
    rig.h.on_control(VegaHedgerControl(action="activate", origin="test"), rig.now)
    assert rig.sent() == []
    rig.h.on_plan_status(plan_status(PlanState.STOPPED, plan_id=0, currency=""), rig.now)
    assert len(rig.sent()) == 1


def test_the_hedger_takes_plan_status_in_the_publishers_thread_before_any_plan_order_goes() -> None:
    """The Assistant says a plan works before it places its first order, and the Hedger takes that
    at once (immediate): its vega hedger holds before a plan order can rest."""
    from actors.hedger import Hedger
    from desk.plan_worker import PlanWorker
    from messages.exposure import ExposurePlan, Greek, GreekFigures, PlanLeg, WorkPlan
    from messages.state import TopOfBook

    assert Hedger.handles_immediately(PlanStatus)
    out: list[object] = []
    worker = PlanWorker(out.append, Log())
    worker.on_connection(True, T0)
    worker.on_portfolio(PortfolioChanged(currency="BTC", at=T0, positions=(), open_orders=(), reconciled=True,
                                         reconciled_at=T0, reconcile_requested_at=T0), T0)
    worker.on_instruments(InstrumentsLoaded(currency="BTC", instruments=CHAIN, at=T0), T0)
    worker.on_top(TopOfBook(instrument_name=HEDGE, kind="option", bid=0.049, bid_amount=5.0, ask=0.051,
                            ask_amount=5.0, timestamp=int(T0 * 1000), at=T0), T0)
    leg = PlanLeg(leg=1, instrument_name=HEDGE, side="sell", amount=1.0, bid=0.049, ask=0.051, mid=0.05,
                  underlying_price=FORWARD, greeks=GreekFigures(vega=-50.0), cost_usd=1.0)
    worker.start(WorkPlan(plan=ExposurePlan(plan_id=7, currency="BTC", greek=Greek.VEGA, target=0.0, at=T0,
                                            expires_at=T0 + 60, legs=(leg,)), origin="console"), T0)
    kinds = [type(m) for m in out if isinstance(m, PlanStatus | PlaceOrder)]
    assert kinds[:2] == [PlanStatus, PlaceOrder]
    first = next(m for m in out if isinstance(m, PlanStatus))
    assert first.state is PlanState.WORKING and first.currency == "BTC" and first.plan_id == 7


@pytest.mark.parametrize("instrument", [HEDGE, HELD])
def test_an_open_plan_order_holds_it_so_that_its_ioc_never_trades_against_one(instrument: str) -> None:
    """A plan order resting (its plan's status not seen, or left by an earlier run): no IOC could
    meet it on the hedge option, nor anything traded while a plan's order rests on another."""
    rig = VegaRig()
    resting = OrderUpdate(order_id="p-1", instrument_name=instrument, order_state="open", order_type="limit",
                          direction="sell", amount=1.0, price=0.051, label="plan-3-1", post_only=True)
    rig.ready(activate=False)
    rig.portfolio(open_orders=(resting,))
    rig.h.on_control(VegaHedgerControl(action="activate", origin="test"), rig.now)
    assert rig.sent() == [] and rig.h.code is Code.PLAN_WORKING and "plan-3-1" in rig.h.reason
    assert rig.sent(CancelOrder) == []  # never its to cancel
    rig.portfolio(open_orders=(msgspec.structs.replace(resting, order_state="cancelled"),))
    assert len(rig.sent()) == 1


# -- controls ----------------------------------------------------------------------------------------
def test_band_and_tenor_live() -> None:
    rig = VegaRig()
    rig.ready(held_vega=5.0, activate=True)
    assert rig.h.option is not None and rig.h.option.instrument_name == HEDGE
    for bad in (math.nan, math.inf, 0.0, -5.0, 1e12):
        rig.h.on_set_band(SetVegaBand(band_usd=bad, origin="test", request_key="k"), rig.now)
        assert rig.h.band == 200.0 and "refused" in rig.last_status().message
    rig.h.on_set_band(SetVegaBand(band_usd=100.0, origin="test", tenor_days=math.nan), rig.now)
    assert rig.h.band == 200.0
    rig.h.on_set_band(SetVegaBand(band_usd=30.0, origin="test", tenor_days=9.0), rig.now)
    assert rig.h.band == 30.0 and rig.h.tenor_days == 9.0
    rig.h.on_ticker(ticker("BTC-24NOV23-40000-C", at=rig.now), rig.now)
    [command] = rig.sent()  # -50 is now outside a band of 30: hedged with the 9-day option
    assert command.instrument_name == "BTC-24NOV23-40000-C" and command.amount == 1.0
    assert rig.last_status().band_usd == 30.0 and rig.last_status().tenor_days == 9.0


def test_rechooses_a_delisted_option() -> None:
    rig = VegaRig(vega_tenor_days=9.0)
    rig.ready(held_vega=5.0)
    rig.h.on_ticker(ticker("BTC-24NOV23-40000-C"), rig.now)
    rig.h.on_portfolio(PortfolioChanged(currency="BTC", at=rig.now, positions=(), open_orders=(), reconciled=True),
                       rig.now)
    assert rig.h.option is not None and rig.h.option.instrument_name == "BTC-24NOV23-40000-C"
    rig.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=tuple(
        o for o in CHAIN if not o.instrument_name.startswith("BTC-24NOV23"))), rig.now)
    rig.portfolio()
    assert rig.h.option is not None and rig.h.option.instrument_name == HEDGE


# -- units: Deribit's vega is USD per vol point per coin ---------------------------------------------------
def test_the_vega_summed_is_deribits_usd_per_vol_point_on_the_real_capture() -> None:
    """Each real ticker's ``greeks.vega`` (the figure summed) is the Black-76 vega at its mark IV in
    USD per vol point per coin, F x pdf(d1) x sqrt(T) / 100, written here independently."""
    checked = 0
    for line in capture(WIRE_SAMPLE.name).read_text(encoding="utf-8").splitlines():
        frame = json.loads(line).get("frame")
        if not frame or '"ticker.' not in frame:
            continue
        data = json.loads(frame).get("params", {}).get("data", {})
        if "greeks" not in data or not data.get("mark_iv"):
            continue
        seen = msgspec.convert(data, Ticker)
        parsed = parse_instrument_name(seen.instrument_name)
        assert parsed.strike is not None and parsed.expiry_ms is not None and seen.underlying_price and seen.mark_iv
        forward, sigma = seen.underlying_price, seen.mark_iv / 100.0
        years = (parsed.expiry_ms - seen.timestamp) / 1000.0 / (365.0 * 86_400.0)
        d1 = (math.log(forward / parsed.strike) + 0.5 * sigma * sigma * years) / (sigma * math.sqrt(years))
        closed_form = forward * math.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi) * math.sqrt(years) / 100.0
        position = Position(instrument_name=seen.instrument_name, kind="option", direction="sell", size=-3.0)
        at = seen.timestamp / 1000.0
        vega, code, _ = portfolio_vega([position], {seen.instrument_name: SeenTicker(seen, at)}, at, 10.0)
        assert code is Code.NONE and vega is not None
        # mark_iv is rounded to 0.01: the vega within 0.1% (or 1e-3 USD for the smallest).
        assert vega == pytest.approx(-3.0 * closed_form, rel=1e-3, abs=3e-3), seen.instrument_name
        checked += 1
    assert checked >= 50


def test_rechooses_an_option_within_min_days_of_expiry_and_after_the_rollover() -> None:
    rig = VegaRig(vega_tenor_days=9.0, vega_min_days=2.0)
    rig.ready(held_vega=5.0)
    rig.h.on_ticker(ticker("BTC-24NOV23-40000-C"), rig.now)
    rig.portfolio()
    assert rig.h.option is not None and rig.h.option.instrument_name == "BTC-24NOV23-40000-C"
    rig.now = T0 + 7.5 * 86_400.0  # 22 Nov 10:13: the 24 Nov expiry is within 2 days
    rig.tickers(held_vega=5.0)
    rig.portfolio()
    assert rig.h.option is not None and rig.h.option.instrument_name == HEDGE
    rig.h.on_set_band(SetVegaBand(band_usd=200.0, origin="test", tenor_days=40.0), rig.now)
    assert rig.h.option is not None and rig.h.option.instrument_name == HELD  # 29 Dec: 36.9 days
    rig.h.on_rollover(rig.now)
    assert rig.h.option is None and rig.h.orders_today == 0


def test_the_delta_hedger_never_takes_the_vega_hedgers_orders_or_fills() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    order = rig.h.order
    assert order is not None and order.label == "hedge-1"
    vega_order = OrderUpdate(order_id="v-9", instrument_name=HEDGE, order_state="filled", order_type="limit",
                             direction="buy", amount=3.0, filled_amount=3.0, label="vega-2")
    vega_fill = UserTrade(trade_id="tv-1", order_id="v-9", instrument_name=HEDGE, timestamp=1, direction="buy",
                          price=0.05, amount=3.0, fee=0.0, fee_currency="BTC", state="filled", label="vega-2")
    rig.h.on_order_update(vega_order, rig.now)
    rig.h.take_own_trade(vega_fill)
    rig.h.on_user_trade(vega_fill, rig.now)
    rig.h.on_result(CommandResult(request_key="vega-2", origin="vega-hedger", method="private/buy", result="{}",
                                  order=vega_order, trades=(vega_fill,)), rig.now)
    assert rig.h.order is order and order.phase == "sent" and order.filled == 0.0 and rig.h.own_position == 0.0
    assert not rig.h.tag.owns("vega-2") and command.origin == "hedger"


@pytest.mark.parametrize(("key", "value"), [
    ("vega_band_usd", 0.0), ("vega_band_usd", -1.0), ("vega_band_usd", math.nan), ("vega_band_usd", math.inf),
    ("vega_tenor_days", 0.0), ("vega_tenor_days", 1000.0), ("vega_max_order_coins", 0.0),
    ("vega_max_orders_per_minute", 0), ("vega_max_daily_volume_coins", -1.0), ("vega_max_price_deviation_pct", 90.0),
])
def test_vega_settings_are_constrained(key: str, value: float) -> None:
    with pytest.raises(Exception, match=key):
        make_settings({f"hedger.{key}": value})
