"""One hedge order on its own (desk.hedge_order): its phases and the moves between them, fill
accounting from order states and trades, and which labels a hedger's tag owns."""

from __future__ import annotations

import itertools

import pytest

from desk.hedge_order import TRANSITIONS, HedgeOrder, IllegalTransition, OrderTag
from messages.account import OrderUpdate, UserTrade
from messages.hedging import HedgePhase

SENT, RESTING, AMENDING, SETTLING, UNKNOWN, IDLE = (
    HedgePhase.SENT, HedgePhase.RESTING, HedgePhase.AMENDING, HedgePhase.SETTLING, HedgePhase.UNKNOWN,
    HedgePhase.IDLE)


def placed(**fields: object) -> HedgeOrder:
    values: dict[str, object] = dict(label="hedge-7", request_key="hedge-7", side="sell", amount=100.0,
                                     order_type="limit", placed_at=10.0, size_before=-50.0, price=40000.5, due=15.0)
    values.update(fields)
    return HedgeOrder(**values)  # type: ignore[arg-type]


def update(state: str, filled: float, label: str = "hedge-7", order_id: str = "o-1") -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name="BTC-PERPETUAL", order_state=state, order_type="limit",
                       direction="sell", amount=100.0, filled_amount=filled, label=label,  # type: ignore[arg-type]
                       price=40000.5, last_update_timestamp=1)


def trade(trade_id: str, amount: float, order_id: str = "o-1") -> UserTrade:
    return UserTrade(trade_id=trade_id, order_id=order_id, instrument_name="BTC-PERPETUAL", direction="sell",
                     amount=amount, price=40000.5, fee=0.0, fee_currency="BTC", label="hedge-7", state="open",
                     timestamp=1)


def moved(order: HedgeOrder, to: HedgePhase) -> None:
    """Move ``order`` to ``to`` with the one method that leads there."""
    if to == RESTING:
        order.rest(1.0)
    elif to == AMENDING:
        order.cancel(1.0)
    elif to == SETTLING:
        order.settle(0.0, 0.5, 1.0)
    elif to == UNKNOWN:
        order.lose(1.0, 2.0)
    elif to == IDLE:
        order.finish()
    else:
        raise AssertionError(f"no method leads to {to}")


def reach(phase: HedgePhase) -> HedgeOrder:
    """A fresh order brought to ``phase`` through legal moves."""
    order = placed()
    path = {SENT: [], RESTING: [RESTING], AMENDING: [RESTING, AMENDING], SETTLING: [SETTLING],
            UNKNOWN: [UNKNOWN], IDLE: [IDLE]}[phase]
    for step in path:
        moved(order, step)
    assert order.phase == phase
    return order


def test_a_placed_order_is_sent_and_awaits_its_answer() -> None:
    order = placed()
    assert order.phase == SENT and order.following and order.pending_key is None
    assert order.signed_filled == 0.0 and order.is_ours("hedge-7", "unknown-id")


@pytest.mark.parametrize(("start", "to"), list(itertools.product(list(TRANSITIONS), list(HedgePhase))))
def test_every_move_is_legal_or_refused(start: HedgePhase, to: HedgePhase) -> None:
    if to == SENT:
        return  # nothing leads back to SENT: an order is placed once
    order = reach(start)
    if to in TRANSITIONS[start]:
        moved(order, to)
        assert order.phase == to
    else:
        with pytest.raises(IllegalTransition):
            moved(order, to)
        assert order.phase == start  # a refused move changes nothing


def test_the_moves_allowed() -> None:
    assert TRANSITIONS[SENT] == {RESTING, SETTLING, UNKNOWN, IDLE}
    assert TRANSITIONS[RESTING] == {AMENDING, SETTLING, UNKNOWN, IDLE}
    assert TRANSITIONS[AMENDING] == {RESTING, SETTLING, UNKNOWN, IDLE}
    assert TRANSITIONS[UNKNOWN] == {AMENDING, SETTLING}  # only the exchange's picture resolves it
    assert TRANSITIONS[SETTLING] == {IDLE}
    assert TRANSITIONS[IDLE] == set()  # dropped: final
    assert SENT not in set().union(*TRANSITIONS.values())


def test_an_edit_then_its_answer_and_a_cancel_carry_their_own_keys() -> None:
    order = placed()
    order.rest(20.0)
    assert order.phase == RESTING and order.due == 20.0
    key = order.amend(40001.0, 25.0)
    assert key == "hedge-7/edit1" == order.pending_key and order.price == 40001.0 and order.due == 25.0
    assert order.phase == AMENDING and not order.cancelling
    order.rest(30.0)  # the edit answered: waiting again, nothing pending
    assert order.phase == RESTING and order.pending_key is None
    key = order.cancel(35.0)
    assert key == "hedge-7/cancel2" and order.cancelling and order.phase == AMENDING
    with pytest.raises(IllegalTransition):
        order.amend(40002.0, 40.0)  # no edit of an order being cancelled...
    assert order.pending_key == "hedge-7/cancel2" and order.amends == 2  # ...and nothing of it stuck


def test_a_lost_answer_waits_for_the_exchange_then_cancel_or_settle() -> None:
    order = placed()
    order.rest(20.0)
    order.amend(40001.0, 25.0)
    order.lose(26.0, 31.0)
    assert order.phase == UNKNOWN and order.unknown_since == 26.0 and order.pending_key is None
    assert not order.reconcile_asked and order.due == 31.0 and not order.following
    with pytest.raises(IllegalTransition):
        order.rest(40.0)  # its own updates cannot resolve it
    with pytest.raises(IllegalTransition):
        order.finish()
    found = order.still_open([update("filled", 100.0), update("open", 30.0, order_id="o-9"),
                              update("open", 0.0, label="hedge-8", order_id="o-8")])
    assert found is not None and found.order_id == "o-9"
    order.take_state(found)
    assert order.order_id == "o-9" and order.filled == 30.0
    assert order.cancel(41.0) == "hedge-7/cancel2" and order.phase == AMENDING


def test_settling_expects_the_position_and_only_finishes() -> None:
    order = placed()
    order.take_state(update("filled", 100.0))
    order.settle(order.size_before + order.signed_filled, 40.0, 50.0)
    assert order.phase == SETTLING and order.expected_size == -150.0 and order.due == 50.0
    assert not order.following
    for illegal in (lambda: order.rest(1.0), lambda: order.cancel(1.0), lambda: order.lose(1.0, 2.0),
                    lambda: order.settle(0.0, 0.5, 1.0)):
        with pytest.raises(IllegalTransition):
            illegal()
    order.finish()
    assert order.phase == IDLE and order.due is None and not order.following
    with pytest.raises(IllegalTransition):
        order.finish()


def test_fills_from_states_and_trades_count_once_and_the_larger_total_wins() -> None:
    order = placed()
    order.take_trade(trade("t-1", 30.0))
    assert order.order_id == "o-1" and order.filled == 30.0
    order.take_trade(trade("t-1", 30.0))  # the same trade again (answer and subscription)
    assert order.filled == 30.0 and order.traded == 30.0
    order.take_state(update("open", 20.0))  # an older state: lags the trades
    assert order.filled == 30.0
    order.take_state(update("open", 60.0))  # a newer state: ahead of the trades
    assert order.filled == 60.0
    order.take_trade(trade("t-2", 10.0))
    assert order.filled == 60.0 and order.traded == 40.0
    assert order.signed_filled == -60.0 and placed(side="buy", filled=5.0).signed_filled == 5.0
    assert order.is_ours("someone-else", "o-1") and not order.is_ours("hedge-8", "o-2")


def test_a_tag_owns_its_prefix_and_a_number_only() -> None:
    delta = OrderTag(origin="hedger", prefix="hedge-")
    vega = OrderTag(origin="vega_hedger", prefix="hedge-v-")
    assert delta.label(17) == "hedge-17" and delta.owns("hedge-17") and delta.owns("hedge-0")
    for label in ("hedge-", "hedge-v-3", "hedge-manual", "hedge-12a", "manual_api_3", "", "xhedge-1", "HEDGE-1"):
        assert not delta.owns(label), label
    assert vega.owns("hedge-v-3") and not vega.owns("hedge-3")
    assert delta.orphan_key("o-5") == "hedger-orphan-o-5"


@pytest.mark.parametrize("prefix", ["", "hedge-1", "h2"])
def test_a_prefix_ending_in_a_digit_is_refused(prefix: str) -> None:
    # "hedge-1" + "2" would be "hedge-12", a label "hedge-" owns too: two tags must never share one.
    with pytest.raises(ValueError):
        OrderTag(origin="hedger", prefix=prefix)


def test_two_tags_never_own_the_same_label() -> None:
    tags = [OrderTag(origin="a", prefix=p) for p in ("hedge-", "hedge-v-", "h-", "hedge-x", "vega-")]
    labels = [t.label(n) for t in tags for n in (0, 1, 12, 123456789)]
    for label in labels:
        assert sum(t.owns(label) for t in tags) == 1, label
