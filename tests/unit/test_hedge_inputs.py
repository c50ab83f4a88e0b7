"""The hedger never trades on implausible data: a balanced book, hedging active, then one hostile
message of each kind (the issue's cases and every hostile field of the ticker, quote and top of
book it reads): nothing is sent, the status says why, and the next sane data lets it hedge
again. Also: the portfolio's reconcile holds it, its own fills settle it whatever else fills,
and its status keeps its figures current when it is switched off."""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.account import OrderUpdate, UserTrade
from messages.commands import CommandResult, PlaceOrder
from messages.hedging import HedgeCode, HedgerControl
from messages.market import DataFault, Greeks, IndexPrice, InstrumentsLoaded, Quote, Ticker
from messages.state import TopOfBook
from tests.support.hedge_rig import CALL, PERP, PRICE, Rig, hedge_fill, option_ticker, perpetual

HEDGE = -PRICE  # 1 BTC short at 40,000: balances 1 BTC of call at delta 1.0


def balanced() -> Rig:
    rig = Rig()
    rig.ready(option_size=1.0, hedge_size=HEDGE, delta=1.0)
    assert rig.sent() == [] and rig.h.active
    return rig


def perp_ticker(rig: Rig, bid: float = PRICE - 0.25, ask: float = PRICE + 0.25, mark: float = PRICE,
                index: float = PRICE, ahead_s: float = 0.0) -> Ticker:
    return Ticker(instrument_name=PERP, timestamp=int((rig.now + ahead_s) * 1000), state="open", mark_price=mark,
                  index_price=index, best_bid_price=bid, best_ask_price=ask)


def hostile_option(**changes: object) -> Callable[[Rig], None]:
    def send(rig: Rig) -> None:
        ticker = option_ticker(1.0)
        greeks = {k: changes.pop(k) for k in ("delta", "gamma", "vega") if k in changes}
        if greeks:
            assert ticker.greeks is not None
            changes["greeks"] = msgspec.structs.replace(ticker.greeks, **greeks)
        rig.h.on_ticker(msgspec.structs.replace(ticker, timestamp=int(rig.now * 1000), **changes), rig.now)
    return send


def quote(bid: float | None, ask: float | None, ahead_s: float = 0.0) -> Callable[[Rig], None]:
    return lambda rig: rig.h.on_quote(Quote(instrument_name=PERP, timestamp=int((rig.now + ahead_s) * 1000),
                                            best_bid_price=bid, best_ask_price=ask), rig.now)


def top(bid: float | None, ask: float | None, mark: float | None = None) -> Callable[[Rig], None]:
    return lambda rig: rig.h.on_top_of_book(TopOfBook(instrument_name=PERP, kind="future", bid=bid, bid_amount=1.0,
                                                      ask=ask, ask_amount=1.0, timestamp=int(rig.now * 1000),
                                                      at=rig.now, mark_price=mark), rig.now)


def ticker(**fields: float) -> Callable[[Rig], None]:
    return lambda rig: rig.h.on_ticker(perp_ticker(rig, **fields), rig.now)


def index(price: float, ahead_s: float = 0.0) -> Callable[[Rig], None]:
    return lambda rig: rig.h.on_index(IndexPrice(index_name="btc_usd", price=price,
                                                 timestamp=int((rig.now + ahead_s) * 1000)), rig.now)


def option_from_the_future(rig: Rig) -> None:
    ticker = msgspec.structs.replace(option_ticker(1.0), timestamp=int((rig.now + 3600) * 1000))
    rig.h.on_ticker(ticker, rig.now)


HOSTILE: dict[str, tuple[Callable[[Rig], None], DataFault]] = {
    "crossed quote": (quote(80_000.0, 70_000.0), DataFault.CROSSED),
    "locked quote": (quote(PRICE, PRICE), DataFault.LOCKED),
    "quote bid 1 ask 2": (quote(1.0, 2.0), DataFault.OFF_INDEX),
    "quote at 1e300": (quote(1e300, 1e300), DataFault.LOCKED),
    "quote 1e300 wide": (quote(1e300, 2e300), DataFault.OFF_INDEX),
    "quote NaN bid": (quote(math.nan, PRICE), DataFault.NOT_FINITE),
    "quote infinite ask": (quote(PRICE, math.inf), DataFault.NOT_FINITE),
    "quote negative bid": (quote(-1.0, PRICE), DataFault.NOT_POSITIVE),
    "quote from the future": (quote(PRICE - 0.25, PRICE + 0.25, ahead_s=3600.0), DataFault.FROM_THE_FUTURE),
    "crossed ticker": (ticker(bid=80_000.0, ask=70_000.0), DataFault.CROSSED),
    "ticker bid 1 ask 2": (ticker(bid=1.0, ask=2.0), DataFault.OFF_INDEX),
    "ticker mark off the book": (ticker(mark=50_000.0), DataFault.OFF_INDEX),
    "ticker mark outside the book": (ticker(mark=PRICE * 1.03), DataFault.MARK_OUTSIDE_BOOK),
    "ticker index 1e300": (ticker(index=1e300), DataFault.OFF_INDEX),
    "ticker NaN mark": (ticker(mark=math.nan), DataFault.NOT_FINITE),
    "ticker from the future": (ticker(ahead_s=3600.0), DataFault.FROM_THE_FUTURE),
    "crossed top of book": (top(80_000.0, 70_000.0), DataFault.CROSSED),
    "top of book 1e300": (top(1e300, 2e300), DataFault.OFF_INDEX),
    "top of book NaN mark": (top(PRICE - 0.25, PRICE + 0.25, math.nan), DataFault.NOT_FINITE),
    "index 1e300": (index(1e300), DataFault.OFF_INDEX),
    "index NaN": (index(math.nan), DataFault.NOT_FINITE),
    "index from the future": (index(PRICE, ahead_s=3600.0), DataFault.FROM_THE_FUTURE),
    "option delta 1e300": (hostile_option(delta=1e300), DataFault.DELTA_OUT_OF_RANGE),
    "call delta -7": (hostile_option(delta=-7.0), DataFault.DELTA_OUT_OF_RANGE),
    "option delta NaN": (hostile_option(delta=math.nan), DataFault.NOT_FINITE),
    "option gamma negative": (hostile_option(gamma=-1.0), DataFault.GREEK_OUT_OF_RANGE),
    "option vega 1e300": (hostile_option(vega=1e300), DataFault.GREEK_OUT_OF_RANGE),
    "option IV NaN": (hostile_option(mark_iv=math.nan), DataFault.NOT_FINITE),
    "option IV 1e6": (hostile_option(mark_iv=1e6), DataFault.IV_OUT_OF_RANGE),
    "option IV negative": (hostile_option(mark_iv=-5.0), DataFault.IV_OUT_OF_RANGE),
    "option underlying 1e300": (hostile_option(underlying_price=1e300, index_price=PRICE), DataFault.OFF_INDEX),
    "option index 1e300": (hostile_option(underlying_price=1e300, index_price=1e300), DataFault.OFF_INDEX),
    "option mark infinite": (hostile_option(mark_price=math.inf), DataFault.NOT_FINITE),
    "option from the future": (option_from_the_future, DataFault.FROM_THE_FUTURE),
}


def sane_again(rig: Rig) -> None:
    """Sane data of every input: the index, the perpetual's quote, ticker and top, the option's ticker."""
    rig.quote()
    rig.h.on_ticker(perp_ticker(rig), rig.now)
    top(PRICE - 0.25, PRICE + 0.25, PRICE)(rig)
    rig.delta(1.0)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_one_hostile_message_sends_nothing_and_says_why(case: str) -> None:
    send, fault = HOSTILE[case]
    rig = balanced()
    rig.tick()
    send(rig)
    # Whatever moves now, nothing is sent while the fault stands.
    rig.tick()
    rig.portfolio()
    assert rig.sent() == [], case
    status = rig.h.status(rig.now)
    assert status.code is HedgeCode.IMPLAUSIBLE_DATA and status.fault is fault, (case, status)
    assert rig.last_status().code is HedgeCode.IMPLAUSIBLE_DATA  # published, not only on request
    assert "hedge_input_refused" in rig.log.names("warning")
    # Sane data again: it hedges the next real mismatch.
    rig.tick()
    sane_again(rig)
    assert rig.h.status(rig.now).code is HedgeCode.WITHIN_BAND
    rig.option_size = 1.5  # +0.5 BTC of delta
    rig.portfolio()
    [order] = rig.sent()
    assert order.side == "sell" and order.amount == pytest.approx(20_000.0)


def test_a_far_future_timestamp_never_moves_the_freshness_clock() -> None:
    rig = balanced()
    quote(PRICE - 0.25, PRICE + 0.25, ahead_s=86_400.0)(rig)
    rig.tick(1.0)
    rig.quote()  # stamped now: not "older" than the refused one
    rig.delta(1.0)
    rig.option_size = 1.5
    rig.portfolio()
    assert len(rig.sent()) == 1


def test_a_quote_far_from_an_older_index_is_refused_until_the_level_is_stale() -> None:
    # A real 20% jump: refused at first (it cannot be told from garbage), taken once the old
    # level is older than stale_after_s; meanwhile nothing is sent.
    rig = balanced()
    for _ in range(12):
        rig.tick(1.0)
        quote(PRICE * 0.8 - 0.25, PRICE * 0.8 + 0.25)(rig)
    assert rig.sent() == []
    index(PRICE * 0.8)(rig)
    quote(PRICE * 0.8 - 0.25, PRICE * 0.8 + 0.25)(rig)
    rig.h.on_ticker(option_ticker(1.0, und=PRICE * 0.8), rig.now)
    # Hedge leg worth less in coin (-40,000 USD / 32,000 = -1.25 BTC): it buys back 0.25 BTC.
    [order] = rig.sent()
    assert order.side == "buy" and order.amount == pytest.approx(8_000.0)


# -- property: plausible markets converge, implausible ones send nothing -------------------------------
markets = st.fixed_dictionaries({
    "move": st.floats(-0.05, 0.05),  # the index's move since the last market
    "basis": st.floats(-0.01, 0.01),
    "spread": st.floats(0.5, 20.0),
    "delta": st.floats(0.0, 1.0),
    "size": st.floats(-20.0, 20.0).filter(lambda x: abs(x) > 0.01),
})


def market(rig: Rig, level: float, m: dict[str, float], **hostile: float) -> None:
    """The index at ``level``, the perpetual's quote and the option's ticker of one moment; any of
    ``bid``, ``ask``, ``delta``, ``iv``, ``index``, ``ahead`` (seconds) replaced by a hostile value,
    whose message then comes first (what comes before it is sane, and may be hedged)."""
    mid = level * (1 + m["basis"])
    bid = hostile.get("bid", mid - m["spread"] / 2)
    ask = hostile.get("ask", mid + m["spread"] / 2)
    idx, ahead = hostile.get("index", level), hostile.get("ahead", 0.0)
    stamp = int((rig.now + ahead) * 1000)
    index_price = IndexPrice(index_name="btc_usd", price=idx, timestamp=stamp)
    quote = Quote(instrument_name=PERP, timestamp=stamp, best_bid_price=bid, best_ask_price=ask)
    ticker = Ticker(instrument_name=CALL, timestamp=stamp, state="open", mark_price=0.05,
                    mark_iv=hostile.get("iv", 60.0), underlying_price=mid, index_price=idx,
                    greeks=Greeks(delta=hostile.get("delta", m["delta"]), gamma=0.0, vega=0.0, theta=0.0))
    messages: list[tuple[str, Callable[[], object]]] = [
        ("index", lambda: rig.h.on_index(index_price, rig.now)),
        ("quote", lambda: rig.h.on_quote(quote, rig.now)),
        ("ticker", lambda: rig.h.on_ticker(ticker, rig.now))]
    first = "index" if "index" in hostile else "ticker" if {"delta", "iv"} & hostile.keys() else "quote"
    for _name, send in sorted(messages, key=lambda item: item[0] != first):
        send()


def ready_at(level: float, m: dict[str, float]) -> Rig:
    """Hedging on over a market at ``level``, every order filled and shown."""
    rig = Rig(max_order_usd=1e9, max_orders_per_minute=1_000, max_daily_volume_usd=1e12)
    rig.h.on_connection(True, rig.now)
    rig.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),), at=rig.now), rig.now)
    rig.option_size = m["size"]
    market(rig, level, m)
    rig.portfolio()
    rig.activate()
    settle_fills(rig)
    return rig


def settle_fills(rig: Rig) -> None:
    """Fill every order the hedger sends in full and let the portfolio show it, until it holds."""
    for _ in range(10):
        order = rig.h.order
        if order is None:
            return
        command = next(c for c in rig.sent() if c.label == order.label)
        fill = hedge_fill(command, order_id=f"o-{command.label}")
        rig.h.on_user_trade(fill, rig.now)
        rig.show(fill)
    raise AssertionError("the hedger kept ordering")


def assert_within_band(rig: Rig) -> None:
    decision = rig.h.current_decision(rig.now)
    assert decision.mismatch is not None and decision.price is not None, decision
    assert abs(decision.mismatch) <= rig.h.band + 10.0 / decision.price + 1e-9, decision


@settings(max_examples=60, deadline=None)
@given(level=st.floats(5_000.0, 200_000.0), first=markets, moves=st.lists(markets, min_size=1, max_size=4))
def test_plausible_markets_converge_within_band_and_a_contract(level: float, first: dict[str, float],
                                                               moves: list[dict[str, float]]) -> None:
    rig = ready_at(level, first)
    assert_within_band(rig)
    for m in moves:
        rig.tick(1.0)
        level *= 1 + m["move"]
        market(rig, level, m)
        rig.option_size = m["size"]
        rig.portfolio()
        settle_fills(rig)
        assert_within_band(rig)


hostile_fields = st.sampled_from([
    ("bid", math.nan), ("bid", math.inf), ("bid", -1.0), ("bid", 1e300), ("ask", 0.5), ("ask", math.nan),
    ("ask", 1.0), ("delta", 1e300), ("delta", -7.0), ("delta", math.nan), ("iv", math.nan), ("iv", -1.0),
    ("iv", 1e9), ("index", 1e300), ("index", math.nan), ("index", 1.0), ("ahead", 3600.0),
])


@settings(max_examples=80, deadline=None)
@given(level=st.floats(5_000.0, 200_000.0), first=markets, m=markets, hostile=hostile_fields,
       crossed=st.booleans())
def test_implausible_markets_send_nothing(level: float, first: dict[str, float], m: dict[str, float],
                                          hostile: tuple[str, float], crossed: bool) -> None:
    rig = ready_at(level, first)
    sent = len(rig.sent())
    rig.tick(1.0)
    level *= 1 + m["move"]
    field, value = hostile
    if crossed:  # the perpetual's quote crossed (or locked) instead
        mid = level * (1 + m["basis"])
        market(rig, level, m, bid=mid + m["spread"], ask=mid + m["spread"] * (0.5 if field == "ask" else 1.0))
    else:
        market(rig, level, m, **{field: value})
    rig.option_size = m["size"]
    rig.portfolio()  # a new mismatch: with any input implausible, nothing goes out
    assert len(rig.sent()) == sent, (field, value, crossed)
    assert rig.h.last_code is HedgeCode.IMPLAUSIBLE_DATA


# -- the portfolio's reconcile and its own fills ------------------------------------------------------
def test_no_order_while_a_reconcile_is_under_way() -> None:
    rig = balanced()
    rig.option_size = 1.5
    rig.portfolio(reconciling=True)
    assert rig.sent() == [] and rig.h.last_code is HedgeCode.RECONCILING
    rig.portfolio()
    assert len(rig.sent()) == 1


def first_hedge_filled(rig: Rig) -> tuple[PlaceOrder, UserTrade]:
    """Hedging on over 0.5 BTC of call delta: its first order (a sell of 20,000 USD) and the fill
    the hedger heard of (the portfolio has not shown it yet)."""
    rig.ready(option_size=1.0, delta=0.5)
    [hedge] = rig.sent()
    fill = hedge_fill(hedge)
    rig.h.on_user_trade(fill, rig.now)
    return hedge, fill


def test_other_fills_at_the_same_time_never_read_as_a_missing_fill() -> None:
    # A trader's ladder fills on the same instrument while the hedge fills: the position moves by
    # both. The hedger settles on its own trade id, and stays on.
    rig = Rig(fill_wait_s=5.0)
    hedge, fill = first_hedge_filled(rig)
    manual = UserTrade(trade_id="m-1", order_id="m", instrument_name=PERP, timestamp=1, direction="buy",
                       price=PRICE, amount=3_000.0, fee=0.0, fee_currency="BTC", label="manual_api_1")
    rig.h.on_user_trade(manual, rig.now)
    rig.show(manual)  # the trader's fill first: the hedge's not yet
    assert rig.h.order is not None and rig.h.order.phase == "settling"
    rig.show(fill)
    assert rig.h.order is None or rig.h.order.label != hedge.label
    for _ in range(3):
        rig.tick(5.1)
        rig.h.on_time(rig.now)
    assert rig.h.active and "never showed" not in rig.h.message


def test_a_snapshot_asked_for_after_the_fill_settles_a_hedge_whose_trade_never_came() -> None:
    rig = Rig(fill_wait_s=5.0)
    rig.ready(option_size=1.0, delta=0.5)
    [hedge] = rig.sent()
    filled_at = rig.now
    rig.h.on_order_update(OrderUpdate(order_id="o-1", instrument_name=PERP, order_state="filled",
                                      order_type="market", direction=hedge.side, amount=hedge.amount,
                                      filled_amount=hedge.amount, label=hedge.label,
                                      last_update_timestamp=int(rig.now * 1000)), rig.now)
    rig.tick(5.1)
    rig.h.on_time(rig.now)  # the trade never came: it asks for a reconcile
    rig.hedge_size = -20_000.0
    rig.portfolio(reconciled_at=rig.now, reconcile_requested_at=filled_at - 0.01)  # asked before: no proof
    assert rig.h.order is not None
    rig.portfolio(reconciled_at=rig.now, reconcile_requested_at=rig.now - 0.01)
    assert rig.h.order is None and rig.h.active


def test_the_status_keeps_its_figures_current_when_switched_off() -> None:
    rig = balanced()
    rig.h.on_control(HedgerControl(action="deactivate", origin="test"), rig.now)
    rig.tick()
    rig.option_size = 1.3
    rig.portfolio()
    status = rig.h.status(rig.now)
    assert not status.active and status.mismatch == pytest.approx(0.3)


def test_a_link_down_while_settling_never_reads_as_a_fill_not_shown() -> None:
    # The portfolio cannot show anything while the link is down (a reconnect may take the backoff's
    # 30 s): the wait for the fill starts again once the link is back.
    rig = Rig(fill_wait_s=3.0)
    _hedge, fill = first_hedge_filled(rig)
    rig.h.on_connection(False, rig.now)
    for _ in range(10):
        rig.tick(3.1)
        rig.h.on_time(rig.now)
    assert rig.h.active and rig.h.order is not None and rig.h.order.phase == "settling"
    rig.h.on_connection(True, rig.now)
    rig.quote()
    rig.delta(0.5)
    rig.show(fill)  # reconciled again, with the fill
    assert rig.h.order is None and rig.h.active and len(rig.sent()) == 1


@pytest.mark.parametrize("trade_from", ["notification", "answer"])
def test_the_order_closing_before_its_trades_come_still_settles_on_them(trade_from: str) -> None:
    # Deribit's user.orders and user.trades come in either order: the order may read "filled"
    # before its trades arrive (by notification, or in the late answer to the order).
    rig = Rig(fill_wait_s=10.0)
    rig.ready(option_size=1.0, delta=0.5)
    [hedge] = rig.sent()
    rig.h.on_order_update(OrderUpdate(order_id="o-1", instrument_name=PERP, order_state="filled",
                                      order_type="market", direction=hedge.side, amount=hedge.amount,
                                      filled_amount=hedge.amount, label=hedge.label), rig.now)
    assert rig.h.order is not None and rig.h.order.phase == "settling"
    fill = hedge_fill(hedge)
    rig.show(fill)  # the portfolio has the fill (from its own notification) before the hedger knows its id
    assert rig.h.order is not None
    if trade_from == "notification":
        rig.h.on_user_trade(fill, rig.now)
    else:
        rig.h.on_result(CommandResult(request_key=hedge.request_key, origin="hedger", method="private/sell",
                                      result="{}", trades=(fill,)), rig.now)
    assert rig.h.order is None and rig.h.active  # settled at once, not after a reconcile


def test_a_small_order_against_the_last_one_waits_a_moment_a_real_reversal_does_not() -> None:
    rig = Rig(reverse_after_s=1.0)
    placed = rig.now
    _sell, fill = first_hedge_filled(rig)
    rig.show(fill)  # hedged: -20,000 USD against 0.5 BTC of delta
    # The option's next ticker: delta a little lower (its IV moved along the smile) -> buy 160 USD.
    rig.tick(0.01)
    rig.delta(0.496)
    assert len(rig.sent()) == 1 and rig.h.last_code is HedgeCode.REVERSAL_PAUSE
    assert rig.h.next_due() == pytest.approx(placed + 1.0)
    rig.tick(1.0)
    rig.h.on_time(rig.now)  # the pause is over: the correction goes
    [_, buy] = rig.sent()
    assert buy.side == "buy" and buy.amount == pytest.approx(160.0)


def test_a_real_reversal_goes_at_once() -> None:
    rig = Rig(reverse_after_s=1.0)
    _sell, fill = first_hedge_filled(rig)
    rig.show(fill)
    rig.tick(0.01)
    rig.delta(0.4)  # 0.1 BTC the other way: forty bands, a fifth of the last order
    [_, buy] = rig.sent()
    assert buy.side == "buy" and buy.amount == pytest.approx(4000.0)
