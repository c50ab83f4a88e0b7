"""Whether a piece of market data is fit to compute an order from: pure checks, one place for
each rule, each answering with what is wrong (:class:`Implausible`) or ``None``.

The exchange's data is not trusted blindly: a crossed or locked top of book, a price far from
the index, a mark far outside the book, an option delta outside what a call or a put can have,
negative or absurd greeks or implied vols, a timestamp ahead of our clock, and any NaN or
infinity are refused. The Hedger keeps the last sane value of each input and records the fault
until sane data of the same instrument comes again; the BookKeepers mark such a book stale.

Units are Deribit's: prices in USD for futures, in coin for options (``mark_price``); greeks
per coin of option, gamma per USD of underlying, vega in USD per vol point; IVs in percent.
"""

from __future__ import annotations

import math
import sys

import msgspec

from messages.market import DataFault, Greeks, Ticker

#: Greeks far beyond anything an option can have (the real capture's largest gamma x forward is
#: 1.3, vega / forward 0.003): only garbage is refused.
MAX_GAMMA_TIMES_FORWARD = 1e4
MAX_VEGA_OVER_FORWARD = 0.1
#: A delta this far outside its range is rounding, not garbage.
DELTA_TOLERANCE = 1e-6
#: ``_LOW <= x <= _HIGH`` holds for exactly the finite numbers above zero (never for NaN).
_LOW, _HIGH = 5e-324, sys.float_info.max


class PlausibilityLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The settable bounds (``hedger.*`` settings): fractions, percent and seconds."""

    max_index_deviation: float = 0.10  # a future's price within 10% of the index
    max_mark_outside_book: float = 0.01  # the mark within 1% outside the bid-ask
    max_iv_pct: float = 1000.0
    max_clock_ahead_s: float = 5.0


class Implausible(msgspec.Struct, frozen=True):
    """What is wrong with one instrument's data."""

    fault: DataFault
    instrument: str
    detail: str

    def __str__(self) -> str:
        return f"{self.instrument}: {self.detail}"


def _finite(x: float | None) -> bool:
    return x is None or math.isfinite(x)


def timestamp_fault(instrument: str, timestamp_ms: int, now: float, limits: PlausibilityLimits) -> Implausible | None:
    """A timestamp further ahead of ``now`` (unix seconds) than allowed: it would make every
    later message look old."""
    ahead = timestamp_ms / 1000.0 - now
    if ahead > limits.max_clock_ahead_s:
        return Implausible(DataFault.FROM_THE_FUTURE, instrument,
                           f"stamped {ahead:.1f} s ahead of our clock (at most {limits.max_clock_ahead_s:g} s)")
    return None


def index_deviation_fault(instrument: str, what: str, price: float, index: float | None,
                          limits: PlausibilityLimits) -> Implausible | None:
    """``price`` (a future's) further from ``index`` than the band allows (no index, or none
    usable: nothing to check against)."""
    if index is None or not _LOW <= index <= _HIGH:
        return None
    deviation = price / index - 1.0
    if not abs(deviation) <= limits.max_index_deviation:
        return Implausible(DataFault.OFF_INDEX, instrument,
                           f"{what} {price:g} is {deviation:+.2%} from the index {index:g} "
                           f"(band {limits.max_index_deviation:.0%})")
    return None


def price_fault(instrument: str, what: str, price: float | None) -> Implausible | None:
    """A price that is there must be a finite number above zero."""
    if price is None:
        return None
    if not math.isfinite(price):
        return Implausible(DataFault.NOT_FINITE, instrument, f"{what} is {price!r}")
    if not price > 0:
        return Implausible(DataFault.NOT_POSITIVE, instrument, f"{what} is {price:g}")
    return None


def top_fault(instrument: str, bid: float | None, ask: float | None, mark: float | None, index: float | None,
              limits: PlausibilityLimits) -> Implausible | None:
    """A future's top of book (and mark, when the message carries one): finite positive
    prices, bid strictly below ask, each within the band around ``index``, the mark not far
    outside the bid-ask. An empty side (``None``) is not a fault."""
    # Every frame of the hedge instrument comes here on the way to an order: the sane case in a
    # few comparisons, the search for what is wrong only when something is.
    if index is not None and _LOW <= index <= _HIGH:
        low, high = index * (1.0 - limits.max_index_deviation), index * (1.0 + limits.max_index_deviation)
    else:
        low, high = _LOW, _HIGH
    slack = limits.max_mark_outside_book
    if ((bid is None or low <= bid <= high) and (ask is None or low <= ask <= high)
            and (bid is None or ask is None or bid < ask)
            and (mark is None or (low <= mark <= high and (bid is None or mark >= bid * (1.0 - slack))
                                  and (ask is None or mark <= ask * (1.0 + slack))))):
        return None
    return _top_fault_found(instrument, bid, ask, mark, index, limits)


def _top_fault_found(instrument: str, bid: float | None, ask: float | None, mark: float | None,
                     index: float | None, limits: PlausibilityLimits) -> Implausible | None:
    """What :func:`top_fault`'s quick test found wrong, named (None at a band's very edge)."""
    for what, price in (("bid", bid), ("ask", ask), ("mark", mark)):
        fault = price_fault(instrument, what, price)
        if fault is not None:
            return fault
    if bid is not None and ask is not None:
        if bid > ask:
            return Implausible(DataFault.CROSSED, instrument, f"crossed: bid {bid:g} above ask {ask:g}")
        if bid == ask:
            return Implausible(DataFault.LOCKED, instrument, f"locked: bid = ask = {bid:g}")
    for what, price in (("bid", bid), ("ask", ask), ("mark", mark)):
        if price is not None:
            fault = index_deviation_fault(instrument, what, price, index, limits)
            if fault is not None:
                return fault
    if mark is not None:
        slack = limits.max_mark_outside_book
        below = bid is not None and mark < bid * (1.0 - slack)
        above = ask is not None and mark > ask * (1.0 + slack)
        if below or above:
            return Implausible(DataFault.MARK_OUTSIDE_BOOK, instrument,
                               f"mark {mark:g} outside the book {bid} / {ask} by more than {slack:.1%}")
    return None


def option_ticker_fault(ticker: Ticker, is_call: bool, limits: PlausibilityLimits) -> Implausible | None:
    """An option's ticker: its mark, IV, underlying and greeks are what an option can have
    (the underlying within the band around the ticker's own index)."""
    # The sane case in a few comparisons (NaN fails every one); the search only when it fails.
    mark, forward, index, iv, greeks = (ticker.mark_price, ticker.underlying_price, ticker.index_price,
                                        ticker.mark_iv, ticker.greeks)
    deviation = limits.max_index_deviation
    if (0.0 <= mark <= _HIGH and (index is None or _LOW <= index <= _HIGH)
            and (forward is None or (_LOW <= forward <= _HIGH and (
                index is None or index * (1.0 - deviation) <= forward <= index * (1.0 + deviation))))
            and (iv is None or 0.0 < iv <= limits.max_iv_pct)
            and (greeks is None or _greeks_sane(greeks, is_call, forward))):
        return None
    return _option_fault_found(ticker, is_call, limits)


def _greeks_sane(greeks: Greeks, is_call: bool, forward: float | None) -> bool:
    low, high = (-DELTA_TOLERANCE, 1.0 + DELTA_TOLERANCE) if is_call else (-1.0 - DELTA_TOLERANCE, DELTA_TOLERANCE)
    gamma_max = MAX_GAMMA_TIMES_FORWARD / forward if forward else _HIGH
    vega_max = MAX_VEGA_OVER_FORWARD * forward if forward else _HIGH
    rho = greeks.rho
    return (low <= greeks.delta <= high and 0.0 <= greeks.gamma <= gamma_max and 0.0 <= greeks.vega <= vega_max
            and -_HIGH <= greeks.theta <= _HIGH and (rho is None or -_HIGH <= rho <= _HIGH))


def _option_fault_found(ticker: Ticker, is_call: bool, limits: PlausibilityLimits) -> Implausible | None:
    """What :func:`option_ticker_fault`'s quick test found wrong, named."""
    name = ticker.instrument_name
    mark = ticker.mark_price
    if not math.isfinite(mark):
        return Implausible(DataFault.NOT_FINITE, name, f"mark is {mark!r}")
    if mark < 0:
        return Implausible(DataFault.NOT_POSITIVE, name, f"mark is {mark:g}")
    for what, price in (("underlying price", ticker.underlying_price), ("index", ticker.index_price)):
        fault = price_fault(name, what, price)
        if fault is not None:
            return fault
    forward = ticker.underlying_price
    if forward is not None:
        fault = index_deviation_fault(name, "underlying price", forward, ticker.index_price, limits)
        if fault is not None:
            return fault
    iv = ticker.mark_iv
    if iv is not None:
        if not math.isfinite(iv):
            return Implausible(DataFault.NOT_FINITE, name, f"mark IV is {iv!r}")
        if not 0 < iv <= limits.max_iv_pct:
            return Implausible(DataFault.IV_OUT_OF_RANGE, name,
                               f"mark IV {iv:g}% is outside (0, {limits.max_iv_pct:g}]")
    greeks = ticker.greeks
    if greeks is None:
        return None
    values = (greeks.delta, greeks.gamma, greeks.vega, greeks.theta, greeks.rho)
    if not all(_finite(v) for v in values):
        return Implausible(DataFault.NOT_FINITE, name, f"greeks {values!r}")
    delta = greeks.delta
    low, high = (0.0, 1.0) if is_call else (-1.0, 0.0)
    if not low - DELTA_TOLERANCE <= delta <= high + DELTA_TOLERANCE:
        kind = "call" if is_call else "put"
        return Implausible(DataFault.DELTA_OUT_OF_RANGE, name,
                           f"delta {delta:g} of a {kind} is outside [{low:g}, {high:g}]")
    if greeks.gamma < 0 or greeks.vega < 0:
        return Implausible(DataFault.GREEK_OUT_OF_RANGE, name,
                           f"negative gamma {greeks.gamma:g} or vega {greeks.vega:g}")
    if forward is not None and (greeks.gamma * forward > MAX_GAMMA_TIMES_FORWARD
                                or greeks.vega > MAX_VEGA_OVER_FORWARD * forward):
        return Implausible(DataFault.GREEK_OUT_OF_RANGE, name,
                           f"gamma {greeks.gamma:g} or vega {greeks.vega:g} is absurd at the forward {forward:g}")
    return None
