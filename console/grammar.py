"""The console's trading language: one typed line in, one typed command or a reason out.

Two pure steps, so that a line that is not fully understood sends nothing:

1. :func:`parse_line` reads the text alone (no market data) into a typed command, or a
   :class:`ParseError` with the reason and a hint. It never raises.
2. :func:`orders_for` turns an order command into the exact :class:`PlaceOrder` messages, given
   the instrument's metadata, the touch and the mark (:class:`TradingContext`), or a
   :class:`Refusal` saying why nothing may be sent; :func:`cancels_for` does the same for the
   cancel shortcuts, given the open orders.

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
stop at or above the bid) is refused, as is any line that ends in a lower-case ``c`` other than
the cancel shortcuts (a guard against typos).

FMZ-style option orders (``buyOption:price,amount`` on the contract chosen with
``setContractType:NAME``) are plain GTC limit orders in coin; the size multiplier does not apply.

Safety limits (:class:`OrderLimits`): an order line whose notional (USD; a ladder counts as a
whole) exceeds ``max_notional_usd`` is refused, and so is a limit price further than the allowed
percentage from the mark *on the side where it would trade* (a buy above the mark, a sell below
it): a passive order far from the market is harmless, a fat-fingered aggressive one is not.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from deribit.instruments import (
    InstrumentNameError,
    amount_step,
    parse_expiry,
    parse_instrument_name,
    round_to_contract,
    round_to_tick,
    tick_size_at,
)
from messages.account import OrderUpdate
from messages.commands import CancelAll, CancelByLabel, CancelOrder, ExchangeCommand, PlaceOrder
from messages.market import Instrument

Side = Literal["buy", "sell"]

#: The most a shortcut may type as its amount, before the size multiplier (the seed's limit).
MAX_QUANTITY = 10_000.0
#: Longest line the grammar reads; anything longer is a paste accident.
MAX_LINE = 200
#: How far through the touch the plain ``a``/``d`` orders are priced, in percent.
THROUGH_TOUCH_PCT = 0.1
LABEL_PREFIX = "manual_api_"
_LABEL = re.compile(r"manual_api_(\d{1,12})")


# -- what a line can mean -----------------------------------------------------------------------
@dataclass(frozen=True)
class ParseError:
    """The line was not understood; nothing happens. ``reason`` says what is wrong, ``hint`` what
    to type instead."""

    line: str
    reason: str
    hint: str

    def __str__(self) -> str:
        return f"{self.reason}. {self.hint}" if self.hint else self.reason


@dataclass(frozen=True)
class MarketOrder:
    """``a200`` / ``d200``: marketable limit 0.1% through the touch."""

    side: Side
    quantity: float


@dataclass(frozen=True)
class TouchOrder:
    """``as200``, ``aw200``, ``ds200``, ``dw200``: at the bid or the ask; post-only when it joins
    its own side (buy at the bid, sell at the ask), marketable otherwise."""

    side: Side
    quantity: float
    touch: Literal["bid", "ask"]


@dataclass(frozen=True)
class LimitOrder:
    """``as100 16000``: post-only limit at an explicit price."""

    side: Side
    quantity: float
    price: float


@dataclass(frozen=True)
class StopOrder:
    """``dw200 18000s``: stop-market, triggered by the mark price, reduce only."""

    side: Side
    quantity: float
    trigger_price: float


@dataclass(frozen=True)
class LadderOrder:
    """``a100 16000 18000 10``: ``count`` post-only limits evenly spaced from ``low`` to ``high``."""

    side: Side
    quantity: float
    low: float
    high: float
    count: int


@dataclass(frozen=True)
class OptionOrder:
    """``buyOption:price,amount`` / ``sellOption:...`` on the contract set by setContractType."""

    side: Side
    price: float
    amount: float


@dataclass(frozen=True)
class Cancel:
    """``ca`` everything, ``cc`` the last manual order, ``cb``/``cs`` manual buys/sells (stops
    excluded), ``cstops`` manual stop orders."""

    scope: Literal["all", "last", "buys", "sells", "stops"]


Topic = Literal["price", "funds", "orders", "positions", "connection", "size_multiplier", "help", "status",
                "surface", "hedging"]


@dataclass(frozen=True)
class Show:
    """An information command: prints, sends nothing (``hedging`` asks the hedger for its status)."""

    topic: Topic


@dataclass(frozen=True)
class ShowChain:
    """``chain [EXPIRY]``: option T-tables (all expiries, or the one given as 24SEP21)."""

    expiry: str | None = None


@dataclass(frozen=True)
class Plot:
    """``plot ARGS``: the plot command's arguments."""

    args: tuple[str, ...]


@dataclass(frozen=True)
class ResetSizeMultiplier:
    """Ask for the size multiplier again."""


@dataclass(frozen=True)
class ChangeInstrument:
    """Choose the futures instrument again."""


@dataclass(frozen=True)
class Quit:
    """Stop the program cleanly."""


@dataclass(frozen=True)
class Hedging:
    """``activate delta hedging`` / ``deactivate delta hedging``."""

    action: Literal["activate", "deactivate"]


@dataclass(frozen=True)
class SetHedgeStep:
    """``setHedgeDeltaStep:x``: the hedger's band, in coins of delta."""

    max_delta_mismatch: float


@dataclass(frozen=True)
class SetContractType:
    """``setContractType:NAME``: the option that buyOption/sellOption trade."""

    instrument_name: str


OrderCommand = MarketOrder | TouchOrder | LimitOrder | StopOrder | LadderOrder | OptionOrder
Command = (OrderCommand | Cancel | Show | ShowChain | Plot | ResetSizeMultiplier | ChangeInstrument | Quit
           | Hedging | SetHedgeStep | SetContractType)
ORDER_COMMANDS = (MarketOrder, TouchOrder, LimitOrder, StopOrder, LadderOrder, OptionOrder)


# -- the words --------------------------------------------------------------------------------------
_WORDS: dict[str, Command] = {
    "price": Show("price"),
    "funds": Show("funds"),
    "orders": Show("orders"),
    "positions": Show("positions"),
    "connection status": Show("connection"),
    "show size multiplier": Show("size_multiplier"),
    "reset size multiplier": ResetSizeMultiplier(),
    "change instrument": ChangeInstrument(),
    "help": Show("help"),
    "quit": Quit(),
    "shutdown": Quit(),
    "status": Show("status"),
    "surface": Show("surface"),
    "chain": ShowChain(),
    "activate delta hedging": Hedging("activate"),
    "deactivate delta hedging": Hedging("deactivate"),
    "delta hedging status": Show("hedging"),
    "ca": Cancel("all"),
    "cc": Cancel("last"),
    "cb": Cancel("buys"),
    "cs": Cancel("sells"),
    "cstops": Cancel("stops"),
}
_SHORTCUT_WORDS = frozenset({"ca", "cc", "cb", "cs", "cstops"})
_FMZ = ("setContractType", "buyOption", "sellOption", "setHedgeDeltaStep")

#: Everything the completer offers (words, and FMZ prefixes ending in a colon).
COMPLETION_WORDS: tuple[str, ...] = (*_WORDS, "chain ", "plot ", *(f"{name}:" for name in _FMZ))

HELP = """\
Trading (a buys, d sells; amount at most 10,000, times the size multiplier):
  a200 / d200            marketable limit 0.1% through the touch (IOC)
  as200 / dw200          post-only limit at the bid (buy) / at the ask (sell)
  aw200 / ds200          marketable limit at the ask (buy) / at the bid (sell) (IOC)
  as100 16000            post-only limit at 16000 (a price overrides s/w)
  dw200 18000s           stop-market triggered by the mark at 18000, reduce only
  a100 16000 18000 10    ladder of 10 post-only limits from 16000 to 18000
  a line ending in c is never executed (typo guard)
Cancels: ca all orders, cc the last manual order, cb manual buys, cs manual sells (no stops),
         cstops manual stop orders
Information: price, funds, orders, positions, connection status, status, chain [EXPIRY],
             surface, plot ..., show size multiplier, reset size multiplier,
             change instrument, help, quit / shutdown
Hedging: activate delta hedging, deactivate delta hedging, delta hedging status,
         setHedgeDeltaStep:0.01
Options: setContractType:BTC-24SEP21-40000-C, buyOption:0.05,1, sellOption:0.06,1 (price in coin,
         amount in coins)"""

_NUMBER = r"(?:0|[1-9]\d{0,8})(?:\.\d{1,8})?"
_SHORTCUT = re.compile(rf"(?P<side>[ad])(?P<touch>[sw]?)(?P<quantity>{_NUMBER})")
_PRICE = re.compile(rf"(?P<price>{_NUMBER})(?P<stop>s?)")
_COUNT = re.compile(r"[1-9]\d{0,3}")
# What reads as an attempt at an order shortcut (so the error can say what is wrong with it).
_SHORTCUT_LIKE = re.compile(r"[ad](?:[a-z]?[-+0-9.,].*|[sw]?)")


def _number(text: str) -> float | None:
    """A plain decimal (no sign, exponent or separators), or None."""
    if not re.fullmatch(_NUMBER, text):
        return None
    try:
        value = float(Decimal(text))
    except InvalidOperation:
        return None
    return value if math.isfinite(value) else None


def parse_line(text: str) -> Command | ParseError | None:
    """What ``text`` asks for: a command, a :class:`ParseError`, or ``None`` for a blank line.
    Never raises."""
    if not isinstance(text, str):
        return ParseError(repr(text), "not text", "type a command; help lists them")
    line = text.strip()
    if not line:
        return None
    if len(line) > MAX_LINE:
        return ParseError(line[:40] + "...", f"line longer than {MAX_LINE} characters", "type one command per line")
    if not line.isprintable():
        return ParseError(line, "the line holds control characters", "retype it")
    words = " ".join(line.split())
    # Word commands read in any case; shortcuts (cancels as orders) only as typed, lower case.
    command = _WORDS.get(words if words.lower() in _SHORTCUT_WORDS else words.lower())
    if command is not None:
        return command
    if line.endswith("c"):
        return ParseError(line, "last letter is c: not executed (a guard against typos)",
                          "retype the line without the trailing c; cancels are ca, cc, cb, cs, cstops")
    head, colon, rest = words.partition(":")
    if colon and " " not in head:
        return _parse_fmz(line, head, rest.strip())
    first, _, args = words.partition(" ")
    if first.lower() == "chain":
        return _parse_chain(line, args)
    if first.lower() == "plot":
        return Plot(tuple(args.split()))
    if _SHORTCUT_LIKE.fullmatch(first):
        return _parse_order(line, words.split(" "))
    return _unknown(line)


def _unknown(line: str) -> ParseError:
    guess = difflib.get_close_matches(" ".join(line.split()).lower(), list(_WORDS), n=1, cutoff=0.6)
    if guess:
        return ParseError(line, f"unknown command {line!r}", f"did you mean {guess[0]!r}? help lists every command")
    if line[:1] in "AD" and line[1:2].isdigit():
        return ParseError(line, f"unknown command {line!r}", "order shortcuts are lower case: a200 buys, d200 sells")
    return ParseError(line, f"unknown command {line!r}", "help lists every command; a200 buys, d200 sells")


def _parse_chain(line: str, args: str) -> Command | ParseError:
    parts = args.split()
    if not parts:
        return ShowChain()
    if len(parts) > 1:
        return ParseError(line, "chain takes at most one expiry", "e.g. chain 24SEP21, or chain for every expiry")
    try:
        parse_expiry(parts[0].upper())
    except InstrumentNameError as exc:
        return ParseError(line, str(exc), "e.g. chain 24SEP21")
    return ShowChain(parts[0].upper())


def _parse_fmz(line: str, head: str, rest: str) -> Command | ParseError:
    names = {name.lower(): name for name in _FMZ}
    name = names.get(head.lower())
    if name is None:
        return _unknown(line)
    if name == "setContractType":
        candidate = rest.upper()
        try:
            parsed = parse_instrument_name(candidate)
        except InstrumentNameError as exc:
            return ParseError(line, str(exc), "e.g. setContractType:BTC-24SEP21-40000-C")
        if parsed.kind != "option":
            return ParseError(line, f"{candidate} is not an option",
                              "setContractType takes an option, e.g. BTC-24SEP21-40000-C; "
                              "change instrument picks the future")
        return SetContractType(candidate)
    if name == "setHedgeDeltaStep":
        value = _number(rest)
        if value is None or value <= 0:
            return ParseError(line, f"delta step {rest!r} is not a positive number", "e.g. setHedgeDeltaStep:0.01")
        return SetHedgeStep(value)
    side: Side = "buy" if name == "buyOption" else "sell"
    price_text, comma, amount_text = rest.partition(",")
    price, amount = _number(price_text.strip()), _number(amount_text.strip())
    if not comma or price is None or amount is None:
        return ParseError(line, f"{name} needs a price and an amount", f"e.g. {name}:0.05,1 (price in coin, amount "
                                                                      "in coins)")
    if price <= 0 or amount <= 0:
        return ParseError(line, "price and amount must be positive", f"e.g. {name}:0.05,1")
    if amount > MAX_QUANTITY:
        return ParseError(line, f"amount {amount:g} is above the maximum of {MAX_QUANTITY:,.0f}",
                          "split it into several orders")
    return OptionOrder(side, price, amount)


def _parse_order(line: str, tokens: list[str]) -> Command | ParseError:
    example = "e.g. a200, as200, as100 16000, dw200 18000s, a100 16000 18000 10"
    match = _SHORTCUT.fullmatch(tokens[0])
    if match is None:
        first = tokens[0]
        if len(first) == 1 or (len(first) == 2 and first[1] in "sw"):
            return ParseError(line, f"{first!r} needs an amount", example)
        if first[1].isalpha() and first[1] not in "sw":
            return ParseError(line, f"second letter {first[1]!r} must be s (bid) or w (ask), or the amount follows",
                              example)
        return ParseError(line, f"amount {first.lstrip('adsw')!r} is not a plain number", example)
    side: Side = "buy" if match["side"] == "a" else "sell"
    quantity = _number(match["quantity"])
    if quantity is None or quantity <= 0:
        return ParseError(line, "the amount must be positive", example)
    if quantity > MAX_QUANTITY:
        return ParseError(line, f"amount {quantity:g} is above the maximum of {MAX_QUANTITY:,.0f}",
                          "split it into several orders")
    args = tokens[1:]
    if not args:
        if match["touch"]:
            return TouchOrder(side, quantity, "bid" if match["touch"] == "s" else "ask")
        return MarketOrder(side, quantity)
    if len(args) == 2:
        return ParseError(line, "a ladder needs a count after its two bounds", "e.g. a100 16000 18000 10")
    if len(args) > 3:
        return ParseError(line, "too many words", example)
    price_match = _PRICE.fullmatch(args[0])
    price = _number(price_match["price"]) if price_match else None
    if price_match is None or price is None or price <= 0:
        return ParseError(line, f"price {args[0]!r} is not a positive number",
                          "e.g. as100 16000 (limit) or dw200 18000s (stop)")
    if len(args) == 1:
        if price_match["stop"]:
            return StopOrder(side, quantity, price)
        return LimitOrder(side, quantity, price)
    if price_match["stop"]:
        return ParseError(line, "a ladder takes no stop (s) price", "e.g. a100 16000 18000 10")
    high = _number(args[1])
    if high is None or high <= 0:
        return ParseError(line, f"upper bound {args[1]!r} is not a positive number", "e.g. a100 16000 18000 10")
    if not _COUNT.fullmatch(args[2]):
        return ParseError(line, f"count {args[2]!r} is not a whole number of orders", "e.g. a100 16000 18000 10")
    count = int(args[2])
    if count < 2:
        return ParseError(line, "a ladder needs at least 2 orders", "for one order type as100 16000")
    low, high = min(price, high), max(price, high)
    if low == high:
        return ParseError(line, "the ladder's bounds are equal", "e.g. a100 16000 18000 10")
    return LadderOrder(side, quantity, low, high, count)


# -- from command to orders -------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    """Nothing is sent: ``reason`` says why, ``hint`` what to do."""

    reason: str
    hint: str = ""

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
    inverse futures are quoted in USD already. None when it cannot be known."""
    if _is_option(instrument):
        return amount * index_price if index_price else None
    if instrument.counter_currency not in (None, "USD") or instrument.settlement_currency in ("USDC", "USDT"):
        ref = price or index_price
        return amount * ref if ref else None
    return amount


def orders_for(command: OrderCommand, ctx: TradingContext, first_label: int) -> tuple[PlaceOrder, ...] | Refusal:
    """The orders an order command stands for, or why none may be sent. Labels are numbered
    from ``first_label``; request keys are ``ctx.request_key_prefix`` + label."""
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
    if ctx.stale:
        return Refusal(f"the book of {name} is stale (a gap or a reconnect)", "wait until it is resynchronised")
    step = amount_step(inst)
    wanted = command.amount if isinstance(command, OptionOrder) else command.quantity * ctx.size_multiplier
    amount = round_to_contract(wanted, step, "down")
    if amount < step:
        unit = "coins" if _is_option(inst) else "USD"
        return Refusal(f"amount {wanted:g} {unit} is below {name}'s minimum of {step:g}",
                       "type a larger amount or raise the size multiplier")

    def tick(price: float, side: Side) -> float:
        return round_to_tick(price, tick_size_at(inst, price), "down" if side == "buy" else "up")

    orders: list[tuple[Side, float | None, dict]] = []
    match command:
        case MarketOrder(side=side):
            touch = ctx.ask if side == "buy" else ctx.bid
            if not touch:
                return Refusal(f"no {'ask' if side == 'buy' else 'bid'} in {name}'s book", "try a limit price")
            factor = 1 + THROUGH_TOUCH_PCT / 100 if side == "buy" else 1 - THROUGH_TOUCH_PCT / 100
            price = tick(touch * factor, side)
            price = max(price, touch) if side == "buy" else min(price, touch)
            orders.append((side, price, {"time_in_force": "immediate_or_cancel"}))
        case TouchOrder(side=side, touch=where):
            touch = ctx.bid if where == "bid" else ctx.ask
            if not touch:
                return Refusal(f"no {where} in {name}'s book", "try an explicit limit price")
            joins = (side == "buy") == (where == "bid")
            extra = {"post_only": True} if joins else {"time_in_force": "immediate_or_cancel"}
            orders.append((side, touch, extra))
        case LimitOrder(side=side, price=typed):
            orders.append((side, tick(typed, side), {"post_only": True}))
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
            orders.extend((side, p, {"post_only": True}) for p in prices)
        case StopOrder(side=side, trigger_price=typed):
            trigger = round_to_tick(typed, tick_size_at(inst, typed))
            if trigger <= 0:
                return Refusal(f"trigger {typed:g} is below {name}'s tick", "type a real trigger price")
            if side == "buy":
                if ctx.ask is None:
                    return Refusal(f"no ask in {name}'s book to check the stop against", "try again when quoted")
                if trigger <= ctx.ask:
                    return Refusal(f"a buy stop at {trigger:g} is at or below the ask {ctx.ask:g}: it would trigger "
                                   "at once", "a buy stop goes above the market")
            else:
                if ctx.bid is None:
                    return Refusal(f"no bid in {name}'s book to check the stop against", "try again when quoted")
                if trigger >= ctx.bid:
                    return Refusal(f"a sell stop at {trigger:g} is at or above the bid {ctx.bid:g}: it would trigger "
                                   "at once", "a sell stop goes below the market")
            orders.append((side, None, {"type": "stop_market", "trigger": "mark_price", "trigger_price": trigger,
                                        "reduce_only": True}))
        case OptionOrder(side=side, price=typed):
            orders.append((side, tick(typed, side), {}))

    refusal = _check_prices(orders, ctx)
    if refusal is not None:
        return refusal
    total = 0.0
    for _, price, _ in orders:
        notional = notional_usd(inst, amount, price, ctx.index_price)
        if notional is None:
            return Refusal(f"the USD notional of {name} cannot be known without an index price",
                           "wait for the index price")
        total += notional
    if total > ctx.limits.max_notional_usd:
        return Refusal(f"notional {total:,.0f} USD is above the limit of {ctx.limits.max_notional_usd:,.0f} USD",
                       "trade a smaller amount or raise console.max_notional_usd")
    out = []
    for i, (side, price, extra) in enumerate(orders):
        label = f"{LABEL_PREFIX}{first_label + i}"
        out.append(PlaceOrder(instrument_name=name, side=side, amount=amount, origin=ctx.origin,
                              request_key=f"{ctx.request_key_prefix}{label}", price=price, label=label,
                              **{"type": "limit", **extra}))
    return tuple(out)


def _check_prices(orders: list[tuple[Side, float | None, dict]], ctx: TradingContext) -> Refusal | None:
    name = ctx.instrument.instrument_name
    limits = ctx.limits
    pct = limits.max_option_price_deviation_pct if _is_option(ctx.instrument) else limits.max_price_deviation_pct
    for side, price, _ in orders:
        if price is None:
            continue
        if not (math.isfinite(price) and price > 0):
            return Refusal(f"price {price!r} is not positive on {name}'s tick grid", "type a larger price")
        if ctx.mark is None or ctx.mark <= 0:
            return Refusal(f"no mark price for {name} yet: cannot check the limit price", "wait for its ticker")
        if side == "buy" and price > ctx.mark * (1 + pct / 100):
            return Refusal(f"buy limit {price:g} is {100 * (price / ctx.mark - 1):.2f}% above the mark {ctx.mark:g} "
                           f"(limit {pct:g}%)", "check the price, or raise the console's price deviation limit")
        if side == "sell" and price < ctx.mark * (1 - pct / 100):
            return Refusal(f"sell limit {price:g} is {100 * (1 - price / ctx.mark):.2f}% below the mark {ctx.mark:g} "
                           f"(limit {pct:g}%)", "check the price, or raise the console's price deviation limit")
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


def describe_order(order: PlaceOrder) -> str:
    """One line for the terminal, e.g. ``buy 20 BTC-PERPETUAL limit 60060 IOC [manual_api_3]``."""
    parts = [order.side, f"{order.amount:g}", order.instrument_name, order.type]
    if order.price is not None:
        parts.append(f"{order.price:g}")
    if order.trigger_price is not None:
        parts.append(f"trigger {order.trigger_price:g} ({order.trigger})")
    if order.post_only:
        parts.append("post-only")
    if order.reduce_only:
        parts.append("reduce-only")
    if order.time_in_force != "good_til_cancelled":
        parts.append({"immediate_or_cancel": "IOC", "fill_or_kill": "FOK"}.get(order.time_in_force,
                                                                            order.time_in_force))
    parts.append(f"[{order.label}]")
    return " ".join(parts)


# -- the start-up prompts ----------------------------------------------------------------------------
#: The largest size multiplier the prompt accepts (a typo guard: 10,000 x 100,000 is already 1e9 USD).
MAX_SIZE_MULTIPLIER = 100_000.0


def pick_future(text: str, futures: list[Instrument]) -> Instrument | ParseError:
    """The future a start-up answer names: its number in the listed order (from 1) or its name."""
    choice = " ".join(str(text).split()).upper()
    names = [f.instrument_name for f in futures]
    listing = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    if not futures:
        return ParseError(choice, "no futures are listed yet", "wait for the instrument list")
    if choice.isdigit() and 1 <= int(choice) <= len(futures):
        return futures[int(choice) - 1]
    for future in futures:
        if future.instrument_name == choice:
            return future
    return ParseError(choice, f"{choice or 'nothing'} is not a listed future",
                      f"type its number (1 to {len(futures)}) or its name: {listing}")


def parse_size_multiplier(text: str) -> float | ParseError:
    """A positive size multiplier, at most :data:`MAX_SIZE_MULTIPLIER`."""
    value = _number(str(text).strip())
    if value is None or value <= 0:
        return ParseError(str(text), f"size multiplier {str(text).strip()!r} is not a positive number",
                          "type e.g. 10 (then a2 trades 2 x 10)")
    if value > MAX_SIZE_MULTIPLIER:
        return ParseError(str(text), f"size multiplier {value:g} is above {MAX_SIZE_MULTIPLIER:,.0f}",
                          "type a smaller multiplier")
    return value
