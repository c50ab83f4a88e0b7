"""Vega hedging of one currency's options with one chosen option (pure: every method takes ``now``).

:class:`VegaHedger` keeps the currency's option vega within ``band`` of ``target`` (USD per vol
point: the sum over option positions of size x the ticker's ``greeks.vega``, Deribit's units and
:mod:`desk.risk`'s) by trading one option: the at-the-money option of the listed expiry nearest
``tenor_days`` (at least ``hedger.vega_min_days`` away; the strike nearest that expiry's forward,
the out-of-the-money side: a call at or above the forward, else a put). The option is chosen on
activation, when the tenor is changed, after the 08:00 rollover, and again when it is no longer
listed or comes within ``vega_min_days`` of expiry; never while an order is in flight.

Each order is a marketable limit, immediate-or-cancel, at the far touch (buy at the ask, sell at
the bid) no further than ``vega_max_price_deviation_pct`` from the mark: it fills at once or not
at all, and nothing rests on the book. Its amount is the gap over the option's vega per coin,
rounded to the option's minimum trade amount (to the nearest: an order is sent only when it
makes the gap smaller, so the hedger never swings back and forth around a narrow band), capped
by ``vega_max_order_coins`` and the day's volume left.

The delta this option adds is the delta hedger's: it counts every option position of the
currency (``desk.hedging``), this one too. The two hedgers' orders never mix: this one's origin
is ``vega-hedger`` and its labels ``vega-<n>`` (:data:`VEGA_TAG`); it takes answers, order
updates and fills only for its own order, and the delta hedger's tag (``hedge-<n>``) does not
own these labels.

Safety, as the delta hedger's: one order in flight, and after a fill the Portfolio must show it
before anything is decided again (:class:`desk.hedge_order.HedgeOrder`'s phases); an order whose
answer is lost blocks until the exchange's picture says where it stands; nothing while
disconnected, unreconciled, reconciling, or while Deribit has locked the currency's index; rate,
day and size limits; every ticker an order is computed from checked (:mod:`desk.plausibility`,
a crossed or locked book of the hedge option, a ticker older than ``stale_after_s``);
``max_rejections`` rejections (or orders that closed unfilled) in a row, a fill never shown, and
a safe shutdown switch it off with an alert.

Beside the exposure assistant: while a plan of the currency is being worked (its ``PlanStatus``
says ``working``) or any order under a plan label (``plan-<n>-<leg>``) is open in the currency, it
holds (``PLAN_WORKING``): it would trade the plan's fills back toward its target, and its IOC could
trade against a resting plan order. Activated meanwhile, it holds likewise; it goes on once the plan
has ended and no plan order is open (toward its own target: the console refuses ``confirm`` while
vega hedging is active, so a trader who activates it during a plan chooses that).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from config.settings import HedgerSettings
from deribit.platform import PlatformLocks, index_of
from desk.hedge_decision import parsed_name
from desk.hedge_order import CLOSED_STATES, HedgeOrder, OrderTag
from desk.hedging import EventLog
from desk.plausibility import Implausible, PlausibilityLimits, option_ticker_fault, timestamp_fault
from messages.account import ExchangeState, OrderUpdate, Position, UserTrade
from messages.commands import ANSWER_LOST, CancelOrder, CommandFailed, CommandResult, PlaceOrder, ReconcilePortfolio
from messages.exposure import (
    PlanState,
    PlanStatus,
    SetVegaBand,
    VegaHedgeCode,
    VegaHedgerControl,
    VegaHedgerStatus,
    is_plan_label,
)
from messages.hedging import HedgePhase
from messages.market import DataFault, Instrument, InstrumentsLoaded, PlatformState, Ticker
from messages.state import PortfolioChanged
from quant.black76 import DAYS_PER_YEAR, black76_greeks

ORIGIN = "vega-hedger"
#: The vega hedger's orders: origin ``vega-hedger``, labels ``vega-<n>``.
VEGA_TAG = OrderTag(origin=ORIGIN, prefix="vega-")
DAY_MS = 86_400_000
Code = VegaHedgeCode
Side = Literal["buy", "sell"]
SENT, RESTING, AMENDING, SETTLING, UNKNOWN = (
    HedgePhase.SENT, HedgePhase.RESTING, HedgePhase.AMENDING, HedgePhase.SETTLING, HedgePhase.UNKNOWN)


@dataclass(frozen=True, slots=True)
class VegaDecision:
    """What the data says to do now: ``code`` TRADE with ``side``, ``amount`` (coins) and
    ``price`` (the option's price unit), or why not. ``vega`` is the currency's option vega and
    ``option_vega`` the hedge option's per coin (USD per vol point), when known."""

    code: VegaHedgeCode
    reason: str
    vega: float | None = None
    option_vega: float | None = None
    side: Side | None = None
    amount: float = 0.0
    price: float | None = None
    after: float | None = None  # the vega expected after the order


@dataclass(frozen=True, slots=True)
class SeenTicker:
    ticker: Ticker
    received_at: float


def portfolio_vega(positions: Iterable[Position], tickers: Mapping[str, SeenTicker], now: float,
                   stale_after_s: float) -> tuple[float | None, VegaHedgeCode, str]:
    """The sum over option positions of size x the ticker's vega (USD per vol point), or None with
    why: a held option's ticker missing, older than ``stale_after_s``, or without a finite vega. An
    option at or past its expiry (held until its delivery is booked) has no vega and needs none."""
    total = 0.0
    for position in positions:
        if position.kind != "option" or position.size == 0:
            continue
        name = position.instrument_name
        parsed = parsed_name(name)
        if parsed is not None and parsed.expiry_ms is not None and parsed.expiry_ms <= now * 1000.0:
            continue
        seen = tickers.get(name)
        if seen is None:
            return None, Code.NO_TICKER, f"no sane ticker of the held option {name}"
        age = now - seen.received_at
        if not age <= stale_after_s:
            return None, Code.STALE_TICKER, f"the ticker of the held option {name} is {age:.1f} s old"
        greeks = seen.ticker.greeks
        vega = greeks.vega if greeks is not None else None
        if vega is None or not math.isfinite(vega) or not math.isfinite(position.size):
            return None, Code.NO_VEGA, f"no usable vega for the held option {name} ({vega!r})"
        total += position.size * vega
    return total, Code.NONE, ""


def choose_option(instruments: Iterable[Instrument], tenor_days: float, min_days: float,
                  forward_of: Callable[[int], float | None], now: float) -> Instrument | None:
    """The at-the-money option of the listed expiry nearest ``tenor_days`` (at least ``min_days``
    away): the strike nearest that expiry's forward (``forward_of(expiry_ms)``), a call at or above
    the forward, else a put. None when nothing fits or that expiry has no forward yet."""
    earliest = (now + min_days * 86_400.0) * 1000.0
    options = [i for i in instruments if i.kind == "option" and i.is_active and i.strike is not None
               and i.option_type is not None and i.expiration_timestamp > earliest
               and i.min_trade_amount > 0 and i.tick_size > 0]
    if not options:
        return None
    expiry = min({i.expiration_timestamp for i in options},
                 key=lambda e: (abs((e - now * 1000.0) / DAY_MS - tenor_days), e))
    forward = forward_of(expiry)
    if forward is None or not 0 < forward < math.inf:
        return None  # not another expiry meanwhile: its forward comes with its first ticker
    strikes = [i for i in options if i.expiration_timestamp == expiry]
    strike = min((i.strike or 0.0 for i in strikes), key=lambda k: (abs(k - forward), k))
    kind = "call" if strike >= forward else "put"
    chosen = [i for i in strikes if i.strike == strike and i.option_type == kind]
    return chosen[0] if chosen else next(i for i in strikes if i.strike == strike)


def book_fault(ticker: Ticker) -> Implausible | None:
    """The hedge option's touch: each side there must be a finite positive price, bid below ask."""
    name = ticker.instrument_name
    bid, ask = ticker.best_bid_price, ticker.best_ask_price
    for what, price in (("bid", bid), ("ask", ask)):
        if price is not None and not math.isfinite(price):
            return Implausible(DataFault.NOT_FINITE, name, f"{what} is {price!r}")
        if price is not None and price < 0:
            return Implausible(DataFault.NOT_POSITIVE, name, f"{what} is {price:g}")
    if bid and ask:
        if bid > ask:
            return Implausible(DataFault.CROSSED, name, f"crossed: bid {bid:g} above ask {ask:g}")
        if bid == ask:
            return Implausible(DataFault.LOCKED, name, f"locked: bid = ask = {bid:g}")
    return None


#: How far (a factor) the hedge option's ticker vega may be from Black-76's at its mark IV (Deribit's
#: is within 0.1% of it on the real capture): an order is sized by it.
MAX_VEGA_RATIO = 2.0


def model_vega(option: Instrument, ticker: Ticker, now: float) -> float | None:
    """Black-76's vega (USD per vol point, one coin) of ``option`` at the ticker's mark IV and
    forward, or None without them or at expiry."""
    forward, iv, strike = ticker.underlying_price, ticker.mark_iv, option.strike
    years = (option.expiration_timestamp / 1000.0 - now) / (DAYS_PER_YEAR * 86_400.0)
    if forward is None or iv is None or strike is None or not (
            0 < forward < math.inf and 0 < iv < math.inf and 0 < strike < math.inf and years > 0):
        return None
    vega = float(black76_greeks(forward, strike, years, iv / 100.0, option.option_type == "call").vega)
    return vega if 0 < vega < math.inf else None


def decide_vega(vega: float, target: float, band: float, option: Instrument, seen: SeenTicker | None, now: float,
                stale_after_s: float, max_order_coins: float, max_deviation: float) -> VegaDecision:
    """Whether and what to trade in ``option`` to bring ``vega`` back within ``band`` of
    ``target`` (see the module doc for the rules)."""
    gap = vega - target
    if not abs(gap) > band:
        return VegaDecision(Code.WITHIN_BAND, f"vega {vega:,.0f} within {band:,.0f} of {target:,.0f} USD/vol pt",
                            vega)
    name = option.instrument_name
    if seen is None:
        return VegaDecision(Code.NO_TICKER, f"no sane ticker of the hedge option {name}", vega)
    age = now - seen.received_at
    if not age <= stale_after_s:
        return VegaDecision(Code.STALE_TICKER, f"the hedge option's ticker is {age:.1f} s old", vega)
    ticker = seen.ticker
    per_coin = ticker.greeks.vega if ticker.greeks is not None else None
    if per_coin is None or not 0 < per_coin < math.inf:
        return VegaDecision(Code.NO_VEGA, f"the hedge option {name} has no usable vega ({per_coin!r})", vega)
    model = model_vega(option, ticker, now)
    if model is None or not model / MAX_VEGA_RATIO <= per_coin <= model * MAX_VEGA_RATIO:
        return VegaDecision(Code.NO_VEGA, f"the hedge option {name}'s vega {per_coin:g} is not Black-76's "
                            f"{model if model is not None else 'unknown'} at its mark IV (within x{MAX_VEGA_RATIO:g})",
                            vega)
    side: Side = "sell" if gap > 0 else "buy"
    price = ticker.best_bid_price if side == "sell" else ticker.best_ask_price
    mark = ticker.mark_price
    if not price or not 0 < price < math.inf:
        return VegaDecision(Code.NO_BOOK, f"no {'bid' if side == 'sell' else 'ask'} for {name} to {side} at",
                            vega, per_coin)
    if not abs(price - mark) <= max_deviation * mark + option.tick_size:
        return VegaDecision(Code.PRICE_DEVIATION, f"{name}'s touch {price:g} is further than {max_deviation:.0%} "
                            f"from its mark {mark:g}", vega, per_coin)
    step = option.min_trade_amount
    lots = round(abs(gap) / per_coin / step)
    cap = math.floor(max_order_coins / step + 1e-9)
    lots = min(lots, cap)
    amount = round(lots * step, 10)
    after = vega - amount * per_coin if side == "sell" else vega + amount * per_coin
    if lots <= 0 or not abs(after - target) < abs(gap):
        return VegaDecision(Code.BELOW_MIN_AMOUNT, f"the gap {gap:+,.0f} is less than half of one {step:g} of {name} "
                            f"({step * per_coin:,.0f} USD/vol pt)", vega, per_coin)
    return VegaDecision(Code.TRADE, f"vega {vega:,.0f} is {gap:+,.0f} from {target:,.0f} (band {band:,.0f}): "
                        f"{side} {amount:g} {name} at {price:g}", vega, per_coin, side, amount, price, after)


class VegaHedger:
    """Vega hedging of one currency (see the module doc)."""

    def __init__(self, currency: str, settings: HedgerSettings, publish: Callable[[object], None], log: EventLog,
                 next_number: Callable[[float], int], now: float, max_clock_ahead_s: float = 5.0) -> None:
        self.currency = currency
        self.settings = settings
        self.tag = VEGA_TAG
        self._publish = publish
        self.log = log
        self._next_number = next_number
        self.active = settings.vega_active_on_start
        self.band = settings.vega_band_usd
        self.target = settings.vega_target_usd
        self.tenor_days = settings.vega_tenor_days
        self.limits = PlausibilityLimits(
            max_index_deviation=settings.max_index_deviation_pct / 100.0,
            max_mark_outside_book=settings.max_mark_outside_book_pct / 100.0,
            max_iv_pct=settings.max_iv_pct, max_clock_ahead_s=max_clock_ahead_s)
        self.instruments: dict[str, Instrument] = {}
        self.option: Instrument | None = None
        self.tickers: dict[str, SeenTicker] = {}
        self.faults: dict[str, Implausible] = {}  # the faults found on record, by option (said once each)
        self._checked: dict[str, tuple[SeenTicker, Implausible | None]] = {}  # the last check of each option's
        self.forwards: dict[int, float] = {}  # expiry ms -> the latest sane ticker's underlying price
        self.price_index = index_of(currency)
        self.locks = PlatformLocks()
        self.can_trade = False
        self.portfolio: PortfolioChanged | None = None
        self.positions: tuple[Position, ...] = ()
        self.held: frozenset[str] = frozenset()
        self.orphans: tuple[OrderUpdate, ...] = ()
        self.orphans_cancelled: set[str] = set()
        self.own_labels: set[str] = set()
        self.order: HedgeOrder | None = None
        self.sent_times: deque[float] = deque()
        self.orders_today = 0
        self.volume_today = 0.0
        self.rejections = 0
        self.retry_at = 0.0
        self.last: VegaDecision | None = None
        self.code = Code.NONE if self.active else Code.OFF
        self.reason = ""
        self.message = "vega hedging is on" if self.active else "vega hedging is off"
        self.alert = ""
        self._status_key: tuple[Any, ...] = ()
        self._order_instrument = ""  # the option of the order in flight
        self.plan_id = 0  # the exposure plan of this currency being worked (0: none)
        self.plan_orders: tuple[OrderUpdate, ...] = ()  # open orders under plan labels

    # -- inputs --------------------------------------------------------------------------------------
    def instruments_loaded(self, loaded: InstrumentsLoaded, now: float) -> None:
        self.instruments = {i.instrument_name: i for i in loaded.instruments if i.kind == "option"}
        option = self.option
        if option is not None and option.instrument_name not in self.instruments and self.order is None:
            self.log.info("vega_option_delisted", currency=self.currency, option=option.instrument_name)
            self.option = None
        self._evaluate(now)

    def on_ticker(self, ticker: Ticker, now: float) -> bool:
        """An option ticker of this currency, kept as the latest of its option (checked when it is
        read: :meth:`fault_of`); its expiry's forward kept when within the index band (to find the
        at-the-money strike). True when it could change the decision (a held or the hedge option)."""
        name = ticker.instrument_name
        parsed = parsed_name(name)
        if parsed is None or parsed.option_type is None:
            return False
        self.tickers[name] = SeenTicker(ticker, now)
        option = self.option
        relevant = name in self.held or (option is not None and name == option.instrument_name)
        expiry, forward, index = parsed.expiry_ms, ticker.underlying_price, ticker.index_price
        if (expiry is not None and forward is not None and index and 0 < forward < math.inf
                and abs(forward / index - 1.0) <= self.limits.max_index_deviation):
            new_expiry = expiry not in self.forwards
            self.forwards[expiry] = forward
            if new_expiry and not relevant and self.active and option is None:
                self._evaluate(now)  # an expiry's first forward: an option may be chosen now
        if relevant:
            self._evaluate(now)
        return relevant

    def fault_of(self, name: str) -> Implausible | None:
        """What is wrong with the latest ticker of ``name`` (None: sane, or none yet): the
        plausibility rules (:mod:`desk.plausibility`, its stamp against when it came) and a crossed
        or locked book. Checked once per ticker, and only for the options an order is computed from."""
        seen = self.tickers.get(name)
        if seen is None:
            return None
        cached = self._checked.get(name)
        if cached is not None and cached[0] is seen:
            return cached[1]
        ticker = seen.ticker
        parsed = parsed_name(name)
        fault = (timestamp_fault(name, ticker.timestamp, seen.received_at, self.limits)
                 or option_ticker_fault(ticker, parsed is not None and parsed.option_type == "call", self.limits)
                 or book_fault(ticker))
        self._checked[name] = (seen, fault)
        if fault is not None and fault != self.faults.get(name):
            self.log.warning("vega_input_refused", currency=self.currency, instrument=name,
                             fault=fault.fault.value, detail=fault.detail)
        if fault is None:
            self.faults.pop(name, None)
        else:
            self.faults[name] = fault
        return fault

    def on_platform_state(self, state: PlatformState, now: float) -> None:
        if self.locks.on_state(state) and state.price_index == self.price_index:
            self._evaluate(now)

    def on_portfolio(self, portfolio: PortfolioChanged, now: float) -> None:
        self.portfolio = portfolio
        self.positions = portfolio.positions
        self.held = frozenset(p.instrument_name for p in portfolio.positions if p.kind == "option" and p.size != 0)
        owns = self.tag.owns
        self.orphans = tuple(o for o in portfolio.open_orders if owns(o.label) and o.label not in self.own_labels
                             and o.order_state not in CLOSED_STATES)
        self.plan_orders = tuple(o for o in portfolio.open_orders
                                 if is_plan_label(o.label) and o.order_state not in CLOSED_STATES)
        order = self.order
        if order is not None and order.phase == SETTLING and self._reflected(order):
            self._settled(order, now)
        self._evaluate(now)

    def on_connection(self, can_trade: bool, now: float) -> None:
        if can_trade == self.can_trade:
            return
        self.can_trade = can_trade
        if not can_trade:
            self.tickers.clear()  # whatever comes after the reconnect must be fresh
            self.faults.clear()
            self._checked.clear()
            order = self.order
            if order is not None:
                order.link_lost = True
                if order.phase in (SENT, RESTING, AMENDING):
                    self._unknown(order, "the link dropped while the order was in flight", now)
            self._block(Code.DISCONNECTED, "not connected to the exchange", now)
            return
        order = self.order
        if order is not None and order.phase == UNKNOWN:
            self._ask_reconcile(order, now)
        elif order is not None and order.phase == SETTLING and order.due is None:
            order.due = now + self.settings.fill_wait_s  # the portfolio reconciles on every connect
        self._evaluate(now)

    def on_plan_status(self, status: PlanStatus, now: float) -> None:
        """The exposure assistant's picture: a plan of this currency working holds the hedger; that
        plan ended, or no plan worked at all (``plan_id`` 0), releases it."""
        if status.state is PlanState.WORKING and status.plan_id and status.currency == self.currency:
            if self.plan_id != status.plan_id:
                self.plan_id = status.plan_id
                self.log.info("vega_hedge_plan_working", currency=self.currency, plan_id=status.plan_id)
                self._evaluate(now)
        elif self.plan_id and (status.plan_id in (0, self.plan_id)) and status.state is not PlanState.WORKING:
            self.log.info("vega_hedge_plan_ended", currency=self.currency, plan_id=self.plan_id,
                          state=status.state.value)
            self.plan_id = 0
            self._evaluate(now)

    # -- our order's answers, updates and fills ---------------------------------------------------------
    def on_result(self, result: CommandResult, now: float) -> None:
        order = self.order
        if order is None or result.origin != self.tag.origin:
            return
        if result.request_key == order.request_key and order.phase in (SENT, SETTLING):
            for trade in result.trades:
                order.take_trade(trade)
            if order.phase == SETTLING:
                if self._reflected(order):
                    self._settled(order, now)
                return
            if result.order is not None:
                self._order_state(order, result.order, now)
        elif result.request_key == order.pending_key and result.order is not None:
            for trade in result.trades:
                order.take_trade(trade)
            self._order_state(order, result.order, now)

    def on_failed(self, failed: CommandFailed, now: float) -> None:
        order = self.order
        if order is None or failed.origin != self.tag.origin:
            return
        if failed.request_key == order.request_key and order.phase == SENT:
            if failed.code == ANSWER_LOST:
                self._unknown(order, failed.message, now)
                return
            self._drop(order)
            self.volume_today -= order.amount
            self.log.warning("vega_hedge_rejected", currency=self.currency, label=order.label, code=failed.code,
                             message=failed.message)
            self._rejected(f"{failed.message} (code {failed.code})", now)
        elif failed.request_key == order.pending_key:
            order.pending_key = None
            self._unknown(order, f"its cancel failed: {failed.message}", now)

    def on_order_update(self, update: OrderUpdate, now: float) -> None:
        order = self.order
        if order is None or not order.following or not order.is_ours(update.label, update.order_id):
            return
        self._order_state(order, update, now)

    def on_user_trade(self, trade: UserTrade, now: float) -> None:
        order = self.order
        if order is None or not order.is_ours(trade.label, trade.order_id):
            return
        order.take_trade(trade)
        if order.phase == SETTLING and self._reflected(order):
            self._settled(order, now)

    def on_exchange_state(self, state: ExchangeState, now: float) -> None:
        order = self.order
        if order is None or order.phase != UNKNOWN or order.unknown_since is None:
            return
        if state.at < order.unknown_since or (order.link_lost and not self.can_trade):
            return
        found = order.still_open(state.open_orders)
        if found is not None:
            order.take_state(found)
            self.log.warning("vega_hedge_found_open", currency=self.currency, label=order.label)
            if order.order_id is not None:
                key = order.cancel(now + self.settings.fill_wait_s)
                self._publish(CancelOrder(order_id=order.order_id, origin=self.tag.origin, request_key=key))
            return
        order.resolved_at = state.at
        size = next((p.size for p in state.positions if p.instrument_name == self._order_instrument), 0.0)
        self.log.info("vega_hedge_resolved", currency=self.currency, label=order.label, position=size)
        order.settle(size, now, now + self.settings.fill_wait_s)
        if self._reflected(order):
            self._settled(order, now)

    # -- controls ------------------------------------------------------------------------------------
    def on_control(self, control: VegaHedgerControl, now: float) -> None:
        if control.action == "activate":
            self.active = True
            self.alert = ""
            self.rejections = 0
            self.retry_at = 0.0
            self.code = Code.NONE
            if self.order is None:
                self.option = None  # chosen afresh on each activation
            self.message = f"vega hedging activated by {control.origin}"
            self.log.info("vega_hedging_activated", currency=self.currency, origin=control.origin, band=self.band,
                          target=self.target, tenor_days=self.tenor_days)
            self._evaluate(now)
        elif control.action == "deactivate":
            self._switch_off(f"vega hedging deactivated by {control.origin}", now, warn=False)
        self.publish_status(now, control.request_key)

    def on_set_band(self, change: SetVegaBand, now: float) -> None:
        refusal = HedgerSettings.vega_band_refusal(change.band_usd)
        tenor = change.tenor_days
        if refusal is None and tenor is not None:
            refusal = HedgerSettings.vega_tenor_refusal(tenor)
        if refusal is not None:
            self.message = f"vega band refused: {refusal}"
            self.log.warning("vega_band_refused", currency=self.currency, reason=refusal, origin=change.origin)
        else:
            self.band = change.band_usd
            said = f"vega band set to {change.band_usd:,.0f} USD/vol pt"
            if tenor is not None and tenor != self.tenor_days:
                self.tenor_days = tenor
                if self.order is None:
                    self.option = None  # chosen again for the new tenor
                said += f", tenor {tenor:g} days"
            self.message = f"{said} by {change.origin}"
            self.log.info("vega_band_changed", currency=self.currency, band=self.band, tenor_days=self.tenor_days,
                          origin=change.origin)
            self._evaluate(now)
        self.publish_status(now, change.request_key)

    def safe_shutdown(self, reason: str, now: float) -> None:
        self._switch_off(f"safe shutdown: {reason}", now, warn=True)

    def _switch_off(self, message: str, now: float, warn: bool) -> None:
        was = self.active
        self.active = False
        self.message = message
        self.code = Code.SWITCHED_OFF if warn else Code.OFF
        if warn:
            self.alert = message
        (self.log.warning if warn else self.log.info)("vega_hedging_off", currency=self.currency, reason=message,
                                                      was_active=was)
        self.publish_status(now)

    # -- time ----------------------------------------------------------------------------------------
    def on_rollover(self, now: float) -> None:
        self.orders_today = 0
        self.volume_today = 0.0
        if self.order is None:
            self.option = None  # the next expiry may be nearer the tenor now
        self.publish_status(now, force=True)

    def on_minute(self, now: float) -> None:
        self._prune(now)
        self.publish_status(now, force=True)

    def next_due(self) -> float | None:
        dues = []
        if self.order is not None and self.order.due is not None:
            dues.append(self.order.due)
        if self.active and self.order is None and self.retry_at:
            dues.append(self.retry_at)
        if self.active and self.order is None and self.code is Code.RATE_LIMIT and self.sent_times:
            dues.append(self.sent_times[0] + 60.0)
        return min(dues) if dues else None

    def on_time(self, now: float) -> None:
        order = self.order
        if order is not None and order.due is not None and now >= order.due:
            order.due = None
            self._timeout(order, now)
        if self.order is None and self.retry_at and now >= self.retry_at:
            self.retry_at = 0.0
            self._evaluate(now)
        elif self.order is None and self.code is Code.RATE_LIMIT:
            self._evaluate(now)

    def _timeout(self, order: HedgeOrder, now: float) -> None:
        phase = order.phase
        if phase == RESTING and order.order_id is not None:  # an IOC should never rest: cancel it
            key = order.cancel(now + self.settings.fill_wait_s)
            self._publish(CancelOrder(order_id=order.order_id, origin=self.tag.origin, request_key=key))
        elif phase in (SENT, AMENDING, RESTING):
            self._unknown(order, "no answer in time", now)
        elif phase == UNKNOWN:
            self._ask_reconcile(order, now)
        elif phase == SETTLING:
            if not self.can_trade:
                return
            if not order.reconcile_asked:
                order.reconcile_asked = True
                order.due = now + self.settings.fill_wait_s
                self._publish(ReconcilePortfolio(origin=self.tag.origin, currencies=(self.currency,),
                                                 reason=f"vega hedger: fill of {order.label} not shown"))
            else:
                self._drop(order)
                self._switch_off(f"the portfolio never showed the fill of {order.label}; vega hedging switched off: "
                                 "check the positions, then activate again", now, warn=True)

    # -- the decision ----------------------------------------------------------------------------------
    def _gate(self, now: float) -> tuple[VegaHedgeCode, str] | None:
        if not self.can_trade:
            return Code.DISCONNECTED, "not connected to the exchange (or not logged in and subscribed)"
        if self.locks.locked(self.price_index):
            return Code.PLATFORM_LOCKED, f"Deribit has locked trading on {self.price_index}"
        portfolio = self.portfolio
        if portfolio is None:
            return Code.NO_PORTFOLIO, "no portfolio yet"
        if not portfolio.reconciled:
            return Code.UNRECONCILED, "the portfolio is not reconciled with the exchange yet"
        if portfolio.reconciling:
            return Code.RECONCILING, "a reconcile with the exchange is under way"
        if self.orphans:
            self._cancel_orphans()
            return Code.ORPHAN_ORDERS, f"{len(self.orphans)} vega order(s) of an earlier run are open: cancelling"
        if self.plan_id:
            return Code.PLAN_WORKING, (f"holding while exposure plan {self.plan_id} of {self.currency} is worked "
                                       "(its fills would be traded back toward the vega target)")
        if self.plan_orders:
            labels = ", ".join(sorted({o.label for o in self.plan_orders}))
            return Code.PLAN_WORKING, (f"holding while {len(self.plan_orders)} plan order(s) are open ({labels}): "
                                       "a vega order could trade against them")
        if now < self.retry_at:
            return Code.COOLDOWN, f"pausing {self.retry_at - now:.1f} s after a rejection"
        self._prune(now)
        s = self.settings
        if len(self.sent_times) >= s.vega_max_orders_per_minute:
            return Code.RATE_LIMIT, f"{len(self.sent_times)} vega orders in the last 60 s"
        if self.orders_today >= s.vega_max_orders_per_day:
            return Code.DAILY_ORDERS, f"{self.orders_today} vega orders today (vega_max_orders_per_day)"
        return None

    def _choose(self, now: float) -> Instrument | None:
        option = self.option
        earliest = (now + self.settings.vega_min_days * 86_400.0) * 1000.0
        if option is not None and (option.instrument_name not in self.instruments
                                   or option.expiration_timestamp <= earliest):
            option = None
        if option is None:
            option = choose_option(self.instruments.values(), self.tenor_days, self.settings.vega_min_days,
                                   self.forwards.get, now)
            if option is not None:
                self.log.info("vega_option_chosen", currency=self.currency, option=option.instrument_name,
                              tenor_days=self.tenor_days,
                              days=round((option.expiration_timestamp / 1000.0 - now) / 86_400.0, 2))
            self.option = option
        return option

    def current(self, now: float, choose: bool = True) -> VegaDecision:
        """What the data says now, whatever the gates: nothing from a held or the hedge option's
        ticker that :meth:`fault_of` refuses. ``choose``: choose the hedge option if there is none
        (the status does not)."""
        for name in self.held:
            fault = self.fault_of(name)
            if fault is not None:
                return VegaDecision(Code.IMPLAUSIBLE_DATA, f"implausible data refused: {fault}")
        vega, code, reason = portfolio_vega(self.positions, self.tickers, now, self.settings.stale_after_s)
        if vega is None:
            return VegaDecision(code, reason)
        option = self._choose(now) if choose and self.order is None else self.option
        if option is None:
            return VegaDecision(Code.NO_OPTION, f"no listed option near {self.tenor_days:g} days with a forward", vega)
        fault = self.fault_of(option.instrument_name)
        if fault is not None:
            return VegaDecision(Code.IMPLAUSIBLE_DATA, f"implausible data refused: {fault}", vega)
        s = self.settings
        return decide_vega(vega, self.target, self.band, option, self.tickers.get(option.instrument_name), now,
                           s.stale_after_s, s.vega_max_order_coins, s.vega_max_price_deviation_pct / 100.0)

    def _evaluate(self, now: float) -> None:
        if not self.active or self.order is not None:
            return
        gate = self._gate(now)
        if gate is not None:
            self._block(*gate, now)
            return
        decision = self.current(now)
        self.last = decision
        if decision.code is not Code.TRADE:
            self._block(decision.code, decision.reason, now)
            return
        option = self.option
        assert option is not None and decision.side is not None and decision.price is not None
        step = option.min_trade_amount
        room = self.settings.vega_max_daily_volume_coins - self.volume_today
        amount = min(decision.amount, math.floor(max(room, 0.0) / step + 1e-9) * step)
        if amount <= 0:
            self._block(Code.DAILY_VOLUME, f"the day's vega volume {self.volume_today:g} coins reached "
                        f"vega_max_daily_volume_coins {self.settings.vega_max_daily_volume_coins:g}", now)
            return
        self._place(option, decision, round(amount, 10), now)

    def _place(self, option: Instrument, decision: VegaDecision, amount: float, now: float) -> None:
        label = self.tag.label(self._next_number(now))
        assert decision.side is not None
        name = option.instrument_name
        command = PlaceOrder(instrument_name=name, side=decision.side, amount=amount, origin=self.tag.origin,
                             request_key=label, type="limit", price=decision.price,
                             time_in_force="immediate_or_cancel", label=label)
        self.order = HedgeOrder(label=label, request_key=label, side=decision.side, amount=amount, order_type="limit",
                                placed_at=now, size_before=self._size(name), price=decision.price,
                                due=now + self.settings.fill_wait_s)
        self._order_instrument = name
        self.own_labels.add(label)
        self.sent_times.append(now)
        self.orders_today += 1
        self.volume_today += amount
        self._publish(command)
        self.code = Code.TRADE
        self.reason = decision.reason
        self.log.info("vega_hedge_order", currency=self.currency, label=label, instrument=name, side=decision.side,
                      amount=amount, price=decision.price, vega=decision.vega, option_vega=decision.option_vega,
                      expected_after=decision.after, band=self.band, target=self.target)
        self.publish_status(now)

    # -- the order's life --------------------------------------------------------------------------------
    def _order_state(self, order: HedgeOrder, update: OrderUpdate, now: float) -> None:
        order.take_state(update)
        state = update.order_state
        if state not in CLOSED_STATES:
            if order.phase == SENT and state == "open":
                order.rest(now + self.settings.reprice_after_s)  # an IOC left open: cancelled at the timeout
            return
        if not order.following:
            return
        self.volume_today -= max(order.amount - order.filled, 0.0)
        self.log.info("vega_hedge_closed", currency=self.currency, label=order.label, state=state,
                      filled=order.filled, amount=order.amount)
        if order.filled <= 0:
            self._drop(order)
            self._rejected("the exchange rejected the order" if state == "rejected"
                           else "the order closed unfilled (the touch moved)", now)
            return
        self.rejections = 0
        order.settle(order.size_before + order.signed_filled, now, now + self.settings.fill_wait_s)
        if self._reflected(order):
            self._settled(order, now)
        else:
            self.publish_status(now)

    def _reflected(self, order: HedgeOrder) -> bool:
        """Whether the Portfolio's picture holds every fill of ``order`` (as the delta hedger's)."""
        portfolio = self.portfolio
        if portfolio is None or not portfolio.reconciled or portfolio.reconciling:
            return False
        if order.resolved_at is not None:
            return portfolio.reconciled_at is not None and portfolio.reconciled_at >= order.resolved_at
        if order.all_trades_known and order.trade_ids.issubset(portfolio.recent_trade_ids):
            return True
        asked = portfolio.reconcile_requested_at
        return asked is not None and order.closed_at is not None and asked > order.closed_at

    def _settled(self, order: HedgeOrder, now: float) -> None:
        self._drop(order)
        self.log.info("vega_hedge_settled", currency=self.currency, label=order.label,
                      position=self._size(self._order_instrument))
        self.publish_status(now)
        self._evaluate(now)

    def _drop(self, order: HedgeOrder) -> None:
        order.finish()
        self.order = None

    def _rejected(self, why: str, now: float) -> None:
        self.rejections += 1
        self.retry_at = now + self.settings.retry_after_reject_s
        if self.rejections >= self.settings.max_rejections:
            self._switch_off(f"{self.rejections} vega hedge orders failed in a row (last: {why}); vega hedging "
                             "switched off: check the account and the hedge option, then activate again", now,
                             warn=True)
        else:
            self.message = f"vega hedge order failed: {why}"
            self._block(Code.COOLDOWN, f"pausing after a failed order: {why}", now)

    def _unknown(self, order: HedgeOrder, why: str, now: float) -> None:
        order.lose(now, now + self.settings.fill_wait_s)
        self.log.warning("vega_hedge_unknown", currency=self.currency, label=order.label, reason=why)
        self._ask_reconcile(order, now)
        self.publish_status(now)

    def _ask_reconcile(self, order: HedgeOrder, now: float) -> None:
        order.due = now + self.settings.fill_wait_s
        if not self.can_trade:
            return
        order.reconcile_asked = True
        self._publish(ReconcilePortfolio(origin=self.tag.origin, currencies=(self.currency,),
                                         reason=f"vega hedger: state of {order.label} unknown"))

    def _cancel_orphans(self) -> None:
        for orphan in self.orphans:
            if orphan.order_id in self.orphans_cancelled:
                continue
            self.orphans_cancelled.add(orphan.order_id)
            self.log.warning("vega_orphan_cancelled", currency=self.currency, label=orphan.label,
                             order_id=orphan.order_id)
            self._publish(CancelOrder(order_id=orphan.order_id, origin=self.tag.origin,
                                      request_key=self.tag.orphan_key(orphan.order_id)))

    # -- helpers and status --------------------------------------------------------------------------------
    def _size(self, name: str) -> float:
        return next((p.size for p in self.positions if p.instrument_name == name), 0.0)

    def _prune(self, now: float) -> None:
        while self.sent_times and now - self.sent_times[0] >= 60.0:
            self.sent_times.popleft()

    def _block(self, code: VegaHedgeCode, reason: str, now: float) -> None:
        if code is not self.code or (reason != self.reason and code is Code.IMPLAUSIBLE_DATA):
            self.log.info("vega_hedge_hold", currency=self.currency, code=code.value, reason=reason)
        self.code = code
        self.reason = reason
        self.publish_status(now)

    def status(self, now: float, request_key: str = "") -> VegaHedgerStatus:
        current = self.current(now, choose=False) if self.order is None else self.last
        vega = current.vega if current is not None and current.vega is not None else (
            self.last.vega if self.last is not None else None)
        order = self.order
        option = self.option
        return VegaHedgerStatus(
            currency=self.currency, active=self.active, band_usd=self.band, tenor_days=self.tenor_days, at=now,
            target_usd=self.target, option=option.instrument_name if option is not None else "", vega=vega,
            in_flight=order is not None, orders_today=self.orders_today, code=self.code, message=self.message,
            alert=self.alert, request_key=request_key,
            option_vega=current.option_vega if current is not None else None, volume_today=self.volume_today,
            order_label=order.label if order is not None else "",
            phase=order.phase.value if order is not None else HedgePhase.IDLE.value, reason=self.reason)

    def publish_status(self, now: float, request_key: str = "", force: bool = False) -> None:
        order = self.order
        # The code, not the reason (whose figures move with every ticker).
        key = (self.active, order.phase if order else None, self.band, self.tenor_days, self.code,
               self.orders_today, self.message, self.alert, self.option)
        if force or request_key or key != self._status_key:
            self._status_key = key
            self._publish(self.status(now, request_key))
