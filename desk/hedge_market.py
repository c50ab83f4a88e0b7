"""What one currency's hedger knows of the market: the latest sane option tickers, the hedge
instrument's top of book, other futures' prices and the index level, each with when it came,
and what was refused as implausible (pure; ``desk.hedging.CurrencyHedger`` feeds it).

Every message is checked (``desk.plausibility``) before anything of it is kept: a refused one
changes nothing the decision reads, never moves a freshness clock, and leaves its fault on
record under its instrument until sane data of the same instrument comes. The hedger may not
trade while any input of its decision (the hedge instrument, a held instrument, the index) has
a fault on record.
"""

from __future__ import annotations

import enum

from desk.hedge_decision import HedgeQuote, OptionMark, parsed_name
from desk.index_level import IndexLevel, Underlying
from desk.plausibility import (
    Implausible,
    PlausibilityLimits,
    index_deviation_fault,
    option_ticker_fault,
    price_fault,
    timestamp_fault,
    top_fault,
)
from messages.market import IndexPrice, Quote, Ticker
from messages.state import TopOfBook


class Change(enum.Enum):
    """What a message did to the picture."""

    NONE = "none"  # nothing the decision reads changed (older, or not an input)
    UPDATED = "updated"  # an input of the decision changed
    REFUSED = "refused"  # refused as implausible: ``HedgeMarket.refused`` says why


class HedgeMarket:
    """One currency's market picture for its hedger (see the module doc)."""

    def __init__(self, currency: str, instrument: str, limits: PlausibilityLimits, stale_after_s: float) -> None:
        self.currency = currency
        self.instrument = instrument
        self.limits = limits
        self.level = IndexLevel(currency, limits, stale_after_s)
        self.marks: dict[str, OptionMark] = {}
        self.future_prices: dict[str, float] = {}
        self.hedge_bid: float | None = None
        self.hedge_ask: float | None = None
        self.hedge_mark: float | None = None
        self.hedge_at: float | None = None
        self.hedge_timestamp = 0  # the exchange's ms of the touch we hold
        self.hedge_stale = False
        self.quote: HedgeQuote | None = None
        # Refusals on record by instrument (or index name), and the one just made.
        self.faults: dict[str, Implausible] = {}
        self.refused: Implausible | None = None
        # The last tickers taken of the hedge instrument and of a held option (for warm_up).
        self._hedge_ticker: Ticker | None = None
        self._option_ticker: Ticker | None = None

    @property
    def underlying(self) -> Underlying | None:
        return self.level.underlying

    def blocking_fault(self, held: frozenset[str]) -> Implausible | None:
        """A fault on record on an input of the decision: the hedge instrument, a held
        instrument, or the index."""
        for key, fault in self.faults.items():
            if key == self.instrument or key in held or parsed_name(key) is None:  # not an instrument: an index
                return fault
        return None

    def forget(self) -> None:
        """After a link loss: whatever comes after the reconnect must be fresh."""
        self.quote = None
        self.hedge_at = None
        self.marks.clear()
        self.level.forget()
        self.faults.clear()

    # -- messages ---------------------------------------------------------------------------------
    def _refuse(self, fault: Implausible) -> Change:
        self.refused = fault if self.faults.get(fault.instrument) != fault else None
        self.faults[fault.instrument] = fault
        return Change.REFUSED

    def _sane(self, key: str) -> None:
        if self.faults:
            self.faults.pop(key, None)

    def on_ticker(self, ticker: Ticker, now: float, held: frozenset[str]) -> Change:
        name = ticker.instrument_name
        parsed = parsed_name(name)
        if parsed is None:
            return Change.NONE
        fault = timestamp_fault(name, ticker.timestamp, now, self.limits)
        index = ticker.index_price
        if parsed.option_type is not None:
            fault = fault or option_ticker_fault(ticker, parsed.option_type == "call", self.limits)
            is_held = name in held
            # Held options' indexes move the level (unheld ones would only add work).
            if fault is None and is_held and index is not None:
                fault = self.level.observe(index, ticker.timestamp, now, name)
            if fault is not None:
                return self._refuse(fault)
            self._sane(name)
            self.marks[name] = OptionMark.from_ticker(ticker, now)
            if not is_held:
                return Change.NONE
            self._option_ticker = ticker
            return Change.UPDATED
        bid = ticker.best_bid_price or None  # Deribit sends 0 or null for an empty side
        ask = ticker.best_ask_price or None
        mark = ticker.mark_price
        if name != self.instrument:
            fault = fault or price_fault(name, "mark", mark)
            if fault is not None:
                return self._refuse(fault)
            self._sane(name)
            self.future_prices[name] = mark
            return Change.NONE
        fault = fault or top_fault(name, bid, ask, mark, index, self.limits)
        if fault is None and index is not None:
            fault = self.level.observe(index, ticker.timestamp, now, name)
        if fault is not None:
            return self._refuse(fault)
        self._sane(name)
        self._hedge_ticker = ticker
        if index is not None:
            # Its price over the index of the same moment: the mid, the mark when a side is empty.
            self.level.set_basis(0.5 * (bid + ask) if bid is not None and ask is not None else mark, index)
        return self._take_top(bid, ask, now, None, ticker.timestamp, mark)

    def warm_up(self, now: float) -> None:
        """The checks a frame that moves the hedge is put through, on the last sane tickers,
        without their effects: kept in the CPU's caches for the frame after a quiet spell
        (``messages.system.WarmUp``). Changes nothing."""
        limits = self.limits
        ticker = self._hedge_ticker
        if ticker is not None:
            timestamp_fault(ticker.instrument_name, ticker.timestamp, now, limits)
            top_fault(ticker.instrument_name, ticker.best_bid_price or None, ticker.best_ask_price or None,
                      ticker.mark_price, ticker.index_price, limits)
            if ticker.index_price is not None:
                index_deviation_fault(ticker.instrument_name, "index", ticker.index_price,
                                      self.level.reference(now), limits)
        option = self._option_ticker
        if option is not None:
            parsed = parsed_name(option.instrument_name)
            if parsed is not None:
                option_ticker_fault(option, parsed.option_type == "call", limits)

    def on_quote(self, quote: Quote, now: float) -> Change:
        name = quote.instrument_name
        if name != self.instrument:
            return Change.NONE
        bid = quote.best_bid_price or None
        ask = quote.best_ask_price or None
        fault = (timestamp_fault(name, quote.timestamp, now, self.limits)
                 or top_fault(name, bid, ask, None, self.level.reference(now), self.limits))
        if fault is not None:
            return self._refuse(fault)
        self._sane(name)
        return self._take_top(bid, ask, now, None, quote.timestamp, None)

    def on_top_of_book(self, top: TopOfBook, now: float) -> Change:
        name = top.instrument_name
        bid, ask = top.bid or None, top.ask or None
        if top.stale:
            # The book keeper found it untrustworthy (a gap, crossed): only that news is taken.
            return self._take_top(None, None, now, True, 0, None) if name == self.instrument else Change.NONE
        fault = (timestamp_fault(name, top.timestamp, now, self.limits)
                 or top_fault(name, bid, ask, top.mark_price, self.level.reference(now), self.limits))
        if name != self.instrument:
            if top.kind == "future" and bid and ask:
                if fault is not None:
                    return self._refuse(fault)
                self._sane(name)
                self.future_prices[name] = 0.5 * (bid + ask)
            return Change.NONE
        if fault is not None:
            return self._refuse(fault)
        self._sane(name)
        return self._take_top(bid, ask, now, False, top.timestamp, top.mark_price)

    def on_index(self, index: IndexPrice, now: float) -> Change:
        name = index.index_name
        fault = timestamp_fault(name, index.timestamp, now, self.limits) or self.level.observe(
            index.price, index.timestamp, now, name)
        if fault is not None:
            return self._refuse(fault)
        self._sane(name)
        return Change.UPDATED

    def _take_top(self, bid: float | None, ask: float | None, now: float, stale: bool | None, timestamp: int,
                  mark: float | None) -> Change:
        """Take the hedge instrument's touch; NONE when it is older than the one we have (the
        ticker comes from the Connection's thread, the book's top from a BookKeeper's: the two
        may arrive out of the exchange's order) and changed nothing."""
        newer = timestamp >= self.hedge_timestamp and stale is not True
        # Only the book keeper knows whether the book is to be trusted (its tops arrive in order).
        stale_changed = stale is not None and stale != self.hedge_stale
        if not newer and not stale_changed:
            return Change.NONE
        if stale is not None:
            self.hedge_stale = stale
        if newer:
            self.hedge_bid = bid
            self.hedge_ask = ask
            self.hedge_timestamp = timestamp
            self.hedge_at = now
            if mark:
                self.hedge_mark = mark
        self.quote = HedgeQuote(instrument_name=self.instrument, bid=self.hedge_bid, ask=self.hedge_ask,
                                mark_price=self.hedge_mark, received_at=self.hedge_at or now,
                                stale=self.hedge_stale)
        return Change.UPDATED
