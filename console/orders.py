"""What a parsed console line becomes: the exact exchange commands, or why none may be sent.

:func:`orders_for` turns an order command into the :class:`PlaceOrder` messages, given the
instrument's metadata, the touch and the mark (:class:`TradingContext`), or a :class:`Refusal`;
:func:`cancels_for` does the same for the cancel shortcuts, given the open orders.
:class:`Trading` is one console's trading context (the chosen future, size multiplier and option,
the labels and request keys used) and builds the :class:`TradingContext` from the desk's picture.

Order shortcuts (``a`` buys, ``d`` sells; a second letter ``s`` means the bid, ``w`` the ask;
the amount Q is at most 10,000 and is multiplied by the size multiplier, then rounded *down* to
the instrument's amount step, e.g. 10 USD for BTC futures). Every order carries the label
``manual_api_<n>``; prices are on the instrument's tick grid, rounded so a buy never pays more and
a sell never takes less than typed (a trigger to the nearest tick):

====================  ===========  ==========================  =========  ===========  ==========
line                  type         price                       post_only  reduce_only  in force
====================  ===========  ==========================  =========  ===========  ==========
``a200`` / ``d200``   limit        ask x 1.001 / bid x 0.999   no         no           IOC
``as200`` / ``dw200`` limit        bid / ask                   yes        no           GTC
``aw200`` / ``ds200`` limit        ask / bid                   no         no           IOC
``as100 16000``       limit        16000 (overrides s/w)       yes        no           GTC
``dw200 18000s``      stop_market  none; trigger 18000 (mark)  no         yes          GTC
``a100 16000 18000    limit x 10   16000, 16222, ..., 18000    yes        no           GTC
10``                               (buys from the low bound
                                   up, sells from the high
                                   bound down)
====================  ===========  ==========================  =========  ===========  ==========

The seed's "market_limit" orders are *marketable limit* orders: Deribit's own ``market_limit``
type takes no price, so a limit order priced at (or 0.1% through) the touch with
``immediate_or_cancel`` takes what is there up to that price and nothing is left resting.
A stop whose trigger is on the wrong side of the market (a buy stop at or below the ask, a sell
stop at or above the bid) is refused.

FMZ-style option orders (``buyOption:price,amount`` on the contract chosen with
``setContractType:NAME``) are plain GTC limit orders in coin; the size multiplier does not apply.

An order on the hedge instrument of an active hedger is refused (the hedger treats the whole
position there as its hedge and would trade the order away) unless the line ends with
``override``; cancels are never refused.

An order line that looks like a typo is held back the same way, with a warning that says what
looks wrong, until it is repeated ending with ``override`` (:func:`typo_warning`): a post-only
price at or through the market (a buy at or above the ask, a sell at or below the bid: Deribit
would move it, it would not rest where typed), a ladder whose bounds were typed high first, a
ladder reaching the other side of the market (a buy ladder up to the ask or above, a sell ladder
down to the bid or below). The safety limits below apply first, override or not.
(A buy ladder is typed from its low bound up, a sell ladder from its high bound down.)

Safety limits (:class:`OrderLimits`): an order line whose notional (USD; a ladder counts as a
whole) exceeds ``max_notional_usd`` is refused, and so is a limit price further than the allowed
percentage from the mark *on the side where it would trade* (a buy above the mark, a sell below
it): a passive order far from the market is harmless, a fat-fingered aggressive one is not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from console.desk_state import DeskState
from console.grammar import (
    OVERRIDE,
    Cancel,
    Hedging,
    LadderOrder,
    LimitOrder,
    MarketOrder,
    OptionOrder,
    OrderCommand,
    ParseError,
    SetHedgeStep,
    StopOrder,
    TouchOrder,
    check_size_multiplier,
    pick_future,
)
from console.numbers import amount_text, price_text
from console.views import examples_for, expiry_label
from deribit.instruments import amount_step, currency_of, round_to_contract, round_to_tick, tick_size_at
from messages.account import OrderUpdate
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    ExchangeCommand,
    OrderType,
    PlaceOrder,
    Side,
    TimeInForce,
    Trigger,
)
from messages.hedging import HedgerControl, SetHedgeBand
from messages.market import Instrument
from messages.state import TopOfBook

#: How far through the touch the plain ``a``/``d`` orders are priced, in percent.
THROUGH_TOUCH_PCT = 0.1
LABEL_PREFIX = "manual_api_"
_LABEL = re.compile(r"manual_api_([0-9]{1,12})", re.ASCII)

@dataclass(frozen=True)
class Refusal:
    """Nothing is sent: ``reason`` says why, ``hint`` what to do. ``held``: the line looks like a
    typo and is sent when repeated ending with ``override``."""

    reason: str
    hint: str = ""
    held: bool = False

    def __str__(self) -> str:
        return f"{self.reason}. {self.hint}" if self.hint else self.reason


@dataclass(frozen=True)
class OrderLimits:
    """The console's safety limits (settings ``[console]``)."""

    max_notional_usd: float
    max_price_deviation_pct: float
    max_option_price_deviation_pct: float
    max_ladder_orders: int


@dataclass(frozen=True)
class TradingContext:
    """What an order line is priced against: the traded instrument's metadata and market, the
    link and the permissions. Prices in the instrument's quote (USD for futures, coin for
    options); ``index_price`` in USD."""

    instrument: Instrument
    size_multiplier: float
    bid: float | None
    ask: float | None
    mark: float | None
    limits: OrderLimits
    index_price: float | None = None
    stale: bool = False
    connected: bool = True
    trading_allowed: bool = True
    paper: bool = False
    origin: str = "console"
    request_key_prefix: str = "console-"
    # The currency whose active hedger hedges with this instrument (empty: none does).
    hedged_by: str = ""


def label_number(label: str) -> int | None:
    match = _LABEL.fullmatch(label or "")
    return int(match.group(1)) if match else None


def next_label_number(open_orders: Iterable[OrderUpdate], last_used: int = 0) -> int:
    """Labels continue after the highest ``manual_api_<n>`` among open orders (and after the last
    one this console used)."""
    highest = last_used
    for order in open_orders:
        number = label_number(order.label)
        if number is not None and number > highest:
            highest = number
    return highest + 1


def _is_option(instrument: Instrument) -> bool:
    return instrument.kind.startswith("option")


def notional_usd(instrument: Instrument, amount: float, price: float | None, index_price: float | None) -> float | None:
    """USD notional of ``amount``: options and linear instruments by coins x index (or price),
    inverse futures are quoted in USD already. None when it cannot be known (a missing index or
    one that is not a positive finite price: a NaN or negative notional would pass the limit)."""
    def usable(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) and value > 0 else None

    if _is_option(instrument):
        index = usable(index_price)
        return amount * index if index is not None else None
    if instrument.counter_currency not in (None, "USD") or instrument.settlement_currency in ("USDC", "USDT"):
        ref = usable(price) or usable(index_price)
        return amount * ref if ref is not None else None
    return amount


@dataclass(frozen=True)
class _Terms:
    """An order's terms besides side, price and amount (PlaceOrder's defaults)."""

    type: OrderType = "limit"
    post_only: bool = False
    reduce_only: bool = False
    time_in_force: TimeInForce = "good_til_cancelled"
    trigger_price: float | None = None
    trigger: Trigger | None = None


_POST_ONLY = _Terms(post_only=True)
_IOC = _Terms(time_in_force="immediate_or_cancel")


def orders_for(command: OrderCommand, ctx: TradingContext, first_label: int,
               override: bool = False) -> tuple[PlaceOrder, ...] | Refusal:
    """The orders an order command stands for, or why none may be sent. Labels are numbered
    from ``first_label``; request keys are ``ctx.request_key_prefix`` + label. ``override``:
    the line ended with ``override`` (sent on the hedge instrument of an active hedger)."""
    inst = ctx.instrument
    name = inst.instrument_name
    if not ctx.paper and not ctx.trading_allowed:
        return Refusal("mainnet orders need --live", "restart with --live to trade, or --paper to print orders")
    if not ctx.connected:
        return Refusal("not connected to the exchange: no order is sent", "wait for the connection to come back")
    is_option_order = isinstance(command, OptionOrder)
    if is_option_order != _is_option(inst):
        want = "an option (setContractType:NAME)" if is_option_order else "a future"
        return Refusal(f"{name} is not {want}", "setContractType picks the option, change instrument the future")
    if ctx.hedged_by and not override:
        return Refusal(f"the {ctx.hedged_by} delta hedger owns {name}: it treats the whole position there as its "
                       "hedge and would trade this order away",
                       f"to trade it anyway: another future (change instrument), deactivate delta hedging first, "
                       f"or the same line ending with {OVERRIDE}")
    if ctx.stale:
        return Refusal(f"the book of {name} is stale (a gap or a reconnect)", "wait until it is resynchronised")
    fault = _touch_fault(ctx)
    if fault is not None:
        return Refusal(f"the book of {name} is not a market ({fault}): no order is priced on it",
                       "wait until it is resynchronised")
    step = amount_step(inst)
    wanted = command.amount if isinstance(command, OptionOrder) else command.quantity * ctx.size_multiplier
    if not (math.isfinite(wanted) and wanted > 0):
        return Refusal(f"amount {wanted!r} is not a positive number",
                       "check the size multiplier (show size multiplier)")
    amount = round_to_contract(wanted, step, "down")
    if amount < step:
        unit = "coins" if _is_option(inst) else "USD"
        return Refusal(f"amount {wanted:g} {unit} is below {name}'s minimum of {step:g}",
                       "type a larger amount or raise the size multiplier")

    def tick(price: float, side: Side) -> float:
        return round_to_tick(price, tick_size_at(inst, price), "down" if side == "buy" else "up")

    orders: list[tuple[Side, float | None, _Terms]] = []
    match command:
        case MarketOrder(side=side):
            touch = ctx.ask if side == "buy" else ctx.bid
            if not touch:
                return Refusal(f"no {'ask' if side == 'buy' else 'bid'} in {name}'s book", "try a limit price")
            factor = 1 + THROUGH_TOUCH_PCT / 100 if side == "buy" else 1 - THROUGH_TOUCH_PCT / 100
            price = tick(touch * factor, side)
            price = max(price, touch) if side == "buy" else min(price, touch)
            orders.append((side, price, _IOC))
        case TouchOrder(side=side, touch=where):
            touch = ctx.bid if where == "bid" else ctx.ask
            if not touch:
                return Refusal(f"no {where} in {name}'s book", "try an explicit limit price")
            joins = (side == "buy") == (where == "bid")
            orders.append((side, touch, _POST_ONLY if joins else _IOC))
        case LimitOrder(side=side, price=typed):
            orders.append((side, tick(typed, side), _POST_ONLY))
        case LadderOrder(side=side, low=low, high=high, count=count):
            if count > ctx.limits.max_ladder_orders:
                return Refusal(f"a ladder of {count} orders is above the limit of {ctx.limits.max_ladder_orders}",
                               "use fewer orders or raise console.max_ladder_orders")
            spacing = (high - low) / (count - 1)
            rungs = [low + i * spacing for i in range(count)]
            if side == "sell":
                rungs.reverse()
            prices = [tick(p, side) for p in rungs]
            if len(set(prices)) != len(prices):
                return Refusal(f"the ladder's steps ({spacing:g}) are finer than {name}'s tick",
                               "use fewer orders or wider bounds")
            orders.extend((side, p, _POST_ONLY) for p in prices)
        case StopOrder(side=side, trigger_price=typed):
            trigger = round_to_tick(typed, tick_size_at(inst, typed))
            if trigger <= 0:
                return Refusal(f"trigger {typed:g} is below {name}'s tick", "type a real trigger price")
            if side == "buy":
                if ctx.ask is None:
                    return Refusal(f"no ask in {name}'s book to check the stop against", "try again when quoted")
                if trigger <= ctx.ask:
                    return Refusal(f"a buy stop at {price_text(trigger, inst.tick_size)} is at or below the ask "
                                   f"{price_text(ctx.ask, inst.tick_size)}: it would trigger at once",
                                   "a buy stop goes above the market")
            else:
                if ctx.bid is None:
                    return Refusal(f"no bid in {name}'s book to check the stop against", "try again when quoted")
                if trigger >= ctx.bid:
                    return Refusal(f"a sell stop at {price_text(trigger, inst.tick_size)} is at or above the bid "
                                   f"{price_text(ctx.bid, inst.tick_size)}: it would trigger at once",
                                   "a sell stop goes below the market")
            orders.append((side, None, _Terms(type="stop_market", trigger="mark_price", trigger_price=trigger,
                                               reduce_only=True)))
        case OptionOrder(side=side, price=typed):
            orders.append((side, tick(typed, side), _Terms()))

    refusal = _check_prices(orders, ctx)
    if refusal is not None:
        return refusal
    total = 0.0
    for _, at, _ in orders:
        notional = notional_usd(inst, amount, at, ctx.index_price)
        if notional is None:
            return Refusal(f"the USD notional of {name} cannot be known without an index price",
                           "wait for the index price")
        total += notional
    if total > ctx.limits.max_notional_usd:
        return Refusal(f"notional {total:,.0f} USD is above the limit of {ctx.limits.max_notional_usd:,.0f} USD",
                       "trade a smaller amount or raise console.max_notional_usd")
    if not override:
        warning = typo_warning(command, [(side, at) for side, at, terms in orders if terms.post_only], ctx)
        if warning is not None:
            return Refusal(f"looks like a typo: {warning}", f"nothing sent; to send it as typed, repeat the line "
                                                            f"ending with {OVERRIDE}", held=True)
    out = []
    for i, (side, at, terms) in enumerate(orders):
        label = f"{LABEL_PREFIX}{first_label + i}"
        out.append(PlaceOrder(instrument_name=name, side=side, amount=amount, origin=ctx.origin,
                              request_key=f"{ctx.request_key_prefix}{label}", price=at, label=label,
                              type=terms.type, post_only=terms.post_only, reduce_only=terms.reduce_only,
                              time_in_force=terms.time_in_force, trigger_price=terms.trigger_price,
                              trigger=terms.trigger))
    return tuple(out)


def typo_warning(command: OrderCommand, post_only: list[tuple[Side, float | None]], ctx: TradingContext) -> str | None:
    """What looks like a typo in an order line (see the module doc), or None. ``post_only``: the
    side and price of each post-only order the line became (on the tick grid). A side of the book
    that is missing cannot be crossed: nothing is said about it."""
    inst = ctx.instrument

    def p(value: float) -> str:
        return price_text(value, inst.tick_size)

    if isinstance(command, LadderOrder):
        if command.reversed:
            low, high = p(command.low), p(command.high)
            typed, expected = (f"{high} {low}", f"{low} {high}") if command.side == "buy" else (
                f"{low} {high}", f"{high} {low}")
            way = "from its low bound up" if command.side == "buy" else "from its high bound down"
            return (f"the {command.side} ladder's bounds are typed the other way round ({typed}); a {command.side} "
                    f"ladder is typed {way}: {expected}")
        prices = [at for _, at in post_only if at is not None]
        if command.side == "buy" and ctx.ask and prices and max(prices) >= ctx.ask:
            return (f"a buy ladder up to {p(max(prices))} reaches the ask {p(ctx.ask)}: its upper orders are on the "
                    "sellers' side of the market (post-only: Deribit moves them below the ask)")
        if command.side == "sell" and ctx.bid and prices and min(prices) <= ctx.bid:
            return (f"a sell ladder down to {p(min(prices))} reaches the bid {p(ctx.bid)}: its lower orders are on "
                    "the buyers' side of the market (post-only: Deribit moves them above the bid)")
        return None
    for side, at in post_only:
        if at is None:
            continue
        if side == "buy" and ctx.ask and at >= ctx.ask:
            return (f"a post-only buy at {p(at)} is at or above the ask {p(ctx.ask)}: it cannot rest there "
                    "(Deribit moves it below the ask); a bid is below the ask")
        if side == "sell" and ctx.bid and at <= ctx.bid:
            return (f"a post-only sell at {p(at)} is at or below the bid {p(ctx.bid)}: it cannot rest there "
                    "(Deribit moves it above the bid); an offer is above the bid")
    return None


def _touch_fault(ctx: TradingContext) -> str | None:
    """What makes the touch no market (a side that is not a positive finite price, a crossed or
    locked book), or None; a missing side (None, or 0 as Deribit writes an empty one) is no fault.
    The keepers mark such books stale; this holds even if one did not."""
    for side, value in (("bid", ctx.bid), ("ask", ctx.ask)):
        if value and not (math.isfinite(value) and value > 0):
            return f"{side} {value!r}"
    if ctx.bid and ctx.ask and ctx.bid >= ctx.ask:
        tick = ctx.instrument.tick_size
        return f"bid {price_text(ctx.bid, tick)} at or above ask {price_text(ctx.ask, tick)}"
    return None


def _check_prices(orders: list[tuple[Side, float | None, _Terms]], ctx: TradingContext) -> Refusal | None:
    name = ctx.instrument.instrument_name
    limits = ctx.limits
    pct = limits.max_option_price_deviation_pct if _is_option(ctx.instrument) else limits.max_price_deviation_pct
    for side, price, _ in orders:
        if price is None:
            continue
        if not (math.isfinite(price) and price > 0):
            return Refusal(f"price {price!r} is not positive on {name}'s tick grid", "type a larger price")
        if ctx.mark is None:
            return Refusal(f"no mark price for {name} yet: cannot check the limit price", "wait for its ticker")
        if not (math.isfinite(ctx.mark) and ctx.mark > 0):
            return Refusal(f"the mark price of {name} is {ctx.mark!r}, not a price: cannot check the limit price",
                           "wait for a sane ticker")
        tick = ctx.instrument.tick_size
        if side == "buy" and price > ctx.mark * (1 + pct / 100):
            return Refusal(f"buy limit {price_text(price, tick)} is {100 * (price / ctx.mark - 1):.2f}% above the "
                           f"mark {price_text(ctx.mark, tick)} (limit {pct:g}%)",
                           "check the price, or raise the console's price deviation limit")
        if side == "sell" and price < ctx.mark * (1 - pct / 100):
            return Refusal(f"sell limit {price_text(price, tick)} is {100 * (1 - price / ctx.mark):.2f}% below the "
                           f"mark {price_text(ctx.mark, tick)} (limit {pct:g}%)",
                           "check the price, or raise the console's price deviation limit")
    return None


def _is_stop(order: OrderUpdate) -> bool:
    return order.trigger is not None or order.order_type.startswith(("stop", "take", "trailing"))


def cancels_for(command: Cancel, open_orders: Iterable[OrderUpdate], pending_labels: Iterable[str] = (),
                *, origin: str = "console", request_key: str = "console-cancel",
                currency: str | None = None) -> tuple[ExchangeCommand, ...] | Refusal:
    """The cancel commands for a cancel shortcut. ``ca`` cancels every order of the account;
    the others act on the console's own orders (labels ``manual_api_<n>``) among
    ``open_orders`` (and, for ``cc``, orders sent and not answered yet: ``pending_labels``)."""
    if command.scope == "all":
        return (CancelAll(origin=origin, request_key=request_key),)
    mine = [o for o in open_orders if label_number(o.label) is not None]
    if command.scope == "last":
        numbers = [label_number(o.label) for o in mine] + [label_number(lab) for lab in pending_labels]
        known = [n for n in numbers if n is not None]
        if not known:
            return Refusal("no open manual order to cancel")
        return (CancelByLabel(label=f"{LABEL_PREFIX}{max(known)}", origin=origin, request_key=request_key,
                              currency=currency),)
    if command.scope == "stops":
        chosen = [o for o in mine if _is_stop(o)]
    else:
        side = "buy" if command.scope == "buys" else "sell"
        chosen = [o for o in mine if o.direction == side and not _is_stop(o)]
    if not chosen:
        what = {"buys": "buy", "sells": "sell", "stops": "stop"}[command.scope]
        return Refusal(f"no open manual {what} orders to cancel")
    return tuple(CancelOrder(order_id=o.order_id, origin=origin, request_key=f"{request_key}-{i}")
                 for i, o in enumerate(sorted(chosen, key=lambda o: o.order_id)))


def describe_order(order: PlaceOrder, instrument: Instrument | None = None) -> str:
    """One line for the terminal, e.g. ``buy 20 BTC-PERPETUAL limit 60,060.0 IOC [manual_api_3]``:
    prices to ``instrument``'s tick (as short as exact without it)."""

    def price(value: float) -> str:
        return price_text(value, instrument.tick_size) if instrument is not None else f"{value:g}"

    amount = amount_text(order.amount, amount_step(instrument)) if instrument is not None else f"{order.amount:g}"
    parts = [order.side, amount, order.instrument_name, order.type]
    if order.price is not None:
        parts.append(price(order.price))
    if order.trigger_price is not None:
        parts.append(f"trigger {price(order.trigger_price)} ({order.trigger})")
    if order.post_only:
        parts.append("post-only")
    if order.reduce_only:
        parts.append("reduce-only")
    if order.time_in_force != "good_til_cancelled":
        parts.append({"immediate_or_cancel": "IOC", "fill_or_kill": "FOK"}.get(order.time_in_force,
                                                                            order.time_in_force))
    parts.append(f"[{order.label}]")
    return " ".join(parts)


def reference_mark(top: TopOfBook, max_spread_pct: float) -> float | None:
    """The mark an order on a future is checked against: the top of book's (the latest ticker
    the book keeper saw), else the mid of a two-sided book whose spread is within
    ``max_spread_pct`` of it (a tight book's mid cannot be far from the mark). None otherwise."""
    if top.mark_price:
        return top.mark_price
    if top.bid and top.ask and top.ask >= top.bid:
        mid = (top.bid + top.ask) / 2
        if (top.ask - top.bid) / mid * 100 <= max_spread_pct:
            return mid
    return None


# -- one console's trading context -------------------------------------------------------------------
class Trading:
    """What one console trades: the chosen future and size multiplier (shortcuts), the chosen
    option (buyOption/sellOption), the last label it used and its request keys, all prefixed with
    ``key_prefix`` so that its answers are told from anyone else's."""

    def __init__(self, limits: OrderLimits, *, key_prefix: str, paper: bool, trading_allowed: bool,
                 origin: str = "console") -> None:
        self.limits = limits
        self.key_prefix = key_prefix
        self.paper = paper
        self.trading_allowed = trading_allowed
        self.origin = origin
        self.instrument: str | None = None
        self.size_multiplier: float | None = None
        self.option: str | None = None
        self.last_label = 0
        self._keys = 0

    def key(self, what: str) -> str:
        """A fresh request key for ``what`` (a hedger control, a cancel)."""
        self._keys += 1
        return f"{self.key_prefix}{what}-{self._keys}"

    def hedger_message(self, command: Hedging | SetHedgeStep, state: DeskState,
                       currency: str) -> HedgerControl | SetHedgeBand:
        """What a hedging line sends the hedger of ``currency``. A confirmation names the plan this
        console was shown (the hedger refuses any other)."""
        if isinstance(command, SetHedgeStep):
            return SetHedgeBand(max_delta_mismatch=command.max_delta_mismatch, origin=self.origin,
                                request_key=self.key("band"), currency=currency)
        shown = state.hedgers.get(currency)
        plan_id = shown.plan.plan_id if command.action == "confirm" and shown and shown.plan else 0
        if command.action == "acknowledge":
            currency = ""  # every currency's alert
        return HedgerControl(action=command.action, origin=self.origin, request_key=self.key("hedger"),
                             currency=currency, plan_id=plan_id)

    def currency(self, default: str) -> str:
        """The chosen future's currency, else ``default``."""
        return (currency_of(self.instrument) if self.instrument else None) or default

    def configure(self, instrument: str | None, size_multiplier: float | None,
                  futures: list[Instrument], default: Instrument | None = None) -> str | None:
        """Choose the future (its number among ``futures``, its name, or nothing for ``default``)
        and/or the multiplier; an error text, or None. A valid instrument is kept even when the
        multiplier is not."""
        if instrument is not None:
            chosen = pick_future(instrument, futures, default)
            if isinstance(chosen, ParseError):
                return str(chosen)
            if chosen.instrument_name != self.instrument:
                self.option = None
            self.instrument = chosen.instrument_name
        if size_multiplier is not None:
            value = check_size_multiplier(size_multiplier)
            if isinstance(value, ParseError):
                return str(value)
            self.size_multiplier = value
        return None

    def restore(self, instrument: str | None, size_multiplier: float | None) -> str | None:
        """The choice made before a restart, the instrument by its name (checked when it was
        chosen; orders on it are refused until its list comes); the multiplier is checked again.
        An error text, or None."""
        if instrument is not None:
            self.instrument = instrument
        return self.configure(None, size_multiplier, []) if size_multiplier is not None else None

    def describe(self, state: DeskState) -> str | None:
        """What is traded, once both the future and the multiplier are chosen."""
        if not (self.instrument and self.size_multiplier):
            return None
        inst = state.instrument(self.instrument)
        unit = "USD" if inst is not None and inst.kind == "future" else "coins"
        hedged_by = state.hedged_by(self.instrument)
        return (f"trading {self.instrument}, size multiplier {self.size_multiplier:g} "
                f"(a1 = {self.size_multiplier:g} {unit})"
                f"{'; PAPER: orders are printed, not sent' if self.paper else ''}"
                f"{f'; the {hedged_by} delta hedger owns it: orders there need override' if hedged_by else ''}")

    def choose_option(self, name: str, state: DeskState) -> Refusal | None:
        """``setContractType:NAME``: an option of the chosen future's currency that is listed. A
        refused choice forgets the previous one: the next buyOption must not trade an option the
        trader just meant to leave."""
        self.option = None
        if self.instrument and currency_of(name) != currency_of(self.instrument):
            return Refusal(f"{name} is not an option on {currency_of(self.instrument)} (the chosen {self.instrument})")
        if state.instrument(name) is None:
            return Refusal(f"{name} is not listed; options of the chain: chain [CURRENCY] [EXPIRY]")
        self.option = name
        return None

    def context(self, command: OrderCommand, state: DeskState, now: float) -> TradingContext | Refusal:
        """What ``command`` is priced against: the chosen option's live quote (its keeper's answer
        at most :data:`~console.desk_state.LIVE_QUOTE_MAX_AGE_S` old at ``now``: its book's top
        and its ticker's mark), or the chosen future's book."""
        if isinstance(command, OptionOrder):
            if self.option is None:
                example = examples_for(state, self.currency(state.currencies[0]), now)
                return Refusal("no option chosen", f"setContractType:NAME first, e.g. setContractType:{example.option}"
                               if example.listed else "setContractType:NAME first, once the options are listed")
            inst = state.instrument(self.option)
            if inst is None:
                return Refusal(f"{self.option} is not listed any more", "choose another with setContractType")
            if (expired := _expired(inst, now)) is not None:
                return expired
            quote = state.option_quote(self.option, now)
            if quote is None:
                return Refusal(f"no live quote for {self.option} yet",
                               "wait a second for its book keeper's answer (the books come in after a (re)connect: "
                               "status shows how many are synced)")
            return self._priced(state, inst, 1.0, quote.bid, quote.ask, quote.mark_price, quote.stale)
        if self.instrument is None or self.size_multiplier is None:
            return Refusal("no instrument or size multiplier chosen", "type change instrument")
        inst = state.instrument(self.instrument)
        if inst is None:
            return Refusal(f"{self.instrument} is not listed (any more)", "type change instrument")
        if (expired := _expired(inst, now)) is not None:
            return expired
        top = state.tops.get(self.instrument)
        if top is None:
            return Refusal(f"no book for {self.instrument} yet", "wait until its book is synced (status)")
        return self._priced(state, inst, self.size_multiplier, top.bid, top.ask,
                            reference_mark(top, self.limits.max_price_deviation_pct), top.stale)

    def _priced(self, state: DeskState, inst: Instrument, size_multiplier: float, bid: float | None,
                ask: float | None, mark: float | None, stale: bool) -> TradingContext:
        # Paper orders are printed, not sent: a link without trading rights is enough for them.
        return TradingContext(instrument=inst, size_multiplier=size_multiplier, bid=bid, ask=ask, mark=mark,
                              limits=self.limits, index_price=state.index_price(inst.base_currency), stale=stale,
                              connected=state.can_trade or (self.paper and state.link_up),
                              trading_allowed=self.trading_allowed, paper=self.paper, origin=self.origin,
                              request_key_prefix=self.key_prefix, hedged_by=state.hedged_by(inst.instrument_name))

    def orders(self, command: OrderCommand, state: DeskState, now: float,
               override: bool = False) -> tuple[PlaceOrder, ...] | Refusal:
        """The orders an order line stands for, labelled after the highest manual label in use
        (``override``: the line ended with the word, see :func:`orders_for`)."""
        ctx = self.context(command, state, now)
        if isinstance(ctx, Refusal):
            return ctx
        first = next_label_number(state.open_orders(), self.last_label)
        orders = orders_for(command, ctx, first, override)
        if not isinstance(orders, Refusal):
            self.last_label = first + len(orders) - 1
        return orders

    def cancels(self, command: Cancel, state: DeskState, pending: Iterable[ExchangeCommand],
                currency: str) -> tuple[ExchangeCommand, ...] | Refusal:
        """The cancels a cancel line stands for; ``pending``: commands sent, not answered yet."""
        pending_labels = [o.label for o in pending if isinstance(o, PlaceOrder)]
        return cancels_for(command, state.open_orders(), pending_labels, origin=self.origin,
                           request_key=self.key(f"cancel-{command.scope}"), currency=currency)


def _expired(inst: Instrument, now: float) -> Refusal | None:
    """An instrument at or past its expiry is still listed until the rollover drops it, its book
    frozen at its last state (never marked stale): nothing may be priced on it."""
    if inst.expiration_timestamp > now * 1000:
        return None
    return Refusal(f"{inst.instrument_name} expired at {expiry_label(inst.expiration_timestamp)} 08:00 UTC",
                   "choose another: setContractType for an option, change instrument for a future")


def describe_cancel(cancel: ExchangeCommand) -> str:
    """A cancel printed in paper mode, e.g. ``CancelOrder o1``."""
    return f"{type(cancel).__name__} {getattr(cancel, 'order_id', '')}{getattr(cancel, 'label', '')}"
