"""The hedger's per-currency logic without threads: gates, the one order in flight, limit order
repricing, rejections, unknown fates after a lost answer, limits and controls."""

from __future__ import annotations

from typing import Any

import pytest

from desk.hedge_order import OrderTag
from messages.account import ExchangeState, OrderUpdate, Position, UserTrade
from messages.commands import CancelOrder, CommandFailed, CommandResult, EditOrder, PlaceOrder, ReconcilePortfolio
from messages.hedging import HedgeCode, HedgerControl, HedgerStatus, SetHedgeBand
from messages.market import InstrumentsLoaded, PlatformState
from messages.state import TopOfBook
from tests.support.hedge_rig import PERP, PRICE, T0, Rig, hedge_fill, perpetual


def order(label: str, state: str, amount: float, filled: float = 0.0, order_id: str = "o-1",
          direction: str = "sell", price: float | None = None, order_type: str = "market") -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name=PERP, order_state=state, order_type=order_type,
                       direction=direction, amount=amount, filled_amount=filled, label=label,  # type: ignore[arg-type]
                       price=price, last_update_timestamp=1)


def filled_result(command: PlaceOrder, order_id: str = "o-1") -> CommandResult:
    """The answer to a market order that filled at once (Deribit's answer carries its trades)."""
    return CommandResult(request_key=command.request_key, origin="hedger", method=f"private/{command.side}",
                         result="{}", order=order(command.label, "filled", command.amount, command.amount, order_id,
                                                  command.side),
                         trades=(hedge_fill(command, order_id=order_id),))


# -- gates -----------------------------------------------------------------------------------------
def test_places_a_market_order_that_balances_the_options() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.5)  # +0.5 BTC = 20,000 USD at 40,000
    [command] = rig.sent()
    assert command.instrument_name == PERP and command.side == "sell" and command.amount == 20000.0
    assert command.type == "market" and command.price is None and command.origin == "hedger"
    assert command.label == "hedge-1" and command.request_key == "hedge-1"
    assert "hedge_order" in rig.log.names("info")
    status = rig.last_status()
    assert status.in_flight and status.phase == "sent" and status.order_label == "hedge-1"
    assert status.mismatch == pytest.approx(0.5) and status.orders_today == 1


def test_nothing_while_inactive() -> None:
    rig = Rig()
    rig.ready(delta=0.0)  # balanced: no order
    rig.h.on_control(HedgerControl(action="deactivate", origin="test"), rig.now)
    for delta in (0.6, 0.7, 0.8):
        rig.tick()
        rig.delta(delta)
    assert rig.sent() == []
    assert not rig.last_status().active


def test_off_at_start_unless_configured() -> None:
    rig = Rig()
    rig.h.on_connection(True, rig.now)
    rig.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),)), rig.now)
    rig.quote()
    rig.option_size = 1.0
    rig.delta(0.5)
    rig.portfolio()
    assert rig.sent() == []
    assert Rig(active_on_start=True).h.active


@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        (lambda rig: rig.h.on_connection(False, rig.now), "disconnected"),
        (lambda rig: rig.portfolio(reconciled=False), "unreconciled"),
        (lambda rig: rig.h.on_top_of_book(TopOfBook(instrument_name=PERP, kind="future", bid=PRICE, bid_amount=1,
                                                    ask=PRICE + 0.5, ask_amount=1, timestamp=0, at=rig.now,
                                                    stale=True), rig.now), "hedge_book_stale"),
        (lambda rig: rig.tick(10.5), "stale_hedge_quote"),
    ],
)
def test_no_order_on_bad_state(spoil: Any, code: str) -> None:
    rig = Rig()
    rig.ready(delta=0.0)  # balanced: no order yet
    assert rig.sent() == []
    spoil(rig)
    rig.delta(0.5)  # far outside the band
    assert rig.sent() == []
    assert rig.h.last_code == code
    assert "hedge_blocked" in rig.log.names("info")


def test_no_order_on_a_stale_option_ticker() -> None:
    rig = Rig()
    rig.ready(option_size=0.0, delta=0.5)  # no options held yet
    rig.tick(10.5)
    rig.quote()
    rig.option_size = 1.0
    rig.portfolio()  # now held, but its ticker is 10.5 s old
    assert rig.sent() == [] and rig.h.last_code == "stale_ticker"
    rig.delta(0.5)  # a fresh one
    assert len(rig.sent()) == 1


def test_a_reconnect_needs_fresh_data() -> None:
    rig = Rig()
    rig.ready(delta=0.0)
    rig.h.on_connection(False, rig.now)
    rig.h.on_connection(True, rig.now)
    rig.portfolio()
    assert rig.h.last_code == "no_hedge_quote"  # the quote from before the drop is forgotten
    rig.quote()
    assert rig.h.last_code == "no_ticker"
    rig.delta(0.5)
    assert len(rig.sent()) == 1


def test_unlisted_hedge_instrument_blocks_with_a_hint() -> None:
    rig = Rig(instruments=("BTC-29DEC23",))
    rig.h.on_connection(True, rig.now)
    rig.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),)), rig.now)
    assert "hedge_instrument_not_listed" in rig.log.names("warning")
    assert rig.h.last_code == "not_listed"


# -- one order in flight; after a fill, wait for the portfolio -----------------------------------
def test_one_order_in_flight_then_waits_for_the_portfolio() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    for delta in (0.55, 0.6):  # the market keeps moving: still one order
        rig.tick()
        rig.delta(delta)
    assert len(rig.sent()) == 1
    rig.h.on_result(filled_result(command), rig.now)
    assert rig.h.order is not None and rig.h.order.phase == "settling"
    rig.tick()
    rig.delta(0.6)
    rig.portfolio()  # the portfolio has not taken the fill in yet
    assert len(rig.sent()) == 1 and rig.h.order.phase == "settling"
    rig.show(hedge_fill(command))  # now it has: decide again, with the new delta 0.6
    assert rig.h.order is None or rig.h.order.label == "hedge-2"
    [_, second] = rig.sent()
    assert second.side == "sell" and second.amount == 4000.0  # 0.1 BTC more
    assert "hedge_settled" in rig.log.names("info")


def test_fill_reported_by_notifications_before_the_answer() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    fill = UserTrade(trade_id="t1", order_id="o-1", instrument_name=PERP, timestamp=1, direction="sell", price=PRICE,
                     amount=20000.0, fee=0.0, fee_currency="BTC", state="filled", label=command.label)
    rig.h.on_user_trade(fill, rig.now)
    assert rig.h.order.phase == "settling"
    rig.show(fill)
    assert rig.h.order is None
    rig.h.on_result(filled_result(command), rig.now)  # the late answer changes nothing
    assert rig.h.order is None and len(rig.sent()) == 1


def test_fill_never_shown_asks_a_reconcile_then_switches_off() -> None:
    rig = Rig(fill_wait_s=5.0)
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    rig.h.on_result(filled_result(command), rig.now)
    rig.tick(5.1)
    rig.h.on_time(rig.now)
    [reconcile] = rig.sent(ReconcilePortfolio)
    assert reconcile.currencies == ("BTC",) and reconcile.origin == "hedger"
    rig.tick(5.1)
    rig.h.on_time(rig.now)
    assert not rig.h.active and "never showed the fill" in rig.h.message
    assert "hedging_switched_off" in rig.log.names("warning")
    assert len(rig.sent()) == 1


# -- rejections ------------------------------------------------------------------------------------
def test_three_rejections_in_a_row_switch_hedging_off() -> None:
    rig = Rig(retry_after_reject_s=1.0)
    rig.ready(option_size=1.0, delta=0.5)
    for n in range(3):
        command = rig.sent()[-1]
        rig.h.on_failed(CommandFailed(request_key=command.request_key, origin="hedger", method="private/sell",
                                      code=10009, message="not_enough_funds"), rig.now)
        if n < 2:  # the status says it is pausing at once, before anything is evaluated again
            assert rig.last_status().code == "cooldown"
        rig.tick(0.5)
        rig.delta(0.5)
        assert len(rig.sent()) == n + 1  # paused after each rejection
        if n < 2:
            paused = rig.h.status(rig.now)
            assert paused.code == "cooldown" and paused.phase == "idle" and not paused.in_flight
            assert paused.last_reason == "pausing 1.0 s after a rejection"  # said when it began
        rig.tick(0.6)
        rig.h.on_time(rig.now)
    assert len(rig.sent()) == 3
    assert not rig.h.active
    status = rig.last_status()
    assert not status.active and "3 hedge orders rejected in a row" in status.message
    assert "not_enough_funds" in status.message


def test_an_accepted_order_resets_the_rejection_count() -> None:
    rig = Rig(retry_after_reject_s=0.0)
    rig.ready(option_size=1.0, delta=0.5)
    for _ in range(2):
        command = rig.sent()[-1]
        rig.h.on_failed(CommandFailed(request_key=command.request_key, origin="hedger", method="private/sell",
                                      code=10009, message="not_enough_funds"), rig.now)
        rig.tick()
        rig.delta(0.5)
    assert rig.h.rejections == 2
    rig.h.on_result(filled_result(rig.sent()[-1]), rig.now)
    assert rig.h.rejections == 0 and rig.h.active


# -- an answer lost with the link -----------------------------------------------------------------
def test_lost_answer_waits_for_the_exchange_and_never_sends_twice() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    rig.h.on_connection(False, rig.now)
    rig.h.on_failed(CommandFailed(request_key=command.request_key, origin="hedger", method="private/sell",
                                  code=-2, message="connection lost before the exchange answered"), rig.now)
    assert rig.h.order.phase == "unknown"
    assert rig.sent(ReconcilePortfolio) == []  # not while disconnected
    rig.tick(2.0)
    rig.h.on_connection(True, rig.now)
    [reconcile] = rig.sent(ReconcilePortfolio)
    assert "unknown" in reconcile.reason
    rig.quote()
    rig.delta(0.5)
    rig.portfolio()  # reconciled again, but from before the exchange's answer: not trusted yet
    assert len(rig.sent()) == 1
    # The order had filled before the link dropped.
    rig.tick()
    rig.h.on_exchange_state(ExchangeState(currency="BTC", at=rig.now, open_orders=(), summary=None,
                                          positions=(Position(instrument_name=PERP, kind="future", direction="sell",
                                                              size=-20000.0),)), rig.now)
    assert rig.h.order.phase == "settling"
    rig.hedge_size = -20000.0
    rig.portfolio(reconciled_at=rig.now - 0.5)  # a snapshot from before: not the one that resolved it
    assert rig.h.order is not None
    rig.portfolio(reconciled_at=rig.now)  # the snapshot that resolved it, taken in
    assert rig.h.order is None
    assert len(rig.sent()) == 1  # balanced: no second order


def test_lost_answer_for_an_order_that_never_reached_the_exchange() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    rig.h.on_failed(CommandFailed(request_key=command.request_key, origin="hedger", method="private/sell",
                                  code=-2, message="no answer within 10 s"), rig.now)
    assert len(rig.sent(ReconcilePortfolio)) == 1  # connected: asked at once
    rig.tick()
    rig.h.on_exchange_state(ExchangeState(currency="BTC", at=rig.now, positions=(), open_orders=(), summary=None),
                            rig.now)
    assert len(rig.sent()) == 1  # not before the Portfolio took that picture in
    rig.portfolio(reconciled_at=rig.now)
    # Nothing happened on the exchange: the same hedge is still needed, and now it is justified.
    assert rig.h.order is not None and rig.h.order.label == "hedge-2"
    assert [c.amount for c in rig.sent()] == [20000.0, 20000.0]


def test_lost_answer_for_an_order_still_open_cancels_it() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    rig.h.on_failed(CommandFailed(request_key=command.request_key, origin="hedger", method="private/sell",
                                  code=-2, message="no answer"), rig.now)
    rig.tick()
    still = order(command.label, "open", 20000.0, 5000.0, "o-9", order_type="limit", price=PRICE)
    rig.h.on_exchange_state(ExchangeState(currency="BTC", at=rig.now, open_orders=(still,), summary=None,
                                          positions=(Position(instrument_name=PERP, kind="future", direction="sell",
                                                              size=-5000.0),)), rig.now)
    [cancel] = rig.sent(CancelOrder)
    assert cancel.order_id == "o-9"
    rig.h.on_order_update(order(command.label, "cancelled", 20000.0, 5000.0, "o-9"), rig.now)
    assert rig.h.order.phase == "settling" and rig.h.order.expected_size == -5000.0


# -- limit orders ----------------------------------------------------------------------------------
def test_limit_order_at_the_touch_repriced_then_market() -> None:
    rig = Rig(order_type="limit", reprice_after_s=2.0, max_reprices=1)
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    assert command.type == "limit" and command.post_only and command.price == PRICE + 0.25  # sell at the ask
    rig.h.on_result(CommandResult(request_key=command.request_key, origin="hedger", method="private/sell",
                                  result="{}", order=order(command.label, "open", 20000.0, 0.0, "o-1",
                                                           order_type="limit", price=command.price)), rig.now)
    assert rig.h.order.phase == "resting"
    rig.tick(1.0)
    rig.h.on_time(rig.now)
    assert rig.sent(EditOrder) == []  # not yet
    rig.quote(bid=PRICE - 5.25, ask=PRICE - 4.75)  # the market moved away
    rig.tick(1.1)
    assert rig.h.next_due() is not None and rig.h.next_due() <= rig.now
    rig.h.on_time(rig.now)
    [edit] = rig.sent(EditOrder)
    assert edit.order_id == "o-1" and edit.price == PRICE - 4.75 and edit.post_only and edit.amount == 20000.0
    partial = hedge_fill(command, amount=8000.0, state="open")
    rig.h.on_result(CommandResult(request_key=edit.request_key, origin="hedger", method="private/edit",
                                  result="{}", order=order(command.label, "open", 20000.0, 8000.0, "o-1",
                                                           order_type="limit", price=edit.price),
                                  trades=(partial,)), rig.now)
    assert rig.h.order.phase == "resting" and rig.h.order.filled == 8000.0
    rig.tick(2.1)
    rig.h.on_time(rig.now)  # out of reprices: cancel
    [cancel] = rig.sent(CancelOrder)
    rig.h.on_result(CommandResult(request_key=cancel.request_key, origin="hedger", method="private/cancel",
                                  result="{}", order=order(command.label, "cancelled", 20000.0, 8000.0, "o-1",
                                                           order_type="limit")), rig.now)
    assert rig.h.order.phase == "settling" and rig.h.order.expected_size == -8000.0
    rig.show(partial)
    [_, rest] = rig.sent()
    assert rest.type == "market" and rest.amount == 12000.0 and rest.side == "sell"
    assert rest.label != command.label


def test_deactivate_cancels_a_resting_limit_order() -> None:
    rig = Rig(order_type="limit")
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    rig.h.on_order_update(order(command.label, "open", 20000.0, 0.0, "o-5", order_type="limit"), rig.now)
    rig.h.on_control(HedgerControl(action="deactivate", origin="console"), rig.now)
    [cancel] = rig.sent(CancelOrder)
    assert cancel.order_id == "o-5"
    assert not rig.last_status().active and "deactivated by console" in rig.last_status().message


def test_safe_shutdown_switches_off_and_cancels() -> None:
    rig = Rig(order_type="limit")
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    rig.h.on_order_update(order(command.label, "open", 20000.0, 0.0, "o-5", order_type="limit"), rig.now)
    rig.h.safe_shutdown("too many restarts", rig.now)
    assert not rig.h.active and rig.sent(CancelOrder)
    assert "hedging_switched_off" in rig.log.names("warning")


# -- limits ------------------------------------------------------------------------------------------
def settle(rig: Rig, command: PlaceOrder) -> None:
    rig.h.on_result(filled_result(command), rig.now)
    rig.show(hedge_fill(command))


def test_orders_per_minute() -> None:
    rig = Rig(max_orders_per_minute=2)
    rig.ready(option_size=1.0, delta=0.5)
    settle(rig, rig.sent()[-1])
    rig.tick()
    rig.delta(0.6)
    settle(rig, rig.sent()[-1])
    rig.tick()
    rig.delta(0.7)
    assert len(rig.sent()) == 2 and rig.h.last_code == "rate_limit"
    assert rig.h.next_due() == pytest.approx(T0 + 60.0)
    rig.now = T0 + 60.0
    rig.quote()
    rig.delta(0.7)
    assert len(rig.sent()) == 3


def test_daily_volume_caps_and_then_blocks() -> None:
    rig = Rig(max_daily_volume_usd=25000.0)
    rig.ready(option_size=1.0, delta=0.5)
    settle(rig, rig.sent()[-1])  # 20,000
    rig.tick()
    rig.delta(0.7)  # wants 8,000 more: 5,000 left
    assert rig.sent()[-1].amount == 5000.0
    settle(rig, rig.sent()[-1])
    rig.tick()
    rig.delta(0.9)
    assert len(rig.sent()) == 2 and rig.h.last_code == "daily_volume"
    rig.h.on_rollover(rig.now)
    rig.delta(0.9)
    assert len(rig.sent()) == 3


def test_max_order_size() -> None:
    rig = Rig(max_order_usd=7000.0)
    rig.ready(option_size=1.0, delta=0.5)
    assert rig.sent()[-1].amount == 7000.0


def test_orphan_hedge_orders_are_cancelled_before_hedging() -> None:
    rig = Rig()
    orphan = order("hedge-123", "open", 50.0, 0.0, "old-1", order_type="limit", price=PRICE)
    rig.h.on_connection(True, rig.now)
    rig.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),)), rig.now)
    rig.quote()
    rig.option_size = 1.0
    rig.delta(0.5)
    rig.portfolio(open_orders=(orphan,))
    rig.h.on_control(HedgerControl(action="activate", origin="test"), rig.now)
    [cancel] = rig.sent(CancelOrder)
    assert cancel.order_id == "old-1" and rig.sent() == [] and rig.h.last_code == "orphan_orders"
    rig.portfolio()  # gone
    assert len(rig.sent()) == 1


def test_two_hedgers_and_a_trader_on_one_instrument_cancel_only_their_own_orders() -> None:
    """Each hedger cancels by order id, and only orders whose label its tag owns (its prefix and a
    number): not another hedger's (even one whose prefix starts with its own), not a trader's
    (``manual_api_<n>``, a label typed on the exchange's site that happens to start with
    ``hedge-``, or none), whether sweeping an earlier run's orders or switching off."""
    delta = Rig(order_type="limit")
    vega = Rig(tag=OrderTag(origin="vega_hedger", prefix="hedge-v-"), order_type="limit")
    trader = (order("manual_api_3", "open", 10.0, 0.0, "o-m1", order_type="limit", price=PRICE - 100),
              order("hedge-manual", "open", 10.0, 0.0, "o-m2", order_type="limit", price=PRICE - 100),
              order("", "open", 10.0, 0.0, "o-m3", order_type="limit", price=PRICE - 100))
    earlier_run = order("hedge-99", "open", 10.0, 0.0, "o-a99", order_type="limit", price=PRICE + 100)

    vega.ready(option_size=1.0, delta=0.5)
    [vega_order] = vega.sent()
    assert vega_order.label == "hedge-v-1" and vega_order.origin == "vega_hedger"
    vega_open = order(vega_order.label, "open", vega_order.amount, 0.0, "o-b", order_type="limit",
                      price=vega_order.price)
    vega.h.on_order_update(vega_open, vega.now)
    assert vega.h.order is not None and vega.h.order.phase == "resting"

    # The delta hedger sees the vega hedger's live order, the trader's and one of its own earlier run.
    book = (*trader, vega_open, earlier_run)
    delta.option_size = 1.0
    delta.h.on_connection(True, delta.now)
    delta.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),)), delta.now)
    delta.quote()
    delta.delta(0.5)
    delta.portfolio(open_orders=book)
    delta.h.on_control(HedgerControl(action="activate", origin="test"), delta.now)
    [sweep] = delta.sent(CancelOrder)
    assert sweep.order_id == "o-a99" and sweep.origin == "hedger" and delta.h.last_code == "orphan_orders"
    delta.portfolio(open_orders=(*trader, vega_open))  # its orphan is gone: it hedges
    [delta_order] = delta.sent()
    assert delta_order.label == "hedge-1" and len(delta.sent(CancelOrder)) == 1
    delta_open = order(delta_order.label, "open", delta_order.amount, 0.0, "o-a", order_type="limit",
                       price=delta_order.price)
    delta.h.on_order_update(delta_open, delta.now)

    # The vega hedger sees everything too: nothing there is its orphan.
    vega.portfolio(open_orders=(*trader, vega_open, delta_open, earlier_run))
    assert vega.sent(CancelOrder) == []

    # Each one's answers and updates are not the other's.
    vega.h.on_order_update(order(delta_order.label, "cancelled", delta_order.amount, 0.0, "o-a",
                                 order_type="limit"), vega.now)
    delta.h.on_order_update(order(vega_order.label, "filled", vega_order.amount, vega_order.amount, "o-b",
                                  order_type="limit"), delta.now)
    assert vega.h.order is not None and vega.h.order.phase == "resting"
    assert delta.h.order is not None and delta.h.order.phase == "resting"

    # Shutting one down cancels its own order only, by its id.
    delta.h.safe_shutdown("test", delta.now)
    vega.h.on_control(HedgerControl(action="deactivate", origin="test"), vega.now)
    assert [(c.order_id, c.origin) for c in delta.sent(CancelOrder)] == [("o-a99", "hedger"), ("o-a", "hedger")]
    assert [(c.order_id, c.origin) for c in vega.sent(CancelOrder)] == [("o-b", "vega_hedger")]
    # ...and nothing cancels by label, instrument or currency.
    assert all(type(m) in (PlaceOrder, CancelOrder, HedgerStatus) for m in (*delta.out, *vega.out))


# -- controls ---------------------------------------------------------------------------------------
def test_set_hedge_band_live() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.0)
    rig.h.on_set_band(SetHedgeBand(max_delta_mismatch=0.1, origin="console", request_key="k1"), rig.now)
    assert rig.h.band == 0.1 and rig.last_status().band == 0.1 and rig.last_status().request_key == "k1"
    rig.delta(0.09)
    assert rig.sent() == []
    rig.delta(0.11)
    assert rig.sent()[-1].amount == 4400.0
    rig.h.on_set_band(SetHedgeBand(max_delta_mismatch=-1.0, origin="console"), rig.now)
    assert rig.h.band == 0.1 and "refused" in rig.last_status().message


def test_status_on_request_carries_the_request_key() -> None:
    rig = Rig()
    rig.ready(option_size=1.0, delta=0.0)
    rig.h.on_control(HedgerControl(action="status", origin="console", request_key="s1"), rig.now)
    status = rig.last_status()
    assert status.request_key == "s1" and status.active and status.instrument == PERP
    assert status.delta_source == "exchange" and status.phase == "idle" and status.mismatch == 0.0


def test_market_orders_that_never_fill_count_as_rejections() -> None:
    rig = Rig(retry_after_reject_s=0.0, max_rejections=2)
    rig.ready(option_size=1.0, delta=0.5)
    for _ in range(2):
        command = rig.sent()[-1]
        rig.h.on_order_update(order(command.label, "cancelled", command.amount, 0.0, f"o-{command.label}"), rig.now)
        rig.tick()
        rig.delta(0.5)
    assert len(rig.sent()) == 2 and not rig.h.active
    assert "closed unfilled" in rig.last_status().message


def test_a_limit_order_nobody_trades_against_ends_at_market() -> None:
    rig = Rig(order_type="limit", reprice_after_s=1.0, max_reprices=2)
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    rig.h.on_order_update(order(command.label, "open", 20000.0, 0.0, "o-1", order_type="limit",
                                price=command.price), rig.now)
    for _ in range(2):  # the touch does not move: nothing to edit, but each round counts
        rig.tick(1.1)
        rig.quote()
        rig.h.on_time(rig.now)
    assert rig.sent(EditOrder) == [] and rig.sent(CancelOrder) == []
    rig.tick(1.1)
    rig.quote()
    rig.h.on_time(rig.now)
    [cancel] = rig.sent(CancelOrder)
    assert cancel.order_id == "o-1"
    rig.h.on_order_update(order(command.label, "cancelled", 20000.0, 0.0, "o-1", order_type="limit"), rig.now)
    [_, market] = rig.sent()
    assert market.type == "market" and market.amount == 20000.0 and rig.h.rejections == 0


def test_a_market_order_left_open_is_cancelled_at_the_timeout() -> None:
    rig = Rig(reprice_after_s=1.0)
    rig.ready(option_size=1.0, delta=0.5)
    [command] = rig.sent()
    rig.h.on_result(CommandResult(request_key=command.request_key, origin="hedger", method="private/sell",
                                  result="{}", order=order(command.label, "open", 20000.0, 12000.0, "o-3")), rig.now)
    assert rig.h.order.phase == "resting"
    rig.tick(1.1)
    rig.h.on_time(rig.now)
    assert rig.sent(EditOrder) == []
    [cancel] = rig.sent(CancelOrder)
    assert cancel.order_id == "o-3"
    rig.h.on_order_update(order(command.label, "cancelled", 20000.0, 12000.0, "o-3"), rig.now)
    assert rig.h.order.phase == "settling" and rig.h.order.expected_size == -12000.0


def test_a_locked_index_holds_hedging_until_it_is_unlocked() -> None:
    rig = Rig()
    rig.ready(delta=0.0)  # balanced: no order
    rig.h.on_platform_state(PlatformState(price_index="eth_usd", locked=True), rig.now)  # not ours
    rig.h.on_platform_state(PlatformState(price_index="btc_usd", locked=True), rig.now)
    rig.tick()
    rig.delta(0.5)
    assert rig.sent() == []
    assert rig.last_status().code == HedgeCode.PLATFORM_LOCKED and "btc_usd" in rig.last_status().last_reason
    assert "hedge_platform_lock" in rig.log.names("warning")
    rig.tick()
    rig.h.on_platform_state(PlatformState(price_index="btc_usd", locked=False), rig.now)
    [command] = rig.sent()
    assert command.side == "sell" and command.amount == 20000.0
