"""The Portfolio: our open orders, positions and account figures per currency, a thin shell over
:class:`desk.portfolio.PortfolioBook`.

Notifications (``user.orders``, ``user.trades``, ``user.portfolio``) and our commands' answers
build the picture; after every (re)connect, after an answer lost with the link, after the daily
rollover and on demand (anyone may publish ``ReconcilePortfolio``) the exchange's own figures
replace it, and each difference is logged as a warning. Publishes one ``PortfolioChanged`` per
currency after every change; ``reconciled`` is false from a link loss until the exchange's
figures for that currency arrived.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pykka

from deribit.constants import GONE_STATES
from deribit.instruments import InstrumentNameError, currency_of, parse_instrument_name
from desk.portfolio import Difference, PortfolioBook
from messages.account import AccountFigures, ExchangeState, OrderUpdate, PortfolioUpdate, UserTrade
from messages.commands import ANSWER_LOST, CommandFailed, CommandResult, ReconcilePortfolio
from messages.market import InstrumentsLoaded, InstrumentState, Ticker
from messages.state import PortfolioChanged
from messages.system import ConnectionState, ConnectionStatus, DailyRollover, MinuteTick
from runtime.actor import Actor, ActorContext, handles

_LINK_DOWN = frozenset({ConnectionState.DISCONNECTED, ConnectionState.CONNECTING, ConnectionState.STOPPED})


class GetPortfolio(msgspec.Struct, frozen=True):
    """Ask the Portfolio for its picture (tests, diagnostics): answered with
    ``{currency: PortfolioChanged}``."""


class GetReconcileReport(msgspec.Struct, frozen=True):
    """Ask for the reconciliations so far: ``{"count": n, "differences": [Difference]}``
    (the last 1,000 differences found, oldest first)."""


class _PublishMarks(msgspec.Struct, frozen=True, kw_only=True):
    """Marks of ``currency`` changed: publish its picture (sent to itself from the link thread)."""

    currency: str


class Portfolio(Actor):
    def __init__(self, context: ActorContext) -> None:
        super().__init__(context)
        self.book = PortfolioBook(tuple(context.settings.currencies))
        self.mark_publish_s: float = context.settings.portfolio.mark_publish_s
        self._last_published: dict[str, float] = {}
        self._marks_dirty: set[str] = set()
        self._link_attempt: int | None = None
        self._asked_this_link: set[str] = set()
        self.reconciles = 0
        self.differences: list[Difference] = []

    def on_start(self) -> None:
        for currency in self.book.accounts:
            self._publish_state(currency)

    # -- publishing -------------------------------------------------------------------------------
    def _publish_state(self, currency: str | None) -> None:
        if currency is None:
            return
        now = self.context.clock.now()
        self._last_published[currency] = now
        self._marks_dirty.discard(currency)
        self.publish(self.book.account(currency).snapshot(now))

    def _reconcile(self, reason: str, currencies: tuple[str, ...] = ()) -> None:
        self.log.info("reconcile_requested", reason=reason, currencies=list(currencies) or "all")
        self.publish(ReconcilePortfolio(origin=self.context.name, reason=reason, currencies=currencies))

    # -- notifications ----------------------------------------------------------------------------
    @handles(OrderUpdate)
    def on_order(self, order: OrderUpdate) -> None:
        self._publish_state(self.book.on_order(order))

    @handles(UserTrade)
    def on_trade(self, trade: UserTrade) -> None:
        self._publish_state(self.book.on_trade(trade))

    @handles(PortfolioUpdate)
    def on_figures(self, figures: AccountFigures) -> None:
        self._publish_state(self.book.on_figures(figures))

    @handles(Ticker, immediate=True)
    def on_ticker(self, ticker: Ticker) -> None:
        # In the link thread. The picture with the new marks is published from the Portfolio's
        # own thread, as every other: two threads publishing snapshots could deliver them out of
        # the order they were made in (an old position after a fill, to the Hedger).
        currency = self.book.on_ticker(ticker)
        if currency is None:
            return
        self._marks_dirty.add(currency)
        now = self.context.clock.now()
        if now - self._last_published.get(currency, 0.0) >= self.mark_publish_s:
            self._last_published[currency] = now  # one request per interval
            self.later(self._ask_publish, currency)

    def _ask_publish(self, currency: str) -> None:
        try:
            self.actor_ref.tell(_PublishMarks(currency=currency))
        except pykka.ActorDeadError:
            pass

    @handles(_PublishMarks)
    def on_publish_marks(self, request: _PublishMarks) -> None:
        if request.currency in self._marks_dirty:
            self._publish_state(request.currency)

    @handles(CommandResult)
    def on_result(self, result: CommandResult) -> None:
        # Fills are taken from user.trades only (each once); the answer's order state is news.
        if result.order is not None:
            self._publish_state(self.book.on_order(result.order))

    @handles(CommandFailed)
    def on_failed(self, failed: CommandFailed) -> None:
        if failed.code == ANSWER_LOST:
            self._reconcile(f"answer lost: {failed.method} {failed.request_key}")

    # -- the exchange's truth ---------------------------------------------------------------------
    @handles(ConnectionStatus)
    def on_status(self, status: ConnectionStatus) -> None:
        state = status.state
        if state in _LINK_DOWN or (state is ConnectionState.CONNECTED
                                   and not (status.attempt and status.attempt == self._link_attempt)):
            self._link_attempt = status.attempt if state is ConnectionState.CONNECTED else None
            self._asked_this_link.clear()
            for currency in self.book.link_lost():
                self._publish_state(currency)
            return
        # Logged in: fetch the truth. Again once subscribed, so that nothing between the first
        # fetch and the private subscriptions is missed.
        if state is ConnectionState.AUTHENTICATED and "authenticated" not in self._asked_this_link:
            self._asked_this_link.add("authenticated")
            self._reconcile("reconnect")
        elif state is ConnectionState.SUBSCRIBED and status.authenticated \
                and "subscribed" not in self._asked_this_link:
            self._asked_this_link.add("subscribed")
            self._reconcile("subscribed")

    @handles(ExchangeState)
    def on_exchange_state(self, state: ExchangeState) -> None:
        differences = self.book.reconcile(state)
        self.reconciles += 1
        for difference in differences:
            self.log.warning("portfolio_differs", currency=difference.currency, what=difference.what,
                             key=difference.key, field=difference.field, ours=difference.ours,
                             exchange=difference.theirs, reason=state.reason)
        self.differences.extend(differences)
        del self.differences[:-1000]
        self.log.info("portfolio_reconciled", currency=state.currency, reason=state.reason,
                      differences=len(differences), positions=len(state.positions),
                      open_orders=len(state.open_orders))
        self._publish_state(state.currency)

    # -- expiry -----------------------------------------------------------------------------------
    def _drop(self, names: set[str], reason: str) -> None:
        if not names:
            return
        changed = self.book.drop_instruments(names)
        if changed:
            self.log.info("expired_instruments_dropped", reason=reason, instruments=sorted(names))
        for currency in changed:
            self._publish_state(currency)

    @handles(InstrumentState)
    def on_instrument_state(self, event: InstrumentState) -> None:
        if event.state in GONE_STATES and event.instrument_name in self.book.held_instruments():
            self._drop({event.instrument_name}, event.state)

    @handles(InstrumentsLoaded)
    def on_instruments(self, loaded: InstrumentsLoaded) -> None:
        listed = {i.instrument_name for i in loaded.instruments}
        gone = {n for n in self.book.held_instruments() if currency_of(n) == loaded.currency and n not in listed}
        self._drop(gone, "no longer listed")

    @handles(DailyRollover)
    def on_rollover(self, event: DailyRollover) -> None:
        expired = set()
        for name in self.book.held_instruments():
            try:
                expiry = parse_instrument_name(name).expiry_ms
            except InstrumentNameError:
                continue
            if expiry is not None and expiry <= event.at * 1000:
                expired.add(name)
        self._drop(expired, f"rollover {event.day}")
        # Settlement moved cash: take the exchange's balances and positions.
        self._reconcile(f"rollover {event.day}")

    @handles(MinuteTick)
    def on_minute(self, _tick: MinuteTick) -> None:
        for currency in list(self._marks_dirty):
            self._publish_state(currency)

    # -- inspection -------------------------------------------------------------------------------
    @handles(GetPortfolio)
    def on_get(self, _request: GetPortfolio) -> dict[str, PortfolioChanged]:
        now = self.context.clock.now()
        return {currency: account.snapshot(now) for currency, account in self.book.accounts.items()}

    @handles(GetReconcileReport)
    def on_report(self, _request: GetReconcileReport) -> dict[str, Any]:
        return {"count": self.reconciles, "differences": list(self.differences)}
