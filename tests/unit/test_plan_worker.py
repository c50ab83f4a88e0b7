"""The plan worker (desk.plan_worker): how a confirmed exposure plan's legs are worked.

Every path of an order's life is driven here by hand with the messages the Connection, the
BookKeepers and the Portfolio would publish: place, reprice toward the mid and never past it,
partial fills, post-only rejections, lost answers, gates, cancel, hostile books, and orders
that are not the plan's (hedge orders, other plans', a trader's) which it must never touch.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from desk.plan_worker import ORIGIN, PlanCaps, PlanWorker, WorkLimits, target_price
from messages.account import OrderUpdate, UserTrade
from messages.commands import (
    ANSWER_LOST,
    PAPER_ONLY,
    REPLAY_ONLY,
    TRADING_DISABLED,
    AuditOutcome,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    OrderResolved,
    PlaceOrder,
    ReconcilePortfolio,
    check_command,
)
from messages.exposure import (
    CancelPlan,
    ExposurePlan,
    Greek,
    GreekFigures,
    LegState,
    PlanLeg,
    PlanState,
    PlanStatus,
    WorkPlan,
)
from messages.market import Instrument, InstrumentsLoaded
from messages.state import PortfolioChanged, TopOfBook, WatchOptionTops
from tests.support.settings import make_settings

T0 = 1_800_000_000.0
CALL = "BTC-25DEC26-70000-C"
PUT = "BTC-25DEC26-50000-P"
TICK = 0.0005
LIMITS = WorkLimits(reprice_after_s=3.0, steps_to_mid=3, max_reprices=5, answer_wait_s=10.0, unknown_wait_s=30.0,
                    max_orders=50, max_orders_per_minute=20, max_rejections=3, retry_after_reject_s=2.0)


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))


def instrument(name: str) -> Instrument:
    return Instrument(instrument_name=name, kind="option", base_currency="BTC", quote_currency="BTC",
                      tick_size=TICK, contract_size=1.0, min_trade_amount=0.1, expiration_timestamp=1_798_185_600_000,
                      creation_timestamp=0, option_type="call" if name.endswith("C") else "put")


def leg(number: int, name: str, side: str, amount: float, bid: float, ask: float) -> PlanLeg:
    return PlanLeg(leg=number, instrument_name=name, side=side, amount=amount, bid=bid, ask=ask,  # type: ignore[arg-type]
                   mid=(bid + ask) / 2, underlying_price=60000.0, greeks=GreekFigures(vega=10.0), cost_usd=1.0)


def make_plan(*legs: PlanLeg, plan_id: int = 7, expires_at: float = T0 + 60.0) -> WorkPlan:
    plan = ExposurePlan(plan_id=plan_id, currency="BTC", greek=Greek.VEGA, target=100.0, at=T0, expires_at=expires_at,
                        legs=legs)
    return WorkPlan(plan=plan, origin="console", request_key=f"confirm-{plan_id}")


def top(name: str, bid: float | None, ask: float | None, bid_amount: float = 5.0, ask_amount: float = 5.0,
        stale: bool = False) -> TopOfBook:
    return TopOfBook(instrument_name=name, kind="option", bid=bid, bid_amount=bid_amount, ask=ask,
                     ask_amount=ask_amount, timestamp=int(T0 * 1000), at=T0, stale=stale)


def portfolio(reconciled: bool = True, reconciling: bool = False, open_orders: tuple[OrderUpdate, ...] = (),
              at: float = T0) -> PortfolioChanged:
    return PortfolioChanged(currency="BTC", at=at, positions=(), open_orders=open_orders, reconciled=reconciled,
                            reconciling=reconciling, reconciled_at=at if reconciled else None,
                            reconcile_requested_at=at if reconciled else None)


def update(command: PlaceOrder, order_id: str = "o-1", state: str = "open", filled: float = 0.0,
           price: float | None = None, label: str | None = None) -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name=command.instrument_name, order_state=state,
                       order_type="limit", direction=command.side, amount=command.amount,
                       price=price if price is not None else command.price, filled_amount=filled,
                       label=command.label if label is None else label, post_only=True)


def trade(command: PlaceOrder, amount: float, trade_id: str, order_id: str = "o-1", state: str = "open",
          label: str | None = None, price: float | None = None) -> UserTrade:
    return UserTrade(trade_id=trade_id, order_id=order_id, instrument_name=command.instrument_name,
                     timestamp=int(T0 * 1000), direction=command.side, price=price or command.price or 0.0,
                     amount=amount, fee=0.0, fee_currency="BTC", state=state,
                     label=command.label if label is None else label, liquidity="M")


class Rig:
    def __init__(self, limits: WorkLimits = LIMITS) -> None:
        self.out: list[object] = []
        self.log = Log()
        self.worker = PlanWorker(self.out.append, self.log, limits)
        self.now = T0
        self.keeper = True
        self._confirmed = 0

    def ready(self, *books: TopOfBook) -> None:
        w = self.worker
        w.on_connection(True, self.now)
        w.on_portfolio(portfolio(at=self.now), self.now)
        w.on_instruments(InstrumentsLoaded(currency="BTC", instruments=(instrument(CALL), instrument(PUT))), self.now)
        for book in books:
            w.on_top(book, self.now)

    def start(self, *legs: PlanLeg, **kw: Any) -> None:
        self.worker.start(make_plan(*legs, **kw), self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.worker.on_time(self.now)
        self.confirm_tops()

    def confirm_tops(self) -> None:
        """A live BookKeeper answers a refresh with the tops it holds (``keeper`` False: one that
        restarted and has no book yet says nothing)."""
        asked = [m for m in self.out[self._confirmed:] if isinstance(m, WatchOptionTops) and m.refresh]
        self._confirmed = len(self.out)
        for request in asked if self.keeper else ():
            for name in request.names:
                touch = self.worker.books.get(name)
                if touch is not None:
                    self.worker.on_top(msgspec.structs.replace(touch.top, at=self.now), self.now)

    def sent(self, kind: type = PlaceOrder) -> list[Any]:
        return [m for m in self.out if type(m) is kind]

    def orders(self) -> list[Any]:
        return [m for m in self.out if isinstance(m, PlaceOrder | EditOrder | CancelOrder | CancelByLabel)]

    def status(self) -> PlanStatus:
        return [m for m in self.out if isinstance(m, PlanStatus)][-1]

    def accept(self, command: PlaceOrder, order_id: str = "o-1", price: float | None = None) -> None:
        answer = update(command, order_id, price=price)
        self.worker.on_result(CommandResult(request_key=command.request_key, origin=ORIGIN, method="private/buy",
                                            result="{}", order=answer), self.now)

    def answer_edit(self, edit: EditOrder, command: PlaceOrder, filled: float = 0.0) -> None:
        answer = update(command, edit.order_id, filled=filled, price=edit.price)
        self.worker.on_result(CommandResult(request_key=edit.request_key, origin=ORIGIN, method="private/edit",
                                            result="{}", order=answer), self.now)

    def answer_cancel(self, cancel: CancelOrder, command: PlaceOrder, filled: float = 0.0) -> None:
        answer = update(command, cancel.order_id, state="cancelled", filled=filled)
        self.worker.on_result(CommandResult(request_key=cancel.request_key, origin=ORIGIN, method="private/cancel",
                                            result="{}", order=answer), self.now)


BUY_CALL = leg(1, CALL, "buy", 1.0, 0.0100, 0.0120)
SELL_PUT = leg(2, PUT, "sell", 0.5, 0.0200, 0.0230)


def working_rig(*legs: PlanLeg) -> Rig:
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0120), top(PUT, 0.0200, 0.0230))
    rig.start(*(legs or (BUY_CALL, SELL_PUT)))
    return rig


# -- placing ----------------------------------------------------------------------------------------
def test_each_leg_gets_a_post_only_limit_one_tick_inside_its_own_touch() -> None:
    rig = working_rig()
    buy, sell = rig.sent()
    assert (buy.instrument_name, buy.side, buy.amount, buy.price) == (CALL, "buy", 1.0, 0.0105)
    assert (sell.instrument_name, sell.side, sell.amount, sell.price) == (PUT, "sell", 0.5, 0.0225)
    for command, label in ((buy, "plan-7-1"), (sell, "plan-7-2")):
        assert command.post_only and command.type == "limit" and command.origin == ORIGIN == "assistant"
        assert command.label == label
        check_command(command)
    assert rig.status().state is PlanState.WORKING
    assert [p.state for p in rig.status().legs] == [LegState.SENT, LegState.SENT]


def test_a_one_tick_spread_is_joined_at_the_touch_never_crossed() -> None:
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0105))
    rig.start(leg(1, CALL, "buy", 1.0, 0.0100, 0.0105))
    assert rig.sent()[0].price == 0.0100
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0105))
    rig.start(leg(1, CALL, "sell", 1.0, 0.0100, 0.0105))
    assert rig.sent()[0].price == 0.0105


# -- gates ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gate", ["disconnected", "unreconciled", "reconciling", "no metadata", "no book"])
def test_no_order_while_a_gate_holds_and_one_as_soon_as_it_lifts(gate: str) -> None:
    rig = Rig()
    w = rig.worker
    w.on_connection(gate != "disconnected", T0)
    if gate == "unreconciled":
        w.on_portfolio(portfolio(reconciled=False), T0)
    elif gate == "reconciling":
        w.on_portfolio(portfolio(reconciling=True), T0)
    else:
        w.on_portfolio(portfolio(), T0)
    if gate != "no metadata":
        w.on_instruments(InstrumentsLoaded(currency="BTC", instruments=(instrument(CALL),)), T0)
    if gate != "no book":
        w.on_top(top(CALL, 0.0100, 0.0120), T0)
    rig.start(BUY_CALL)
    rig.advance(5.0)
    assert rig.orders() == []
    assert rig.status().state is PlanState.WORKING and "waiting" in rig.status().message
    rig.ready(top(CALL, 0.0100, 0.0120))
    assert len(rig.sent()) == 1


HOSTILE = [
    ("stale", top(CALL, 0.0100, 0.0120, stale=True)),
    ("no bid", top(CALL, None, 0.0120)),
    ("no ask", top(CALL, 0.0100, None)),
    ("crossed", top(CALL, 0.0130, 0.0120)),
    ("locked", top(CALL, 0.0120, 0.0120)),
    ("nan bid", top(CALL, math.nan, 0.0120)),
    ("inf ask", top(CALL, 0.0100, math.inf)),
    ("zero bid", top(CALL, 0.0, 0.0120)),
    ("negative bid", top(CALL, -0.01, 0.0120)),
    ("absurd ask", top(CALL, 0.0100, 50.0)),
    ("far from plan", top(CALL, 0.0300, 0.0320)),
]


@pytest.mark.parametrize(("what", "book"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_books_give_no_order_and_no_reprice(what: str, book: TopOfBook) -> None:
    rig = Rig()
    rig.ready(book)
    rig.start(BUY_CALL)
    rig.advance(5.0)
    assert rig.orders() == [], what
    # A resting order is not repriced from such a book either.
    rig = working_rig(BUY_CALL)
    rig.accept(rig.sent()[0])
    rig.worker.on_top(book, rig.now)
    rig.advance(LIMITS.reprice_after_s)
    assert rig.sent(EditOrder) == [], what


def test_a_plan_that_is_not_sane_is_refused_with_a_status() -> None:
    bad_legs = [leg(1, CALL, "buy", math.nan, 0.01, 0.012), leg(1, CALL, "buy", -1.0, 0.01, 0.012),
                leg(1, CALL, "buy", 1.0, 0.012, 0.010), leg(1, CALL, "buy", 1.0, math.inf, 0.012),
                leg(1, "BTC-PERPETUAL", "buy", 10.0, 0.01, 0.012),
                leg(1, "ETH-25DEC26-3000-C", "buy", 1.0, 0.01, 0.012)]
    for bad in bad_legs:
        rig = Rig()
        rig.ready(top(CALL, 0.0100, 0.0120))
        rig.start(bad)
        assert rig.orders() == [] and rig.status().state is PlanState.STOPPED
        assert rig.status().message.startswith("refused")
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0120))
    rig.start(BUY_CALL, expires_at=T0 - 1)
    assert rig.orders() == [] and "expired" in rig.status().message
    rig = working_rig(BUY_CALL)
    rig.worker.start(make_plan(SELL_PUT, plan_id=8), rig.now)
    answer = rig.status()
    assert answer.plan_id == 7 and answer.state is PlanState.WORKING and answer.request_key == "confirm-8"
    assert "plan 8 refused: plan 7 is still being worked" in answer.message
    assert len(rig.sent()) == 1


# -- repricing ----------------------------------------------------------------------------------------
def test_reprices_toward_the_mid_in_steps_never_past_it_and_a_bounded_number_of_times() -> None:
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0200))
    rig.start(leg(1, CALL, "buy", 1.0, 0.0100, 0.0200))
    place = rig.sent()[0]
    assert place.price == 0.0105
    rig.accept(place)
    # Our own order is now the bid: the book the BookKeeper shows includes it, and its mid is not
    # the market's (the others' bid is still 0.0100).
    rig.worker.on_top(top(CALL, place.price, 0.0200, bid_amount=place.amount), rig.now)
    prices = [place.price]
    for _ in range(LIMITS.max_reprices + 3):
        rig.advance(LIMITS.reprice_after_s)
        edits = rig.sent(EditOrder)
        if len(edits) > len(prices) - 1:
            edit = edits[-1]
            assert edit.order_id == "o-1" and edit.post_only and edit.amount == place.amount
            prices.append(edit.price)
            rig.answer_edit(edit, place)
            rig.worker.on_top(top(CALL, edit.price, 0.0200, bid_amount=place.amount), rig.now)
    mid = (0.0100 + 0.0200) / 2
    assert prices == pytest.approx([0.0105, 0.0120, 0.0135, 0.0150])  # a third of the way each time
    assert prices[-1] == pytest.approx(mid)
    assert all(p <= mid + 1e-12 for p in prices)  # never past the mid of the others' book
    assert len(rig.sent(EditOrder)) <= LIMITS.max_reprices


def test_a_sell_reprices_down_to_the_mid_and_stops_there() -> None:
    rig = working_rig(SELL_PUT)
    place = rig.sent()[0]
    rig.accept(place)
    for _ in range(10):
        rig.advance(LIMITS.reprice_after_s)
        for edit in rig.sent(EditOrder)[-1:]:
            rig.answer_edit(edit, place)
    prices = [e.price for e in rig.sent(EditOrder)]
    assert prices == sorted(prices, reverse=True)
    assert min(prices) >= (0.0200 + 0.0230) / 2 - 1e-12 and min(prices) == 0.0215  # the mid rounded up


@given(st.floats(0.0005, 2.0), st.integers(1, 400), st.integers(0, 40), st.integers(1, 6),
       st.sampled_from(["buy", "sell"]))
def test_target_price_is_inside_the_book_and_never_past_the_mid(bid_ticks: float, spread: int, step: int,
                                                                steps: int, side: str) -> None:
    bid = round(round(bid_ticks / TICK) * TICK, 10)
    ask = round(bid + spread * TICK, 10)
    price = target_price(side, bid, ask, TICK, step, steps)  # type: ignore[arg-type]
    mid = (bid + ask) / 2
    assert abs(price / TICK - round(price / TICK)) < 1e-6  # on the grid
    if side == "buy":
        assert bid - 1e-12 <= price <= mid + 1e-12 and price < ask
    else:
        assert mid - 1e-12 <= price <= ask + 1e-12 and price > bid


def test_an_order_the_exchange_moved_keeps_the_exchanges_price_and_past_the_mid_is_repriced_at_once() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place, price=0.0110)  # Deribit moved the post-only order (to the mid: fine)
    assert rig.status().legs[0].price == 0.0110
    assert rig.worker.next_due() == pytest.approx(rig.now + LIMITS.reprice_after_s)
    # The book fell while a buy was under way; Deribit put it a tick under the new ask, past the mid.
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.worker.on_top(top(CALL, 0.0090, 0.0110), rig.now)
    rig.accept(place, price=0.0105)
    assert rig.worker.next_due() == pytest.approx(rig.now)
    rig.advance(0.0)
    (edit,) = rig.sent(EditOrder)
    assert edit.price == pytest.approx(0.0100)  # the new mid


# -- fills -------------------------------------------------------------------------------------------
def test_partial_fills_count_once_and_the_rest_is_placed_again_never_more_than_the_leg() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    w = rig.worker
    # The fill's notification comes before the order's answer: matched by our label.
    w.on_user_trade(trade(place, 0.3, "t1"), rig.now)
    rig.accept(place)
    w.on_user_trade(trade(place, 0.3, "t1"), rig.now)  # the same trade again
    w.on_order_update(update(place, filled=0.3), rig.now)
    assert rig.status().legs[0].filled == pytest.approx(0.3)
    # The exchange cancels the rest (e.g. cancel-on-disconnect elsewhere): the remainder is placed.
    w.on_order_update(update(place, state="cancelled", filled=0.3), rig.now)
    again = rig.sent()[-1]
    assert again is not place and again.amount == pytest.approx(0.7) and again.label == place.label
    assert again.request_key != place.request_key
    rig.accept(again, order_id="o-2")
    w.on_user_trade(trade(again, 0.7, "t2", order_id="o-2", state="filled"), rig.now)
    status = rig.status()
    assert status.state is PlanState.DONE and status.legs[0].filled == pytest.approx(1.0)
    assert status.legs[0].state is LegState.FILLED
    assert status.legs[0].average_price == pytest.approx(0.0105)
    assert len(rig.sent()) == 2


def test_done_when_every_leg_filled_and_nothing_more_is_sent() -> None:
    rig = working_rig()
    buy, sell = rig.sent()
    rig.accept(buy, "o-1")
    rig.accept(sell, "o-2")
    rig.worker.on_user_trade(trade(buy, 1.0, "t1", state="filled"), rig.now)
    assert rig.status().state is PlanState.WORKING
    rig.worker.on_user_trade(trade(sell, 0.5, "t2", order_id="o-2", state="filled"), rig.now)
    assert rig.status().state is PlanState.DONE
    count = len(rig.orders())
    rig.advance(60.0)
    assert len(rig.orders()) == count


# -- rejections and lost answers ----------------------------------------------------------------------
def test_a_rejected_post_only_is_retried_after_a_pause_and_too_many_stop_the_plan() -> None:
    rig = working_rig(BUY_CALL)
    for n in range(LIMITS.max_rejections):
        place = rig.sent()[-1]
        rig.worker.on_failed(CommandFailed(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                           code=11054, message="post_only_reject"), rig.now)
        if n < LIMITS.max_rejections - 1:
            assert len(rig.sent()) == n + 1  # paused
            rig.advance(LIMITS.retry_after_reject_s)
            assert len(rig.sent()) == n + 2
    assert rig.status().state is PlanState.STOPPED and "rejected" in rig.status().message
    rig.advance(60.0)
    assert len(rig.sent()) == LIMITS.max_rejections


@pytest.mark.parametrize("code", [TRADING_DISABLED, PAPER_ONLY, REPLAY_ONLY])
def test_a_connection_that_sends_no_order_stops_the_plan_at_once(code: int) -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.worker.on_failed(CommandFailed(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                       code=code, message="not sent"), rig.now)
    assert rig.status().state is PlanState.STOPPED and "not sent here" in rig.status().message
    rig.advance(60.0)
    assert len(rig.sent()) == 1


def test_a_lost_answer_sends_nothing_for_its_leg_until_the_exchange_says() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.worker.on_failed(CommandFailed(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                       code=ANSWER_LOST, message="answer lost"), rig.now)
    rig.advance(5.0)
    assert len(rig.orders()) == 1  # never re-sent by guess
    resolved = update(place, order_id="o-9")
    rig.worker.on_resolved(OrderResolved(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                         outcome=AuditOutcome.SENT, message="found", order=resolved), rig.now)
    assert rig.status().legs[0].state is LegState.RESTING and rig.status().legs[0].order_id == "o-9"
    rig.advance(LIMITS.reprice_after_s)  # the top, 8 s old, is confirmed first; then the reprice
    rig.advance(LIMITS.reprice_after_s)
    assert rig.sent(EditOrder)[0].order_id == "o-9"


def test_an_answer_that_never_comes_is_lost_and_an_unresolved_fate_stops_the_plan() -> None:
    rig = working_rig(BUY_CALL)
    rig.advance(LIMITS.answer_wait_s)
    assert rig.status().legs[0].state is LegState.SENT and len(rig.orders()) == 1
    rig.advance(LIMITS.unknown_wait_s)
    assert "stayed unknown" in rig.status().message and "cancelling" in rig.status().message
    # Stopping cancels what may be open of the leg, by its own label only; once that is answered
    # nothing of the plan is open.
    (by_label,) = rig.sent(CancelByLabel)
    assert by_label.label == "plan-7-1" and by_label.origin == ORIGIN
    rig.worker.on_result(CommandResult(request_key=by_label.request_key, origin=ORIGIN,
                                       method="private/cancel_by_label", result="0"), rig.now)
    assert rig.status().state is PlanState.STOPPED and "unknown" in rig.status().message
    assert len(rig.sent()) == 1


def test_a_lost_order_found_open_in_the_exchanges_picture_is_worked_on() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.worker.on_failed(CommandFailed(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                       code=ANSWER_LOST, message="lost"), rig.now)
    rig.now += 1.0
    rig.worker.on_portfolio(portfolio(at=rig.now, open_orders=(update(place, order_id="o-5"),)), rig.now)
    assert rig.status().legs[0].state is LegState.RESTING and rig.status().legs[0].order_id == "o-5"
    assert len(rig.sent()) == 1


def test_a_lost_order_not_in_the_picture_stops_the_plan_its_fills_unknown() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.worker.on_failed(CommandFailed(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                       code=ANSWER_LOST, message="lost"), rig.now)
    # The exchange's picture is asked for; one asked for before the answer was lost says nothing.
    assert [r.currencies for r in rig.sent(ReconcilePortfolio)] == [("BTC",)]
    rig.worker.on_portfolio(portfolio(at=rig.now - 1.0), rig.now)
    assert rig.status().state is PlanState.WORKING
    rig.now += 1.0
    rig.worker.on_portfolio(portfolio(at=rig.now), rig.now)
    assert rig.status().state is PlanState.STOPPED and "fills may not all be known" in rig.status().message
    assert len(rig.sent()) == 1


def test_a_link_drop_makes_resting_orders_unknown_until_the_reconciled_picture() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    rig.worker.on_connection(False, rig.now)
    rig.advance(LIMITS.reprice_after_s)
    assert rig.sent(EditOrder) == []
    rig.now += 2.0
    rig.worker.on_connection(True, rig.now)
    rig.worker.on_portfolio(portfolio(at=rig.now, open_orders=(update(place, filled=0.2),)), rig.now)
    assert rig.status().legs[0].state is LegState.RESTING and rig.status().legs[0].filled == pytest.approx(0.2)
    assert len(rig.sent()) == 1


# -- limits ----------------------------------------------------------------------------------------
def test_the_plans_order_count_is_a_hard_limit() -> None:
    rig = Rig(WorkLimits(max_orders=3, retry_after_reject_s=0.0, max_rejections=100))
    rig.ready(top(CALL, 0.0100, 0.0120))
    rig.start(BUY_CALL)
    for _ in range(10):
        place = rig.sent()[-1]
        rig.worker.on_failed(CommandFailed(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                           code=11054, message="post_only_reject"), rig.now)
        rig.advance(0.1)
    assert len(rig.sent()) == 3
    assert rig.status().state is PlanState.STOPPED and "spent" in rig.status().message


def test_the_per_minute_rate_holds_orders_until_the_window_moves() -> None:
    rig = Rig(WorkLimits(max_orders_per_minute=2, retry_after_reject_s=0.0, max_rejections=100))
    rig.ready(top(CALL, 0.0100, 0.0120))
    rig.start(BUY_CALL)
    for _ in range(4):
        place = rig.sent()[-1]
        rig.worker.on_failed(CommandFailed(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                           code=11054, message="post_only_reject"), rig.now)
        rig.advance(1.0)
    assert len(rig.sent()) == 2 and "in the last minute" in rig.status().message
    assert rig.worker.next_due() == pytest.approx(T0 + 60.0)
    rig.now = T0 + 60.0
    rig.worker.on_time(rig.now)
    rig.confirm_tops()  # the quiet book's top, a minute old, confirmed by its keeper
    assert len(rig.sent()) == 3


# -- cancel, shutdown, and orders that are not ours ------------------------------------------------
def test_cancel_plan_cancels_every_open_order_by_id_and_reports_cancelled_once_none_is_open() -> None:
    rig = working_rig()
    buy, sell = rig.sent()
    rig.accept(buy, "o-1")
    rig.accept(sell, "o-2")
    rig.worker.on_user_trade(trade(buy, 0.4, "t1"), rig.now)
    rig.worker.cancel(CancelPlan(origin="console", request_key="k"), rig.now)
    cancels = rig.sent(CancelOrder)
    assert sorted(c.order_id for c in cancels) == ["o-1", "o-2"]
    assert rig.status().state is PlanState.WORKING and "cancelling" in rig.status().message
    rig.answer_cancel(cancels[0], buy, filled=0.4)
    assert rig.status().state is PlanState.WORKING
    rig.answer_cancel(cancels[1], sell)
    status = rig.status()
    assert status.state is PlanState.CANCELLED and status.legs[0].filled == pytest.approx(0.4)
    rig.advance(60.0)
    assert len(rig.sent()) == 2 and len(rig.sent(CancelOrder)) == 2


def test_cancel_while_a_place_is_unanswered_cancels_it_once_its_id_is_known() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.worker.cancel(CancelPlan(origin="console", request_key="k", plan_id=7), rig.now)
    assert rig.sent(CancelOrder) == [] and rig.status().state is PlanState.WORKING
    rig.accept(place, "o-1")
    cancel = rig.sent(CancelOrder)[0]
    assert cancel.order_id == "o-1"
    rig.worker.on_order_update(update(place, state="cancelled"), rig.now)
    assert rig.status().state is PlanState.CANCELLED


def test_cancel_of_another_plan_or_of_none_changes_nothing() -> None:
    rig = working_rig(BUY_CALL)
    rig.worker.cancel(CancelPlan(origin="console", request_key="k", plan_id=99), rig.now)
    assert rig.status().plan_id == 99 and "no plan 99" in rig.status().message
    assert rig.worker.state is PlanState.WORKING and rig.sent(CancelOrder) == []
    idle = Rig()
    idle.worker.cancel(CancelPlan(origin="console", request_key="k"), T0)
    assert idle.status().state is PlanState.STOPPED and idle.orders() == []


def test_safe_shutdown_stops_the_plan_and_cancels_its_orders() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    rig.worker.safe_shutdown("too many restarts", rig.now)
    cancel = rig.sent(CancelOrder)[0]
    rig.answer_cancel(cancel, place)
    assert rig.status().state is PlanState.STOPPED and "safe shutdown" in rig.status().message
    rig.advance(60.0)
    assert len(rig.sent()) == 1
    rig.worker.start(make_plan(SELL_PUT, plan_id=8), rig.now)
    assert len(rig.sent()) == 1 and "shutting down" in rig.status().message


def test_orders_that_are_not_the_plans_are_never_touched_nor_counted() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    w = rig.worker
    foreign = [
        update(place, order_id="h-1", label="hedge-1765000000000"),
        update(place, order_id="p-1", label="plan-8-1"),  # another program's plan
        update(place, order_id="m-1", label="manual_api_3"),
        update(place, order_id="x-1", label=""),
    ]
    for order in foreign:
        w.on_order_update(order, rig.now)
        w.on_order_update(OrderUpdate(**{**{f: getattr(order, f) for f in order.__struct_fields__},
                                         "order_state": "filled", "filled_amount": 1.0}), rig.now)
        w.on_user_trade(trade(place, 1.0, f"t-{order.order_id}", order_id=order.order_id, label=order.label,
                              state="filled"), rig.now)
    # Answers to other senders' commands with look-alike keys are not ours either.
    w.on_result(CommandResult(request_key=place.request_key, origin="hedger", method="private/buy", result="{}",
                              order=update(place, order_id="h-2", state="filled", filled=1.0)), rig.now)
    assert rig.status().legs[0].filled == 0.0 and rig.status().state is PlanState.WORKING
    w.on_portfolio(portfolio(open_orders=tuple(foreign)), rig.now)
    w.cancel(CancelPlan(origin="console", request_key="k"), rig.now)
    touched = {c.order_id for c in rig.sent(CancelOrder)} | {e.order_id for e in rig.sent(EditOrder)}
    assert touched == {"o-1"}
    assert all(c.label.startswith("plan-7-") for c in rig.sent(CancelByLabel))


def test_orders_left_open_by_an_ended_plan_are_cancelled_by_id_and_no_other_order_is() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    left = [
        update(place, order_id="old-1", label="plan-3-1"),  # a plan this worker never worked
        update(place, order_id="mine-2", label="plan-7-1"),  # the plan being worked: may be ours in flight
        update(place, order_id="o-1"),  # ours
        update(place, order_id="h-1", label="hedge-1765000000000"),
        update(place, order_id="m-1", label="manual_api_2"),
    ]
    rig.worker.on_portfolio(portfolio(open_orders=tuple(left)), rig.now)
    assert rig.sent(CancelOrder) == []
    # Once the plan ended, an order with its label still open is cancelled (once), by id.
    rig.worker.on_user_trade(trade(place, 1.0, "t1", state="filled"), rig.now)
    assert rig.status().state is PlanState.DONE
    rig.worker.on_portfolio(portfolio(open_orders=tuple(left)), rig.now)
    rig.worker.on_portfolio(portfolio(open_orders=tuple(left)), rig.now)
    # (Not o-1: ours, known filled; a picture that still shows it open lags behind its fill.)
    assert [(c.order_id, c.origin) for c in rig.sent(CancelOrder)] == [("mine-2", ORIGIN)]


def test_cancel_plan_with_none_worked_cancels_what_plans_left_open_and_nothing_else() -> None:
    rig = Rig()  # an Assistant that restarted: it knows no plan
    rig.ready(top(CALL, 0.0100, 0.0120))
    place = PlaceOrder(instrument_name=CALL, side="buy", amount=1.0, origin=ORIGIN, request_key="x", price=0.0105,
                       label="plan-3-1")
    left = (update(place, order_id="old-1"), update(place, order_id="old-2", label="plan-4-2"),
            update(place, order_id="h-1", label="hedge-1765000000000"), update(place, order_id="m-1", label="x"))
    rig.worker.on_portfolio(portfolio(open_orders=left), rig.now)
    assert rig.sent(CancelOrder) == []  # not of a plan it worked: only the trader's word cancels them
    said = rig.status()
    assert said.message == "2 orders of no plan being worked are open (plan-3-1, plan-4-2): cancel plan cancels them"
    rig.worker.on_portfolio(portfolio(open_orders=left), rig.now)
    assert rig.status() is said  # said once
    rig.worker.cancel(CancelPlan(origin="console", request_key="k1", plan_id=3), rig.now)
    assert [c.order_id for c in rig.sent(CancelOrder)] == ["old-1"]
    assert rig.status().state is PlanState.CANCELLED and rig.status().request_key == "k1"
    rig.worker.cancel(CancelPlan(origin="console", request_key="k2"), rig.now)
    assert [c.order_id for c in rig.sent(CancelOrder)] == ["old-1", "old-2"]


# -- our own order is never the others' touch ---------------------------------------------------------
def test_a_top_that_still_shows_our_order_before_its_edit_is_not_taken_as_the_others_bid() -> None:
    # Book notifications lag the order's own answers: a top showing our order at its price before
    # the edit (or its amount before a fill) is still our order. Taken as the others' bid, each
    # reprice would chase a mid that includes our own bid, up past the market's mid.
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0200))
    rig.start(leg(1, CALL, "buy", 1.0, 0.0100, 0.0200))
    place = rig.sent()[0]
    rig.accept(place)
    rig.worker.on_top(top(CALL, place.price, 0.0200, bid_amount=place.amount), rig.now)
    shown = place.price
    for _ in range(LIMITS.max_reprices + 3):
        rig.advance(LIMITS.reprice_after_s)
        for edit in rig.sent(EditOrder)[-1:]:
            # A lagging top: our order still at its former price, the ask's size changed.
            rig.worker.on_top(top(CALL, shown, 0.0200, bid_amount=place.amount, ask_amount=4.0), rig.now)
            rig.answer_edit(edit, place)
            rig.worker.on_top(top(CALL, edit.price, 0.0200, bid_amount=place.amount), rig.now)
            shown = edit.price
    prices = [e.price for e in rig.sent(EditOrder)]
    assert prices and max(prices) <= (0.0100 + 0.0200) / 2 + 1e-12


def test_a_top_that_shows_our_order_before_its_fill_is_not_taken_as_the_others_bid() -> None:
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0200))
    rig.start(leg(1, CALL, "buy", 1.0, 0.0100, 0.0200))
    place = rig.sent()[0]
    rig.accept(place)
    w = rig.worker
    w.on_top(top(CALL, place.price, 0.0200, bid_amount=place.amount), rig.now)
    filled, price = 0.0, place.price
    for n in range(LIMITS.max_reprices + 3):
        # A small fill whose notification comes before the book's change: the top still shows
        # our order's size before it.
        w.on_user_trade(trade(place, 0.1, f"t{n}", price=price), rig.now)
        w.on_top(top(CALL, price, 0.0200, bid_amount=round(place.amount - filled, 8)), rig.now)
        filled = round(filled + 0.1, 8)
        rig.advance(LIMITS.reprice_after_s)
        for edit in rig.sent(EditOrder)[-1:]:
            rig.answer_edit(edit, place, filled=filled)
            price = edit.price
            w.on_top(top(CALL, price, 0.0200, bid_amount=round(place.amount - filled, 8)), rig.now)
    prices = [e.price for e in rig.sent(EditOrder)]
    assert prices and max(prices) <= (0.0100 + 0.0200) / 2 + 1e-12


def test_a_plan_whose_labels_have_orders_open_is_refused() -> None:
    # An Assistant restarted mid-plan knows no plan: the old order rests under plan-7-1. Working
    # plan 7 again (or any plan with that label) would put a second order of the leg on the book,
    # and the old order's updates would be taken for the new one's by their label.
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0120))
    old = PlaceOrder(instrument_name=CALL, side="buy", amount=1.0, origin=ORIGIN, request_key="x", price=0.0105,
                     label="plan-7-1")
    rig.worker.on_portfolio(portfolio(open_orders=(update(old, order_id="old-1"),)), rig.now)
    rig.start(BUY_CALL)
    assert rig.sent() == []
    status = rig.status()
    assert status.state is PlanState.STOPPED and "plan-7-1" in status.message and "cancel plan" in status.message
    # Once the exchange shows it gone, the plan may be worked.
    rig.worker.on_portfolio(portfolio(), rig.now)
    rig.start(BUY_CALL)
    assert len(rig.sent()) == 1


def test_a_leg_waits_while_an_order_under_its_label_that_is_not_ours_is_open() -> None:
    # A restarted Assistant confirmed before the Portfolio's first picture came: the picture then
    # shows the old order under the leg's label; nothing is placed beside it.
    rig = Rig()
    rig.worker.on_connection(True, rig.now)
    rig.worker.on_instruments(InstrumentsLoaded(currency="BTC", instruments=(instrument(CALL),)), rig.now)
    rig.worker.on_top(top(CALL, 0.0100, 0.0120), rig.now)
    rig.start(BUY_CALL)
    assert rig.sent() == []
    old = PlaceOrder(instrument_name=CALL, side="buy", amount=1.0, origin=ORIGIN, request_key="x", price=0.0105,
                     label="plan-7-1")
    rig.worker.on_portfolio(portfolio(open_orders=(update(old, order_id="old-1"),)), rig.now)
    rig.advance(LIMITS.reprice_after_s)
    assert rig.sent() == []
    assert "plan-7-1 not known to be ours" in rig.status().message
    rig.worker.on_portfolio(portfolio(), rig.now)
    assert len(rig.sent()) == 1


def test_an_order_whose_label_only_looks_like_a_plans_does_not_fail_the_worker() -> None:
    # "²".isdigit() is True but int("²") raises: another program's order labelled so must not fail
    # the Assistant at each portfolio picture (the supervisor's restart limit would end the desk).
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    rig.worker.on_user_trade(trade(place, 1.0, "t1", state="filled"), rig.now)  # the plan ended
    odd = (update(place, order_id="x-1", label="plan-²-1"), update(place, order_id="x-2", label="plan-7-²"))
    rig.worker.on_portfolio(portfolio(open_orders=odd), rig.now)
    rig.worker.cancel(CancelPlan(origin="console", request_key="k1"), rig.now)
    assert rig.sent(CancelOrder) == []


def test_a_trade_that_says_its_order_filled_counts_the_whole_order_before_the_other_trades_come() -> None:
    # The order filled in two trades; the one that says "filled" is seen first (the other's
    # notification late or lost): the leg is done, never a second order for what already filled.
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    rig.worker.on_user_trade(trade(place, 0.4, "t2", state="filled"), rig.now)
    assert len(rig.sent()) == 1
    assert rig.status().state is PlanState.DONE and rig.status().legs[0].filled == pytest.approx(1.0)
    rig.worker.on_user_trade(trade(place, 0.6, "t1"), rig.now)
    assert rig.status().legs[0].filled == pytest.approx(1.0) and len(rig.sent()) == 1


# -- a fault injector: a small exchange that fills, reorders, duplicates and loses ------------------------
class FaultyExchange:
    """One leg's orders at a small exchange: fills at random, answers late, out of order with the
    notifications, duplicated or lost, drops the link; what the worker is told, it is told the way
    the Connection and the Portfolio would."""

    def __init__(self, rig: Rig, rnd: Any) -> None:
        self.rig, self.rnd = rig, rnd
        self.orders: dict[str, dict[str, Any]] = {}
        self.conn: list[object] = []  # the Connection's messages, in the order sent (nearly)
        self.pictures: list[PortfolioChanged] = []
        self.up = True
        self.seen = 0
        self.trades = 0

    def _snapshot(self, oid: str) -> OrderUpdate:
        o = self.orders[oid]
        return OrderUpdate(order_id=oid, instrument_name=CALL, order_state=o["state"], order_type="limit",
                           direction=o["side"], amount=o["amount"], price=o["price"], filled_amount=o["filled"],
                           label=o["label"], post_only=True)

    def _answer(self, command: Any, method: str, apply: Any) -> None:
        fate = self.rnd.random()
        if not self.up:
            self.conn.append(CommandFailed(request_key=command.request_key, origin=ORIGIN, method=method, code=-1,
                                           message="not connected"))
            return
        if fate < 0.08:  # lost: applied or not, nobody knows
            if self.rnd.random() < 0.5:
                apply()
            self.conn.append(CommandFailed(request_key=command.request_key, origin=ORIGIN, method=method,
                                           code=ANSWER_LOST, message="answer lost"))
            return
        if fate < 0.12:  # never answered at all
            if self.rnd.random() < 0.5:
                apply()
            return
        self.conn.append(apply())

    def take(self, command: object) -> None:
        if isinstance(command, PlaceOrder):
            assert command.label == "plan-7-1" and command.post_only
            def place() -> object:
                oid = f"x{len(self.orders) + 1}"
                self.orders[oid] = dict(label=command.label, side=command.side, amount=command.amount,
                                        price=command.price, filled=0.0, state="open")
                self.conn.append(self._snapshot(oid))
                return CommandResult(request_key=command.request_key, origin=ORIGIN, method="private/buy",
                                     result="{}", order=self._snapshot(oid))
            self._answer(command, "private/buy", place)
        elif isinstance(command, EditOrder | CancelOrder):
            oid = command.order_id
            assert oid in self.orders, "an order not the plan's was touched"
            method = "private/edit" if isinstance(command, EditOrder) else "private/cancel"
            def change(command: Any = command, oid: str = oid, method: str = method) -> object:
                o = self.orders[oid]
                if o["state"] != "open":
                    return CommandFailed(request_key=command.request_key, origin=ORIGIN, method=method, code=11044,
                                         message="not_open_order")
                if isinstance(command, EditOrder):
                    assert command.amount >= o["filled"] - 1e-9
                    o["price"], o["amount"] = command.price, command.amount
                else:
                    o["state"] = "cancelled"
                self.conn.append(self._snapshot(oid))
                return CommandResult(request_key=command.request_key, origin=ORIGIN, method=method, result="{}",
                                     order=self._snapshot(oid))
            self._answer(command, method, change)
        elif isinstance(command, CancelByLabel):
            def by_label(command: Any = command) -> object:
                for oid, o in self.orders.items():
                    if o["label"] == command.label and o["state"] == "open":
                        o["state"] = "cancelled"
                        self.conn.append(self._snapshot(oid))
                return CommandResult(request_key=command.request_key, origin=ORIGIN,
                                     method="private/cancel_by_label", result="1")
            self._answer(command, "private/cancel_by_label", by_label)
        elif isinstance(command, ReconcilePortfolio) and self.up:
            self.pictures.append(self.picture())

    def picture(self) -> PortfolioChanged:
        now = self.rig.now
        return PortfolioChanged(currency="BTC", at=now, positions=(), reconciled=True, reconciled_at=now,
                                reconcile_requested_at=now,
                                open_orders=tuple(self._snapshot(i) for i, o in self.orders.items()
                                                  if o["state"] == "open"))

    def fill(self) -> None:
        live = [i for i, o in self.orders.items() if o["state"] == "open"]
        if not live:
            return
        oid = self.rnd.choice(live)
        o = self.orders[oid]
        lots = round((o["amount"] - o["filled"]) / 0.1)
        amount = round(self.rnd.randint(1, max(min(lots, 3), 1)) * 0.1, 8)
        o["filled"] = round(o["filled"] + amount, 8)
        if o["filled"] >= o["amount"] - 1e-9:
            o["state"] = "filled"
        self.trades += 1
        t = UserTrade(trade_id=f"t{self.trades}", order_id=oid, instrument_name=CALL, timestamp=int(T0 * 1000),
                      direction=o["side"], price=o["price"], amount=amount, fee=0.0, fee_currency="BTC",
                      state=o["state"], label=o["label"], liquidity="M")
        if self.up:
            self.conn += [t, self._snapshot(oid)]
            if self.rnd.random() < 0.2:
                self.conn.append(t)  # the same trade again

    def cancel_one(self) -> None:
        """The exchange (or the trader's cancel all) cancels an open order."""
        live = [i for i, o in self.orders.items() if o["state"] == "open"]
        if live:
            oid = self.rnd.choice(live)
            self.orders[oid]["state"] = "cancelled"
            if self.up:
                self.conn.append(self._snapshot(oid))

    def deliver(self) -> None:
        w, now = self.rig.worker, self.rig.now
        if self.pictures and (not self.conn or self.rnd.random() < 0.3):
            w.on_portfolio(self.pictures.pop(0), now)
            return
        if not self.conn:
            return
        message = self.conn.pop(self.rnd.randrange(min(2, len(self.conn))))  # answers and notifications cross
        if isinstance(message, CommandResult):
            w.on_result(message, now)
        elif isinstance(message, CommandFailed):
            w.on_failed(message, now)
        elif isinstance(message, OrderUpdate):
            w.on_order_update(message, now)
        elif isinstance(message, UserTrade):
            w.on_user_trade(message, now)

    def drop_link(self) -> None:
        self.up = False
        self.conn.clear()
        self.pictures.clear()
        self.rig.worker.on_connection(False, self.rig.now)

    def restore_link(self) -> None:
        self.up = True
        self.rig.worker.on_connection(True, self.rig.now)
        self.pictures.append(self.picture())

    def exposure(self) -> float:
        """The leg's fills plus what is still open at the exchange: never above the leg."""
        return sum(o["amount"] if o["state"] == "open" else o["filled"] for o in self.orders.values())

    def filled(self) -> float:
        return sum(o["filled"] for o in self.orders.values())


@given(st.integers(0, 2**32 - 1))
def test_no_fault_of_the_link_or_the_exchange_makes_a_leg_trade_more_than_its_amount(seed: int) -> None:
    import random
    rnd = random.Random(seed)
    rig = Rig(WorkLimits(reprice_after_s=3.0, steps_to_mid=3, max_reprices=5, answer_wait_s=10.0,
                         unknown_wait_s=30.0, max_orders=400, max_orders_per_minute=400, max_rejections=50,
                         retry_after_reject_s=2.0))
    rig.ready(top(CALL, 0.0100, 0.0200))
    amount = 1.0
    exchange = FaultyExchange(rig, rnd)
    rig.start(leg(1, CALL, "buy", amount, 0.0100, 0.0200))
    done = 0
    for _ in range(400):
        for command in rig.out[done:]:
            exchange.take(command)
        done = len(rig.out)
        r = rnd.random()
        if r < 0.45:
            exchange.deliver()
        elif r < 0.65:
            exchange.fill()
        elif r < 0.85:
            rig.advance(rnd.choice((0.5, 3.0, 11.0, 31.0)))
        elif r < 0.9:
            bid = round(0.0100 + rnd.randint(-4, 4) * TICK, 6)
            rig.worker.on_top(top(CALL, bid, round(bid + rnd.randint(2, 20) * TICK, 6)), rig.now)
        elif r < 0.93 and exchange.up:
            exchange.drop_link()
        elif r < 0.97 and not exchange.up:
            exchange.restore_link()
        elif r < 0.99:
            exchange.cancel_one()
        elif r < 0.992 and rig.worker.working:
            rig.worker.cancel(CancelPlan(origin="console", request_key="k", plan_id=7), rig.now)
        assert exchange.exposure() <= amount + 1e-9, (seed, exchange.orders)
    # Quiet: everything said, the link up: what the worker says it filled is what filled.
    if not exchange.up:
        exchange.restore_link()
    for _ in range(200):
        for command in rig.out[done:]:
            exchange.take(command)
        done = len(rig.out)
        if exchange.conn or exchange.pictures:
            exchange.deliver()
        else:
            rig.advance(31.0)
        assert exchange.exposure() <= amount + 1e-9, (seed, exchange.orders)
    status = rig.worker.status(rig.now)
    if status.state is PlanState.DONE:
        assert status.legs[0].filled == pytest.approx(exchange.filled())
    if not rig.worker.working:  # a plan that ended (done, cancelled, stopped) left nothing open
        assert not [o for o in exchange.orders.values() if o["state"] == "open"], (seed, exchange.orders)


def test_a_plan_order_cancelled_by_the_traders_request_stops_the_plan_not_placed_again() -> None:
    # The console's "ca" (cancel every order of the account), or the web interface: Deribit says
    # cancel_reason "user_request". Placing the leg again at once would defeat the trader's stop.
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    rig.worker.on_order_update(msgspec.structs.replace(update(place, state="cancelled", filled=0.3),
                                                       cancel_reason="user_request"), rig.now)
    assert len(rig.sent()) == 1
    status = rig.status()
    assert status.state is PlanState.STOPPED and "cancelled" in status.message
    assert status.legs[0].filled == pytest.approx(0.3)


@pytest.mark.parametrize("amount", [math.nan, math.inf, -1.0])
def test_a_top_at_our_price_with_an_absurd_size_is_not_taken_as_the_others_bid(amount: float) -> None:
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0200))
    rig.start(leg(1, CALL, "buy", 1.0, 0.0100, 0.0200))
    place = rig.sent()[0]
    rig.accept(place)
    rig.worker.on_top(top(CALL, place.price, 0.0200, bid_amount=amount), rig.now)
    assert rig.worker.books[CALL].others_bid == 0.0100


def test_a_cancel_of_an_order_its_plan_left_open_that_failed_is_sent_again_at_the_next_picture() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    rig.worker.on_user_trade(trade(place, 1.0, "t1", state="filled"), rig.now)  # plan 7 done
    left = (update(place, order_id="mine-2"),)
    rig.worker.on_portfolio(portfolio(open_orders=left), rig.now)
    (cancel,) = rig.sent(CancelOrder)
    rig.worker.on_failed(CommandFailed(request_key=cancel.request_key, origin=ORIGIN, method="private/cancel",
                                       code=-1, message="not connected"), rig.now)
    rig.worker.on_portfolio(portfolio(open_orders=left), rig.now)
    assert [c.order_id for c in rig.sent(CancelOrder)] == ["mine-2", "mine-2"]
    rig.worker.on_portfolio(portfolio(open_orders=left), rig.now)  # asked again, not answered yet: once
    assert len(rig.sent(CancelOrder)) == 2


def test_a_fill_of_a_lost_order_seen_after_it_was_closed_unknown_is_counted() -> None:
    # The place's answer was lost, the exchange's picture showed no such order (it had filled), the
    # plan stopped; the fill's notification then comes: the status must not say less than filled.
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.worker.on_failed(CommandFailed(request_key=place.request_key, origin=ORIGIN, method="private/buy",
                                       code=ANSWER_LOST, message="lost"), rig.now)
    rig.now += 1.0
    rig.worker.on_portfolio(portfolio(at=rig.now), rig.now)
    assert rig.status().state is PlanState.STOPPED
    rig.worker.on_user_trade(trade(place, 1.0, "t1", order_id="x-9", state="filled"), rig.now)
    assert rig.worker.status(rig.now).legs[0].filled == pytest.approx(1.0)
    assert len(rig.sent()) == 1


# -- old tops -----------------------------------------------------------------------------------------
def test_a_top_not_confirmed_within_the_bound_is_not_traded_on() -> None:
    """A BookKeeper restarted since holds no book and sends nothing: the last top it sent is
    frozen. A top older than max_top_age_s is refused; one older than half of it is asked to be
    confirmed; once confirmed, the leg goes on."""
    rig = Rig()
    rig.ready(top(CALL, 0.0100, 0.0120))
    rig.keeper = False
    rig.now += LIMITS.max_top_age_s + 1.0
    rig.start(BUY_CALL)
    assert rig.sent() == [] and "top not confirmed" in rig.status().message
    asked = [m for m in rig.out if isinstance(m, WatchOptionTops) and m.refresh]
    assert [(m.currency, m.names) for m in asked] == [("BTC", (CALL,))]
    rig.keeper = True
    rig.confirm_tops()
    assert [p.price for p in rig.sent()] == [0.0105]


def test_a_resting_order_is_not_repriced_from_a_frozen_top() -> None:
    rig = working_rig(BUY_CALL)
    place = rig.sent()[0]
    rig.accept(place)
    rig.keeper = False  # restarted: it sends nothing any more
    for _ in range(5):
        rig.advance(LIMITS.reprice_after_s)
        for edit in rig.sent(EditOrder)[-1:]:
            rig.answer_edit(edit, place)
    assert len(rig.sent(EditOrder)) == 1  # at 3 s, the top still young enough; never from one 6 s old or more
    assert "top not confirmed" in rig.status().message
    # The keeper's book is back: its top comes, and the reprices go on.
    rig.worker.on_top(top(CALL, 0.0100, 0.0140), rig.now)
    rig.advance(LIMITS.reprice_after_s)
    assert [e.price for e in rig.sent(EditOrder)] == [0.0110, 0.0115]


# -- absolute caps ------------------------------------------------------------------------------------
CAPS = PlanCaps(max_legs=2, max_leg_notional_usd=100_000.0, max_notional_usd=150_000.0, max_premium_usd=1_500.0)


@pytest.mark.parametrize(("legs", "why"), [
    ((leg(1, CALL, "buy", 1.0, 0.0100, 0.0120), leg(2, PUT, "sell", 0.5, 0.0200, 0.0230),
      leg(3, "BTC-25DEC26-80000-C", "buy", 0.1, 0.0010, 0.0012)), "more than exposure.max_legs 2"),
    ((leg(1, CALL, "buy", 2.0, 0.0100, 0.0120),), "more than exposure.max_leg_notional_usd"),
    ((leg(1, CALL, "buy", 1.5, 0.0100, 0.0120), leg(2, PUT, "sell", 1.5, 0.0001, 0.0002)),
     "more than exposure.max_notional_usd"),
    ((leg(1, CALL, "buy", 1.5, 0.0200, 0.0220),), "more than exposure.max_premium_usd"),
    ((leg(1, CALL, "buy", 0.15, 0.0100, 0.0120),), "not a positive multiple of the minimum trade amount 0.1"),
    ((leg(1, CALL, "buy", 0.05, 0.0100, 0.0120),), "not a positive multiple of the minimum trade amount 0.1"),
    ((msgspec.structs.replace(leg(1, CALL, "buy", 1.0, 0.0100, 0.0120), underlying_price=math.nan),),
     "forward nan is not a price"),
])
def test_a_plan_beyond_the_exposure_limits_is_refused_at_work_plan(legs: tuple[PlanLeg, ...], why: str) -> None:
    """The plan came over the bus: the worker checks the [exposure] limits itself (defence in depth)."""
    rig = Rig()
    rig.worker = PlanWorker(rig.out.append, rig.log, LIMITS, CAPS)
    rig.ready(top(CALL, 0.0100, 0.0120), top(PUT, 0.0200, 0.0230))
    rig.start(*legs)
    assert rig.orders() == []
    status = rig.status()
    assert status.state is PlanState.STOPPED and status.message.startswith("refused: ") and why in status.message


def test_a_leg_whose_metadata_comes_later_is_checked_before_its_first_order() -> None:
    rig = Rig()
    rig.worker.on_connection(True, rig.now)
    rig.worker.on_portfolio(portfolio(at=rig.now), rig.now)
    rig.start(leg(1, CALL, "buy", 0.15, 0.0100, 0.0120))
    rig.worker.on_top(top(CALL, 0.0100, 0.0120), rig.now)
    assert rig.status().state is PlanState.WORKING and rig.orders() == []
    rig.worker.on_instruments(InstrumentsLoaded(currency="BTC", instruments=(instrument(CALL),)), rig.now)
    assert rig.orders() == []
    assert rig.status().state is PlanState.STOPPED and "minimum trade amount" in rig.status().message


def test_the_assistant_takes_its_caps_from_the_exposure_settings() -> None:
    exposure = make_settings().exposure
    caps = PlanCaps.of(exposure)
    assert (caps.max_legs, caps.max_leg_notional_usd, caps.max_notional_usd, caps.max_premium_usd) == (
        exposure.max_legs, exposure.max_leg_notional_usd, exposure.max_notional_usd, exposure.max_premium_usd)


# -- a (re)started Assistant ----------------------------------------------------------------------------
def test_a_started_assistant_cancels_the_plan_orders_it_does_not_work_once_reconciled_and_says_so() -> None:
    """Plan orders left open by an earlier run rest unmanaged (nobody reprices or stops them):
    at the currency's first reconciled picture they are cancelled by id, never another label's."""
    rig = Rig()
    w = rig.worker
    place = PlaceOrder(instrument_name=CALL, side="buy", amount=1.0, origin=ORIGIN, request_key="x", price=0.0105,
                       label="plan-3-1")
    left = (update(place, order_id="old-1"), update(place, order_id="old-2", label="plan-4-2"),
            update(place, order_id="h-1", label="hedge-1765000000000"), update(place, order_id="m-1", label="x"),
            update(place, order_id="v-1", label="vega-1765000000000"))
    # Not while the picture is not reconciled, is reconciling, or the link cannot trade.
    w.on_portfolio(portfolio(reconciled=False, open_orders=left), rig.now)
    w.on_connection(True, rig.now)
    w.on_portfolio(portfolio(reconciled=False, open_orders=left), rig.now)
    w.on_portfolio(portfolio(reconciling=True, open_orders=left), rig.now)
    assert rig.sent(CancelOrder) == []
    w.on_portfolio(portfolio(open_orders=left), rig.now)
    assert [(c.order_id, c.origin) for c in rig.sent(CancelOrder)] == [("old-1", ORIGIN), ("old-2", ORIGIN)]
    said = rig.status()
    assert said.currency == "BTC" and said.message == (
        "the assistant (re)started: cancelled 2 BTC plan orders it does not work (plan-3-1, plan-4-2)")
    assert [e for _, e, _ in rig.log.lines if e == "plan_orders_left_open_cancelled"]
    # Once: the next picture (the cancels' answers not in yet) sends nothing again...
    w.on_portfolio(portfolio(open_orders=left), rig.now)
    assert len(rig.sent(CancelOrder)) == 2
    # ...unless a cancel failed: then it is sent again.
    w.on_failed(CommandFailed(request_key=f"{ORIGIN}-orphan-old-2", origin=ORIGIN, method="private/cancel",
                              code=10028, message="too many requests"), rig.now)
    w.on_portfolio(portfolio(open_orders=left), rig.now)
    assert [c.order_id for c in rig.sent(CancelOrder)] == ["old-1", "old-2", "old-2"]


def test_a_started_assistant_without_a_portfolio_picture_asks_for_a_reconcile() -> None:
    """On a quiet account the Portfolio says nothing until something changes: a restarted
    Assistant connected for answer_wait_s without a reconciled picture asks for a reconcile, once."""
    rig = Rig()
    rig.worker = PlanWorker(rig.out.append, rig.log, LIMITS, currencies=("BTC", "ETH"))
    rig.worker.on_connection(True, rig.now)
    rig.worker.on_portfolio(portfolio(), rig.now)  # BTC's came; ETH's did not
    assert rig.sent(ReconcilePortfolio) == []
    assert rig.worker.next_due() == pytest.approx(T0 + LIMITS.answer_wait_s)
    rig.advance(LIMITS.answer_wait_s)
    (asked,) = rig.sent(ReconcilePortfolio)
    assert asked.currencies == ("ETH",) and asked.origin == ORIGIN
    rig.advance(LIMITS.answer_wait_s)
    assert len(rig.sent(ReconcilePortfolio)) == 1 and rig.worker.next_due() is None
    # With every picture in, nothing is asked.
    rig = Rig()
    rig.worker = PlanWorker(rig.out.append, rig.log, LIMITS, currencies=("BTC",))
    rig.worker.on_connection(True, rig.now)
    rig.worker.on_portfolio(portfolio(), rig.now)
    rig.advance(LIMITS.answer_wait_s)
    assert rig.sent(ReconcilePortfolio) == []
