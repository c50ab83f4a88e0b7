"""The hedge decision: pure, from positions, live option marks, the hedge instrument's top of book
and the policy. No state, no clock, no actor: :func:`decide` is called on every relevant change.

Units. Deltas are in coin (BTC, ETH). An option position's ``size`` is in coin, so its delta is
``size x delta per coin``. An inverse future's or perpetual's ``size`` is in USD; its delta in
coin is ``size / price`` (what Deribit reports as ``size_currency`` and as the position's
``delta``, taken at the mark); we divide by the live price of the hedge instrument (the mid of
its top of book, else its mark) so that the figure moves with the market between portfolio
updates. A linear (``BTC_USDC-...``) future's size is already in coin. Hedge orders are in USD,
a whole number of contracts (10 USD for BTC, 1 USD for ETH).

Delta sources for options:

- ``black76``: Black-76 at the ticker's ``mark_iv`` with F = ``underlying_price`` and
  T = (expiry - now) / 365 days, r = 0 (how Deribit computes its greeks). F is carried to the
  newest index level (F x level / the ticker's own index; ``desk.index_level``), and the hedge
  leg is valued at the same level (its basis x level): the perpetual's quote, the index and the
  option tickers of one market move arrive one after the other in any order, and each leg
  taken at its own last message would see one move twice, once each way;
- ``premium_adjusted``: the same minus the premium in coin (price / F): a coin-settled option's
  value is itself a coin exposure;
- ``exchange``: the ticker's ``greeks.delta`` x size (the position's ``delta`` from the
  portfolio when the ticker carries no greeks).

The hot path computes each option's delta with the closed form below (math.erfc, about a
microsecond) rather than :func:`quant.black76_greeks`, whose vectorized set-up costs about
230 microseconds even for one option, most of the latency budget; the tests hold the two
together to 1e-12.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from deribit.instruments import InstrumentName, InstrumentNameError, parse_instrument_name, round_to_contract
from desk.index_level import Underlying
from desk.plausibility import PlausibilityLimits, index_deviation_fault
from messages.account import Position
from messages.hedging import HedgeCode
from messages.market import DataFault, Ticker

Mode = Literal["options_vs_hedge", "net"]
DeltaSource = Literal["black76", "premium_adjusted", "exchange"]
Side = Literal["buy", "sell"]
Action = Literal["hold", "trade", "blocked"]

# Read on every decision: module globals, not enum attribute look-ups (~45 ns each in 3.11).
_WITHIN_BAND, _BELOW_CONTRACT, _TRADE = HedgeCode.WITHIN_BAND, HedgeCode.BELOW_CONTRACT, HedgeCode.TRADE

SECONDS_PER_YEAR = 365.0 * 86400.0
_SQRT_HALF = math.sqrt(0.5)


class OptionMark(msgspec.Struct, frozen=True):
    """What the latest ticker of one option says, and when we received it (local clock)."""

    instrument_name: str
    mark_price: float  # coin
    mark_iv: float | None  # percent, as Deribit quotes it
    underlying_price: float | None
    exchange_delta: float | None  # per coin of position (the ticker's greeks.delta)
    received_at: float
    index_price: float | None = None  # the index of the same moment as underlying_price

    @classmethod
    def from_ticker(cls, ticker: Ticker, received_at: float) -> OptionMark:
        greeks = ticker.greeks
        return cls(
            instrument_name=ticker.instrument_name,
            mark_price=ticker.mark_price,
            mark_iv=ticker.mark_iv,
            underlying_price=ticker.underlying_price,
            exchange_delta=greeks.delta if greeks is not None else None,
            received_at=received_at,
            index_price=ticker.index_price,
        )


class HedgeQuote(msgspec.Struct, frozen=True):
    """The hedge instrument's top of book (USD prices), when it was last confirmed (local
    clock), and whether the book keeper flagged it stale."""

    instrument_name: str
    bid: float | None
    ask: float | None
    mark_price: float | None
    received_at: float
    stale: bool = False

    @property
    def price(self) -> float | None:
        """The price deltas are converted at: the mid when both sides exist, else the mark."""
        bid, ask = self.bid, self.ask
        if bid and ask and bid > 0 and ask > 0:
            return 0.5 * (bid + ask)
        if self.mark_price and self.mark_price > 0:
            return self.mark_price
        return None


class HedgePolicy(msgspec.Struct, frozen=True):
    """What the decision needs from the settings (the band can change live)."""

    instrument: str
    contract_size: float  # USD: the hedge instrument's amount step
    band: float  # coin: rehedge when |mismatch| exceeds it
    mode: Mode = "options_vs_hedge"
    delta_source: DeltaSource = "black76"
    max_order_usd: float = math.inf
    stale_after_s: float = 10.0
    disagreement_warn: float = 0.01
    limits: PlausibilityLimits = PlausibilityLimits()
    require_index: bool = False  # the hedger's: no decision without a fresh index level


class PositionDelta(msgspec.Struct, frozen=True):
    instrument_name: str
    kind: str
    size: float
    delta: float  # coin


class HedgeDecision(msgspec.Struct, frozen=True):
    """What to do, why, and the figures it rests on.

    ``action``: ``trade`` (send ``side`` ``amount`` USD of the hedge instrument), ``hold``
    (inside the band, or the order would be smaller than half a contract) or ``blocked`` (the
    data does not allow a decision). ``code`` is a short stable key of the reason (for change
    detection); ``reason`` the readable text. ``hedge_delta`` is the hedge instrument's
    position (``options_vs_hedge``) or every future's (``net``); ``after`` the mismatch
    expected once the order fills. ``ours_options_delta`` is our plain Black-76 figure at the
    tickers' own forwards and ``exchange_options_delta`` the tickers' (for the disagreement
    warning)."""

    action: Action
    code: HedgeCode
    reason: str
    band: float
    side: Side | None = None
    amount: float = 0.0
    options_delta: float | None = None
    hedge_delta: float | None = None
    mismatch: float | None = None
    price: float | None = None
    after: float | None = None
    exchange_options_delta: float | None = None
    ours_options_delta: float | None = None
    deltas: tuple[PositionDelta, ...] = ()
    warning: str = ""
    fault: DataFault | None = None  # with code IMPLAUSIBLE_DATA: what was wrong

    @property
    def trade(self) -> bool:
        return self.action == "trade"


# -- Black-76, scalar ------------------------------------------------------------------------
def black76_delta(forward: float, strike: float, years: float, vol: float, is_call: bool) -> tuple[float, float]:
    """(delta, premium-adjusted delta) of one option per unit of underlying, undiscounted
    Black-76 (r = 0). At or past expiry, or at zero vol, delta is the intrinsic step (0.5 at
    the money). Premium-adjusted delta is delta - price / forward."""
    if not (forward > 0 and strike > 0 and math.isfinite(forward) and math.isfinite(strike)):
        raise ValueError(f"Black-76 needs a positive forward and strike, got F={forward!r} K={strike!r}")
    s = vol * math.sqrt(years) if years > 0 and vol > 0 else 0.0
    if s > 0:
        d1 = math.log(forward / strike) / s + 0.5 * s
        d2 = d1 - s
        # N(x) = erfc(-x / sqrt 2) / 2, written out: this runs on the path to a hedge order.
        erfc = math.erfc
        if is_call:
            delta = 0.5 * erfc(-d1 * _SQRT_HALF)
            price = forward * delta - strike * 0.5 * erfc(-d2 * _SQRT_HALF)
        else:
            delta = -0.5 * erfc(d1 * _SQRT_HALF)
            price = strike * 0.5 * erfc(d2 * _SQRT_HALF) + forward * delta
        price = max(price, 0.0)
    else:
        step = 1.0 if forward > strike else 0.0 if forward < strike else 0.5
        delta = step if is_call else step - 1.0
        price = max(forward - strike, 0.0) if is_call else max(strike - forward, 0.0)
    return delta, delta - price / forward


@functools.lru_cache(maxsize=4096)
def parsed_name(name: str) -> InstrumentName | None:
    """What ``name`` says (cached: read on every message); None when it is no option, future or
    perpetual (an index name)."""
    try:
        return parse_instrument_name(name)
    except InstrumentNameError:
        return None


def _parsed(name: str) -> InstrumentName:
    parsed = parsed_name(name)
    return parsed if parsed is not None else parse_instrument_name(name)  # raises, saying why


class _Blocked(Exception):
    def __init__(self, code: HedgeCode, reason: str, fault: DataFault | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.fault = fault


def _implausible(fault: DataFault, reason: str) -> _Blocked:
    return _Blocked(HedgeCode.IMPLAUSIBLE_DATA, reason, fault)


def _option_deltas(
    pos: Position, mark: OptionMark | None, policy: HedgePolicy, now: float, index: float | None
) -> tuple[float | None, float | None, float | None, float | None]:
    """(ours, ours premium-adjusted, exchange's, ours at the ticker's own forward) position
    delta of one option in coin; ``None`` where the data for that figure is missing. Raises
    _Blocked for missing, old or non-finite data. ``index`` is the index level now."""
    name = pos.instrument_name
    if mark is None:
        raise _Blocked(HedgeCode.NO_TICKER, f"no ticker for the option {name} yet")
    age = now - mark.received_at
    if age > policy.stale_after_s:
        raise _Blocked(HedgeCode.STALE_TICKER,
                       f"the ticker of {name} is {age:.1f} s old (stale after {policy.stale_after_s:g} s)")
    size = pos.size
    exchange = None
    if mark.exchange_delta is not None:
        exchange = size * mark.exchange_delta
    elif pos.delta is not None:
        exchange = pos.delta
    ours = ours_pa = as_quoted = None
    iv, forward = mark.mark_iv, mark.underlying_price
    if iv is not None and iv > 0 and forward is not None and forward > 0:
        parsed = _parsed(name)
        assert parsed.expiry_ms is not None and parsed.strike is not None
        years = (parsed.expiry_ms / 1000.0 - now) / SECONDS_PER_YEAR
        vol, strike, is_call = iv / 100.0, parsed.strike, parsed.option_type == "call"
        then = mark.index_price
        live = forward * index / then if index and then and then > 0 and then != index else forward
        try:
            delta, delta_pa = black76_delta(live, strike, years, vol, is_call)
            as_quoted = delta if live == forward else black76_delta(forward, strike, years, vol, is_call)[0]
        except ValueError as exc:  # a forward that is not a finite price (the hedger refuses such tickers)
            raise _implausible(DataFault.NOT_FINITE, f"the ticker of {name}: {exc}") from None
        ours, ours_pa, as_quoted = size * delta, size * delta_pa, size * as_quoted
    # Whatever is not a finite number here makes the mismatch one, which the decision refuses.
    return ours, ours_pa, exchange, as_quoted


def _future_delta(pos: Position, price: float | None) -> float:
    parsed = _parsed(pos.instrument_name)
    if parsed.is_linear:
        return pos.size  # linear futures are sized in coin
    if price is None or not price > 0:
        raise _Blocked(HedgeCode.NO_FUTURE_PRICE, f"no price for the future {pos.instrument_name}")
    return pos.size / price


def decide(
    positions: Iterable[Position],
    marks: Mapping[str, OptionMark],
    hedge: HedgeQuote | None,
    policy: HedgePolicy,
    now: float,
    future_prices: Mapping[str, float] | None = None,
    underlying: Underlying | None = None,
) -> HedgeDecision:
    """Decide whether to hedge one currency now.

    ``positions``: the portfolio's positions of the currency (any kind; flat ones are
    ignored). ``marks``: the latest option tickers by name (only held options are read).
    ``hedge``: the hedge instrument's top of book. ``future_prices``: USD prices of other
    futures for the ``net`` mode (else their position's mark price is used). ``now``: the
    clock (unix seconds), for time to expiry and data age. ``underlying``: the index level
    every leg is valued at (None: each option at its own ticker's forward, the hedge at its mid).

    Whatever the inputs, it trades only on finite figures, a hedge price within the band
    around the index, and an order that brings the mismatch closer to zero and is no larger
    than the mismatch needs (to the nearest contract)."""
    band = policy.band
    try:
        return _decide(positions, marks, hedge, policy, now, future_prices or {}, underlying)
    except _Blocked as blocked:
        return HedgeDecision(action="blocked", code=blocked.code, reason=blocked.reason, band=band,
                             fault=blocked.fault)


def _decide(
    positions: Iterable[Position],
    marks: Mapping[str, OptionMark],
    hedge: HedgeQuote | None,
    policy: HedgePolicy,
    now: float,
    future_prices: Mapping[str, float],
    underlying: Underlying | None,
) -> HedgeDecision:
    instrument = policy.instrument
    band = policy.band
    if hedge is None:
        raise _Blocked(HedgeCode.NO_HEDGE_QUOTE, f"no quote for the hedge instrument {instrument} yet")
    if hedge.stale:
        raise _Blocked(HedgeCode.HEDGE_BOOK_STALE, f"the book of {instrument} is stale (gap or reconnect)")
    age = now - hedge.received_at
    if age > policy.stale_after_s:
        raise _Blocked(HedgeCode.STALE_HEDGE_QUOTE,
                       f"the quote of {instrument} is {age:.1f} s old (stale after {policy.stale_after_s:g} s)")
    price = hedge.price
    if price is None:
        raise _Blocked(HedgeCode.NO_HEDGE_PRICE, f"no price for {instrument}: empty book and no mark")
    index = None
    if underlying is None and policy.require_index:
        raise _Blocked(HedgeCode.NO_INDEX, f"no {instrument.partition('-')[0]} index price yet")
    if underlying is not None:
        index = underlying.index
        age = now - underlying.received_at
        if policy.require_index and age > policy.stale_after_s:
            raise _Blocked(HedgeCode.NO_INDEX,
                           f"the index price is {age:.1f} s old (stale after {policy.stale_after_s:g} s)")
        deviation = policy.limits.max_index_deviation
        if not index * (1.0 - deviation) <= price <= index * (1.0 + deviation):
            fault = index_deviation_fault(instrument, "price", price, index, policy.limits)
            if fault is not None:
                raise _implausible(fault.fault, str(fault))
        price = underlying.hedge_price() or price
    if not (math.isfinite(price) and price > 0):
        raise _implausible(DataFault.NOT_FINITE, f"the price of {instrument} is {price!r}")

    source = policy.delta_source
    net = policy.mode == "net"
    deltas: list[PositionDelta] = []
    ours_total = ours_pa_total = exchange_total = quoted_total = 0.0
    ours_known = exchange_known = True
    hedge_delta = 0.0
    for pos in positions:
        size = pos.size
        if size == 0:
            continue
        name = pos.instrument_name
        if pos.kind == "option":
            ours, ours_pa, exchange, as_quoted = _option_deltas(pos, marks.get(name), policy, now, index)
            if ours is None:
                ours_known = False
            else:
                ours_total += ours
                ours_pa_total += ours_pa  # type: ignore[operator]
                quoted_total += as_quoted  # type: ignore[operator]
            if exchange is None:
                exchange_known = False
            else:
                exchange_total += exchange
            used = exchange if source == "exchange" else ours if source == "black76" else ours_pa
            if used is None:
                missing = "delta (no greeks)" if source == "exchange" else "mark IV or underlying price"
                raise _Blocked(HedgeCode.NO_OPTION_DELTA, f"the ticker of {name} has no {missing}")
            deltas.append(PositionDelta(name, "option", size, used))
        elif pos.kind == "future":
            if name == instrument:
                delta = size / price
                hedge_delta += delta
            elif net:
                delta = _future_delta(pos, future_prices.get(name) or pos.mark_price)
                hedge_delta += delta
            else:
                continue  # options_vs_hedge: other futures are not ours to balance
            deltas.append(PositionDelta(name, "future", size, delta))
    options_delta = exchange_total if source == "exchange" else ours_total if source == "black76" else ours_pa_total
    mismatch = options_delta + hedge_delta
    if not math.isfinite(mismatch):
        raise _implausible(DataFault.NOT_FINITE,
                           f"the mismatch is {mismatch!r} (options {options_delta!r}, hedge {hedge_delta!r})")
    warning = ""
    # Compared at the tickers' own forwards: both figures as of the same ticker.
    if ours_known and exchange_known and abs(quoted_total - exchange_total) > policy.disagreement_warn:
        warning = (f"our Black-76 option delta {quoted_total:+.6f} and the exchange's {exchange_total:+.6f} "
                   f"differ by more than {policy.disagreement_warn:g}")
    exchange_options = exchange_total if exchange_known else None
    ours_options = quoted_total if ours_known else None
    held = tuple(deltas)
    # The tolerance keeps float noise (0.1 x 0.025 = 0.0025000000000000005) on the edge inside.
    if not abs(mismatch) - band > 1e-12:
        return HedgeDecision(
            action="hold", code=_WITHIN_BAND, reason=f"mismatch {mismatch:+.6f} within the band {band:g}",
            after=mismatch, band=band, options_delta=options_delta, hedge_delta=hedge_delta, mismatch=mismatch,
            price=price, exchange_options_delta=exchange_options, ours_options_delta=ours_options, deltas=held,
            warning=warning)
    if not policy.contract_size > 0:
        raise _Blocked(HedgeCode.NO_CONTRACT_SIZE, f"the contract size of {instrument} is unknown")
    wanted = abs(mismatch) * price
    amount = round_to_contract(wanted, policy.contract_size, "nearest")
    capped = amount > policy.max_order_usd
    if capped:
        amount = round_to_contract(policy.max_order_usd, policy.contract_size, "down")
    if amount <= 0:
        return HedgeDecision(
            action="hold", code=_BELOW_CONTRACT, after=mismatch, band=band, options_delta=options_delta,
            hedge_delta=hedge_delta, mismatch=mismatch, price=price, exchange_options_delta=exchange_options,
            ours_options_delta=ours_options, deltas=held, warning=warning,
            reason=f"mismatch {mismatch:+.6f} is outside the band {band:g} but {wanted:.2f} USD is less than "
                   f"half a contract of {policy.contract_size:g} USD")
    side: Side = "sell" if mismatch > 0 else "buy"
    after = mismatch - amount / price if side == "sell" else mismatch + amount / price
    # Whatever the cap: never more than the mismatch needs, never past zero by more than it was.
    if not (amount <= wanted + 0.5 * policy.contract_size + 1e-9 and abs(after) < abs(mismatch)):
        raise _Blocked(HedgeCode.ORDER_TOO_LARGE,
                       f"{side} {amount:g} USD would not reduce the mismatch {mismatch:+.6f} "
                       f"({wanted:.2f} USD needed)")
    reason = f"mismatch {mismatch:+.6f} outside the band {band:g}: {side} {amount:g} USD of {instrument}"
    if capped:
        reason += f" (capped at max_order_usd {policy.max_order_usd:g})"
    return HedgeDecision(action="trade", code=_TRADE, reason=reason, side=side, amount=amount, after=after,
                         band=band, options_delta=options_delta, hedge_delta=hedge_delta, mismatch=mismatch,
                         price=price, exchange_options_delta=exchange_options, ours_options_delta=ours_options,
                         deltas=held, warning=warning)
