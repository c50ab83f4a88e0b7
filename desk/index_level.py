"""One currency's index level as the newest observation says, on the exchange's clock.

Deribit's index reaches the desk in the index channel and in the ``index_price`` of every
ticker, each beside that instrument's own price of the same moment. A market move shows in the
perpetual's ticker, the option tickers and the index channel in no particular order; option
deltas taken at each ticker's own underlying would see one leg move before the other and hedge
one move twice, once each way. So every option's forward is carried to the newest level (its
underlying x level / its own index), and the hedge leg is valued at the same level (its basis, its
mid over the index of its latest ticker, x level): one move, one picture. Only the index itself
moves the level: a level also read off the perpetual's quotes through a basis taken at another
moment jumped between the two by the basis' drift and made the hedger flicker at its band's edge.

An index observation further from the current level than the band is refused (one bad
``index_price`` must not move every option's forward), unless the current level is older
than ``stale_after_s``: a real jump blocks hedging for that long, then is taken.
"""

from __future__ import annotations

import math

import msgspec

from desk.plausibility import Implausible, PlausibilityLimits, index_deviation_fault, price_fault


class Underlying(msgspec.Struct, frozen=True):
    """What the decision values every leg at: the index level and the hedge instrument's basis
    (its mark over the index, from its latest ticker; ``None`` until one came)."""

    index: float
    basis: float | None = None
    received_at: float = 0.0  # when the level was last confirmed (our clock)

    def hedge_price(self) -> float | None:
        return self.index * self.basis if self.basis is not None else None


class IndexLevel:
    """The newest index level of one currency (see the module doc)."""

    def __init__(self, currency: str, limits: PlausibilityLimits, stale_after_s: float) -> None:
        self.currency = currency
        self.limits = limits
        self.stale_after_s = stale_after_s
        self.price: float | None = None
        self.timestamp_ms = 0
        self.received_at = 0.0
        self.basis: float | None = None
        self._underlying: Underlying | None = None  # made once per change: read on every decision

    @property
    def underlying(self) -> Underlying | None:
        made = self._underlying
        if made is None and self.price is not None:
            made = self._underlying = Underlying(self.price, self.basis, self.received_at)
        return made

    def reference(self, now: float) -> float | None:
        """The level inputs are checked against: ``None`` when none is known or it is stale."""
        if self.price is None or now - self.received_at > self.stale_after_s:
            return None
        return self.price

    def observe(self, price: float, timestamp_ms: int, now: float, source: str) -> Implausible | None:
        """An index observation (the exchange's time ``timestamp_ms``): taken when it is newer
        than the level and within the band around it; else the fault, or ``None`` when merely older."""
        reference = self.reference(now)
        deviation = self.limits.max_index_deviation
        # The sane case in two comparisons (on every hedge frame); named only when it is not.
        if not (0.0 < price < math.inf and (reference is None or (
                reference * (1.0 - deviation) <= price <= reference * (1.0 + deviation)))):
            fault = price_fault(source, "index", price) or index_deviation_fault(
                source, "index", price, reference, self.limits)
            if fault is not None:
                return fault
        if timestamp_ms >= self.timestamp_ms:
            self.price = price
            self.timestamp_ms = timestamp_ms
            self.received_at = now
            self._underlying = None
        return None

    def set_basis(self, price: float, index: float) -> None:
        """From the hedge instrument's ticker: its price and the index of one moment."""
        if price > 0 and index > 0:
            self.basis = price / index
            self._underlying = None

    def forget(self) -> None:
        """After a link loss: whatever comes next must be fresh."""
        self.price = None
        self.timestamp_ms = 0
        self.received_at = 0.0
        self._underlying = None
