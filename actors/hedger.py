"""The Hedger: keeps each hedged currency's option delta inside a band with one future.

A thin shell over :class:`desk.hedging.CurrencyHedger` (one per currency in
``hedger.currencies``): it routes bus messages to it, gives it the clock, publishes what it
emits (orders to the Connection, ``HedgerStatus`` to the Console, reconcile requests) and wakes
it when one of its timeouts is due (a limit order to reprice, a fill the Portfolio has not
shown yet, an answer that never came).

Option tickers come straight from the Connection: the Hedger computes option deltas from them
itself instead of waiting for the Portfolio to republish marks, and takes positions, open orders
and the ``reconciled`` flag from ``PortfolioChanged``. Market data (tickers, quotes, top of book)
is handled immediately, in the thread that published it (``@handles(..., immediate=True)``):
a frame that pushes the mismatch past the band becomes an order without waiting for a thread
switch, and the Connection takes orders immediately too, so the order is written to the socket
by the thread that read the frame. So is everything else the bus brings it (link status,
portfolio, answers, controls, ticks, safe shutdown): each publisher's messages are then handled
in the order they were published, a link loss before the new link's data, a safe shutdown before
the next frame. The actor's lock keeps its state to one thread at a time; its own thread only
answers questions and its alarm.

Controls (from the Console): ``HedgerControl`` activate / confirm / deactivate / status /
acknowledge and ``SetHedgeBand``; both are answered with ``HedgerStatus`` on the bus, and, for ``ask``, with the
list of statuses.

Vega hedging (:class:`desk.vega_hedging.VegaHedger`, one per hedged currency beside the delta
hedger) takes the same inputs and its own controls, ``VegaHedgerControl`` and ``SetVegaBand``,
answered with ``VegaHedgerStatus``. Answers are routed by origin (``hedger`` / ``vega-hedger``);
order updates and fills go to both, and each takes only its own order's.
"""

from __future__ import annotations

from collections.abc import Callable
from traceback import format_exc
from typing import Any

import msgspec
import pykka

from deribit.instruments import currency_of
from desk.hedging import ORIGIN, CurrencyHedger
from desk.vega_hedging import ORIGIN as VEGA_ORIGIN
from desk.vega_hedging import VegaHedger
from messages.account import ExchangeState, OrderUpdate, UserTrade
from messages.commands import CommandFailed, CommandResult, PlaceOrder, RefreshInstruments
from messages.exposure import PlanStatus, PlanStatusRequest, SetVegaBand, VegaHedgerControl, VegaHedgerStatus
from messages.hedging import HedgeMode, HedgerControl, HedgerStatus, SetHedgeBand
from messages.market import IndexPrice, InstrumentsLoaded, PlatformState, Quote, Ticker
from messages.state import PortfolioChanged, TopOfBook
from messages.system import (
    ConnectionStatus,
    ConnectionStatusRequest,
    DailyRollover,
    MinuteTick,
    SafeShutdown,
    WarmUp,
)
from runtime.actor import Actor, ActorContext, handles
from runtime.alarm import ClockAlarm

#: Benchmarks and tests only: called with (order, the message that triggered it) right after a
#: hedge order is published. None in the program.
order_probe: Callable[[PlaceOrder, object], None] | None = None


class _Wake(msgspec.Struct, frozen=True):
    """A timeout of one of the currency hedgers is due (sent by the Hedger's own timer)."""


class Hedger(Actor):
    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        settings = context.settings
        hedger_settings = settings.hedger
        now = context.clock.now()
        self._last_number = 0
        self.hedgers: dict[str, CurrencyHedger] = {
            # Its log lines are written after the order it decides went out (hot path first).
            currency: CurrencyHedger(currency, hedger_settings, self.publish, self.deferred_log, self._number, now,
                                     on_order=self._probe_later if order_probe is not None else None,
                                     later=self.later_locked, max_clock_ahead_s=settings.deribit.max_clock_ahead_s)
            for currency in hedger_settings.currencies if currency in settings.currencies
        }
        self.vega: dict[str, VegaHedger] = {
            currency: VegaHedger(currency, hedger_settings, self.publish, self.deferred_log, self._number, now,
                                 max_clock_ahead_s=settings.deribit.max_clock_ahead_s)
            for currency in self.hedgers
        }
        # One thread for every deadline (a limit order to reprice, a fill to see settled): arming
        # it from a hot handler is a notify, not a thread start.
        self._alarm = ClockAlarm(self._wake, name=f"{context.name}-alarm")
        self._warm_ups = True  # off after one failed

    def _probe_later(self, order: PlaceOrder, trigger: object) -> None:
        probe = order_probe
        if probe is not None:
            self.later(probe, order, trigger)  # after the order went out, as the log lines

    def _number(self, now: float) -> int:
        # Labels hedge-<n>: n is the decision's unix milliseconds, strictly increasing, so that a
        # restarted hedger never reuses a label of an order that may still be open.
        number = max(self._last_number + 1, int(now * 1000))
        self._last_number = number
        return number

    def on_start(self) -> None:
        # Its first status is for the Console, which starts after it: wait until every actor is
        # on the bus (at once for a restarted hedger). Nothing reaches it meanwhile: the link
        # thread waits for the same.
        if not self.context.wait_started(10.0):
            self.log.warning("started_before_the_other_actors")
        now = self.context.clock.now()
        self.log.info("hedger_started", currencies=list(self.hedgers),
                      instruments={c: h.instrument for c, h in self.hedgers.items()},
                      active=[c for c, h in self.hedgers.items() if h.active])
        # A restarted hedger needs the hedge instruments' contract sizes: ask for the lists again
        # (the Connection ignores this while it is not connected; it loads them on connect).
        if self.hedgers:
            self.publish(RefreshInstruments(origin=ORIGIN, reason="hedger started", currencies=tuple(self.hedgers)))
            # ...and the link's state, which a restarted hedger would otherwise learn only at the next change.
            self.publish(ConnectionStatusRequest(origin=ORIGIN))
        if self.vega:  # ...and whether a plan is worked, which holds the vega hedgers
            self.publish(PlanStatusRequest(origin=ORIGIN))
        for hedger in self.hedgers.values():
            hedger.publish_status(now, force=True)
        for vega in self.vega.values():
            vega.publish_status(now, force=True)

    def _both(self) -> list[CurrencyHedger | VegaHedger]:
        return [*self.hedgers.values(), *self.vega.values()]

    def on_stop(self) -> None:
        self._alarm.close()

    def on_failure(self, *args: Any) -> None:
        self._alarm.close()
        super().on_failure(*args)

    # -- timers -------------------------------------------------------------------------------------
    def _arm(self) -> None:
        dues = [due for due in (h.next_due() for h in self._both()) if due is not None]
        if not dues:
            return
        due = min(dues)
        self._alarm.arm(due, self.context.clock.now())

    def _wake(self) -> None:
        try:
            self.actor_ref.tell(_Wake())
        except pykka.ActorDeadError:
            pass

    @handles(_Wake)
    def on_wake(self, _wake: _Wake) -> None:
        self._alarm.rang()
        now = self.context.clock.now()
        for hedger in self._both():
            hedger.on_time(now)
        self._arm()

    # -- market data (the hot path) ---------------------------------------------------------------
    @handles(Ticker, immediate=True)
    def on_ticker(self, ticker: Ticker) -> None:
        currency = ticker.instrument_name.partition("-")[0]
        hedger = self.hedgers.get(currency)
        if hedger is not None and hedger.on_ticker(ticker, self.context.clock.now()):
            self.later_locked(self._arm)  # after the order this may have decided
        vega = self.vega.get(currency)
        if vega is not None and vega.on_ticker(ticker, self.context.clock.now()):
            self.later_locked(self._arm)

    @handles(Quote, immediate=True)
    def on_quote(self, quote: Quote) -> None:
        hedger = self.hedgers.get(quote.instrument_name.partition("-")[0])
        if hedger is not None and hedger.on_quote(quote, self.context.clock.now()):
            self.later_locked(self._arm)

    @handles(TopOfBook, immediate=True)
    def on_top_of_book(self, top: TopOfBook) -> None:
        if top.kind != "future":
            return
        hedger = self.hedgers.get(top.instrument_name.partition("-")[0])
        if hedger is not None and hedger.on_top_of_book(top, self.context.clock.now()):
            self.later_locked(self._arm)

    @handles(IndexPrice, immediate=True)
    def on_index(self, index: IndexPrice) -> None:
        hedger = self.hedgers.get(index.index_name.partition("_")[0].upper())
        if hedger is not None and hedger.on_index(index, self.context.clock.now()):
            self.later_locked(self._arm)

    @handles(WarmUp, immediate=True)
    def on_warm_up(self, _warm_up: WarmUp) -> None:
        # The link is idle: decide and build the order again, and drop it (see WarmUp). A bug
        # here must not fail the Hedger (a restart forgets the order in flight): warm-ups stop.
        if not self._warm_ups:
            return
        now = self.context.clock.now()
        try:
            for hedger in self.hedgers.values():
                hedger.warm_up(now)
        except Exception as exc:
            self._warm_ups = False
            self.deferred_log.error("warm_up_failed", error=f"{type(exc).__name__}: {exc}", traceback=format_exc(),
                                    detail="the Hedger's warm-ups are off until it restarts; hedging goes on")

    # -- account and link ---------------------------------------------------------------------------
    @handles(PortfolioChanged, immediate=True)
    def on_portfolio(self, portfolio: PortfolioChanged) -> None:
        for hedger in (self.hedgers.get(portfolio.currency), self.vega.get(portfolio.currency)):
            if hedger is not None:
                hedger.on_portfolio(portfolio, self.context.clock.now())
        self._arm()

    @handles(InstrumentsLoaded, immediate=True)
    def on_instruments(self, loaded: InstrumentsLoaded) -> None:
        for hedger in (self.hedgers.get(loaded.currency), self.vega.get(loaded.currency)):
            if hedger is not None:
                hedger.instruments_loaded(loaded, self.context.clock.now())
        self._arm()

    @handles(PlatformState, immediate=True)
    def on_platform_state(self, state: PlatformState) -> None:
        now = self.context.clock.now()
        for hedger in self._both():
            hedger.on_platform_state(state, now)
        self._arm()

    @handles(ConnectionStatus, immediate=True)
    def on_connection(self, status: ConnectionStatus) -> None:
        now = self.context.clock.now()
        for hedger in self._both():
            hedger.on_connection(status.can_trade, now)
        self._arm()

    @handles(CommandResult, immediate=True)
    def on_result(self, result: CommandResult) -> None:
        if result.origin == VEGA_ORIGIN:
            for vega in self.vega.values():
                vega.on_result(result, self.context.clock.now())
            self._arm()
        if result.origin != ORIGIN:
            return
        now = self.context.clock.now()
        for hedger in self.hedgers.values():
            hedger.on_result(result, now)
            for trade in result.trades:
                hedger.take_own_trade(trade)
        self._arm()

    @handles(CommandFailed, immediate=True)
    def on_failed(self, failed: CommandFailed) -> None:
        if failed.origin == VEGA_ORIGIN:
            for vega in self.vega.values():
                vega.on_failed(failed, self.context.clock.now())
            self._arm()
        if failed.origin != ORIGIN:
            return
        now = self.context.clock.now()
        for hedger in self.hedgers.values():
            hedger.on_failed(failed, now)
        self._arm()

    @handles(OrderUpdate, immediate=True)
    def on_order_update(self, update: OrderUpdate) -> None:
        currency = currency_of(update.instrument_name)
        for hedger in (self.hedgers.get(currency), self.vega.get(currency)):
            if hedger is not None:
                hedger.on_order_update(update, self.context.clock.now())
        self._arm()

    @handles(UserTrade, immediate=True)
    def on_user_trade(self, trade: UserTrade) -> None:
        hedger = self.hedgers.get(currency_of(trade.instrument_name))
        if hedger is not None:
            hedger.take_own_trade(trade)
            hedger.on_user_trade(trade, self.context.clock.now())
        vega = self.vega.get(currency_of(trade.instrument_name))
        if vega is not None:
            vega.on_user_trade(trade, self.context.clock.now())
        self._arm()

    @handles(ExchangeState, immediate=True)
    def on_exchange_state(self, state: ExchangeState) -> None:
        for hedger in (self.hedgers.get(state.currency), self.vega.get(state.currency)):
            if hedger is not None:
                hedger.on_exchange_state(state, self.context.clock.now())
        self._arm()

    @handles(PlanStatus, immediate=True)
    def on_plan_status(self, status: PlanStatus) -> None:
        # The vega hedger holds while a plan of its currency is worked (see desk.vega_hedging).
        for vega in (self.vega.values() if not status.currency else filter(None, [self.vega.get(status.currency)])):
            vega.on_plan_status(status, self.context.clock.now())
        self._arm()

    # -- controls -------------------------------------------------------------------------------------
    def _targets(self, currency: str, request_key: str, origin: str) -> list[CurrencyHedger]:
        if not currency:
            return list(self.hedgers.values())
        hedger = self.hedgers.get(currency.upper())
        if hedger is None:
            # Say so on the bus: the console shows it as the answer.
            hedged = ", ".join(self.hedgers) or "none"
            self.log.warning("hedger_control_refused", currency=currency, origin=origin,
                             reason=f"not hedged (hedged: {hedged})")
            settings = self.context.settings.hedger
            self.publish(HedgerStatus(
                currency=currency, active=False, instrument="", mode=HedgeMode(settings.mode),
                band=settings.max_delta_mismatch, at=self.context.clock.now(), request_key=request_key,
                message=f"{currency} is not hedged (hedged: {hedged}); see hedger.currencies"))
            return []
        return [hedger]

    @handles(HedgerControl, immediate=True)
    def on_control(self, control: HedgerControl) -> list[HedgerStatus]:
        now = self.context.clock.now()
        targets = self._targets(control.currency, control.request_key, control.origin)
        for hedger in targets:
            hedger.on_control(control, now)
        self._arm()
        return [hedger.status(now, control.request_key) for hedger in targets]

    @handles(SetHedgeBand, immediate=True)
    def on_set_band(self, change: SetHedgeBand) -> list[HedgerStatus]:
        now = self.context.clock.now()
        targets = self._targets(change.currency, change.request_key, change.origin)
        for hedger in targets:
            hedger.on_set_band(change, now)
        self._arm()
        return [hedger.status(now, change.request_key) for hedger in targets]

    def _vega_targets(self, currency: str, request_key: str, origin: str) -> list[VegaHedger]:
        if not currency:
            return list(self.vega.values())
        vega = self.vega.get(currency.upper())
        if vega is None:
            hedged = ", ".join(self.vega) or "none"
            self.log.warning("vega_control_refused", currency=currency, origin=origin, hedged=hedged)
            settings = self.context.settings.hedger
            self.publish(VegaHedgerStatus(
                currency=currency, active=False, band_usd=settings.vega_band_usd, tenor_days=settings.vega_tenor_days,
                at=self.context.clock.now(), request_key=request_key,
                message=f"{currency} is not hedged (hedged: {hedged}); see hedger.currencies"))
            return []
        return [vega]

    @handles(VegaHedgerControl, immediate=True)
    def on_vega_control(self, control: VegaHedgerControl) -> list[VegaHedgerStatus]:
        now = self.context.clock.now()
        targets = self._vega_targets(control.currency, control.request_key, control.origin)
        for vega in targets:
            vega.on_control(control, now)
        self._arm()
        return [vega.status(now, control.request_key) for vega in targets]

    @handles(SetVegaBand, immediate=True)
    def on_set_vega_band(self, change: SetVegaBand) -> list[VegaHedgerStatus]:
        now = self.context.clock.now()
        targets = self._vega_targets(change.currency, change.request_key, change.origin)
        for vega in targets:
            vega.on_set_band(change, now)
        self._arm()
        return [vega.status(now, change.request_key) for vega in targets]

    # -- time and shutdown ------------------------------------------------------------------------------
    @handles(MinuteTick, immediate=True)
    def on_minute(self, _tick: MinuteTick) -> None:
        now = self.context.clock.now()
        for hedger in self._both():
            hedger.on_minute(now)
        self._arm()

    @handles(DailyRollover, immediate=True)
    def on_rollover(self, event: DailyRollover) -> None:
        now = self.context.clock.now()
        self.log.info("hedge_day_reset", day=event.day)
        for hedger in self._both():
            hedger.on_rollover(now)

    @handles(SafeShutdown, immediate=True)
    def on_safe_shutdown(self, event: SafeShutdown) -> None:
        now = self.context.clock.now()
        for hedger in self._both():
            hedger.safe_shutdown(event.reason, now)
