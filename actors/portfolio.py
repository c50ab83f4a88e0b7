"""The Portfolio: our open orders, positions and account figures per currency, a thin shell over
:class:`desk.portfolio.PortfolioBook`.

Notifications (``user.orders``, ``user.trades``, ``user.changes``, ``user.portfolio``) and our
commands' answers build the picture, with each instrument's contract maths from its metadata
(``InstrumentsLoaded``); the 08:00 UTC rollover restarts the PnL sessions, a closing ticker or
the exchange's settlement history delivers an expired position; after every (re)connect, after an
answer lost with the link, after the daily rollover and on demand (anyone may publish
``ReconcilePortfolio``) the exchange's own figures are taken in as of when the exchange took them
(``desk.portfolio``), and each difference is logged as a warning; a snapshot that cannot be
placed in time is discarded and asked for again, and a failed one is asked for again after a
backoff while the picture is unreconciled. Publishes one ``PortfolioChanged`` per currency after
every change; ``reconciled`` is false from a link loss until the exchange's figures for that
currency arrived, ``reconciling`` true while a reconcile is under way.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pykka

from deribit.constants import GONE_STATES
from deribit.instruments import InstrumentNameError, expiry_of
from desk.portfolio import Difference, PortfolioBook
from messages.account import (
    AccountFigures,
    ExchangeState,
    OrderUpdate,
    PortfolioUpdate,
    ReconcileFailed,
    ReconcileStarted,
    SettlementHistory,
    UserChanges,
    UserTrade,
)
from messages.commands import ANSWER_LOST, CommandFailed, CommandResult, ReconcilePortfolio
from messages.market import InstrumentsLoaded, InstrumentState, Ticker
from messages.state import PortfolioChanged
from messages.system import ConnectionState, ConnectionStatus, DailyRollover, MinuteTick
from runtime.actor import Actor, ActorContext, handles
from runtime.alarm import Alarm
from runtime.throttle import retry_delay

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


class _RetryReconcile(msgspec.Struct, frozen=True):
    """A failed reconcile's backoff is over (sent by the Portfolio's own alarm)."""


class _Closing(msgspec.Struct, frozen=True):
    """The closing ticker of an expiring instrument (sent to itself from the link thread: a
    delivery changes orders and positions, which only the Portfolio's own thread does)."""

    ticker: Ticker


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
        self._link_up = False
        # Failed reconciles in a row per currency, and those to ask for again when the alarm rings.
        self._failures: dict[str, int] = {}
        self._retry: set[str] = set()
        self._alarm = Alarm(self._ring, name=f"{context.name}-alarm")
        # Per currency, the held instruments already said to have no metadata (logged once each).
        self._unmodelled: dict[str, set[str]] = {}

    def on_start(self) -> None:
        for currency in self.book.accounts:
            self._publish_state(currency)

    def on_stop(self) -> None:
        self._alarm.close()

    def on_failure(self, *args: Any) -> None:
        self._alarm.close()
        super().on_failure(*args)

    # -- publishing -------------------------------------------------------------------------------
    def _publish_state(self, currency: str | None) -> None:
        if currency is None:
            return
        now = self.context.clock.now()
        self._last_published[currency] = now
        self._marks_dirty.discard(currency)
        picture = self.book.account(currency).snapshot(now)
        unmodelled = set(picture.unmodelled)
        if unmodelled - self._unmodelled.get(currency, set()):
            self.log.warning("positions_unmodelled", currency=currency, instruments=sorted(unmodelled),
                             hint="no instrument metadata yet: the exchange's PnL figures are shown as sent")
        self._unmodelled[currency] = unmodelled
        self.publish(picture)

    def _reconcile(self, reason: str, currencies: tuple[str, ...] = ()) -> None:
        self.log.info("reconcile_requested", reason=reason, currencies=list(currencies) or "all")
        self.publish(ReconcilePortfolio(origin=self.context.name, reason=reason, currencies=currencies))

    # -- notifications ----------------------------------------------------------------------------
    @handles(OrderUpdate)
    def on_order(self, order: OrderUpdate) -> None:
        self._publish_state(self.book.on_order(order))

    @handles(UserTrade)
    def on_trade(self, trade: UserTrade) -> None:
        currency = self.book.on_trade(trade)
        if currency is not None:
            # Every fill of our orders, resting or taking, once: the book counts each trade id once.
            self.log.info("fill", instrument=trade.instrument_name, side=trade.direction, amount=trade.amount,
                          price=trade.price, fee=trade.fee, fee_currency=trade.fee_currency,
                          order_id=trade.order_id, label=trade.label, trade_id=trade.trade_id,
                          liquidity=trade.liquidity, order_state=trade.state)
        self._publish_state(currency)
        if currency is not None:
            self._resolve_doubt(currency)

    @handles(UserChanges)
    def on_changes(self, changes: UserChanges) -> None:
        currencies, taken = self.book.on_changes(changes)
        if changes.positions and not taken:
            self.log.debug("user_changes_positions_not_taken", instrument=changes.instrument_name,
                           hint="the picture already holds a later fill or snapshot of it")
        for currency in currencies:
            self._publish_state(currency)
            self._resolve_doubt(currency)

    def _resolve_doubt(self, currency: str) -> None:
        """A fill that may or may not be in the snapshot in use: ask for a new one (once)."""
        account = self.book.account(currency)
        if account.doubt and not account.outstanding:
            self.log.warning("portfolio_in_doubt", currency=currency, reason=account.doubt)
            self._reconcile(f"in doubt: {account.doubt}", (currency,))

    @handles(PortfolioUpdate)
    def on_figures(self, figures: AccountFigures) -> None:
        self._publish_state(self.book.on_figures(figures))

    @handles(Ticker, immediate=True)
    def on_ticker(self, ticker: Ticker) -> None:
        # In the link thread. The picture with the new marks is published from the Portfolio's
        # own thread, as every other: two threads publishing snapshots could deliver them out of
        # the order they were made in (an old position after a fill, to the Hedger).
        if ticker.estimated_delivery_price == "expired":
            self.later(self._tell, _Closing(ticker=ticker))
            return
        currency = self.book.on_ticker(ticker)
        if currency is None:
            return
        self._marks_dirty.add(currency)
        now = self.context.clock.now()
        if now - self._last_published.get(currency, 0.0) >= self.mark_publish_s:
            self._last_published[currency] = now  # one request per interval
            self.later(self._ask_publish, currency)

    def _ask_publish(self, currency: str) -> None:
        self._tell(_PublishMarks(currency=currency))

    def _tell(self, message: msgspec.Struct) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass

    @handles(_Closing)
    def on_closing(self, closing: _Closing) -> None:
        currency = self.book.on_ticker(closing.ticker)
        if currency is not None:
            self.log.info("position_delivered", instrument=closing.ticker.instrument_name,
                          delivery_price=closing.ticker.delivery_price)
        self._publish_state(currency)

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
        self._link_up = state not in _LINK_DOWN
        if state in _LINK_DOWN or (state is ConnectionState.CONNECTED
                                   and not (status.attempt and status.attempt == self._link_attempt)):
            self._link_attempt = status.attempt if state is ConnectionState.CONNECTED else None
            self._asked_this_link.clear()
            self._retry.clear()
            self._failures.clear()
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

    @handles(ReconcileStarted)
    def on_reconcile_started(self, started: ReconcileStarted) -> None:
        self._publish_state(self.book.reconcile_started(started.currency, started.round))

    @handles(ReconcileFailed)
    def on_reconcile_failed(self, failed: ReconcileFailed) -> None:
        currency = failed.currency
        self.log.warning("reconcile_failed", currency=currency, reason=failed.reason, message=failed.message)
        self._publish_state(self.book.reconcile_failed(currency, failed.round))
        account = self.book.account(currency)
        wanted = not account.reconciled or bool(account.doubt)
        if wanted and not failed.superseded and self._link_up and not account.outstanding:
            failures = self._failures[currency] = self._failures.get(currency, 0) + 1
            delay = retry_delay(failures, initial=0.5, maximum=30.0)
            self.log.info("reconcile_retry", currency=currency, retry_in_s=delay, failures=failures)
            self._retry.add(currency)
            self._alarm.set(time.monotonic() + delay)

    def _ring(self) -> None:
        try:
            self.actor_ref.tell(_RetryReconcile())
        except pykka.ActorDeadError:
            pass

    @handles(_RetryReconcile)
    def on_retry(self, _retry: _RetryReconcile) -> None:
        currencies = tuple(sorted(c for c in self._retry if not self.book.account(c).outstanding))
        self._retry.clear()
        if currencies and self._link_up:
            self._reconcile("retry after a failed reconcile", currencies)

    @handles(ExchangeState)
    def on_exchange_state(self, state: ExchangeState) -> None:
        outcome = self.book.reconcile(state)
        currency = state.currency
        if not outcome.applied:
            self.log.warning("reconcile_discarded", currency=currency, reason=state.reason, doubt=outcome.doubt,
                             hint="asked again: the snapshot cannot be placed in time against our fills")
            # Not published: the picture is the same, and the new round's start says it is still checked.
            self._reconcile(f"again: {outcome.doubt}", (currency,))
            return
        self.reconciles += 1
        self._failures.pop(currency, None)
        differences = outcome.differences
        for difference in differences:
            self.log.warning("portfolio_differs", currency=difference.currency, what=difference.what,
                             key=difference.key, field=difference.field, ours=difference.ours,
                             exchange=difference.theirs, reason=state.reason)
        self.differences.extend(differences)
        del self.differences[:-1000]
        self.log.info("portfolio_reconciled", currency=currency, reason=state.reason,
                      differences=len(differences), positions=len(state.positions),
                      open_orders=len(state.open_orders), replayed_fills=outcome.replayed_fills,
                      kept_orders=outcome.kept_orders)
        self._publish_state(currency)

    # -- expiry -----------------------------------------------------------------------------------
    def _drop(self, names: set[str], reason: str) -> None:
        if not names:
            return
        changed = self.book.drop_instruments(names, int(self.context.clock.now() * 1000))
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
        for currency in self.book.on_instruments(loaded):
            self._publish_state(currency)
        self._drop(self.book.unlisted(loaded), "no longer listed")

    @handles(DailyRollover)
    def on_rollover(self, event: DailyRollover) -> None:
        expired = set()
        for name in self.book.held_instruments():
            try:
                expiry = expiry_of(name, self.book.identities.get(name))
            except InstrumentNameError:
                continue
            if expiry is not None and expiry <= event.at * 1000:
                expired.add(name)
        self._drop(expired, f"rollover {event.day}")
        # The 08:00 settlement: every session restarts (the tickers then say at which price).
        for currency in self.book.settle_sessions():
            self._publish_state(currency)
        # Settlement moved cash: take the exchange's balances and positions.
        self._reconcile(f"rollover {event.day}")

    @handles(SettlementHistory)
    def on_settlement_history(self, history: SettlementHistory) -> None:
        for currency in self.book.on_settlement_history(history):
            self._publish_state(currency)

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
