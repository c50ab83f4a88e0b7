"""What the Recorder keeps between batches (pure; the actor feeds it and asks it, passing the time).

- :class:`DvolAtMinute`: Deribit's DVOL of each coin as the notifications came (about one a second),
  so that each minute's ``volatility_index`` row gets the DVOL at that minute: the latest stamped at
  or before it (the same one whatever the order the minute's snapshot and the notifications reach
  the Recorder in, so a replay stores the same figure), or none when that one is older than
  :data:`DVOL_STALE_AFTER_S`: a stale DVOL is stored as missing, never as the minute's figure.
- :class:`SettlementsSeen`: the settlement-history entries already handed to the store in this run,
  so that a history fetched again (at start, after each 08:00 UTC settlement) sends only what is
  new. The table's unique key is what guarantees each entry once; this only spares the writes.
"""

from __future__ import annotations

import math
from collections import deque

import msgspec

from messages.account import OrderUpdate, SettlementHistory
from messages.market import VolatilityIndex
from sql.writers import DvolReading, SettlementKey, settlement_key

#: A DVOL older than this at the minute is stored as missing.
DVOL_STALE_AFTER_S = 120.0
#: Notifications kept per coin: ten minutes at Deribit's one a second, so a minute's snapshot that
#: reaches the Recorder late still finds the DVOL stamped at its minute.
DVOL_KEPT = 600


def coin_of(name: str) -> str:
    """The coin of a DVOL index name or a currency: ``btc_usd`` -> ``BTC``, ``ETH`` -> ``ETH``,
    ``BTC_USDC`` -> ``BTC`` (Deribit's DVOL is per coin)."""
    return name.partition("_")[0].upper()


class DvolAtMinute:
    def __init__(self, *, stale_after_s: float = DVOL_STALE_AFTER_S, kept: int = DVOL_KEPT) -> None:
        self.stale_after_ms = round(stale_after_s * 1000)
        self.kept = kept
        self._readings: dict[str, deque[DvolReading]] = {}

    def update(self, index: VolatilityIndex) -> bool:
        """Keep a notification; False (ignored) for a value that is not a positive finite number or
        a timestamp not after the last one kept (the record never goes back in time)."""
        if not (math.isfinite(index.volatility) and index.volatility > 0):
            return False
        readings = self._readings.setdefault(coin_of(index.index_name), deque(maxlen=self.kept))
        if readings and index.timestamp <= readings[-1].timestamp:
            return False
        readings.append(DvolReading(value=index.volatility, timestamp=index.timestamp))
        return True

    def at_minute(self, currency: str, minute: float) -> DvolReading | None:
        """The DVOL of ``currency``'s coin at ``minute`` (unix seconds): the latest stamped at or
        before it, if not older than the staleness limit; else None."""
        minute_ms = round(minute * 1000)
        for reading in reversed(self._readings.get(coin_of(currency), ())):
            if reading.timestamp <= minute_ms:
                return reading if minute_ms - reading.timestamp <= self.stale_after_ms else None
        return None


class SettlementsSeen:
    def __init__(self) -> None:
        self._keys: set[SettlementKey] = set()

    def new_entries(self, history: SettlementHistory) -> SettlementHistory | None:
        """``history`` with only the entries not handed on before (each once); None when none is new."""
        fresh = []
        for entry in history.settlements:
            key = settlement_key(history.currency, entry)
            if key not in self._keys:
                self._keys.add(key)
                fresh.append(entry)
        return msgspec.structs.replace(history, settlements=tuple(fresh)) if fresh else None


class FillsSeen:
    """Which order updates tell the audit something new: an order whose filled amount grew (each
    order's latest filled amount kept; the oldest orders forgotten past ``keep``)."""

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._filled: dict[str, float] = {}

    def grew(self, order: OrderUpdate) -> bool:
        filled = order.filled_amount
        if not (math.isfinite(filled) and filled > self._filled.get(order.order_id, 0.0)):
            return False
        self._filled.pop(order.order_id, None)
        self._filled[order.order_id] = filled
        while len(self._filled) > self.keep:
            del self._filled[next(iter(self._filled))]
        return True
