"""One instrument's L2 order book, kept from Deribit's snapshot and change notifications.

Each side is a ``dict`` price -> amount; the best price of each side is cached and only
recomputed (``max``/``min`` over the side) when the best level itself is deleted, so applying a
change and reading the top are O(1) for everything but that case (books hold tens of levels, so
even the recompute is cheap). Continuity follows Deribit's rule: a change's ``prev_change_id``
must equal the last ``change_id``; otherwise a notification was lost and the book is stale until
the next snapshot. A crossed book (best bid at or above best ask) is stale the same way.

Deribit: "the first notification contains a full snapshot of the book ... every message except the
first also contains ``prev_change_id``". A notification whose ``prev_change_id`` is 0 names no
predecessor: it is a subscription's first, the whole book, whatever its ``type`` says. It starts a
chain only for a book that waits for one (stale: never had a snapshot, or resubscribed after a gap);
on a fresh book it does not continue the chain and is a gap like any other (:func:`opens_chain`).
"""

from __future__ import annotations

import enum

from messages.market import BookChange, BookSnapshot


class Applied(enum.IntEnum):
    """What applying one notification did to a book."""

    #: Applied; best bid and ask (prices and amounts) unchanged.
    SAME = 0
    #: Applied; the top of book changed (or the book became fresh: a snapshot).
    TOP = 1
    #: Not applied: the book is stale and waits for a snapshot.
    IGNORED = 2
    #: Not applied: ``prev_change_id`` broke the chain; the book is now stale.
    GAP = 3
    #: Applied, and the result is crossed; the book is now stale.
    CROSSED = 4


def opens_chain(change: BookChange, waiting: bool) -> bool:
    """True when ``change`` is a subscription's first notification (``prev_change_id`` 0: no
    predecessor) arriving at a book that is ``waiting`` for one: it is the whole book, to be applied
    as :func:`as_snapshot` gives it. Never for a fresh book, where 0 breaks the chain (a gap)."""
    return waiting and change.prev_change_id == 0


def as_snapshot(change: BookChange) -> BookSnapshot:
    """The whole book a chain's first notification holds (see :func:`opens_chain`)."""
    return BookSnapshot(instrument_name=change.instrument_name, timestamp=change.timestamp,
                        change_id=change.change_id, bids=change.bids, asks=change.asks)


class L2Book:
    """The book of one instrument. ``stale`` books must not be used for prices."""

    __slots__ = (
        "ask_amount",
        "asks",
        "best_ask",
        "best_bid",
        "bid_amount",
        "bids",
        "change_id",
        "instrument_name",
        "stale",
        "stale_reason",
        "timestamp",
    )

    def __init__(self, instrument_name: str) -> None:
        self.instrument_name = instrument_name
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.best_bid: float | None = None
        self.best_ask: float | None = None
        self.bid_amount = 0.0
        self.ask_amount = 0.0
        self.change_id = 0
        self.timestamp = 0
        # A book is stale until its first snapshot.
        self.stale = True
        self.stale_reason = "no snapshot"

    # -- applying notifications ----------------------------------------------------------------
    def apply_snapshot(self, snapshot: BookSnapshot) -> Applied:
        """Replace the whole book; a snapshot always makes it fresh (unless it is crossed)."""
        bids: dict[float, float] = {}
        for _action, price, amount in snapshot.bids:
            if amount > 0:
                bids[price] = amount
        asks: dict[float, float] = {}
        for _action, price, amount in snapshot.asks:
            if amount > 0:
                asks[price] = amount
        self.bids = bids
        self.asks = asks
        best_bid = max(bids) if bids else None
        best_ask = min(asks) if asks else None
        self.best_bid, self.best_ask = best_bid, best_ask
        self.bid_amount = bids[best_bid] if best_bid is not None else 0.0
        self.ask_amount = asks[best_ask] if best_ask is not None else 0.0
        self.change_id = snapshot.change_id
        self.timestamp = snapshot.timestamp
        if self.best_bid is not None and self.best_ask is not None and self.best_bid >= self.best_ask:
            self.stale = True
            self.stale_reason = "crossed"
            return Applied.CROSSED
        self.stale = False
        self.stale_reason = ""
        return Applied.TOP

    def apply_change(self, change: BookChange) -> Applied:
        """Apply one change notification if it continues the chain (the hot path)."""
        if self.stale:
            return Applied.IGNORED
        if change.prev_change_id != self.change_id:
            self.stale = True
            self.stale_reason = "gap"
            return Applied.GAP
        self.change_id = change.change_id
        self.timestamp = change.timestamp
        top = (self.best_bid, self.bid_amount, self.best_ask, self.ask_amount)
        if change.bids:
            bids = self.bids
            best = self.best_bid
            lost_best = False
            for action, price, amount in change.bids:
                if action == "delete" or amount <= 0:
                    if bids.pop(price, None) is not None and price == best:
                        lost_best = True
                else:
                    bids[price] = amount
                    if best is None or price > best:
                        best = price
            if lost_best:
                best = max(bids) if bids else None
            self.best_bid = best
            self.bid_amount = bids[best] if best is not None else 0.0
        if change.asks:
            asks = self.asks
            best = self.best_ask
            lost_best = False
            for action, price, amount in change.asks:
                if action == "delete" or amount <= 0:
                    if asks.pop(price, None) is not None and price == best:
                        lost_best = True
                else:
                    asks[price] = amount
                    if best is None or price < best:
                        best = price
            if lost_best:
                best = min(asks) if asks else None
            self.best_ask = best
            self.ask_amount = asks[best] if best is not None else 0.0
        bid, ask = self.best_bid, self.best_ask
        if bid is not None and ask is not None and bid >= ask:
            self.stale = True
            self.stale_reason = "crossed"
            return Applied.CROSSED
        if top == (bid, self.bid_amount, ask, self.ask_amount):
            return Applied.SAME
        return Applied.TOP

    def mark_stale(self, reason: str) -> None:
        """No longer known to be the exchange's book (a reconnect, a resync requested)."""
        self.stale = True
        self.stale_reason = reason

    # -- reading -------------------------------------------------------------------------------
    def top(self) -> tuple[float | None, float, float | None, float]:
        """``(best_bid, bid_amount, best_ask, ask_amount)``; a missing side is ``None, 0.0``."""
        return self.best_bid, self.bid_amount, self.best_ask, self.ask_amount

    def levels(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """``(bids best first, asks best first)`` as ``(price, amount)`` pairs."""
        bids = sorted(self.bids.items(), key=lambda level: -level[0])
        asks = sorted(self.asks.items())
        return bids, asks

    def __repr__(self) -> str:
        state = f"stale: {self.stale_reason}" if self.stale else "fresh"
        return (
            f"L2Book({self.instrument_name}, {self.best_bid} x {self.bid_amount} / "
            f"{self.best_ask} x {self.ask_amount}, change_id={self.change_id}, {state})"
        )

