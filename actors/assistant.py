"""The Assistant: works a confirmed exposure plan (``WorkPlan``) until its legs are filled, it is
cancelled (``CancelPlan``) or a gate stops it.

A thin shell over :class:`desk.plan_worker.PlanWorker`: it routes the bus to it, gives it the
clock, publishes what it emits (post-only limit orders labelled ``plan-<n>-<leg>`` with origin
``assistant``, their edits and cancels, ``PlanStatus`` on every change) and wakes it when one of
its deadlines is due (a reprice, an answer that never came). It takes only answers with its own
origin and only order updates and fills of its own orders, so a hedge order is never touched.

Everything runs in the actor's own thread: nothing here is on a latency-critical path (an option
leg rests for seconds), and the order of each publisher's messages is kept by the mailbox.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pykka

from desk.plan_worker import PlanCaps, PlanWorker, WorkLimits
from messages.account import OrderUpdate, UserTrade
from messages.commands import CommandFailed, CommandResult, OrderResolved
from messages.exposure import CancelPlan, PlanStatus, PlanStatusRequest, WorkPlan
from messages.market import InstrumentsLoaded
from messages.state import PortfolioChanged, TopOfBook
from messages.system import ConnectionStatus, ConnectionStatusRequest, MinuteTick, SafeShutdown
from runtime.actor import Actor, ActorContext, handles
from runtime.alarm import ClockAlarm

ORIGIN = "assistant"


class _Wake(msgspec.Struct, frozen=True):
    """A deadline of the plan being worked is due (sent by the Assistant's own alarm)."""


class Assistant(Actor):
    def __init__(self, context: ActorContext, limits: WorkLimits | None = None) -> None:
        super().__init__(context)
        self.worker = PlanWorker(self.publish, self.log, limits, PlanCaps.of(context.settings.exposure),
                                 currencies=context.settings.currencies)
        self._alarm = ClockAlarm(self._ring, name=f"{context.name}-alarm")

    def on_start(self) -> None:
        # A restarted assistant missed the link's last status: ask for it (the books' tops come
        # with their next change or on request; the portfolio's picture with its next change, or
        # the worker asks for a reconcile when none came within a while of the connection).
        self.publish(ConnectionStatusRequest(origin=ORIGIN))

    def on_stop(self) -> None:
        self._alarm.close()

    def on_failure(self, *args: Any) -> None:
        self._alarm.close()
        super().on_failure(*args)

    # -- timers -------------------------------------------------------------------------------------
    def _arm(self) -> None:
        due = self.worker.next_due()
        if due is None:
            return
        self._alarm.arm(due, self.context.clock.now())

    def _ring(self) -> None:
        try:
            self.actor_ref.tell(_Wake())
        except pykka.ActorDeadError:
            pass

    @handles(_Wake)
    def on_wake(self, _wake: _Wake) -> None:
        self._alarm.rang()
        self.worker.on_time(self.context.clock.now())
        self._arm()

    # -- plans --------------------------------------------------------------------------------------
    @handles(WorkPlan)
    def on_work(self, work: WorkPlan) -> PlanStatus:
        now = self.context.clock.now()
        self.worker.start(work, now)
        self._arm()
        return self.worker.status(now, work.request_key)

    @handles(CancelPlan)
    def on_cancel(self, request: CancelPlan) -> PlanStatus:
        now = self.context.clock.now()
        self.worker.cancel(request, now)
        self._arm()
        return self.worker.status(now, request.request_key)

    @handles(PlanStatusRequest)
    def on_status_request(self, _request: PlanStatusRequest) -> PlanStatus:
        status = self.worker.status(self.context.clock.now())
        self.publish(status)  # for who asked over the bus (a restarted Hedger)
        return status

    # -- market, account, link ----------------------------------------------------------------------
    @handles(TopOfBook)
    def on_top(self, top: TopOfBook) -> None:
        if top.kind == "option":
            self.worker.on_top(top, self.context.clock.now())
            self._arm()

    @handles(InstrumentsLoaded)
    def on_instruments(self, loaded: InstrumentsLoaded) -> None:
        self.worker.on_instruments(loaded, self.context.clock.now())
        self._arm()

    @handles(PortfolioChanged)
    def on_portfolio(self, portfolio: PortfolioChanged) -> None:
        self.worker.on_portfolio(portfolio, self.context.clock.now())
        self._arm()

    @handles(ConnectionStatus)
    def on_connection(self, status: ConnectionStatus) -> None:
        self.worker.on_connection(status.can_trade, self.context.clock.now())
        self._arm()

    @handles(CommandResult)
    def on_result(self, result: CommandResult) -> None:
        if result.origin == ORIGIN:
            self.worker.on_result(result, self.context.clock.now())
            self._arm()

    @handles(CommandFailed)
    def on_failed(self, failed: CommandFailed) -> None:
        if failed.origin == ORIGIN:
            self.worker.on_failed(failed, self.context.clock.now())
            self._arm()

    @handles(OrderResolved)
    def on_resolved(self, resolved: OrderResolved) -> None:
        if resolved.origin == ORIGIN:
            self.worker.on_resolved(resolved, self.context.clock.now())
            self._arm()

    @handles(OrderUpdate)
    def on_order_update(self, update: OrderUpdate) -> None:
        self.worker.on_order_update(update, self.context.clock.now())
        self._arm()

    @handles(UserTrade)
    def on_user_trade(self, trade: UserTrade) -> None:
        self.worker.on_user_trade(trade, self.context.clock.now())
        self._arm()

    # -- time and shutdown ----------------------------------------------------------------------------
    @handles(MinuteTick)
    def on_minute(self, _tick: MinuteTick) -> None:
        # A safety net for a lost alarm and a restarted BookKeeper (see PlanWorker.on_minute).
        self.worker.on_minute(self.context.clock.now())
        self._arm()

    @handles(SafeShutdown)
    def on_safe_shutdown(self, event: SafeShutdown) -> None:
        self.worker.safe_shutdown(event.reason, self.context.clock.now())
        self._arm()
