"""The Portfolio actor: when it asks for reconciliations, the reconciled flag, mark throttling,
lost answers and expiry."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pykka
import pytest

from actors.portfolio import GetPortfolio, GetReconcileReport, Portfolio
from messages.account import (
    ExchangeState,
    ExchangeWindow,
    OrderUpdate,
    Position,
    ReconcileFailed,
    ReconcileStarted,
    Settlement,
    SettlementHistory,
    UserTrade,
)
from messages.commands import CommandFailed, CommandResult, ReconcilePortfolio
from messages.market import InstrumentsLoaded, InstrumentState, Ticker
from messages.state import PortfolioChanged
from messages.system import ConnectionState, ConnectionStatus, DailyRollover, MinuteTick
from runtime.actor import ActorContext, immediate_delivery
from runtime.clock import ReplayClock
from tests.support.contracts import inverse_option
from tests.support.settings import make_settings
from tests.support.waiting import wait_until

T0 = 1_795_161_000.0  # 2026-11-20 07:50 UTC
OPTION = "BTC-20NOV26-60000-C"  # expires at 08:00 that day
LATER = "BTC-27NOV26-60000-C"


class Published:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def __call__(self, message: Any) -> None:
        self.messages.append(message)

    def take(self) -> list[Any]:
        out, self.messages = self.messages, []
        return out


def status(state: ConnectionState, attempt: int = 1, authenticated: bool = False) -> ConnectionStatus:
    return ConnectionStatus(state=state, venue="test", at=T0, attempt=attempt, authenticated=authenticated)


def fill(name: str, amount: float, trade_id: str) -> UserTrade:
    return UserTrade(trade_id=trade_id, order_id="O1", instrument_name=name, timestamp=1, direction="buy",
                     price=0.05, amount=amount, fee=0.0, fee_currency="BTC", mark_price=0.05)


def start(published: Published, clock: ReplayClock) -> pykka.ActorRef:
    settings = make_settings({"portfolio.mark_publish_s": 1.0})
    return Portfolio.start(ActorContext(name="portfolio", clock=clock, settings=settings, publish=published))


def settle(ref: pykka.ActorRef) -> None:
    """Until what the Portfolio sent itself while handling what was told before is handled too."""
    ref.ask(GetPortfolio(), timeout=5)
    ref.ask(GetPortfolio(), timeout=5)


def reasons(messages: list[Any]) -> list[str]:
    return [m.reason for m in messages if isinstance(m, ReconcilePortfolio)]


def changed(messages: list[Any], currency: str = "BTC") -> list[PortfolioChanged]:
    return [m for m in messages if isinstance(m, PortfolioChanged) and m.currency == currency]


def test_reconciliations_and_the_reconciled_flag() -> None:
    published, clock = Published(), ReplayClock(T0)
    ref = start(published, clock)
    try:
        ref.ask(GetPortfolio(), timeout=5)
        assert [(m.currency, m.reconciled) for m in published.take()] == [("BTC", False), ("ETH", False)]
        ref.tell(status(ConnectionState.CONNECTED))
        ref.tell(status(ConnectionState.AUTHENTICATED, authenticated=True))
        ref.tell(status(ConnectionState.AUTHENTICATED, authenticated=True))
        ref.tell(status(ConnectionState.SUBSCRIBED, authenticated=True))
        ref.tell(status(ConnectionState.SUBSCRIBED, authenticated=True))  # after an instrument reload
        ref.ask(GetPortfolio(), timeout=5)
        assert reasons(published.take()) == ["reconnect", "subscribed"]
        position = Position(instrument_name=LATER, kind="option", direction="buy", size=1.0, average_price=0.05)
        ref.tell(ExchangeState(currency="BTC", positions=(position,), open_orders=(), summary=None, at=T0,
                               reason="reconnect"))
        ref.ask(GetPortfolio(), timeout=5)
        [state] = changed(published.take())
        assert state.reconciled and state.positions == (position,)
        ref.tell(status(ConnectionState.DISCONNECTED))
        ref.ask(GetPortfolio(), timeout=5)
        [lost] = changed(published.take())
        assert not lost.reconciled and lost.positions == (position,)
        # A new link asks again.
        ref.tell(status(ConnectionState.CONNECTED, attempt=2))
        ref.tell(status(ConnectionState.AUTHENTICATED, attempt=2, authenticated=True))
        # An order whose answer was lost with the link: only the exchange knows its fate.
        ref.tell(CommandFailed(request_key="k1", origin="hedger", method="private/buy", code=-2, message="lost"))
        ref.tell(CommandFailed(request_key="k2", origin="hedger", method="private/buy", code=10009,
                               message="not_enough_funds"))
        ref.ask(GetPortfolio(), timeout=5)
        assert reasons(published.take()) == ["reconnect", "answer lost: private/buy k1"]
        assert ref.ask(GetReconcileReport(), timeout=5)["count"] == 1
    finally:
        ref.stop()


def listed(*names: str) -> InstrumentsLoaded:
    return InstrumentsLoaded(currency="BTC", instruments=tuple(
        inverse_option(n, dt.date(2026, 11, 20 if n == OPTION else 27), 60_000.0) for n in names))


def test_marks_are_published_at_most_once_per_interval_and_on_the_minute() -> None:
    published, clock = Published(), ReplayClock(T0)
    ref = start(published, clock)
    try:
        ref.tell(listed(LATER))
        ref.tell(fill(LATER, 2.0, "T1"))
        ticker = Ticker(instrument_name=LATER, timestamp=1, state="open", mark_price=0.06)
        ref.tell(ticker)  # within the interval of the fill's publication: held back
        ref.tell(Ticker(instrument_name="BTC-27NOV26-70000-C", timestamp=1, state="open", mark_price=0.01))
        settle(ref)
        published.take()
        clock.advance_to(T0 + 0.5)
        ref.tell(Ticker(instrument_name=LATER, timestamp=2, state="open", mark_price=0.07))
        settle(ref)
        assert changed(published.take()) == []
        ref.tell(MinuteTick(at=T0 + 60))
        settle(ref)
        [marked] = changed(published.take())
        assert marked.positions[0].mark_price == 0.07
        assert abs(marked.positions[0].floating_profit_loss - 2.0 * 0.02) < 1e-12
        clock.advance_to(T0 + 2.0)
        ref.tell(Ticker(instrument_name=LATER, timestamp=3, state="open", mark_price=0.08))
        settle(ref)
        assert len(changed(published.take())) == 1
    finally:
        ref.stop()


def test_answers_update_orders_and_expired_instruments_leave() -> None:
    published, clock = Published(), ReplayClock(T0)
    ref = start(published, clock)
    try:
        order = OrderUpdate(order_id="A", instrument_name=LATER, order_state="open", order_type="limit",
                            direction="buy", amount=1.0, price=0.04, last_update_timestamp=1)
        ref.tell(CommandResult(request_key="k", origin="console", method="private/buy", result="{}", order=order))
        ref.tell(fill(OPTION, 1.0, "T1"))
        ref.tell(fill(LATER, 1.0, "T2"))
        state = ref.ask(GetPortfolio(), timeout=5)["BTC"]
        assert {p.instrument_name for p in state.positions} == {OPTION, LATER}
        assert [o.order_id for o in state.open_orders] == ["A"]
        published.take()
        ref.tell(DailyRollover(at=T0 + 600, day="2026-11-20"))
        state = ref.ask(GetPortfolio(), timeout=5)["BTC"]
        assert {p.instrument_name for p in state.positions} == {LATER}
        assert reasons(published.take()) == ["rollover 2026-11-20"]
        ref.tell(InstrumentState(instrument_name=LATER, state="settled", timestamp=1))
        state = ref.ask(GetPortfolio(), timeout=5)["BTC"]
        assert state.positions == () and state.open_orders == ()
    finally:
        ref.stop()


def test_marks_from_immediate_tickers_are_published_from_the_portfolios_own_thread() -> None:
    """Tickers are handled in the link thread; the picture they change goes out from the
    Portfolio's thread, as every other, so that two snapshots never overtake each other."""
    threads: list[int] = []
    published = Published()

    def publish(message: Any) -> None:
        if isinstance(message, PortfolioChanged):
            threads.append(threading.get_ident())
        published(message)

    clock = ReplayClock(T0)
    settings = make_settings({"portfolio.mark_publish_s": 1.0})
    ref = Portfolio.start(ActorContext(name="portfolio", clock=clock, settings=settings, publish=publish))
    try:
        ref.tell(fill(LATER, 2.0, "T1"))
        settle(ref)
        own = threads[-1]  # the fill's picture: published by the actor's own thread
        clock.advance_to(T0 + 2.0)
        deliver = immediate_delivery(ref)
        assert deliver is not None and deliver[0](Ticker)
        deliver[1](Ticker(instrument_name=LATER, timestamp=2, state="open", mark_price=0.07))  # this thread
        settle(ref)
        assert threads[-1] == own != threading.get_ident()
        assert changed(published.take())[-1].positions[0].mark_price == 0.07
    finally:
        ref.stop()


def window(at_ms: int) -> ExchangeWindow:
    return ExchangeWindow(received_us=at_ms * 1000 + 500, sent_us=at_ms * 1000 + 800)


def perp_fill(trade_id: str, at_ms: int) -> UserTrade:
    return UserTrade(trade_id=trade_id, order_id="O1", instrument_name="BTC-PERPETUAL", timestamp=at_ms,
                     direction="sell", price=60_000.0, amount=10.0, fee=0.0, fee_currency="BTC")


def test_the_picture_says_a_reconcile_is_under_way_and_a_doubtful_one_is_asked_for_again() -> None:
    published, clock = Published(), ReplayClock(T0)
    ref = start(published, clock)
    try:
        ref.tell(status(ConnectionState.SUBSCRIBED, authenticated=True))
        ref.ask(GetPortfolio(), timeout=5)
        published.take()
        ref.tell(ReconcileStarted(currency="BTC", at=T0, round=1))
        ref.ask(GetPortfolio(), timeout=5)
        assert [m.reconciling for m in changed(published.take())] == [True]
        # A fill stamped while the exchange answered: the snapshot is discarded and asked for again,
        # and the picture still says it is being checked.
        ref.tell(perp_fill("t1", at_ms=2_000))
        ref.tell(ExchangeState(currency="BTC", positions=(), open_orders=(), summary=None, at=T0, round=1,
                               reason="subscribed", positions_window=window(2_000), orders_window=window(2_000)))
        ref.ask(GetPortfolio(), timeout=5)
        messages = published.take()
        assert [r for r in reasons(messages) if r.startswith("again:")]
        assert all(m.reconciling or not m.reconciled for m in changed(messages)[1:])
        # The next round takes it in; a later fill stamped before it came is in doubt: asked again.
        ref.tell(ReconcileStarted(currency="BTC", at=T0 + 1, round=2))
        ref.tell(ExchangeState(currency="BTC", at=T0 + 1, round=2, summary=None, open_orders=(), reason="again",
                               positions=(Position(instrument_name="BTC-PERPETUAL", kind="future",
                                                   direction="sell", size=-10.0),),
                               positions_window=window(3_000), orders_window=window(3_000)))
        ref.ask(GetPortfolio(), timeout=5)
        picture = changed(published.take())[-1]
        assert picture.reconciled and not picture.reconciling and "t1" in picture.recent_trade_ids
        ref.tell(perp_fill("t2", at_ms=2_500))
        ref.ask(GetPortfolio(), timeout=5)
        messages = published.take()
        assert not changed(messages)[-1].reconciled
        assert [r for r in reasons(messages) if r.startswith("in doubt:")]
    finally:
        ref.stop()


def test_a_failed_reconcile_is_asked_for_again_after_a_backoff() -> None:
    published, clock = Published(), ReplayClock(T0)
    ref = start(published, clock)
    try:
        ref.tell(status(ConnectionState.SUBSCRIBED, authenticated=True))
        ref.ask(GetPortfolio(), timeout=5)
        published.take()
        ref.tell(ReconcileStarted(currency="BTC", at=T0, round=1))
        ref.tell(ReconcileFailed(currency="BTC", at=T0, round=1, message="no answer"))
        ref.ask(GetPortfolio(), timeout=5)
        assert reasons(published.take()) == []  # not at once: after the backoff (0.5 s)
        wait_until(lambda: "retry after a failed reconcile" in reasons(published.messages), 5,
                   "the Portfolio to ask again")
        # A superseded round is no failure: nothing is asked again for it.
        published.take()
        ref.tell(ReconcileStarted(currency="ETH", at=T0, round=2))
        ref.tell(ReconcileFailed(currency="ETH", at=T0, round=2, message="superseded", superseded=True))
        ref.ask(GetPortfolio(), timeout=5)
        time.sleep(0.8)
        assert reasons(published.take()) == []
    finally:
        ref.stop()


def test_rollover_settles_sessions_and_expiry_delivers() -> None:
    """At 08:00 the expiring option leaves as a delivery (at its last estimated delivery price),
    the other's session restarts; the closing ticker then gives the exact delivery, and the
    exchange's settlement history is kept in the picture."""
    published, clock = Published(), ReplayClock(T0)
    ref = start(published, clock)
    try:
        ref.tell(listed(OPTION, LATER))
        ref.tell(fill(OPTION, 1.0, "T1"))
        ref.tell(fill(LATER, 1.0, "T2"))
        ref.tell(Ticker(instrument_name=OPTION, timestamp=2, state="open", mark_price=0.06,
                        estimated_delivery_price=61_000.0))
        ref.tell(Ticker(instrument_name=LATER, timestamp=2, state="open", mark_price=0.07))
        settle(ref)
        before = ref.ask(GetPortfolio(), timeout=5)["BTC"]
        assert before.unmodelled == () and before.positions[1].realized_profit_loss == 0.0
        assert before.positions[1].floating_profit_loss == 0.07 - 0.05
        ref.tell(DailyRollover(at=T0 + 600, day="2026-11-20"))
        state = ref.ask(GetPortfolio(), timeout=5)["BTC"]
        [later] = state.positions
        assert later.instrument_name == LATER and later.floating_profit_loss == 0.0
        assert later.total_profit_loss == 0.07 - 0.05
        [estimate] = state.deliveries  # the 60,000 call at the index's estimate
        assert (estimate.instrument_name, estimate.index_price) == (OPTION, 61_000.0)
        assert estimate.mark_price == pytest.approx(1_000.0 / 61_000.0)
        ref.tell(Ticker(instrument_name=OPTION, timestamp=3, state="closed", mark_price=0.0,
                        estimated_delivery_price="expired", delivery_price=62_000.0))
        settle(ref)
        [exact] = ref.ask(GetPortfolio(), timeout=5)["BTC"].deliveries
        assert exact.mark_price == pytest.approx(2_000.0 / 62_000.0)
        assert exact.profit_loss == pytest.approx(2_000.0 / 62_000.0 - 0.05)  # from its fill, this session
        entry = Settlement(type="delivery", timestamp=1_795_161_600_000, instrument_name=OPTION, position=1.0,
                           mark_price=0.0401, profit_loss=-0.0199)
        ref.tell(SettlementHistory(currency="BTC", settlements=(entry,), at=T0 + 700))
        state = ref.ask(GetPortfolio(), timeout=5)["BTC"]
        assert state.deliveries == (entry,) and state.settlements == (entry,)
    finally:
        ref.stop()
