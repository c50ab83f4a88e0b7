"""Activating the hedger: the plan it states (first order, the position it treats as the hedge),
the confirmation a large first order or a position it did not make waits for, the plan's expiry
and staleness, the fills it counts as its own, and the alert it leaves when it switches itself off."""

from __future__ import annotations

import msgspec
import pytest

from messages.account import OrderUpdate, UserTrade
from messages.commands import CancelOrder, CommandFailed, CommandResult
from messages.hedging import HedgeActivation, HedgeCode, HedgerControl
from messages.market import InstrumentsLoaded
from tests.support.hedge_rig import PERP, Rig, perpetual

OFF, AWAITING, ACTIVE = HedgeActivation.OFF, HedgeActivation.AWAITING_CONFIRMATION, HedgeActivation.ACTIVE


def activate(rig: Rig, action: str = "activate", plan_id: int = 0) -> None:
    rig.h.on_control(HedgerControl(action=action, origin="console", request_key=f"k-{action}",  # type: ignore[arg-type]
                                   plan_id=plan_id), rig.now)


def confirm(rig: Rig, plan_id: int | None = None) -> None:
    plan = rig.h.plan
    activate(rig, "confirm", plan.plan_id if plan_id is None and plan is not None else plan_id or 0)


def trade(label: str, amount: float, direction: str = "sell", trade_id: str = "t-1",
          instrument: str = PERP) -> UserTrade:
    return UserTrade(trade_id=trade_id, order_id="o-1", instrument_name=instrument, timestamp=1,
                     direction=direction, price=40000.0, amount=amount, fee=0.0, fee_currency="BTC",  # type: ignore[arg-type]
                     label=label, state="filled")


def prepared(option_size: float = 0.0, hedge_size: float = 0.0, delta: float = 0.5, **settings: object) -> Rig:
    """Connected, listed, quoted, reconciled, hedging off: ready to be activated."""
    rig = Rig(**settings)
    rig.h.on_connection(True, rig.now)
    rig.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),), at=rig.now), rig.now)
    rig.quote()
    rig.option_size, rig.hedge_size = option_size, hedge_size
    rig.delta(delta)
    rig.portfolio()
    assert rig.h.activation is OFF and rig.sent() == []
    return rig


# -- the plan, and when it waits -------------------------------------------------------------------
def test_a_manual_long_in_the_hedge_instrument_waits_for_confirmation() -> None:
    """The issue's case: +3,000 USD long perpetual of the trader's own, no options."""
    rig = prepared(hedge_size=3000.0)
    activate(rig)
    assert rig.sent() == [] and rig.sent(CancelOrder) == []
    status = rig.last_status()
    assert status.activation is AWAITING and not status.active and status.request_key == "k-activate"
    plan = status.plan
    assert plan is not None and (plan.side, plan.amount, plan.instrument) == ("sell", 3000.0, PERP)
    assert (plan.hedge_position, plan.own_position, plan.not_made) == (3000.0, 0.0, 3000.0)
    assert "did not make" in plan.confirm
    text = status.message
    assert "first order: sell 3,000 USD of BTC-PERPETUAL (market)" in text
    assert "treats the whole position in BTC-PERPETUAL (+3,000 USD, +3,000 USD of it not made by the hedger)" in text
    assert "NOT on yet" in text and "activate delta hedging confirm" in text
    # The market moves a little, the plan waits: still nothing.
    for _ in range(5):
        rig.tick(1.0)
        rig.quote()
        rig.portfolio()
        rig.h.on_time(rig.now)
    assert rig.sent() == []
    confirm(rig)
    [order] = rig.sent()
    assert (order.side, order.amount, order.instrument_name) == ("sell", 3000.0, PERP)
    status = rig.last_status()
    assert status.activation is ACTIVE and status.active and status.plan is None
    assert "plan 1 confirmed" in status.message and "hedging_activated" in rig.log.names("info")


def test_a_small_first_order_and_no_foreign_position_activate_at_once_saying_what_comes() -> None:
    rig = prepared(option_size=1.0, delta=0.5)  # 20,000 USD, below the default 50,000
    activate(rig)
    [order] = rig.sent()
    assert (order.side, order.amount) == ("sell", 20000.0)
    status = [s for s in rig.out if getattr(s, "request_key", "") == "k-activate"][-1]
    assert status.activation is ACTIVE  # type: ignore[attr-defined]
    assert "first order: sell 20,000 USD of BTC-PERPETUAL (market); it treats the whole position in " \
           "BTC-PERPETUAL (+0 USD) as the hedge" in status.message  # type: ignore[attr-defined]


def test_within_the_band_it_says_nothing_is_sent_now() -> None:
    rig = prepared(option_size=1.0, delta=0.0)
    activate(rig)
    assert rig.sent() == [] and rig.h.activation is ACTIVE
    assert "first order: nothing now (" in rig.last_status().message


def test_a_first_order_above_the_setting_waits_for_confirmation() -> None:
    rig = prepared(option_size=1.0, delta=0.5, confirm_above_usd=10000.0)
    activate(rig)
    assert rig.sent() == [] and rig.h.activation is AWAITING
    plan = rig.h.plan
    assert plan is not None and plan.amount == 20000.0 and "above hedger.confirm_above_usd (10,000 USD)" in plan.confirm
    confirm(rig)
    assert [(o.side, o.amount) for o in rig.sent()] == [("sell", 20000.0)]


def test_a_first_order_it_cannot_state_waits_and_nothing_is_cancelled_meanwhile() -> None:
    rig = prepared(option_size=1.0, delta=0.5)
    rig.tick(10.5)  # the quote and the option's ticker are stale: no decision
    activate(rig)
    assert rig.h.activation is AWAITING and rig.h.plan is not None and rig.h.plan.side is None
    assert "cannot say yet" in rig.h.plan.confirm and rig.sent() == []
    assert "first order: it cannot say yet (the quote of BTC-PERPETUAL is 10.5 s old" in rig.last_status().message
    confirm(rig)  # a confirmation is no blank cheque
    assert rig.sent() == [] and rig.h.activation is AWAITING
    assert "confirmation refused (it still cannot say what it will send first" in rig.last_status().message
    rig.quote()
    rig.delta(0.5)
    confirm(rig)  # the data is back: the plan it can state now is shown, and waits for its own confirmation
    assert rig.sent() == [] and "is stale: its first order changed" in rig.last_status().message
    assert "first order: sell 20,000 USD" in rig.last_status().message
    confirm(rig)
    assert [(o.side, o.amount) for o in rig.sent()] == [("sell", 20000.0)]


def test_without_a_reconciled_portfolio_it_cannot_state_its_first_order() -> None:
    rig = Rig()
    rig.h.on_connection(True, rig.now)
    rig.h.instruments_loaded(InstrumentsLoaded(currency="BTC", instruments=(perpetual(),), at=rig.now), rig.now)
    rig.quote()
    activate(rig)  # no portfolio at all yet
    assert rig.h.plan is not None and rig.h.plan.hedge_position is None
    assert "it treats the whole position in BTC-PERPETUAL (not known yet) as the hedge" in rig.last_status().message
    rig.option_size = 1.0
    rig.delta(0.0)
    rig.portfolio(reconciled=False)
    activate(rig)
    assert rig.h.activation is AWAITING and rig.h.plan is not None and rig.h.plan.side is None
    assert "cannot say yet" in rig.h.plan.confirm and rig.h.plan.code == HedgeCode.UNRECONCILED
    rig.portfolio()  # now it can: within the band, so the plan shown is still the plan
    confirm(rig)
    assert rig.h.active and rig.sent() == []


def test_orphans_of_an_earlier_run_are_not_cancelled_while_awaiting_confirmation() -> None:
    rig = prepared(hedge_size=3000.0)
    orphan = update("hedge-123", "open", 50.0, order_id="old-1")
    rig.portfolio(open_orders=(orphan,))
    activate(rig)
    assert rig.h.activation is AWAITING and rig.sent(CancelOrder) == [] and rig.sent() == []
    assert rig.h.plan is not None and "of an earlier run are open and are cancelled first" in rig.h.plan.reason
    confirm(rig)
    [cancel] = rig.sent(CancelOrder)
    assert cancel.order_id == "old-1" and rig.sent() == []
    rig.portfolio()  # gone: now the stated order
    assert [(o.side, o.amount) for o in rig.sent()] == [("sell", 3000.0)]


# -- stale, expired, changed, cancelled ------------------------------------------------------------
def test_a_confirmation_of_another_plan_is_refused_showing_the_new_one() -> None:
    rig = prepared(hedge_size=3000.0)
    activate(rig)
    first = rig.h.plan
    assert first is not None
    confirm(rig, plan_id=first.plan_id + 7)
    assert rig.sent() == [] and rig.h.activation is AWAITING
    second = rig.h.plan
    assert second is not None and second.plan_id != first.plan_id
    message = rig.last_status().message
    assert f"confirmation refused (it names plan {first.plan_id + 7}" in message
    assert f"new plan {second.plan_id}: first order: sell 3,000 USD" in message
    assert "hedge_confirmation_refused" in rig.log.names("warning")
    confirm(rig, plan_id=first.plan_id)  # the old one is no good either
    assert rig.sent() == []
    confirm(rig)
    assert [(o.side, o.amount) for o in rig.sent()] == [("sell", 3000.0)]


def test_a_plan_expires_back_to_off_and_a_late_confirmation_sends_nothing() -> None:
    rig = prepared(hedge_size=3000.0, confirm_within_s=60.0)
    activate(rig)
    plan = rig.h.plan
    assert plan is not None and rig.h.next_due() == plan.expires_at == rig.now + 60.0
    rig.tick(59.0)
    rig.h.on_time(rig.now)
    assert rig.h.activation is AWAITING
    rig.tick(1.5)
    rig.h.on_time(rig.now)
    status = rig.last_status()
    assert status.activation is OFF and status.plan is None and "not confirmed within 60 s" in status.message
    confirm(rig, plan_id=plan.plan_id)
    assert rig.sent() == [] and rig.h.activation is AWAITING
    assert "confirmation refused (no plan awaits confirmation)" in rig.last_status().message


def test_an_expired_plan_is_refused_even_before_the_timer_fires() -> None:
    rig = prepared(hedge_size=3000.0, confirm_within_s=60.0)
    activate(rig)
    plan = rig.h.plan
    assert plan is not None
    rig.tick(61.0)
    rig.quote()
    confirm(rig, plan_id=plan.plan_id)
    assert rig.sent() == [] and f"plan {plan.plan_id} expired after 60 s" in rig.last_status().message


def test_a_plan_that_changed_materially_is_refused() -> None:
    rig = prepared(hedge_size=3000.0)
    activate(rig)
    rig.hedge_size = 5000.0  # the trader bought 2,000 more meanwhile
    rig.portfolio()
    confirm(rig)
    assert rig.sent() == []
    message = rig.last_status().message
    assert "is stale: its first order changed" in message and "first order: sell 5,000 USD" in message
    confirm(rig)
    assert [(o.side, o.amount) for o in rig.sent()] == [("sell", 5000.0)]


def test_a_move_inside_the_band_does_not_make_the_plan_stale() -> None:
    rig = prepared(option_size=1.0, hedge_size=-20000.0, delta=0.6)  # sell 4,000 more; -20,000 not its own
    activate(rig)
    plan = rig.h.plan
    assert plan is not None and plan.amount == 4000.0
    rig.tick()
    rig.delta(0.6015)  # 60 USD more: less than the band (0.0025 BTC = 100 USD)
    confirm(rig)
    [order] = rig.sent()
    assert order.side == "sell" and abs(order.amount - 4000.0) <= 100.0


def test_deactivate_cancels_a_pending_confirmation() -> None:
    rig = prepared(hedge_size=3000.0)
    activate(rig)
    plan = rig.h.plan
    assert plan is not None
    activate(rig, "deactivate")
    status = rig.last_status()
    assert status.activation is OFF and status.plan is None and rig.h.next_due() is None
    assert f"plan {plan.plan_id} awaiting confirmation cancelled" in status.message
    confirm(rig, plan_id=plan.plan_id)
    assert rig.sent() == [] and not rig.h.active


# -- its own fills ---------------------------------------------------------------------------------
def test_only_its_own_fills_this_run_are_its_position() -> None:
    rig = prepared(option_size=1.0, delta=0.5)
    activate(rig)
    [order] = rig.sent()
    first, second = trade(order.label, 12000.0, trade_id="t-1"), trade(order.label, 8000.0, trade_id="t-2")
    rig.h.take_own_trade(first)
    rig.h.take_own_trade(first)  # the answer and the notification
    rig.h.take_own_trade(second)
    rig.h.take_own_trade(trade("manual_api_4", 500.0, direction="buy", trade_id="t-3"))  # the trader's
    rig.h.take_own_trade(trade("hedge-999", 500.0, trade_id="t-4"))  # an earlier run's order
    rig.h.take_own_trade(trade(order.label, 1.0, trade_id="t-5", instrument="BTC-29DEC23"))
    assert rig.h.own_position == -20000.0
    rig.h.on_result(msgspec.structs.replace(_filled(order.request_key, order.label, 20000.0),
                                            trades=(first, second)), rig.now)
    rig.hedge_size = -20000.0
    rig.shown += [first.trade_id, second.trade_id]
    rig.portfolio()
    activate(rig, "deactivate")
    activate(rig)  # all of it its own: no confirmation
    assert rig.h.activation is ACTIVE and rig.last_status().activation is ACTIVE
    # The trader adds 30 USD there: more than half a contract it did not make.
    activate(rig, "deactivate")
    rig.hedge_size = -19970.0
    rig.portfolio()
    activate(rig)
    assert rig.h.activation is AWAITING and rig.h.plan is not None and rig.h.plan.not_made == pytest.approx(30.0)


def update(label: str, state: str, amount: float, filled: float = 0.0, order_id: str = "o-1") -> OrderUpdate:
    return OrderUpdate(order_id=order_id, instrument_name=PERP, order_state=state, order_type="market",
                       direction="sell", amount=amount, filled_amount=filled, label=label,  # type: ignore[arg-type]
                       last_update_timestamp=1)


def _filled(key: str, label: str, amount: float) -> CommandResult:
    return CommandResult(request_key=key, origin="hedger", method="private/sell", result="{}",
                         order=update(label, "filled", amount, amount))


# -- the alert -------------------------------------------------------------------------------------
def test_switching_itself_off_leaves_an_alert_until_acknowledged() -> None:
    rig = Rig(retry_after_reject_s=0.0, max_rejections=2)
    rig.ready(option_size=1.0, delta=0.5)
    for _ in range(2):
        command = rig.sent()[-1]
        rig.h.on_failed(CommandFailed(request_key=command.request_key, origin="hedger", method="private/sell",
                                      code=10009, message="not_enough_funds"), rig.now)
        rig.tick()
        rig.delta(0.5)
    status = rig.last_status()
    assert not status.active and "2 hedge orders rejected in a row" in status.alert
    activate(rig, "status")
    assert rig.last_status().alert == status.alert  # still there
    activate(rig, "acknowledge")
    assert rig.last_status().alert == "" and "alert acknowledged by console" in rig.last_status().message
    assert "hedge_alert_acknowledged" in rig.log.names("info")


def test_an_alert_is_cleared_by_activating_again_and_not_set_by_a_deactivation() -> None:
    rig = prepared(option_size=1.0, delta=0.0)
    assert rig.last_status().alert == "" if rig.out else rig.h.alert == ""
    rig.h.safe_shutdown("the connection failed past its restart limit", rig.now)
    assert rig.last_status().alert.startswith("safe shutdown: the connection failed")
    activate(rig)
    assert rig.h.active and rig.last_status().alert == ""
    activate(rig, "deactivate")
    assert rig.last_status().alert == "" and rig.last_status().code in (HedgeCode.WITHIN_BAND, HedgeCode.NONE)
