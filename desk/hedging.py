"""The hedger's logic for one currency: what it knows, when it may act, its one order's life.

:class:`CurrencyHedger` is a plain class (no thread, no clock of its own: every method takes
``now``); the Hedger actor routes bus messages to it and publishes what it emits through the
``publish`` callable. The decision itself is :func:`desk.hedge_decision.decide`.

Safety, in the order it is checked before a decision is even made:

- hedging is active (off at start unless ``active_on_start``; the console switches it). On
  activation it states its plan (:class:`~messages.hedging.HedgePlan`: the order it would send
  first, and that it treats the whole position in the hedge instrument as the hedge) and, when
  that order is above ``confirm_above_usd``, cannot be stated yet, or the hedge instrument holds
  a position it did not make (its own fills this run are counted by trade id), it waits for a
  confirmation of that plan and sends nothing until then;
- the Connection says it can trade (up, logged in, subscribed);
- the Portfolio's picture is reconciled with the exchange;
- the hedge instrument is listed (its contract size is known);
- no hedge order is in flight: one at a time, and after a fill the Portfolio must show the
  new hedge position before anything is decided again;
- no hedge order of an earlier run is still open (it is cancelled first);
- not in the pause after a rejection; fewer than ``max_orders_per_minute`` orders in the last
  60 s; the day's volume leaves room for at least one contract;

then :func:`decide` refuses stale or missing market data. ``max_rejections`` rejections in a
row switch hedging off with a message; so does a fill the Portfolio never shows.

An order whose fate is unknown (its answer was lost with the link, or never came) blocks
everything until the exchange's own picture (``ExchangeState``, fetched after the loss) says
where the hedge position stands and whether the order is still open: a reconnect never leads
to a second order for the same mismatch.

The order's phases and the moves between them are :class:`desk.hedge_order.HedgeOrder`'s; this
class decides when to move it. Its commands carry its :class:`~desk.hedge_order.OrderTag`'s
origin and labels (``hedge-<n>``): it cancels only its own orders, by order id, so a second
hedger's and a trader's orders on the same instrument are never touched.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

import msgspec

from config.settings import HedgerSettings
from deribit.instruments import amount_step, round_to_contract
from deribit.platform import PlatformLocks, index_of
from desk.hedge_decision import HedgeDecision, HedgePolicy, Side, decide
from desk.hedge_market import Change, HedgeMarket
from desk.hedge_order import CLOSED_STATES, HedgeOrder, OrderTag
from desk.plausibility import Implausible, PlausibilityLimits
from messages.account import ExchangeState, OrderUpdate, Position, UserTrade
from messages.commands import (
    ANSWER_LOST,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    PlaceOrder,
    ReconcilePortfolio,
)
from messages.hedging import (
    HedgeActivation,
    HedgeCode,
    HedgeMode,
    HedgePhase,
    HedgePlan,
    HedgerControl,
    HedgerStatus,
    SetHedgeBand,
)
from messages.market import IndexPrice, InstrumentsLoaded, PlatformState, Quote, Ticker
from messages.state import PortfolioChanged, TopOfBook

ORIGIN = "hedger"
LABEL_PREFIX = "hedge-"
#: The delta hedger's orders: a second hedger takes its own origin and prefix.
DELTA_TAG = OrderTag(origin=ORIGIN, prefix=LABEL_PREFIX)

_TRADE = HedgeCode.TRADE  # set on the order's path: a global, not an enum attribute look-up
#: An order against the last one no larger than this share of it (or twice the band) waits
#: ``reverse_after_s`` after the last one (see CurrencyHedger._reversal).
REVERSAL_SHARE = 0.1
#: Gates that only delay the order the decision states (any other leaves it without a basis: the
#: link, the portfolio or the instrument is not there yet).
_DELAYS_ONLY = frozenset({HedgeCode.ORPHAN_ORDERS, HedgeCode.COOLDOWN, HedgeCode.RATE_LIMIT})
SENT, RESTING, AMENDING, SETTLING, UNKNOWN = (
    HedgePhase.SENT, HedgePhase.RESTING, HedgePhase.AMENDING, HedgePhase.SETTLING, HedgePhase.UNKNOWN)


class EventLog(Protocol):
    """Where its lines go: a structlog logger, or the actor's deferred one."""

    def info(self, event: str, **fields: Any) -> object: ...

    def warning(self, event: str, **fields: Any) -> object: ...


class CurrencyHedger:
    """Delta hedging of one currency's options with one future (see the module doc)."""

    def __init__(
        self,
        currency: str,
        settings: HedgerSettings,
        publish: Callable[[object], None],
        log: EventLog,
        next_number: Callable[[float], int],
        now: float,
        on_order: Callable[[PlaceOrder, object], None] | None = None,
        later: Callable[..., None] | None = None,
        tag: OrderTag = DELTA_TAG,
        max_clock_ahead_s: float = 5.0,
    ) -> None:
        self.currency = currency
        self.settings = settings
        # Its orders' origin and labels: it cancels, and takes answers for, only its own.
        self.tag = tag
        self._prefix = tag.prefix  # the hot path reads these two once per order
        self._origin = tag.origin
        self.mode = HedgeMode(settings.mode)
        self.instrument: str = settings.instrument_for(currency)
        self.band: float = settings.max_delta_mismatch
        # ``active`` mirrors ``activation is ACTIVE`` (read on every decision); both change only
        # through _set_activation.
        self.activation = HedgeActivation.ACTIVE if settings.active_on_start else HedgeActivation.OFF
        self.active: bool = self.activation is HedgeActivation.ACTIVE
        self.plan: HedgePlan | None = None  # stated on activation, awaiting confirmation
        self._plans = 0
        # Why it switched itself off, until acknowledged or activated again.
        self.alert = ""
        # The net of its own orders' fills this run (USD), each trade counted once.
        self.own_position = 0.0
        self._own_trades: set[str] = set()
        self._publish = publish
        self.log = log
        self._next_number = next_number
        self._on_order = on_order
        # Work that may wait until the order decided went out (the Hedger's ``Actor.later``;
        # plain callers: at once).
        self._later: Callable[..., None] = later or (lambda function, *args: function(*args))
        self._policy: HedgePolicy | None = None
        self._policy_key: tuple[Any, ...] = ()
        self.contract_size: float | None = None
        self.tick_size: float | None = None
        # The hedge instrument's price index (its metadata's once listed) and the exchange's locks.
        self.price_index = index_of(currency)
        self.locks = PlatformLocks()
        # What we know, with when we received it.
        self.can_trade = False
        self.portfolio: PortfolioChanged | None = None
        self.positions: dict[str, Position] = {}
        self.held_options: frozenset[str] = frozenset()
        self.held: frozenset[str] = frozenset()  # every instrument with a position
        self.limits = PlausibilityLimits(
            max_index_deviation=settings.max_index_deviation_pct / 100.0,
            max_mark_outside_book=settings.max_mark_outside_book_pct / 100.0,
            max_iv_pct=settings.max_iv_pct, max_clock_ahead_s=max_clock_ahead_s)
        self.market = HedgeMarket(currency, self.instrument, self.limits, settings.stale_after_s)
        self.fault: Implausible | None = None  # the input refused that holds hedging (status)
        # The order in flight and the counters that bound what we send.
        self.order: HedgeOrder | None = None
        self.escalate_to_market = False
        self.own_labels: set[str] = set()
        self.orphans_cancelled: set[str] = set()
        self.orphans: tuple[OrderUpdate, ...] = ()
        self.sent_times: deque[float] = deque()
        self.last_sent: tuple[Side, float, float] | None = None  # the last order's side, when it went, its USD
        self.reverse_until = 0.0
        self.orders_today = 0
        self.volume_today = 0.0
        self.rejections = 0
        self.retry_at = 0.0
        self.link_epoch = 0
        # What was last said (log lines and status only on change).
        self.last: HedgeDecision | None = None
        self.last_code = HedgeCode.NONE
        self.last_reason = ""
        self.message = "hedging is on" if self.active else "hedging is off"
        self.warned = False
        self._status_key: tuple[Any, ...] = ()
        self.created_at = now

    # -- inputs: instruments, market data, portfolio, link ------------------------------------------
    def instruments_loaded(self, loaded: InstrumentsLoaded, now: float) -> None:
        for instrument in loaded.instruments:
            if instrument.instrument_name == self.instrument:
                first = self.contract_size is None
                self.contract_size = amount_step(instrument)
                self.tick_size = instrument.tick_size
                self.price_index = index_of(self.currency, instrument)
                if first:
                    self.log.info("hedge_instrument_listed", currency=self.currency, instrument=self.instrument,
                                  contract_size=self.contract_size, tick_size=self.tick_size)
                self._evaluate(now, loaded)
                return
        if self.contract_size is not None or not self.last_code:
            self.log.warning("hedge_instrument_not_listed", currency=self.currency, instrument=self.instrument,
                             hint="set hedger.instruments to a listed future or perpetual")
        self.contract_size = None
        self._note_block(HedgeCode.NOT_LISTED, f"the hedge instrument {self.instrument} is not listed", now)

    def on_ticker(self, ticker: Ticker, now: float) -> bool:
        """A ticker of this currency. True when it could change the decision (and was evaluated)."""
        return self._took(self.market.on_ticker(ticker, now, self.held), ticker, now)

    def on_quote(self, quote: Quote, now: float) -> bool:
        return self._took(self.market.on_quote(quote, now), quote, now)

    def on_top_of_book(self, top: TopOfBook, now: float) -> bool:
        return self._took(self.market.on_top_of_book(top, now), top, now)

    def on_index(self, index: IndexPrice, now: float) -> bool:
        return self._took(self.market.on_index(index, now), index, now)

    def _took(self, change: Change, message: object, now: float) -> bool:
        if change is Change.NONE:
            return False
        if change is Change.REFUSED:
            refused = self.market.refused
            if refused is not None:  # said once per fault, not per message
                self.log.warning("hedge_input_refused", currency=self.currency, instrument=refused.instrument,
                                 fault=refused.fault.value, detail=refused.detail,
                                 blocks=self.market.blocking_fault(self.held) is not None)
        self._evaluate(now, message)
        return True

    def on_platform_state(self, state: PlatformState, now: float) -> None:
        """Deribit locked or unlocked an index: no order while the hedge instrument's is locked."""
        if self.locks.on_state(state) and state.price_index == self.price_index:
            self.log.warning("hedge_platform_lock", currency=self.currency, price_index=self.price_index,
                             locked=bool(state.locked))
            self._evaluate(now, state)

    def on_portfolio(self, portfolio: PortfolioChanged, now: float) -> None:
        self.portfolio = portfolio
        self.positions = {p.instrument_name: p for p in portfolio.positions}
        self.held_options = frozenset(p.instrument_name for p in portfolio.positions
                                      if p.kind == "option" and p.size != 0)
        self.held = frozenset(p.instrument_name for p in portfolio.positions if p.size != 0)
        owns = self.tag.owns
        self.orphans = tuple(
            o for o in portfolio.open_orders
            if owns(o.label) and o.label not in self.own_labels and o.order_state not in CLOSED_STATES)
        order = self.order
        if order is not None and order.phase == SETTLING and self._reflected(order):
            self._settled(order, now)
        self._evaluate(now, portfolio)

    def on_connection(self, can_trade: bool, now: float) -> None:
        if can_trade == self.can_trade:
            return
        self.can_trade = can_trade
        if not can_trade:
            self.link_epoch += 1
            # Whatever arrives after the reconnect must be fresh: forget the market picture.
            self.market.forget()
            order = self.order
            if order is not None:
                order.link_lost = True
                if order.phase in (RESTING, AMENDING):
                    # Cancel-on-disconnect may or may not have taken it: only the exchange knows.
                    self._unknown(order, "the link dropped while the order was open", now)
            self._note_block(HedgeCode.DISCONNECTED, "not connected to the exchange", now)
            return
        order = self.order
        if order is not None and order.phase == UNKNOWN:
            self._ask_reconcile(order, now)
        elif order is not None and order.phase == SETTLING and order.due is None:
            order.due = now + self.settings.fill_wait_s  # the portfolio reconciles on every connect
        self._evaluate(now, "connected")

    # -- inputs: our order's life ------------------------------------------------------------------------
    def on_result(self, result: CommandResult, now: float) -> None:
        order = self.order
        if order is None:
            return
        if result.request_key == order.request_key:
            if order.phase == SETTLING:
                self._late_trades(order, result.trades, now)  # its fills, in the answer after the order state
                return
            if order.phase != SENT:
                return  # a late answer after we gave up on it: the exchange's picture rules
            for trade in result.trades:  # first: a fill known now need not wait for its notification
                order.take_trade(trade)
            if result.order is not None:
                self._order_state(order, result.order, now)
                if self.order is not order:
                    return  # closed unfilled or rejected: dropped
                if order.phase == SENT:  # still open: a resting limit order
                    self._rest(order, now)
            return
        if result.request_key == order.pending_key:
            order.pending_key = None
            for trade in result.trades:  # an edit's answer carries the fills it caused
                order.take_trade(trade)
            if result.order is not None:
                self._order_state(order, result.order, now)  # may close it
            if self.order is order and order.phase == AMENDING and not order.cancelling:
                self._rest(order, now)  # repriced: wait again at the new price

    def on_failed(self, failed: CommandFailed, now: float) -> None:
        order = self.order
        if order is None:
            return
        if failed.request_key == order.request_key and order.phase == SENT:
            if failed.code == ANSWER_LOST:
                self._unknown(order, failed.message, now)
                return
            self._drop(order)
            self.rejections += 1
            self.volume_today -= order.amount
            self.retry_at = now + self.settings.retry_after_reject_s
            self.log.warning("hedge_rejected", currency=self.currency, label=order.label, code=failed.code,
                             message=failed.message, data=failed.data, rejections_in_a_row=self.rejections)
            self._after_rejection(f"{failed.message} (code {failed.code})", now)
            return
        if failed.request_key == order.pending_key:
            order.pending_key = None
            self.log.warning("hedge_amend_failed", currency=self.currency, label=order.label, code=failed.code,
                             message=failed.message, method=failed.method)
            if failed.code == ANSWER_LOST:
                self._unknown(order, failed.message, now)
            elif order.phase == AMENDING:
                # Usually the order filled or closed meanwhile; its update says so. Try again later.
                order.rest(now + self.settings.reprice_after_s)

    def on_order_update(self, update: OrderUpdate, now: float) -> None:
        order = self.order
        if order is None or not order.following or not order.is_ours(update.label, update.order_id):
            return
        self._order_state(order, update, now)
        if order.phase == SENT and update.order_state == "open" and order.order_type == "limit":
            self._rest(order, now)

    def on_user_trade(self, trade: UserTrade, now: float) -> None:
        order = self.order
        if order is None or not order.is_ours(trade.label, trade.order_id):
            return
        if order.phase == SETTLING:
            self._late_trades(order, (trade,), now)  # the order's state said it closed first
            return
        if not order.following:
            return
        order.take_trade(trade)
        if trade.state in CLOSED_STATES:
            self._closed(order, trade.state or "filled", now)

    def _late_trades(self, order: HedgeOrder, trades: Iterable[UserTrade], now: float) -> None:
        """Fills of an order already closed (Deribit's order and trade notifications come in either
        order): it settles on them as on those known before."""
        for trade in trades:
            order.take_trade(trade)
        if self._reflected(order):
            self._settled(order, now)

    def on_exchange_state(self, state: ExchangeState, now: float) -> None:
        """The exchange's own picture: the one thing that resolves an order of unknown fate."""
        order = self.order
        if order is None or order.phase != UNKNOWN:
            return
        assert order.unknown_since is not None
        if state.at < order.unknown_since or (order.link_lost and not self.can_trade):
            return  # fetched before we knew the answer was lost
        found = order.still_open(state.open_orders)
        size = next((p.size for p in state.positions if p.instrument_name == self.instrument), 0.0)
        if found is not None:
            # Still on the book after all: cancel it; its final state then settles it as usual.
            order.take_state(found)
            self.log.warning("hedge_order_found_open", currency=self.currency, label=order.label,
                             order_id=found.order_id, filled=found.filled_amount)
            self._cancel(order, now)
            return
        self.log.info("hedge_order_resolved", currency=self.currency, label=order.label,
                      hedge_position=size, before=order.size_before)
        order.resolved_at = state.at
        self._settle(order, size, now)

    # -- controls ----------------------------------------------------------------------------------------
    def on_control(self, control: HedgerControl, now: float) -> None:
        action = control.action
        if action == "activate":
            if self.activation is HedgeActivation.ACTIVE:
                self._go_active(control, None, now)  # on already: a fresh start after rejections
            else:
                plan = self.make_plan(now)
                if plan.confirm:
                    self._await_confirmation(plan, now)
                else:
                    self._go_active(control, plan, now)
        elif action == "confirm":
            self._confirm(control, now)
        elif action == "deactivate":
            pending = self.plan
            self._switch_off(f"hedging deactivated by {control.origin}"
                             + (f" (plan {pending.plan_id} awaiting confirmation cancelled)" if pending else ""),
                             now, warn=False)
        elif action == "acknowledge" and self.alert:
            self.log.info("hedge_alert_acknowledged", currency=self.currency, origin=control.origin, alert=self.alert)
            self.alert = ""
            self.message = f"alert acknowledged by {control.origin}; hedging is {self.activation.value}"
        self.publish_status(now, control.request_key)

    # -- activation: state the plan; wait for its confirmation when it asks for one -------------------
    def take_own_trade(self, trade: UserTrade) -> None:
        """A fill of an order this run sent (from its notification or its order's answer, each
        trade id once): what makes :attr:`own_position`, the part of the hedge instrument's
        position the hedger made itself."""
        if (trade.label not in self.own_labels or trade.instrument_name != self.instrument
                or trade.trade_id in self._own_trades):
            return
        self._own_trades.add(trade.trade_id)
        self.own_position += trade.amount if trade.direction == "buy" else -trade.amount

    def make_plan(self, now: float) -> HedgePlan:
        """What activating now would do first, from :meth:`current_decision` and the gates, and
        why it must be confirmed (``confirm``, empty when it need not be). Sends nothing."""
        decision = self.current_decision(now)
        order = self.order
        gate: tuple[HedgeCode, str] | None
        if order is not None:
            gate = decision.code, f"its order {order.label} is still in flight; it decides again once that settles"
        elif self.orphans:  # _gate would cancel them: that waits for the activation
            gate = HedgeCode.ORPHAN_ORDERS, (f"{len(self.orphans)} hedge order(s) of an earlier run are open "
                                             "and are cancelled first")
        else:
            gate = self._gate(now)
        code, reason = gate if gate is not None else (decision.code, decision.reason)
        hedge_position = self._hedge_size() if self.portfolio is not None else None
        half_contract = 0.5 * self.contract_size if self.contract_size else 0.0
        why: list[str] = []
        if hedge_position is not None and abs(hedge_position - self.own_position) > half_contract:
            why.append(f"{self.instrument} holds {hedge_position - self.own_position:+,.0f} USD the hedger did "
                       "not make")
        stated = (order is None and decision.action != "blocked" and hedge_position is not None
                  and (gate is None or gate[0] in _DELAYS_ONLY))
        side = decision.side if decision.trade and stated else None
        amount = decision.amount if side is not None else 0.0
        if amount > self.settings.confirm_above_usd:
            why.append(f"the first order ({amount:,.0f} USD) is above hedger.confirm_above_usd "
                       f"({self.settings.confirm_above_usd:,.0f} USD)")
        if not stated:
            why.append("it cannot say yet what it will send first")
        return HedgePlan(
            plan_id=self._plans + 1, at=now, expires_at=now + self.settings.confirm_within_s,
            instrument=self.instrument, code=code, reason=reason, side=side, amount=amount,
            order_type=self._order(side, amount, f"{self._prefix}0").type if side is not None else "",
            stated=stated, hedge_position=hedge_position, own_position=self.own_position, confirm="; ".join(why))

    def _plan_change(self, shown: HedgePlan, now_plan: HedgePlan) -> str:
        """How ``now_plan`` differs materially from the plan ``shown`` (empty: it does not): another
        side, an amount further off than the band (or a contract), or another position not made
        by the hedger."""
        contract = self.contract_size or 0.0
        quote = self.market.quote
        price = quote.price if quote is not None else None
        tolerance = max(contract, self.band * price if price else 0.0)
        if shown.side != now_plan.side or abs(shown.amount - now_plan.amount) > tolerance:
            return "its first order changed"
        before, after = shown.not_made, now_plan.not_made
        if (before is None) != (after is None) or abs((before or 0.0) - (after or 0.0)) > 0.5 * contract:
            return f"the position in {self.instrument} not made by the hedger changed"
        return ""

    def _confirm(self, control: HedgerControl, now: float) -> None:
        if self.activation is HedgeActivation.ACTIVE:
            self.message = f"hedging is already on ({control.origin}'s confirmation had nothing to confirm)"
            return
        shown = self.plan
        plan = self.make_plan(now)
        if shown is None:
            refused = "no plan awaits confirmation"
        elif control.plan_id != shown.plan_id:
            refused = f"it names plan {control.plan_id}, the plan awaiting confirmation is {shown.plan_id}"
        elif now > shown.expires_at:
            refused = f"plan {shown.plan_id} expired after {self.settings.confirm_within_s:g} s"
        elif not plan.stated:
            refused = f"it still cannot say what it will send first ({plan.reason})"
        else:
            refused = self._plan_change(shown, plan)
            if refused:
                refused = f"plan {shown.plan_id} is stale: {refused}"
        if not refused:
            assert shown is not None
            self._go_active(control, plan, now, confirmed=shown.plan_id)
            return
        self.log.warning("hedge_confirmation_refused", currency=self.currency, origin=control.origin,
                         plan_id=control.plan_id, reason=refused)
        # A confirmation confirms only the plan it was shown: the new plan waits for its own.
        why = plan.confirm or "a confirmation confirms only the plan it was shown"
        self._await_confirmation(msgspec.structs.replace(plan, confirm=why), now,
                                 f"confirmation refused ({refused}); new ")

    def _await_confirmation(self, plan: HedgePlan, now: float, prefix: str = "") -> None:
        self._set_activation(HedgeActivation.AWAITING_CONFIRMATION)
        self.plan = plan
        self._plans = plan.plan_id
        self.message = (f"{prefix}plan {plan.plan_id}: {plan.describe()}. Hedging is NOT on yet ({plan.confirm}): "
                        f"confirm within {self.settings.confirm_within_s:g} s (activate delta hedging confirm); "
                        "nothing is sent until then")
        self.log.info("hedging_awaiting_confirmation", currency=self.currency, plan_id=plan.plan_id,
                      side=plan.side, amount=plan.amount, instrument=plan.instrument, reason=plan.reason,
                      hedge_position=plan.hedge_position, own_position=plan.own_position, why=plan.confirm)

    def _go_active(self, control: HedgerControl, plan: HedgePlan | None, now: float, confirmed: int = 0) -> None:
        self._set_activation(HedgeActivation.ACTIVE)
        self.alert = ""
        self.rejections = 0
        self.retry_at = 0.0
        self.last_code = HedgeCode.NONE
        self.message = (f"hedging activated by {control.origin}"
                        + (f" (plan {confirmed} confirmed)" if confirmed else "")
                        + (f": {plan.describe()}" if plan else ""))
        self.log.info("hedging_activated", currency=self.currency, origin=control.origin, band=self.band,
                      instrument=self.instrument, confirmed_plan=confirmed or None,
                      first_side=plan.side if plan else None, first_amount=plan.amount if plan else None,
                      hedge_position=self._hedge_size(), own_position=self.own_position)
        self._evaluate(now, control)

    def _set_activation(self, activation: HedgeActivation) -> None:
        self.activation = activation
        self.active = activation is HedgeActivation.ACTIVE
        if activation is not HedgeActivation.AWAITING_CONFIRMATION:
            self.plan = None

    def _expire_plan(self, now: float) -> None:
        plan = self.plan
        assert plan is not None
        self._set_activation(HedgeActivation.OFF)
        self.message = (f"plan {plan.plan_id} was not confirmed within {self.settings.confirm_within_s:g} s: "
                        "hedging stays off (activate again for a new plan)")
        self.log.info("hedge_plan_expired", currency=self.currency, plan_id=plan.plan_id)
        self.publish_status(now)

    def on_set_band(self, change: SetHedgeBand, now: float) -> None:
        value = change.max_delta_mismatch
        refusal = HedgerSettings.band_refusal(value, self.currency)  # hedger.max_delta_mismatch's range
        if refusal is not None:
            self.message = f"band refused: {refusal}"
            # NaN and infinity as text: the JSON log holds no such numbers.
            self.log.warning("hedge_band_refused", currency=self.currency,
                             band=value if math.isfinite(value) else repr(value), origin=change.origin, reason=refusal)
        else:
            self.log.info("hedge_band_changed", currency=self.currency, band=value, was=self.band,
                          origin=change.origin)
            self.band = value
            self.message = f"band set to {value:g} {self.currency} by {change.origin}"
            self._evaluate(now, change)
        self.publish_status(now, change.request_key)

    def safe_shutdown(self, reason: str, now: float) -> None:
        self._switch_off(f"safe shutdown: {reason}", now, warn=True)

    def _switch_off(self, message: str, now: float, warn: bool) -> None:
        was = self.active
        self._set_activation(HedgeActivation.OFF)
        self.message = message
        if warn:  # the console keeps it on screen until acknowledged
            self.alert = message
        (self.log.warning if warn else self.log.info)(
            "hedging_switched_off" if warn else "hedging_deactivated", currency=self.currency, reason=message,
            was_active=was)
        order = self.order
        if order is not None and order.phase == RESTING and order.order_id:
            self._cancel(order, now)
        self.publish_status(now)

    # -- time --------------------------------------------------------------------------------------------
    def on_minute(self, now: float) -> None:
        self._prune(now)
        last = self.last
        self.log.info("hedge_state", currency=self.currency, active=self.active, code=self.last_code.value,
                      options_delta=last.options_delta if last else None,
                      hedge_delta=last.hedge_delta if last else None,
                      mismatch=last.mismatch if last else None, band=self.band,
                      phase=(self.order.phase if self.order else HedgePhase.IDLE).value,
                      orders_today=self.orders_today,
                      volume_today=self.volume_today)
        self.publish_status(now, force=True)

    def on_rollover(self, now: float) -> None:
        self.orders_today = 0
        self.volume_today = 0.0
        self.publish_status(now, force=True)

    def next_due(self) -> float | None:
        dues = []
        if self.order is not None and self.order.due is not None:
            dues.append(self.order.due)
        if self.active and self.order is None and self.retry_at:
            dues.append(self.retry_at)
        if self.active and self.order is None and self.last_code == HedgeCode.RATE_LIMIT and self.sent_times:
            dues.append(self.sent_times[0] + 60.0)
        if self.plan is not None:
            dues.append(self.plan.expires_at)
        if self.active and self.order is None and self.last_code == HedgeCode.REVERSAL_PAUSE:
            dues.append(self.reverse_until)
        return min(dues) if dues else None

    def on_time(self, now: float) -> None:
        if self.plan is not None and now >= self.plan.expires_at:
            self._expire_plan(now)
        order = self.order
        if order is not None and order.due is not None and now >= order.due:
            order.due = None
            self._timeout(order, now)
        if self.order is None and self.retry_at and now >= self.retry_at:
            self.retry_at = 0.0
            self._evaluate(now, "pause after a rejection over")
        elif self.order is None and self.last_code == HedgeCode.RATE_LIMIT:
            self._evaluate(now, "rate window moved")
        elif self.order is None and self.last_code == HedgeCode.REVERSAL_PAUSE and now >= self.reverse_until:
            self._evaluate(now, "reversal pause over")

    def _timeout(self, order: HedgeOrder, now: float) -> None:
        phase = order.phase
        if phase == RESTING:
            self._reprice_or_cancel(order, now)
        elif phase == SENT:
            self._unknown(order, f"no answer within {self.settings.fill_wait_s:g} s", now)
        elif phase == AMENDING:
            self._unknown(order, "no answer to the edit or cancel", now)
        elif phase == SETTLING:
            if not self.can_trade:
                # No picture can come while the link is down: the wait starts again once it is back.
                order.due = None
                return
            if not order.reconcile_asked:
                self.log.warning("hedge_fill_not_shown", currency=self.currency, label=order.label,
                                 expected=order.expected_size, shown=self._hedge_size(),
                                 waited_s=self.settings.fill_wait_s)
                order.reconcile_asked = True
                order.due = now + self.settings.fill_wait_s
                self._publish(ReconcilePortfolio(origin=self.tag.origin, currencies=(self.currency,),
                                                 reason=f"hedger: fill of {order.label} not shown"))
            else:
                self._drop(order)
                self._switch_off(
                    f"the portfolio never showed the fill of {order.label} (hedge position "
                    f"{self._hedge_size():g} USD, expected {order.expected_size:g} USD); hedging switched off: "
                    "check the positions, then activate again", now, warn=True)
        elif phase == UNKNOWN:
            self._ask_reconcile(order, now)

    # -- status ------------------------------------------------------------------------------------------
    def status(self, now: float, request_key: str = "") -> HedgerStatus:
        # The figures as they are now, also while switched off or held by a gate (the last
        # decision's when the data gives none now).
        current = self.current_decision(now)
        last = current if current.mismatch is not None else self.last
        order = self.order
        return HedgerStatus(
            currency=self.currency, active=self.active, instrument=self.instrument,
            mode=self.mode, band=self.band, at=now,
            options_delta=last.options_delta if last else None,
            hedge_delta=last.hedge_delta if last else None,
            mismatch=last.mismatch if last else None,
            in_flight=order is not None, orders_today=self.orders_today, volume_today=self.volume_today,
            last_reason=self.last_reason, code=self.last_code, message=self.message, request_key=request_key,
            phase=order.phase if order is not None else HedgePhase.IDLE, delta_source=self.settings.delta_source,
            order_label=order.label if order is not None else "",
            fault=self.fault.fault if self.fault is not None and self.last_code is HedgeCode.IMPLAUSIBLE_DATA else None,
            activation=self.activation, plan=self.plan, alert=self.alert,
        )

    def publish_status(self, now: float, request_key: str = "", force: bool = False) -> None:
        order = self.order
        key = (self.activation, order.phase if order else None, order.label if order else None, self.band,
               self.last_code, self.last_reason, self.orders_today, self.message, self.plan, self.alert)
        if force or request_key or key != self._status_key:
            self._status_key = key
            self._publish(self.status(now, request_key))

    # -- the decision --------------------------------------------------------------------------------------
    def policy(self) -> HedgePolicy:
        """The decision's view of the settings; made again only when one of them changed."""
        key = (self.settings, self.contract_size, self.band)
        if self._policy is None or self._policy_key != key:
            s = self.settings
            self._policy_key = key
            self._policy = HedgePolicy(
                instrument=self.instrument, contract_size=self.contract_size or 0.0, band=self.band, mode=s.mode,
                delta_source=s.delta_source, max_order_usd=s.max_order_usd, stale_after_s=s.stale_after_s,
                disagreement_warn=s.delta_disagreement_warn, limits=self.limits, require_index=True)
        return self._policy

    def current_decision(self, now: float) -> HedgeDecision:
        """What :func:`decide` says now, whatever the gates (for the status and tests)."""
        market = self.market
        return decide(self.positions.values(), market.marks, market.quote, self.policy(), now,
                      market.future_prices, market.underlying)

    def _gate(self, now: float) -> tuple[HedgeCode, str] | None:
        if not self.can_trade:
            return HedgeCode.DISCONNECTED, "not connected to the exchange (or not logged in and subscribed)"
        if self.locks.locked(self.price_index):
            return HedgeCode.PLATFORM_LOCKED, (f"Deribit has locked trading on {self.price_index}: "
                                               "hedging resumes when it is unlocked")
        portfolio = self.portfolio
        if portfolio is None:
            return HedgeCode.NO_PORTFOLIO, "no portfolio yet"
        if not portfolio.reconciled:
            return HedgeCode.UNRECONCILED, "the portfolio is not reconciled with the exchange yet"
        if portfolio.reconciling:
            return HedgeCode.RECONCILING, "a reconcile with the exchange is under way: waiting for its picture"
        if self.contract_size is None:
            return HedgeCode.NOT_LISTED, f"the hedge instrument {self.instrument} is not listed (yet)"
        market = self.market
        if market.faults:
            fault = market.blocking_fault(self.held)
            if fault is not None:
                self.fault = fault
                return HedgeCode.IMPLAUSIBLE_DATA, f"implausible data refused: {fault}"
        if self.orphans:
            self._cancel_orphans(now)
            return (HedgeCode.ORPHAN_ORDERS,
                    f"{len(self.orphans)} hedge order(s) of an earlier run are open: cancelling")
        if now < self.retry_at:
            return HedgeCode.COOLDOWN, f"pausing {self.retry_at - now:.1f} s after a rejection"
        self._prune(now)
        if len(self.sent_times) >= self.settings.max_orders_per_minute:
            return HedgeCode.RATE_LIMIT, (f"{len(self.sent_times)} hedge orders in the last 60 s "
                                          f"(max_orders_per_minute {self.settings.max_orders_per_minute})")
        return None

    def warm_up(self, now: float) -> None:
        """What a frame that pushes the mismatch past the band leads to, without its effects:
        the decision and the order it would place, made and dropped, so that they are in the
        CPU's caches when such a frame comes (see ``messages.system.WarmUp``). Publishes and
        logs nothing, numbers no label, changes nothing but the policy's cache."""
        market = self.market
        if not self.active or self.order is not None or market.quote is None or self.contract_size is None:
            return  # nothing would be sent now: nothing to keep warm
        market.warm_up(now)
        decision = decide(self.positions.values(), market.marks, market.quote, self.policy(), now,
                          market.future_prices, market.underlying)
        self._order(decision.side or "sell", decision.amount or self.contract_size, f"{self._prefix}0")

    def _evaluate(self, now: float, trigger: object) -> None:
        if not self.active or self.order is not None:
            return
        gate = self._gate(now)
        if gate is not None:
            self._note_block(*gate, now)
            return
        market = self.market
        decision = decide(self.positions.values(), market.marks, market.quote, self.policy(), now,
                          market.future_prices, market.underlying)
        self.last = decision
        if decision.warning and not self.warned:
            self.log.warning("delta_disagreement", currency=self.currency, detail=decision.warning,
                             ours=decision.ours_options_delta, exchange=decision.exchange_options_delta)
        self.warned = bool(decision.warning)
        if not decision.trade:
            self._note(decision, now)
            return
        if self._reversal(decision, now):
            return
        amount = decision.amount
        room = self.settings.max_daily_volume_usd - self.volume_today
        if amount > room:
            assert self.contract_size is not None
            amount = round_to_contract(max(room, 0.0), self.contract_size, "down")
            if amount <= 0:
                self._note_block(HedgeCode.DAILY_VOLUME, f"the day's hedge volume {self.volume_today:g} USD reached "
                                 f"max_daily_volume_usd {self.settings.max_daily_volume_usd:g}", now)
                return
        self._place(decision, amount, now, trigger)

    def _reversal(self, decision: HedgeDecision, now: float) -> bool:
        """Whether ``decision`` would soon undo a small part of the last order: held until
        ``reverse_after_s`` after that order. A move's option tickers come just after the frame that
        hedged it, with IVs moved along the smile, and may ask for a correction of a few bands (seen:
        3 bands after 8,690 USD on a 1.3% move); a real reversal is larger and goes at once. One
        move, one hedge: small is within twice the band or a tenth of the last order."""
        last = self.last_sent
        if last is None or decision.side == last[0] or decision.mismatch is None:
            return False
        until = last[1] + self.settings.reverse_after_s
        small = max(2.0 * self.band * (decision.price or 0.0), REVERSAL_SHARE * last[2])
        if now >= until or decision.amount > small:
            return False
        self.reverse_until = until
        self._note_block(HedgeCode.REVERSAL_PAUSE,
                         f"{decision.side} {decision.amount:g} USD would undo a small part of the {last[0]} of "
                         f"{last[2]:g} USD {now - last[1]:.2f} s ago (mismatch {decision.mismatch:+.6f}): waiting "
                         f"{until - now:.2f} s", now)
        return True

    def _note(self, decision: HedgeDecision, now: float) -> None:
        if decision.code != self.last_code or (decision.fault is not None and decision.reason != self.last_reason):
            if decision.fault is not None:
                self.fault = Implausible(decision.fault, self.instrument, decision.reason)
            self.last_code = decision.code
            self.last_reason = decision.reason
            self.log.info("hedge_blocked" if decision.action == "blocked" else "hedge_hold",
                          currency=self.currency, code=decision.code.value, reason=decision.reason,
                          options_delta=decision.options_delta, hedge_delta=decision.hedge_delta,
                          mismatch=decision.mismatch, band=decision.band,
                          fault=decision.fault.value if decision.fault is not None else None)
            self.publish_status(now)

    def _note_block(self, code: HedgeCode, reason: str, now: float) -> None:
        # A new fault says so even when the code stays IMPLAUSIBLE_DATA.
        if code != self.last_code or (code is HedgeCode.IMPLAUSIBLE_DATA and reason != self.last_reason):
            self.last_code = code
            self.last_reason = reason
            self.log.info("hedge_blocked", currency=self.currency, code=code.value, reason=reason,
                          fault=self.fault.fault.value if code is HedgeCode.IMPLAUSIBLE_DATA and self.fault else None)
            self.publish_status(now)

    def _order(self, side: Side, amount: float, label: str) -> PlaceOrder:
        """The hedge order to send now: post-only at our side's touch when the settings ask for
        limit orders (and the last one did not time out), else market."""
        price = None
        order_type: Literal["limit", "market"] = "market"
        if self.settings.order_type == "limit" and not self.escalate_to_market:
            price = self.market.hedge_bid if side == "buy" else self.market.hedge_ask
            if price is not None:
                order_type = "limit"
        return PlaceOrder(instrument_name=self.instrument, side=side, amount=amount, origin=self._origin,
                          request_key=label, type=order_type, price=price, post_only=order_type == "limit",
                          label=label)

    def _place(self, decision: HedgeDecision, amount: float, now: float, trigger: object) -> None:
        number = self._next_number(now)
        label = f"{self._prefix}{number}"
        assert decision.side is not None
        side: Side = decision.side
        command = self._order(side, amount, label)
        self.order = HedgeOrder(label=label, request_key=label, side=side, amount=amount, order_type=command.type,
                                placed_at=now, size_before=self._hedge_size(), price=command.price,
                                due=now + self.settings.fill_wait_s)
        self.own_labels.add(label)
        self.sent_times.append(now)
        self.last_sent = (side, now, amount)
        self.orders_today += 1
        self.volume_today += amount
        self.escalate_to_market = False
        self._publish(command)  # first: the order is the hot path; bookkeeping and logging follow
        if self._on_order is not None:
            self._on_order(command, trigger)
        self.last = decision
        self.last_code = _TRADE
        self.last_reason = decision.reason
        # The line is made (and written) once the order went out: see ``later``.
        self._later(self._log_order, command, decision, trigger)
        self._later(self.publish_status, now)

    def _log_order(self, command: PlaceOrder, decision: HedgeDecision, trigger: object) -> None:
        self.log.info("hedge_order", currency=self.currency, label=command.label, side=command.side,
                      amount=command.amount, order_type=command.type, price=command.price, instrument=self.instrument,
                      reason=decision.reason, options_delta=decision.options_delta, hedge_delta=decision.hedge_delta,
                      mismatch=decision.mismatch, band=decision.band, expected_after=decision.after,
                      hedge_price=decision.price, mode=self.mode.value, delta_source=self.settings.delta_source,
                      trigger=_describe(trigger), deltas=[(d.instrument_name, round(d.delta, 8))
                                                          for d in decision.deltas])

    # -- the order's life ------------------------------------------------------------------------------------
    def _order_state(self, order: HedgeOrder, update: OrderUpdate, now: float) -> None:
        order.take_state(update)
        if update.filled_amount > 0 or update.order_state == "open":
            self.rejections = 0  # accepted: the run of rejections is over
        if update.order_state in CLOSED_STATES:
            self._closed(order, update.order_state, now)

    def _drop(self, order: HedgeOrder) -> None:
        order.finish()
        self.order = None

    def _rest(self, order: HedgeOrder, now: float) -> None:
        order.rest(now + self.settings.reprice_after_s)
        if order.order_type != "limit":
            # A market order left open (not enough on the book): nothing to reprice; cancel it
            # at the timeout and hedge what is still needed afresh.
            order.reprices = self.settings.max_reprices
        self.publish_status(now)

    def _closed(self, order: HedgeOrder, state: str, now: float) -> None:
        if not order.following:
            return
        unfilled = max(order.amount - order.filled, 0.0)
        self.volume_today -= unfilled
        # A rejected order, or a market order that closed without any fill (no liquidity), is a
        # failure like an error answer: it counts toward switching hedging off.
        failed = order.filled == 0 and (state == "rejected" or (state == "cancelled" and order.order_type == "market"))
        if failed:
            self._drop(order)
            self.rejections += 1
            self.retry_at = now + self.settings.retry_after_reject_s
            why = "the exchange rejected the order" if state == "rejected" else "the market order closed unfilled"
            self.log.warning("hedge_rejected", currency=self.currency, label=order.label, code=0, message=why,
                             rejections_in_a_row=self.rejections)
            self._after_rejection(why, now)
            return
        self.log.info("hedge_closed", currency=self.currency, label=order.label, state=state, filled=order.filled,
                      amount=order.amount, reprices=order.reprices)
        if order.filled == 0:
            self._drop(order)
            self.publish_status(now)
            self._evaluate(now, "previous hedge closed unfilled")
            return
        self._settle(order, order.size_before + order.signed_filled, now)

    def _settle(self, order: HedgeOrder, expected_size: float, now: float) -> None:
        order.settle(expected_size, now, now + self.settings.fill_wait_s)
        if self._reflected(order):
            self._settled(order, now)
        else:
            self.publish_status(now)

    def _reflected(self, order: HedgeOrder) -> bool:
        """Whether the Portfolio's picture holds every fill of ``order``: read off its own
        trades (their ids among the picture's, or a snapshot the exchange took after its last
        fill), never off how far the position moved, which other fills move too."""
        portfolio = self.portfolio
        if portfolio is None or not portfolio.reconciled or portfolio.reconciling:
            return False
        if order.resolved_at is not None:  # its fate came from a snapshot: that one, or a newer one, must be in
            return portfolio.reconciled_at is not None and portfolio.reconciled_at >= order.resolved_at
        if order.all_trades_known and order.trade_ids.issubset(portfolio.recent_trade_ids):
            return True
        # A snapshot asked for after we knew it closed holds every fill of it (its trades may never come).
        asked = portfolio.reconcile_requested_at
        return asked is not None and order.closed_at is not None and asked > order.closed_at

    def _settled(self, order: HedgeOrder, now: float) -> None:
        self._drop(order)
        self.log.info("hedge_settled", currency=self.currency, label=order.label, hedge_position=self._hedge_size(),
                      waited_s=round(now - order.placed_at, 3))
        self.publish_status(now)
        self._evaluate(now, "previous hedge settled")

    def _unknown(self, order: HedgeOrder, why: str, now: float) -> None:
        order.lose(now, now + self.settings.fill_wait_s)
        self.log.warning("hedge_order_unknown", currency=self.currency, label=order.label, reason=why,
                         hint="no hedging until the exchange's positions and orders are fetched")
        self._ask_reconcile(order, now)
        self.publish_status(now)

    def _ask_reconcile(self, order: HedgeOrder, now: float) -> None:
        order.due = now + self.settings.fill_wait_s
        if not self.can_trade:
            return  # asked again once the link is back
        order.reconcile_asked = True
        self._publish(ReconcilePortfolio(origin=self.tag.origin, currencies=(self.currency,),
                                         reason=f"hedger: state of {order.label} unknown"))

    def _reprice_or_cancel(self, order: HedgeOrder, now: float) -> None:
        if order.order_id is None:
            order.due = now + self.settings.reprice_after_s
            return
        touch = self.market.hedge_bid if order.side == "buy" else self.market.hedge_ask
        if order.reprices < self.settings.max_reprices and touch is not None and self.can_trade:
            # Each timeout is a round, repriced or not (still the touch: nothing to edit), so
            # that an order nobody trades against ends at market after max_reprices rounds.
            order.reprices += 1
            if touch == order.price:
                order.due = now + self.settings.reprice_after_s
                return
            key = order.amend(touch, now + self.settings.fill_wait_s)
            self.log.info("hedge_repriced", currency=self.currency, label=order.label, price=touch,
                          reprices=order.reprices)
            self._publish(EditOrder(order_id=order.order_id, amount=order.amount, price=touch, post_only=True,
                                    origin=self.tag.origin, request_key=key))
            return
        # Last resort: cancel, then hedge what is left with a market order.
        self.escalate_to_market = True
        self._cancel(order, now)

    def _cancel(self, order: HedgeOrder, now: float) -> None:
        """Cancel our own order, by its order id (never by label: a label's prefix is not
        proof enough that the order is ours)."""
        if order.order_id is None:
            return
        key = order.cancel(now + self.settings.fill_wait_s)
        self.log.info("hedge_cancel", currency=self.currency, label=order.label, order_id=order.order_id,
                      filled=order.filled)
        self._publish(CancelOrder(order_id=order.order_id, origin=self.tag.origin, request_key=key))

    def _cancel_orphans(self, now: float) -> None:
        # Only orders whose label this hedger's tag owns (see on_portfolio), by order id.
        for orphan in self.orphans:
            if orphan.order_id in self.orphans_cancelled:
                continue
            self.orphans_cancelled.add(orphan.order_id)
            self.log.warning("hedge_orphan_cancelled", currency=self.currency, label=orphan.label,
                             order_id=orphan.order_id, instrument=orphan.instrument_name)
            self._publish(CancelOrder(order_id=orphan.order_id, origin=self.tag.origin,
                                      request_key=self.tag.orphan_key(orphan.order_id)))

    def _after_rejection(self, why: str, now: float) -> None:
        if self.rejections >= self.settings.max_rejections:
            self._switch_off(f"{self.rejections} hedge orders rejected in a row (last: {why}); hedging switched "
                             "off: check the account and the hedge instrument, then activate again", now, warn=True)
        else:
            self.message = f"hedge order rejected: {why}"
            if now < self.retry_at:  # the status says so at once, not at the next evaluation
                self.last_code = HedgeCode.COOLDOWN
                self.last_reason = f"pausing {self.retry_at - now:.1f} s after a rejection"
            self.publish_status(now)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _hedge_size(self) -> float:
        position = self.positions.get(self.instrument)
        return position.size if position is not None else 0.0

    def _prune(self, now: float) -> None:
        times = self.sent_times
        while times and now - times[0] >= 60.0:
            times.popleft()


def _describe(trigger: object) -> str:
    if isinstance(trigger, str):
        return trigger
    name = getattr(trigger, "instrument_name", None)
    return f"{type(trigger).__name__} {name}" if name else type(trigger).__name__

