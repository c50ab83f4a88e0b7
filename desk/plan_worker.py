"""Working a confirmed exposure plan: one post-only limit order per leg, repriced toward the mid.

:class:`PlanWorker` is pure (it takes ``now``; the Assistant actor gives it the clock, routes the
bus to it and publishes what it emits). For each leg of the :class:`~messages.exposure.WorkPlan`
it keeps at most one order on the book, labelled ``plan-<n>-<leg>`` and sent with origin
``assistant``:

- placed at the touch of its own side (the bid for a buy, the ask for a sell) or one tick inside
  it toward the mid, never at or past the mid's other side, post-only;
- every ``reprice_after_s`` moved toward the mid by ``1/steps_to_mid`` of the distance (at least
  a tick; an ``EditOrder``), at most ``max_reprices`` times; never past the mid of the others'
  book (our own order at the touch is not counted as the touch);
- sized so that a leg's fills plus its open order never exceed the leg's amount.

Gates (no order, edit, while any holds; cancels always go): the link cannot trade, the leg's
currency's portfolio is not reconciled or is reconciling, the leg's book is stale, one-sided,
crossed or implausible (non-finite, non-positive, far from the plan's prices), its top not received
or confirmed by its BookKeeper within ``max_top_age_s`` (a quiet book's top is asked to be confirmed
once half of that has passed; a keeper restarted since has no book and confirms nothing), no instrument
metadata (tick size, minimum amount), the plan's order count or per-minute rate is spent, a safe
shutdown happened. The worker edits and cancels only orders under plan labels: those it placed
(by order id, or ``CancelByLabel`` of its own plan's leg labels when an id is not known); one
still open under the label of a plan it worked after that plan ended (by id); and, on the
trader's ``cancel plan`` while no plan is worked (an Assistant restarted since), what plans left
open (by id). A hedge order (``hedge-<n>``) or a trader's order is never edited or cancelled, nor
another program's plan order unless the trader's ``cancel plan`` says so.

A plan is refused (``STOPPED``, its message says why) beyond the ``[exposure]`` limits
(:class:`PlanCaps`: legs, a leg's notional, the gross notional and premium) or with an amount that
is not a positive multiple of its option's minimum trade amount: the planner keeps them, and the
worker checks them again, since the plan came over the bus (an option whose metadata comes after
the plan: before its first order).

A lost answer (``ANSWER_LOST``, an edit or place with no answer within ``answer_wait_s``, the
link dropped while an order was open) makes that order's fate unknown: nothing more is sent for
its leg until the exchange says (the Connection's ``OrderResolved``, the order's own updates,
or a reconciled portfolio picture taken after it was lost, which lists it open or not). An
order closed while its fills cannot be known stops the plan (``STOPPED``, the message says
which): never a guess that could overfill a leg.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

import msgspec

from config.settings import ExposureSettings
from deribit.instruments import currency_of, identity_of, round_to_contract, round_to_tick, tick_size_at
from messages.account import OrderUpdate, UserTrade
from messages.commands import (
    ANSWER_LOST,
    PAPER_ONLY,
    REPLAY_ONLY,
    TRADING_DISABLED,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    OrderResolved,
    PlaceOrder,
    ReconcilePortfolio,
    RefreshInstruments,
)
from messages.exposure import (
    CancelPlan,
    LegProgress,
    LegState,
    PlanLeg,
    PlanState,
    PlanStatus,
    WorkPlan,
    is_plan_label,
    plan_label,
)
from messages.market import Instrument, InstrumentsLoaded
from messages.state import PortfolioChanged, TopOfBook, WatchOptionTops

ORIGIN = "assistant"
CLOSED_STATES = frozenset({"filled", "cancelled", "rejected"})
#: The Connection will send no order at all (mainnet without --live, paper, replay): stop at once.
_NEVER_SENT = frozenset({TRADING_DISABLED, PAPER_ONLY, REPLAY_ONLY})
_EPS = 1e-9
#: Deribit's cancel reasons after which a plan order is placed again (the link's own loss, our
#: own edit's post-only refusal); any other (``user_request``: the trader's cancel all or the web
#: interface; a risk or liquidation action) stops the plan rather than fight it.
_REPLACE_AFTER = frozenset({"cancel_on_disconnect", "edit_post_only_reject"})

Side = Literal["buy", "sell"]


class EventLog(Protocol):
    def info(self, event: str, **fields: Any) -> object: ...

    def warning(self, event: str, **fields: Any) -> object: ...


class WorkLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How a plan is worked and what bounds it (seconds, counts, fractions)."""

    reprice_after_s: float = 3.0
    steps_to_mid: int = 3  # from one tick inside the touch to the mid in this many reprices
    max_reprices: int = 30  # per order; then it rests where it is
    answer_wait_s: float = 10.0  # an answer not come by then is lost
    unknown_wait_s: float = 30.0  # an order of unknown fate not resolved by then stops the plan
    max_orders: int = 200  # places and edits per plan
    max_orders_per_minute: int = 60
    max_rejections: int = 5  # in a row: the plan stops
    retry_after_reject_s: float = 2.0
    max_price_drift: float = 0.5  # the live mid within this fraction of the planned mid
    max_slippage: float = 0.25  # a buy never above ask x (1 + this) as planned; a sell never below bid x (1 - this)
    #: A top not received (or confirmed by its BookKeeper) within this many seconds is not traded
    #: on; one older than half of it is asked to be confirmed (``WatchOptionTops(refresh=True)``).
    max_top_age_s: float = 5.0


class PlanCaps(msgspec.Struct, frozen=True, kw_only=True):
    """The absolute bounds of a plan the worker takes (``[exposure]``: the planner's own limits,
    checked again because the plan came over the bus): legs, each leg's notional (amount x its
    forward, USD), the plan's gross notional and gross premium (amount x mid, USD)."""

    max_legs: int = 4
    max_leg_notional_usd: float = 2_500_000.0
    max_notional_usd: float = 10_000_000.0
    max_premium_usd: float = 1_000_000.0

    @classmethod
    def of(cls, settings: ExposureSettings) -> PlanCaps:
        return cls(max_legs=settings.max_legs, max_leg_notional_usd=settings.max_leg_notional_usd,
                   max_notional_usd=settings.max_notional_usd, max_premium_usd=settings.max_premium_usd)


#: The planner's own bounds hold to 1e-9 of each figure; this much room is left for rounding.
_CAP_ROOM = 1.0 + 1e-6


def caps_fault(legs: Iterable[PlanLeg], caps: PlanCaps, instruments: Mapping[str, Instrument]) -> str | None:
    """Why ``legs`` break ``caps`` or their instruments' minimum trade amounts (None: they do not).
    What needs an instrument's metadata (its minimum amount, whether it is linear) is checked for
    those known only."""
    legs = tuple(legs)
    if len(legs) > caps.max_legs:
        return f"{len(legs)} legs, more than exposure.max_legs {caps.max_legs}"
    notional = premium = 0.0
    for leg in legs:
        forward = leg.underlying_price
        if not (math.isfinite(forward) and forward > 0):
            return f"leg {leg.leg}: forward {forward!r} is not a price"
        leg_notional = leg.amount * forward
        if not leg_notional <= caps.max_leg_notional_usd * _CAP_ROOM:
            return (f"leg {leg.leg}: {leg_notional:,.0f} USD notional, more than exposure.max_leg_notional_usd "
                    f"{caps.max_leg_notional_usd:,.0f}")
        notional += leg_notional
        instrument = instruments.get(leg.instrument_name)
        if instrument is None:
            continue
        step = instrument.min_trade_amount
        lots = leg.amount / step if math.isfinite(step) and step > 0 else math.nan
        if not (lots >= 1.0 - 1e-9 and abs(lots - round(lots)) <= 1e-6 * max(1.0, lots)):
            return f"leg {leg.leg}: {leg.amount:g} is not a positive multiple of the minimum trade amount {step:g}"
        premium += leg.amount * leg.mid * (1.0 if identity_of(instrument).is_linear else forward)
    if not notional <= caps.max_notional_usd * _CAP_ROOM:
        return f"{notional:,.0f} USD notional in all, more than exposure.max_notional_usd {caps.max_notional_usd:,.0f}"
    if not premium <= caps.max_premium_usd * _CAP_ROOM:
        return f"{premium:,.0f} USD premium in all, more than exposure.max_premium_usd {caps.max_premium_usd:,.0f}"
    return None


class LegOrder(msgspec.Struct):
    """One order of one leg and what is known of it."""

    leg: int
    label: str
    request_key: str
    side: Side
    amount: float
    price: float
    placed_at: float
    phase: Literal["sent", "resting", "amending", "unknown", "closed"] = "sent"
    order_id: str = ""
    filled: float = 0.0  # the larger of the order states' filled_amount and the trades' sum
    traded: float = 0.0
    paid: float = 0.0  # sum of trade price x amount
    trade_ids: set[str] = msgspec.field(default_factory=set)
    shown_at: set[float] = msgspec.field(default_factory=set)  # every price it had (a book may lag)
    average_price: float | None = None
    reprices: int = 0
    edits: int = 0
    pending_key: str = ""  # the edit or cancel awaiting its answer
    cancelling: bool = False
    due: float | None = None
    unknown_since: float | None = None
    lost_why: str = ""  # why its fate became unknown

    @property
    def open(self) -> bool:
        return self.phase != "closed"

    @property
    def open_amount(self) -> float:
        return max(self.amount - self.filled, 0.0) if self.open else 0.0

    def take_state(self, update: OrderUpdate) -> None:
        if update.order_id:
            self.order_id = update.order_id
        self.filled = max(self.filled, update.filled_amount)
        if isinstance(update.price, float) and update.order_state == "open":
            self.price = float(update.price)  # the exchange may have moved a post-only
            self.shown_at.add(self.price)
        if update.average_price:
            self.average_price = update.average_price

    def take_trade(self, trade: UserTrade) -> bool:
        if trade.trade_id in self.trade_ids:
            return False
        if not self.order_id:
            self.order_id = trade.order_id
        self.trade_ids.add(trade.trade_id)
        self.traded += trade.amount
        self.paid += trade.price * trade.amount
        self.filled = max(self.filled, self.traded)
        if trade.state == "filled":  # the order's state after it: whatever trades are still to come
            self.filled = max(self.filled, self.amount)
        return True


class LegWork(msgspec.Struct):
    """One leg: its plan, its orders, what it filled."""

    plan_leg: PlanLeg
    label: str
    orders: list[LegOrder] = msgspec.field(default_factory=list)
    placed: int = 0
    gate: str = ""  # why it waits (status)

    @property
    def current(self) -> LegOrder | None:
        return next((o for o in self.orders if o.open), None)

    @property
    def filled(self) -> float:
        return sum(o.filled for o in self.orders)

    @property
    def open_amount(self) -> float:
        return sum(o.open_amount for o in self.orders)

    def average_price(self) -> float | None:
        traded = sum(o.traded for o in self.orders)
        if traded > _EPS:
            return sum(o.paid for o in self.orders) / traded
        filled = [(o.average_price, o.filled) for o in self.orders if o.average_price and o.filled > 0]
        total = sum(f for _, f in filled)
        return sum(p * f for p, f in filled) / total if total > 0 else None


class Touch(msgspec.Struct):
    """The last top of book of one option, when it came (the worker's clock), and the last bid /
    ask that was not our own order."""

    top: TopOfBook
    seen_at: float
    others_bid: float | None = None
    others_ask: float | None = None


def book_fault(top: TopOfBook | None, leg: PlanLeg, limits: WorkLimits, age: float = 0.0) -> str | None:
    """Why this top of book, received ``age`` seconds ago, is not fit to price ``leg``'s order
    from, or None. A top older than ``max_top_age_s`` is not (a BookKeeper restarted since keeps
    no book of it and sends nothing: the last top would be frozen)."""
    if top is None:
        return "no live book yet"
    if top.stale:
        return "book stale"
    if not age <= limits.max_top_age_s:
        return f"top not confirmed for {age:.1f} s (more than {limits.max_top_age_s:g} s)"
    bid, ask = top.bid, top.ask
    if bid is None or ask is None:
        return "one-sided book"
    for what, price in (("bid", bid), ("ask", ask)):
        if not (math.isfinite(price) and price > 0):
            return f"implausible {what} {price!r}"
    if bid >= ask:
        return f"crossed or locked book ({bid:g} / {ask:g})"
    planned = leg.mid
    if not (math.isfinite(planned) and planned > 0):
        return f"implausible planned mid {planned!r}"
    mid = (bid + ask) / 2.0
    if abs(mid / planned - 1.0) > limits.max_price_drift:
        return f"mid {mid:g} moved more than {limits.max_price_drift:.0%} from the planned {planned:g}"
    return None


def target_price(side: Side, bid: float, ask: float, tick: float, step: int, steps_to_mid: int) -> float:
    """The limit price of a leg's order after ``step`` reprices: one tick inside the touch toward
    the mid at step 0, then ``step / steps_to_mid`` of the way from there to the mid (at least a
    tick a step), never past the mid (a buy at most the mid rounded down, a sell at least the mid
    rounded up), never at or through the other side's touch."""
    mid = (bid + ask) / 2.0
    if side == "buy":
        cap = max(min(round_to_tick(mid, tick, "down"), round_to_tick(ask - tick, tick, "down")), bid)
        start = min(max(round_to_tick(bid + tick, tick, "down"), round_to_tick(bid, tick, "up")), cap)
        move = max((cap - start) * step / max(steps_to_mid, 1), tick * step)
        return min(round_to_tick(start + move, tick, "down"), cap)
    floor = min(max(round_to_tick(mid, tick, "up"), round_to_tick(bid + tick, tick, "up")), ask)
    start = max(min(round_to_tick(ask - tick, tick, "up"), round_to_tick(ask, tick, "down")), floor)
    move = max((start - floor) * step / max(steps_to_mid, 1), tick * step)
    return max(round_to_tick(start - move, tick, "up"), floor)


class PlanWorker:
    """Works at most one plan at a time (see the module doc)."""

    def __init__(self, publish: Callable[[object], None], log: EventLog, limits: WorkLimits | None = None,
                 caps: PlanCaps | None = None, currencies: Iterable[str] = ()) -> None:
        self._publish = publish
        self.log = log
        self.limits = limits or WorkLimits()
        self.caps = caps or PlanCaps()
        self.work: WorkPlan | None = None
        self.legs: list[LegWork] = []
        self.state = PlanState.WORKING
        self.message = ""
        self.cancelling = False  # cancel plan, a stop or a shutdown: cancel everything, place nothing
        self._final = PlanState.CANCELLED  # what the plan becomes once nothing of it is open
        self.worked_ids: set[int] = set()
        self.can_trade = False
        self.shut_down = False
        self.portfolios: dict[str, PortfolioChanged] = {}
        self.books: dict[str, Touch] = {}
        self.instruments: dict[str, Instrument] = {}
        self.sent_times: deque[float] = deque()
        self.orders_sent = 0
        self.rejections = 0
        self.retry_at = 0.0
        self.refresh_asked: set[str] = set()
        self.orphans_cancelled: set[str] = set()
        self._left_said: frozenset[str] = frozenset()
        self._confirm_at: dict[str, float] = {}  # per currency: no top confirmation asked before then
        self._swept: set[str] = set()  # currencies whose plan orders left open at the start were cancelled
        self._swept_ids: set[str] = set()
        self.currencies = tuple(currencies)
        self._picture_due: float | None = None  # no reconciled picture by then: ask for a reconcile
        self._picture_asked = False
        self._last_status: tuple[Any, ...] = ()

    # -- what it works ----------------------------------------------------------------------------
    @property
    def plan_id(self) -> int:
        return self.work.plan.plan_id if self.work is not None else 0

    @property
    def working(self) -> bool:
        return self.work is not None and self.state is PlanState.WORKING

    def _refusal(self, work: WorkPlan, now: float) -> str | None:
        plan = work.plan
        if self.working:
            return f"plan {self.plan_id} is still being worked: cancel plan first"
        if plan.plan_id in self.worked_ids:
            return f"plan {plan.plan_id} was worked already (its labels are taken)"
        if self.shut_down:
            return "the desk is shutting down"
        if not plan.reachable or not plan.legs:
            return f"plan {plan.plan_id} has nothing to work" + (f" ({plan.reason})" if plan.reason else "")
        if now > plan.expires_at:
            return f"plan {plan.plan_id} expired before it was confirmed"
        numbers = [leg.leg for leg in plan.legs]
        if len(set(numbers)) != len(numbers) or min(numbers) < 1:
            return "plan legs must be numbered 1, 2, ... once each"
        for leg in plan.legs:
            if leg.side not in ("buy", "sell"):
                return f"leg {leg.leg}: side {leg.side!r}"
            if not (math.isfinite(leg.amount) and leg.amount > 0):
                return f"leg {leg.leg}: amount {leg.amount!r}"
            if not all(math.isfinite(p) and p > 0 for p in (leg.bid, leg.ask, leg.mid)) or leg.bid >= leg.ask:
                return f"leg {leg.leg}: planned book {leg.bid!r} / {leg.ask!r} (mid {leg.mid!r}) is not sane"
            if leg.instrument_name.count("-") != 3:
                return f"leg {leg.leg}: {leg.instrument_name} is not an option"
            if currency_of(leg.instrument_name) != plan.currency:
                return f"leg {leg.leg}: {leg.instrument_name} is not a {plan.currency} option"
        fault = caps_fault(plan.legs, self.caps, self.instruments)
        if fault is not None:
            return fault
        labels = {plan_label(plan.plan_id, leg.leg) for leg in plan.legs}
        taken = sorted({o.label for p in self.portfolios.values() for o in p.open_orders
                        if o.label in labels and o.order_state not in CLOSED_STATES})
        if taken:
            return f"orders under its labels are open ({', '.join(taken)}): cancel plan first"
        return None

    def start(self, work: WorkPlan, now: float) -> None:
        refusal = self._refusal(work, now)
        if refusal is not None:
            self.log.warning("plan_refused", plan_id=work.plan.plan_id, reason=refusal, origin=work.origin)
            if self.working:
                # The answer is the plan being worked (the desk's picture of it must not be lost).
                current = self.status(now, work.request_key)
                self._publish(msgspec.structs.replace(
                    current, message=f"plan {work.plan.plan_id} refused: {refusal}; {current.message}"))
                return
            self._publish(PlanStatus(plan_id=work.plan.plan_id, currency=work.plan.currency, state=PlanState.STOPPED,
                                     at=now, message=f"refused: {refusal}", request_key=work.request_key))
            return
        plan = work.plan
        self.work = work
        self.worked_ids.add(plan.plan_id)
        self.legs = [LegWork(plan_leg=leg, label=plan_label(plan.plan_id, leg.leg)) for leg in plan.legs]
        self.state = PlanState.WORKING
        self.message = f"working plan {plan.plan_id} ({len(plan.legs)} legs)"
        self.cancelling = False
        self.orders_sent = 0
        self.rejections = 0
        self.retry_at = 0.0
        self.sent_times.clear()
        self.log.info("plan_started", plan_id=plan.plan_id, origin=work.origin,
                      legs=[f"{leg.side} {leg.amount:g} {leg.instrument_name}" for leg in plan.legs])
        self._ask_instruments()
        self.watch_tops()
        # Said before any order goes: a vega hedger of the currency holds from then on (an IOC of
        # its own never meets a plan order), the console has its answer.
        self.publish_status(now, force=True, request_key=work.request_key)
        self.evaluate(now)
        self.publish_status(now)

    def cancel(self, request: CancelPlan, now: float) -> None:
        if not self.working:
            # Nothing worked (an Assistant restarted since, or the plan ended): the trader's cancel
            # still takes what is left open under plan labels (of that plan, or of any plan).
            left = [o for p in self.portfolios.values() if p.reconciled
                    for o in self.left_open(p, {request.plan_id} if request.plan_id else None)]
            if left and self.can_trade:
                for order in left:
                    self._cancel_left(order, f"cancel plan by {request.origin}")
                labels = ", ".join(sorted({o.label for o in left}))
                self._publish(PlanStatus(plan_id=request.plan_id or self.plan_id, currency="",
                                         state=PlanState.CANCELLED, at=now, request_key=request.request_key,
                                         message=f"no plan being worked; cancelled {len(left)} orders left open "
                                                 f"({labels})"))
                return
        if self.work is None or (request.plan_id and request.plan_id != self.plan_id):
            which = f"plan {request.plan_id}" if request.plan_id else "plan"
            self._publish(PlanStatus(plan_id=request.plan_id, currency="", state=PlanState.STOPPED, at=now,
                                     message=f"no {which} being worked", request_key=request.request_key))
            return
        if self.state is PlanState.WORKING:
            self.log.info("plan_cancel", plan_id=self.plan_id, origin=request.origin)
            self._wind_down(PlanState.CANCELLED, f"cancelled by {request.origin}", now)
        self.publish_status(now, force=True, request_key=request.request_key)

    def safe_shutdown(self, reason: str, now: float) -> None:
        self.shut_down = True
        if self.working:
            self._wind_down(PlanState.STOPPED, f"safe shutdown: {reason}", now)

    # -- inputs -------------------------------------------------------------------------------------
    def on_instruments(self, loaded: InstrumentsLoaded, now: float) -> None:
        for instrument in loaded.instruments:
            self.instruments[instrument.instrument_name] = instrument
        self.evaluate(now)

    def on_top(self, top: TopOfBook, now: float) -> None:
        if top.kind != "option":
            return
        name = top.instrument_name
        if self.work is not None and not any(leg.plan_leg.instrument_name == name for leg in self.legs):
            return
        touch = self.books.get(name)
        if touch is None:
            touch = self.books[name] = Touch(top=top, seen_at=now)
        touch.top = top
        touch.seen_at = now
        mine = self._own_open(name)
        if top.bid is not None and not self._only_ours(top.bid, top.bid_amount, mine, "buy"):
            touch.others_bid = top.bid
        if top.ask is not None and not self._only_ours(top.ask, top.ask_amount, mine, "sell"):
            touch.others_ask = top.ask
        if top.bid is None:
            touch.others_bid = None
        if top.ask is None:
            touch.others_ask = None
        self.evaluate(now)

    def on_connection(self, can_trade: bool, now: float) -> None:
        if can_trade == self.can_trade:
            return
        self.can_trade = can_trade
        if can_trade and self.working:
            self.watch_tops()  # a keeper restarted meanwhile has forgotten
        if can_trade and not self._picture_asked:
            self._picture_due = now + self.limits.answer_wait_s
        if not can_trade:
            self.books.clear()  # what comes after the reconnect must be fresh
            for order in self._orders():
                if order.open and order.phase != "unknown":
                    # Cancel-on-disconnect may or may not have taken it; only the exchange knows.
                    self._lose(order, "the link dropped while it was open", now)
        self.evaluate(now)
        self.publish_status(now)

    def on_portfolio(self, portfolio: PortfolioChanged, now: float) -> None:
        self.portfolios[portfolio.currency] = portfolio
        self._cancel_orphans(portfolio)
        if portfolio.reconciled and not portfolio.reconciling and portfolio.reconciled_at is not None:
            for order in self._orders():
                if order.phase != "unknown" or order.unknown_since is None:
                    continue
                asked = portfolio.reconcile_requested_at
                if asked is None or asked < order.unknown_since or not self.can_trade:
                    continue  # a picture asked for before we knew: it may not show the order
                if currency_of(self._leg(order).plan_leg.instrument_name) != portfolio.currency:
                    continue
                found = next((o for o in portfolio.open_orders if o.label == order.label
                              and (not order.order_id or o.order_id == order.order_id)
                              and o.order_state not in CLOSED_STATES), None)
                if found is not None:
                    order.take_state(found)
                    order.phase = "resting"
                    order.unknown_since = None
                    order.due = now + self.limits.reprice_after_s
                    self.log.info("plan_order_found_open", label=order.label, order_id=order.order_id)
                    if self.cancelling:
                        self._cancel_order(order, now)
                else:
                    self._closed_unknown(order, "not among the exchange's open orders", now)
        self.evaluate(now)
        self.publish_status(now)

    def on_result(self, result: CommandResult, now: float) -> None:
        if result.origin != ORIGIN:
            return  # another sender's: never ours, whatever its key
        order, kind = self._by_key(result.request_key)
        if order is None:
            return
        for trade in result.trades:
            self._trade(order, trade)
        if kind == "label":
            # cancel_by_label answered: no order with the leg's label is open any more.
            for other in self._leg(order).orders:
                if other.open and other.phase == "unknown":
                    self._closed_unknown(other, "cancelled by label", now)
                elif other.open and other.cancelling:
                    self._close(other, now)
        elif order.phase == "unknown":
            if result.order is not None:
                self._resolved(order, result.order, now)  # a late answer: it says where the order is
        elif order.open:
            if result.request_key == order.pending_key:
                order.pending_key = ""
            if result.order is not None:
                self._state(order, result.order, now)
            if order.open:
                if kind == "cancel" and result.order is None:
                    self._close(order, now)
                elif (kind == "place" and order.phase == "sent") or (
                        kind == "edit" and order.phase == "amending" and not order.cancelling):
                    self.rejections = 0
                    self._rest(order, now)
        self._after_change(now)

    def on_failed(self, failed: CommandFailed, now: float) -> None:
        if failed.origin != ORIGIN:
            return  # another sender's: never ours, whatever its key
        orphan = failed.request_key.removeprefix(f"{ORIGIN}-orphan-")
        if orphan != failed.request_key:
            self.orphans_cancelled.discard(orphan)  # not cancelled: asked again at the next picture
            self.log.warning("plan_orphan_cancel_failed", order_id=orphan, code=failed.code, message=failed.message)
            return
        order, kind = self._by_key(failed.request_key)
        if order is None:
            return
        self.log.warning("plan_command_failed", label=order.label, method=failed.method, code=failed.code,
                         message=failed.message, data=failed.data)
        if kind == "label" or not order.open or order.phase == "unknown":
            self._after_change(now)
            return
        if failed.code == ANSWER_LOST:
            self._lose(order, failed.message or "answer lost", now)
        elif kind == "place" and order.phase == "sent":
            order.phase = "closed"  # never on the book
            order.due = None
            if failed.code in _NEVER_SENT:
                self._stop(f"orders are not sent here: {failed.message} (code {failed.code})", now)
            else:
                self._rejected(f"{failed.message} (code {failed.code})", now)
        elif kind == "cancel" and failed.request_key == order.pending_key:
            # Usually it filled or closed meanwhile: then its update says so; else the exchange's picture.
            self._lose(order, f"cancel failed: {failed.message} (code {failed.code})", now)
        elif kind == "edit" and failed.request_key == order.pending_key:
            self._rest(order, now)  # still where it was (or closed: its update says so)
            self._rejected(f"edit: {failed.message} (code {failed.code})", now)
        self._after_change(now)

    def on_resolved(self, resolved: OrderResolved, now: float) -> None:
        if resolved.origin != ORIGIN:
            return  # another sender's: never ours, whatever its key
        order, _kind = self._by_key(resolved.request_key)
        if order is None or order.phase != "unknown":
            return
        if resolved.order is not None:
            self._resolved(order, resolved.order, now)
        elif resolved.outcome.value in ("rejected", "refused"):
            order.phase = "closed"
            order.due = None
        self._after_change(now)

    def on_order_update(self, update: OrderUpdate, now: float) -> None:
        order = self._by_order(update.order_id, update.label)
        if order is None:
            return
        if order.phase == "unknown":
            self._resolved(order, update, now)
        elif order.open:
            self._state(order, update, now)
            if order.open and order.phase == "sent" and update.order_state == "open":
                self._rest(order, now)
        else:
            order.take_state(update)
        self._after_change(now)

    def on_user_trade(self, trade: UserTrade, now: float) -> None:
        order = self._by_order(trade.order_id, trade.label)
        if order is None:
            return
        self._trade(order, trade)
        if order.open and order.phase != "unknown" and trade.state in CLOSED_STATES:
            self._close(order, now)
        self._after_change(now)

    # -- time --------------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        dues = [o.due for o in self._orders() if o.open and o.due is not None]
        if self.working and self.retry_at:
            dues.append(self.retry_at)
        if self.working and self.sent_times and len(self.sent_times) >= self.limits.max_orders_per_minute:
            dues.append(self.sent_times[0] + 60.0)
        if self._picture_due is not None:
            dues.append(self._picture_due)
        return min(dues) if dues else None

    def _ask_pictures(self, now: float) -> None:
        """A restarted Assistant on a quiet account: the Portfolio published its reconciled
        picture before this worker was on the bus and says nothing until something changes. Once
        connected for ``answer_wait_s`` without one, a reconcile is asked for (once)."""
        self._picture_due = None
        if not self.can_trade:
            return
        missing = tuple(c for c in self.currencies if not (c in self.portfolios and self.portfolios[c].reconciled))
        if missing:
            self._picture_asked = True
            self.log.info("plan_worker_asks_reconcile", currencies=list(missing))
            self._publish(ReconcilePortfolio(origin=ORIGIN, currencies=missing,
                                             reason="assistant start-up: no reconciled portfolio picture"))

    def on_time(self, now: float) -> None:
        if self.retry_at and now >= self.retry_at:
            self.retry_at = 0.0
        if self._picture_due is not None and now >= self._picture_due:
            self._ask_pictures(now)
        for order in self._orders():
            if order.open and order.due is not None and now >= order.due:
                order.due = None
                self._timeout(order, now)
        self.evaluate(now)
        self.publish_status(now)

    def _timeout(self, order: LegOrder, now: float) -> None:
        if order.phase == "resting":
            self._reprice(order, now)
        elif order.phase in ("sent", "amending"):
            self._lose(order, f"no answer within {self.limits.answer_wait_s:g} s", now)
        elif order.phase == "unknown":
            if self.cancelling:
                # Make sure: whatever of this leg is open goes (its label is ours alone).
                self._cancel_label(self._leg(order), now)
                order.due = now + self.limits.unknown_wait_s
            else:
                self._stop(f"the fate of {order.label} ({order.order_id or 'no order id'}) stayed unknown for "
                           f"{self.limits.unknown_wait_s:g} s: check its orders and positions", now)

    # -- deciding -----------------------------------------------------------------------------------
    def evaluate(self, now: float) -> None:
        if self.work is None:
            return
        if self.state is PlanState.WORKING and not self.cancelling:
            # The metadata of an option not known at the start: checked before its first order.
            fault = caps_fault(self.work.plan.legs, self.caps, self.instruments)
            if fault is not None:
                self._stop(f"refused: {fault}", now)
                return
            if all(self._leg_done(leg) for leg in self.legs):
                self._finish(PlanState.DONE, "every leg filled", now)
                return
            for leg in self.legs:
                # A resting order's gate is its last reprice's (said until a reprice passes).
                leg.gate = self._leg_gate(leg, now) or (leg.gate if leg.current is not None else "")
                if not leg.gate:
                    self._place(leg, now)
                elif (leg.current is None and not self._leg_done(leg)
                      and self.orders_sent >= self.limits.max_orders):
                    self._stop(f"the plan's {self.limits.max_orders} orders are spent and leg {leg.plan_leg.leg} "
                               "is not filled", now)
                    return
        self._check_wound_down(now)

    def _gate(self, now: float) -> str | None:
        if self.shut_down:
            return "safe shutdown"
        if not self.can_trade:
            return "not connected"
        if now < self.retry_at:
            return f"pausing after a rejection ({self.retry_at - now:.1f} s)"
        if self.orders_sent >= self.limits.max_orders:
            return f"the plan's {self.limits.max_orders} orders are spent"
        self._prune(now)
        if len(self.sent_times) >= self.limits.max_orders_per_minute:
            return f"{self.limits.max_orders_per_minute} orders in the last minute"
        return None

    def _leg_gate(self, leg: LegWork, now: float) -> str | None:
        if leg.current is not None:
            return None  # an order is working; timers move it
        gate = self._gate(now)
        if gate is not None:
            return gate
        name = leg.plan_leg.instrument_name
        portfolio = self.portfolios.get(currency_of(name))
        if portfolio is None or not portfolio.reconciled:
            return "portfolio not reconciled"
        if portfolio.reconciling:
            return "portfolio reconciling"
        if name not in self.instruments:
            return "no instrument metadata"
        ours = {o.order_id for o in leg.orders if o.order_id}
        if any(o.label == leg.label and o.order_state not in CLOSED_STATES and o.order_id not in ours
               for o in portfolio.open_orders):
            return f"an order under {leg.label} not known to be ours is open"
        return self._leg_book_gate(leg, now)

    def _leg_done(self, leg: LegWork) -> bool:
        if leg.current is not None:
            return False
        step = self._step(leg.plan_leg.instrument_name)
        return leg.plan_leg.amount - leg.filled < step - _EPS

    def _step(self, name: str) -> float:
        instrument = self.instruments.get(name)
        return instrument.min_trade_amount if instrument is not None and instrument.min_trade_amount > 0 else 1e-8

    def _price(self, leg: LegWork, step: int, now: float) -> float | None:
        """The leg's limit price at ``step`` reprices from the live book (None: not fit)."""
        plan_leg = leg.plan_leg
        name = plan_leg.instrument_name
        touch = self.books.get(name)
        instrument = self.instruments.get(name)
        if touch is None or instrument is None or self._leg_book_gate(leg, now) is not None:
            return None
        bid = touch.others_bid if touch.others_bid is not None else touch.top.bid
        ask = touch.others_ask if touch.others_ask is not None else touch.top.ask
        assert bid is not None and ask is not None
        if not bid < ask:
            return None
        tick = max(tick_size_at(instrument, bid), tick_size_at(instrument, ask))  # on both grids
        if not (math.isfinite(tick) and tick > 0):
            return None
        price = target_price(plan_leg.side, bid, ask, tick, step, self.limits.steps_to_mid)
        # Never beyond what the trader confirmed (with some room), never through the mid.
        if plan_leg.side == "buy":
            price = min(price, round_to_tick(plan_leg.ask * (1.0 + self.limits.max_slippage), tick, "down"))
            ok = bid <= price < ask and price <= (bid + ask) / 2.0 + _EPS
        else:
            price = max(price, round_to_tick(plan_leg.bid * (1.0 - self.limits.max_slippage), tick, "up"))
            ok = bid < price <= ask and price >= (bid + ask) / 2.0 - _EPS
        return price if ok and price > 0 else None

    def _place(self, leg: LegWork, now: float) -> None:
        plan_leg = leg.plan_leg
        step = self._step(plan_leg.instrument_name)
        left = plan_leg.amount - leg.filled - leg.open_amount
        amount = round_to_contract(max(left, 0.0), step, "down") if step > 1e-8 else left
        if amount < step - _EPS or amount <= 0:
            return
        price = self._price(leg, 0, now)
        if price is None:
            leg.gate = "no sane price"
            return
        leg.placed += 1
        key = f"{leg.label}/o{leg.placed}"
        order = LegOrder(leg=plan_leg.leg, label=leg.label, request_key=key, side=plan_leg.side, amount=amount,
                         price=price, placed_at=now, due=now + self.limits.answer_wait_s, shown_at={price})
        leg.orders.append(order)
        self._count(now)
        self.log.info("plan_order", label=leg.label, instrument=plan_leg.instrument_name, side=plan_leg.side,
                      amount=amount, price=price, book=self._book_seen(plan_leg.instrument_name))
        self._publish(PlaceOrder(instrument_name=plan_leg.instrument_name, side=plan_leg.side, amount=amount,
                                 origin=ORIGIN, request_key=key, type="limit", price=price, post_only=True,
                                 label=leg.label))

    def _reprice(self, order: LegOrder, now: float) -> None:
        leg = self._leg(order)
        wait = now + self.limits.reprice_after_s
        if self.cancelling or not order.order_id:
            order.due = wait
            return
        if order.reprices >= self.limits.max_reprices:
            return  # rests where it is
        gate = self._gate(now) or self._leg_book_gate(leg, now)
        if gate is not None:
            leg.gate = gate
            order.due = wait
            return
        leg.gate = ""
        price = self._price(leg, order.reprices + 1, now)
        order.reprices += 1
        if price is None or abs(price - order.price) < _EPS:
            order.due = wait
            return
        order.edits += 1
        order.phase = "amending"
        order.pending_key = f"{order.request_key}/e{order.edits}"
        order.due = now + self.limits.answer_wait_s
        order.price = price
        order.shown_at.add(price)
        self._count(now)
        self.log.info("plan_reprice", label=order.label, order_id=order.order_id, price=price, reprices=order.reprices,
                      book=self._book_seen(leg.plan_leg.instrument_name))
        self._publish(EditOrder(order_id=order.order_id, amount=order.amount, price=price, post_only=True,
                                origin=ORIGIN, request_key=order.pending_key))

    def _book_seen(self, name: str) -> str:
        """The book an order was priced from, for its log line: the top, and the others' touch."""
        touch = self.books.get(name)
        if touch is None:
            return ""
        top = touch.top
        return f"{top.bid} / {top.ask} (others {touch.others_bid} / {touch.others_ask})"

    def _leg_book_gate(self, leg: LegWork, now: float) -> str | None:
        name = leg.plan_leg.instrument_name
        touch = self.books.get(name)
        age = now - touch.seen_at if touch is not None else 0.0
        if touch is not None and not age <= self.limits.max_top_age_s / 2.0:
            self._confirm_tops(currency_of(name), now)
        return book_fault(touch.top if touch else None, leg.plan_leg, self.limits, age)

    def _confirm_tops(self, currency: str, now: float) -> None:
        """Ask the BookKeeper of ``currency`` to send the legs' current tops again (a quiet book's
        top is confirmed so; a keeper restarted since learns what is watched and sends nothing
        until it has a book again). At most once per half the top age bound."""
        if not self.working or now < self._confirm_at.get(currency, -math.inf):
            return
        self._confirm_at[currency] = now + self.limits.max_top_age_s / 2.0
        names = tuple(sorted({leg.plan_leg.instrument_name for leg in self.legs
                              if currency_of(leg.plan_leg.instrument_name) == currency}))
        self._publish(WatchOptionTops(currency=currency, names=names, origin=ORIGIN, refresh=True))

    def _count(self, now: float) -> None:
        self.orders_sent += 1
        self.sent_times.append(now)

    def _prune(self, now: float) -> None:
        while self.sent_times and now - self.sent_times[0] >= 60.0:
            self.sent_times.popleft()

    # -- an order's life ------------------------------------------------------------------------------
    def _rest(self, order: LegOrder, now: float) -> None:
        order.phase = "resting"
        order.pending_key = ""
        # The exchange moves a post-only order that would cross to a tick inside the spread, which
        # may be past the mid if the book moved meanwhile: then it is repriced at once.
        order.due = now if self._past_mid(order) else now + self.limits.reprice_after_s

    def _past_mid(self, order: LegOrder) -> bool:
        touch = self.books.get(self._leg(order).plan_leg.instrument_name)
        if touch is None:
            return False
        bid = touch.others_bid if touch.others_bid is not None else touch.top.bid
        ask = touch.others_ask if touch.others_ask is not None else touch.top.ask
        if bid is None or ask is None or not bid < ask:
            return False
        mid = (bid + ask) / 2.0
        return order.price > mid + _EPS if order.side == "buy" else order.price < mid - _EPS

    def _state(self, order: LegOrder, update: OrderUpdate, now: float) -> None:
        order.take_state(update)
        if update.order_state in CLOSED_STATES:
            if update.order_state == "rejected" and order.filled <= _EPS:
                order.phase = "closed"
                order.due = None
                self._rejected("the exchange rejected the order", now)
            else:
                self._close(order, now)
                reason = update.cancel_reason
                if (update.order_state == "cancelled" and reason and reason not in _REPLACE_AFTER
                        and not order.cancelling and self.state is PlanState.WORKING and not self.cancelling):
                    self._stop(f"{order.label} ({order.order_id}) was cancelled outside the plan ({reason})", now)
        elif update.order_state == "open" and self.cancelling and not order.cancelling:
            self._cancel_order(order, now)

    def _close(self, order: LegOrder, now: float) -> None:
        order.phase = "closed"
        order.due = None
        order.pending_key = ""
        self.log.info("plan_order_closed", label=order.label, order_id=order.order_id, filled=order.filled,
                      amount=order.amount)

    def _trade(self, order: LegOrder, trade: UserTrade) -> None:
        if order.take_trade(trade):
            self.rejections = 0

    def _lose(self, order: LegOrder, why: str, now: float) -> None:
        order.phase = "unknown"
        order.pending_key = ""
        order.cancelling = False
        order.unknown_since = now
        order.lost_why = why
        order.due = now + self.limits.unknown_wait_s
        self.log.warning("plan_order_unknown", label=order.label, order_id=order.order_id, reason=why,
                         hint="nothing more for this leg until the exchange says")
        if self.can_trade:  # else the Portfolio reconciles on the reconnect anyway
            currency = currency_of(self._leg(order).plan_leg.instrument_name)
            self._publish(ReconcilePortfolio(origin=ORIGIN, currencies=(currency,),
                                             reason=f"assistant: state of {order.label} unknown"))

    def _resolved(self, order: LegOrder, update: OrderUpdate, now: float) -> None:
        order.take_state(update)
        order.unknown_since = None
        if update.order_state in CLOSED_STATES:
            self._close(order, now)
        else:
            self._rest(order, now)
            if self.cancelling:
                self._cancel_order(order, now)
        self.log.info("plan_order_resolved", label=order.label, order_id=order.order_id, state=update.order_state,
                      filled=order.filled)

    def _closed_unknown(self, order: LegOrder, why: str, now: float) -> None:
        """An order of unknown fate is closed, and its fills may not all be known."""
        self._close(order, now)
        if self.state is PlanState.WORKING and not self.cancelling and order.filled < order.amount - _EPS:
            lost = order.lost_why or "its fate became unknown"
            self._stop(f"{order.label} ({order.order_id or 'no order id'}) closed after {lost} ({why}); its fills "
                       "may not all be known: check the positions", now)

    def _rejected(self, why: str, now: float) -> None:
        self.rejections += 1
        self.retry_at = now + self.limits.retry_after_reject_s
        self.message = f"order rejected: {why}"
        self.log.warning("plan_order_rejected", plan_id=self.plan_id, reason=why, in_a_row=self.rejections)
        if self.rejections >= self.limits.max_rejections and self.state is PlanState.WORKING:
            self._stop(f"{self.rejections} orders rejected in a row (last: {why})", now)

    # -- stopping ------------------------------------------------------------------------------------
    def _stop(self, why: str, now: float) -> None:
        self.log.warning("plan_stopped", plan_id=self.plan_id, reason=why)
        self._wind_down(PlanState.STOPPED, why, now)

    def _wind_down(self, state: PlanState, why: str, now: float) -> None:
        """Place nothing more; cancel every open order of the plan; ``state`` once none is open."""
        self.cancelling = True
        self._final = state
        self.message = why
        for order in self._orders():
            if order.open and order.phase in ("resting", "amending") and not order.cancelling:
                self._cancel_order(order, now)
        for leg in self.legs:
            if any(o.open and o.phase == "unknown" for o in leg.orders):
                self._cancel_label(leg, now)
        self._check_wound_down(now)

    def _cancel_order(self, order: LegOrder, now: float) -> None:
        if not order.order_id:
            return  # its answer will give the id; it is cancelled then
        if order.phase == "amending" and order.pending_key and not order.cancelling:
            pass  # the edit's answer may come after; the cancel goes now anyway (by id)
        order.edits += 1
        order.cancelling = True
        order.phase = "amending"
        order.pending_key = f"{order.request_key}/c{order.edits}"
        order.due = now + self.limits.answer_wait_s
        self.log.info("plan_cancel_order", label=order.label, order_id=order.order_id)
        self._publish(CancelOrder(order_id=order.order_id, origin=ORIGIN, request_key=order.pending_key))

    def _cancel_orphans(self, portfolio: PortfolioChanged) -> None:
        """Open orders labelled for a plan this worker worked and that has ended (an order the
        exchange shows open after its plan was done, cancelled or stopped): cancelled by order
        id. Never an order of another label, nor of a plan it did not work (another program's),
        nor of the plan being worked (it may be ours in flight)."""
        if not self.can_trade or not portfolio.reconciled:
            return
        ended = {self.plan_id} if self.work is not None and not self.working else set()
        ended |= self.worked_ids - {self.plan_id}
        for order in self.left_open(portfolio, ended):
            self._cancel_left(order, "its plan ended")
        self._sweep(portfolio)
        # Those of plans it never worked (an Assistant that restarted since, another program):
        # said once, cancelled only by the trader's cancel plan.
        left = [o for o in self.left_open(portfolio, None) if o.label not in {leg.label for leg in self.legs}]
        ids = frozenset(o.order_id for o in left)
        if left and not ids <= self._left_said:
            self._left_said |= ids
            labels = ", ".join(sorted({o.label for o in left}))
            self.log.warning("plan_orders_left_open", labels=labels, orders=len(left))
            self._publish(PlanStatus(plan_id=self.plan_id, currency=portfolio.currency,
                                     state=self.state if self.work is not None else PlanState.STOPPED,
                                     at=portfolio.at, legs=self.status(portfolio.at).legs,
                                     message=f"{len(left)} orders of no plan being worked are open ({labels}): "
                                             "cancel plan cancels them"))

    def _sweep(self, portfolio: PortfolioChanged) -> None:
        """The first reconciled picture of a currency since this worker (the Assistant) started:
        every open order labelled like a plan's that it does not work is cancelled, by id (left by
        an earlier run, nobody reprices or stops it), and said (log and PlanStatus). A cancel of
        one that failed is sent again at the next picture."""
        currency = portfolio.currency
        if portfolio.reconciling:
            return
        if currency in self._swept:
            for order in self.left_open(portfolio, None):
                if order.order_id in self._swept_ids:
                    self._cancel_left(order, "left open before the Assistant started (again: its cancel failed)")
            return
        self._swept.add(currency)
        left = self.left_open(portfolio, None)
        if not left:
            return
        for order in left:
            self._swept_ids.add(order.order_id)
            self._cancel_left(order, "left open before the Assistant started; it works no plan of it")
        labels = ", ".join(sorted({o.label for o in left}))
        self.log.warning("plan_orders_left_open_cancelled", currency=currency, labels=labels, orders=len(left))
        self._publish(PlanStatus(plan_id=self.plan_id, currency=currency,
                                 state=self.state if self.work is not None else PlanState.STOPPED,
                                 at=portfolio.at, legs=self.status(portfolio.at).legs,
                                 message=f"the assistant (re)started: cancelled {len(left)} {currency} plan orders "
                                         f"it does not work ({labels})"))

    def left_open(self, portfolio: PortfolioChanged, plans: set[int] | None) -> list[OrderUpdate]:
        """The open orders of ``portfolio`` labelled for ``plans`` (None: any plan), not being
        worked and not cancelled yet."""
        out = []
        for order in portfolio.open_orders:
            if not is_plan_label(order.label) or order.order_state in CLOSED_STATES:
                continue
            if plans is not None and int(order.label.split("-")[1]) not in plans:
                continue
            if self.working and order.label in {leg.label for leg in self.legs}:
                continue
            if order.order_id in self.orphans_cancelled or any(o.order_id == order.order_id for o in self._orders()):
                continue
            out.append(order)
        return out

    def _cancel_left(self, order: OrderUpdate, why: str) -> None:
        self.orphans_cancelled.add(order.order_id)
        self.log.warning("plan_orphan_cancelled", label=order.label, order_id=order.order_id,
                         instrument=order.instrument_name, reason=why)
        self._publish(CancelOrder(order_id=order.order_id, origin=ORIGIN,
                                  request_key=f"{ORIGIN}-orphan-{order.order_id}"))

    def _cancel_label(self, leg: LegWork, now: float) -> None:
        leg.placed += 1
        key = f"{leg.label}/l{leg.placed}"
        self.log.info("plan_cancel_label", label=leg.label)
        currency = currency_of(leg.plan_leg.instrument_name)
        self._publish(CancelByLabel(label=leg.label, origin=ORIGIN, request_key=key,
                                    currency=currency if "_" not in currency else None))

    def _check_wound_down(self, now: float) -> None:
        if not self.cancelling or self.state is not PlanState.WORKING:
            return
        if any(o.open for o in self._orders()):
            return
        self._finish(self._final, self.message, now)

    def _finish(self, state: PlanState, why: str, now: float) -> None:
        self.state = state
        self.message = why
        self.cancelling = False
        self.watch_tops()  # nothing any more
        self.log.info("plan_finished", plan_id=self.plan_id, state=state.value, message=why,
                      filled={leg.label: leg.filled for leg in self.legs})
        self.publish_status(now)

    def _after_change(self, now: float) -> None:
        self.evaluate(now)
        self.publish_status(now)

    # -- look-ups ------------------------------------------------------------------------------------
    def _orders(self) -> Iterable[LegOrder]:
        for leg in self.legs:
            yield from leg.orders

    def _leg(self, order: LegOrder) -> LegWork:
        return next(leg for leg in self.legs if leg.plan_leg.leg == order.leg)

    def _by_key(self, key: str) -> tuple[LegOrder | None, str]:
        """Our order a request key is about, and what the request was (place, edit, cancel, label)."""
        if not key.startswith("plan-"):
            return None, ""
        for leg in self.legs:
            if not key.startswith(leg.label + "/"):
                continue
            if key[len(leg.label) + 1:].startswith("l"):
                return (leg.orders[-1] if leg.orders else None), "label"
            for order in leg.orders:
                if key == order.request_key:
                    return order, "place"
                if key.startswith(order.request_key + "/"):
                    return order, "cancel" if key[len(order.request_key) + 1:].startswith("c") else "edit"
        return None, ""

    def _by_order(self, order_id: str, label: str) -> LegOrder | None:
        """Our order with this id; or, by our own label, the leg's order that has no id yet."""
        for order in self._orders():
            if order.order_id and order.order_id == order_id:
                return order
        for leg in self.legs:
            if label and label == leg.label:
                # ...else one whose fate was unknown and that closed before its id was known.
                return (next((o for o in leg.orders if not o.order_id and o.open), None)
                        or next((o for o in reversed(leg.orders) if not o.order_id and o.lost_why), None))
        return None

    def _own_open(self, name: str) -> list[LegOrder]:
        return [o for leg in self.legs if leg.plan_leg.instrument_name == name for o in leg.orders if o.open]

    @staticmethod
    def _only_ours(price: float, amount: float, mine: list[LegOrder], side: Side) -> bool:
        """Whether a touch at ``price`` for ``amount`` may be nothing but our own orders: the
        book lags their answers and fills, so any price they had and their whole amount count
        (taken as the others' touch, each reprice would chase a mid that includes our own order)."""
        ours = sum(o.amount for o in mine if o.side == side and any(abs(p - price) < _EPS for p in o.shown_at))
        return ours > 0 and not (math.isfinite(amount) and amount > ours + _EPS)  # an absurd size: ours

    def watch_tops(self) -> None:
        """Ask the option BookKeepers for the live tops of the legs' options while the plan is
        worked (none once it ended): option tops are not on the bus otherwise."""
        by_currency: dict[str, list[str]] = {}
        for leg in self.legs:
            name = leg.plan_leg.instrument_name
            by_currency.setdefault(currency_of(name), [])
            if self.working and name not in by_currency[currency_of(name)]:
                by_currency[currency_of(name)].append(name)
        for currency, names in sorted(by_currency.items()):
            self._publish(WatchOptionTops(currency=currency, names=tuple(names), origin=ORIGIN))

    def on_minute(self, now: float) -> None:
        """A safety net: deadlines passed are handled, and the tops watched again (a BookKeeper
        restarted since forgot who watched)."""
        if self.working:
            self.watch_tops()
        self.on_time(now)

    def _ask_instruments(self) -> None:
        missing = sorted({currency_of(leg.plan_leg.instrument_name) for leg in self.legs
                          if leg.plan_leg.instrument_name not in self.instruments} - self.refresh_asked)
        if missing:
            self.refresh_asked.update(missing)
            self._publish(RefreshInstruments(origin=ORIGIN, reason="assistant: tick sizes of a plan's options",
                                             currencies=tuple(missing)))

    # -- status ------------------------------------------------------------------------------------
    def status(self, now: float, request_key: str = "") -> PlanStatus:
        if self.work is None:
            return PlanStatus(plan_id=0, currency="", state=PlanState.STOPPED, at=now, message="no plan",
                              request_key=request_key)
        legs = []
        for leg in self.legs:
            current = leg.current
            plan_leg = leg.plan_leg
            if self._leg_done(leg):
                state = LegState.FILLED
            elif current is None:
                state = LegState.CANCELLED if self.state is not PlanState.WORKING else LegState.WAITING
            else:
                state = {"sent": LegState.SENT, "resting": LegState.RESTING, "amending": LegState.AMENDING,
                         "unknown": LegState.SENT}.get(current.phase, LegState.WAITING)
            legs.append(LegProgress(leg=plan_leg.leg, instrument_name=plan_leg.instrument_name, side=plan_leg.side,
                                    amount=plan_leg.amount, filled=round(leg.filled, 8),
                                    average_price=leg.average_price(),
                                    price=current.price if current is not None else None,
                                    order_id=current.order_id if current is not None else "", state=state,
                                    reprices=current.reprices if current is not None else 0))
        message = self.message
        gates = sorted({f"leg {leg.plan_leg.leg}: {leg.gate}" for leg in self.legs if leg.gate})
        if self.state is PlanState.WORKING and not self.cancelling and gates:
            message = f"{message}; waiting ({'; '.join(gates)})"
        elif self.cancelling:
            message = f"{message}; cancelling its open orders"
        plan = self.work.plan
        return PlanStatus(plan_id=plan.plan_id, currency=plan.currency, state=self.state, at=now, legs=tuple(legs),
                          message=message, request_key=request_key)

    def publish_status(self, now: float, force: bool = False, request_key: str = "") -> None:
        """The status on every change (``force``: now, as the answer to ``request_key``)."""
        if self.work is None:
            return  # nothing to say until a plan comes (answers to a cancel say so themselves)
        status = self.status(now, request_key)
        key = (status.plan_id, status.state, status.legs, status.message)
        if force or key != self._last_status:
            self._last_status = key
            self._publish(status)
