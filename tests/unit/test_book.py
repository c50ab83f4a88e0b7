"""The L2 book: continuity, crossed books, and equality with a naive reference (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from deribit.codec import FrameDecoder, Notification
from desk.book import Applied, L2Book
from messages.market import BookChange, BookSnapshot, Ticker
from tests.support.capture import wire_lines

NAME = "BTC-24SEP21-40000-C"


def snapshot(change_id: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> BookSnapshot:
    return BookSnapshot(
        instrument_name=NAME,
        timestamp=change_id,
        change_id=change_id,
        bids=tuple(("new", p, a) for p, a in bids),
        asks=tuple(("new", p, a) for p, a in asks),
    )


def change(prev: int, change_id: int, bids: Any = (), asks: Any = ()) -> BookChange:
    return BookChange(
        instrument_name=NAME,
        timestamp=change_id,
        change_id=change_id,
        prev_change_id=prev,
        bids=tuple(bids),
        asks=tuple(asks),
    )


class NaiveBook:
    """The obvious implementation: dicts of levels, best by max/min every time."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.change_id: int | None = None

    def snapshot(self, message: BookSnapshot) -> None:
        self.bids = {p: a for _, p, a in message.bids if a > 0}
        self.asks = {p: a for _, p, a in message.asks if a > 0}
        self.change_id = message.change_id

    def change(self, message: BookChange) -> bool:
        """False when the change breaks the chain (nothing applied)."""
        if self.change_id is None or message.prev_change_id != self.change_id:
            self.change_id = None
            return False
        for side, levels in ((self.bids, message.bids), (self.asks, message.asks)):
            for action, price, amount in levels:
                if action == "delete" or amount <= 0:
                    side.pop(price, None)
                else:
                    side[price] = amount
        self.change_id = message.change_id
        return True

    def top(self) -> tuple[float | None, float, float | None, float]:
        bid = max(self.bids) if self.bids else None
        ask = min(self.asks) if self.asks else None
        return bid, self.bids.get(bid, 0.0) if bid is not None else 0.0, ask, self.asks.get(ask, 0.0) if ask else 0.0

    def crossed(self) -> bool:
        bid, _, ask, _ = self.top()
        return bid is not None and ask is not None and bid >= ask


# Bid and ask grids overlap a little, so that some sequences cross the book.
BID_PRICES = st.sampled_from([0.001 * k for k in range(1, 12)])
ASK_PRICES = st.sampled_from([0.001 * k for k in range(10, 22)])
AMOUNTS = st.sampled_from([0.1, 0.5, 1.0, 2.5, 10.0])


def levels(prices: st.SearchStrategy[float]) -> st.SearchStrategy[list[tuple[str, float, float]]]:
    level = st.one_of(
        st.tuples(st.sampled_from(["new", "change"]), prices, AMOUNTS),
        st.tuples(st.just("delete"), prices, st.just(0.0)),
    )
    return st.lists(level, max_size=6)


ACTION = st.one_of(
    st.tuples(
        st.just("snapshot"),
        st.lists(st.tuples(BID_PRICES, AMOUNTS), max_size=6),
        st.lists(st.tuples(ASK_PRICES, AMOUNTS), max_size=6),
    ),
    st.tuples(st.just("change"), levels(BID_PRICES), levels(ASK_PRICES)),
    st.tuples(st.just("gap"), levels(BID_PRICES), levels(ASK_PRICES)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(ACTION, min_size=1, max_size=60))
def test_random_snapshots_and_changes_match_a_naive_book(actions: list[Any]) -> None:
    book = L2Book(NAME)
    reference = NaiveBook()
    next_id = 100
    for kind, bids, asks in actions:
        next_id += 3
        if kind == "snapshot":
            message = snapshot(next_id, bids, asks)
            result = book.apply_snapshot(message)
            reference.snapshot(message)
            expect_stale = reference.crossed()
            assert result is (Applied.CROSSED if expect_stale else Applied.TOP)
        else:
            prev = book.change_id if kind == "change" else book.change_id + 1
            message = change(prev, next_id, bids, asks)
            was_stale = book.stale
            before = book.top()
            result = book.apply_change(message)
            if was_stale:
                assert result is Applied.IGNORED
                continue
            applied = reference.change(message)
            if not applied:
                assert result is Applied.GAP and book.stale and book.stale_reason == "gap"
                continue
            if reference.crossed():
                assert result is Applied.CROSSED and book.stale and book.stale_reason == "crossed"
                continue
            assert result is (Applied.SAME if book.top() == before else Applied.TOP)
        if book.stale:
            continue
        assert book.top() == reference.top()
        assert book.bids == reference.bids and book.asks == reference.asks
        assert book.change_id == reference.change_id


def test_a_change_before_any_snapshot_is_ignored() -> None:
    book = L2Book(NAME)
    assert book.stale and book.stale_reason == "no snapshot"
    assert book.apply_change(change(1, 2, bids=[("new", 0.01, 1.0)])) is Applied.IGNORED
    assert book.bids == {}


def test_gap_makes_the_book_stale_until_the_next_snapshot() -> None:
    book = L2Book(NAME)
    book.apply_snapshot(snapshot(10, [(0.01, 1.0)], [(0.02, 2.0)]))
    assert book.apply_change(change(10, 11, bids=[("change", 0.01, 3.0)])) is Applied.TOP
    assert book.apply_change(change(12, 13, asks=[("new", 0.015, 1.0)])) is Applied.GAP
    # Later changes continue the chain from the lost one: still ignored, nothing applied.
    assert book.apply_change(change(13, 14, asks=[("new", 0.016, 1.0)])) is Applied.IGNORED
    assert book.top() == (0.01, 3.0, 0.02, 2.0)
    assert book.apply_snapshot(snapshot(20, [(0.011, 1.0)], [(0.019, 1.0)])) is Applied.TOP
    assert not book.stale and book.top() == (0.011, 1.0, 0.019, 1.0)


def test_deleting_the_best_level_finds_the_next_best() -> None:
    book = L2Book(NAME)
    book.apply_snapshot(snapshot(1, [(0.01, 1.0), (0.009, 2.0), (0.005, 3.0)], [(0.02, 1.0), (0.03, 2.0)]))
    assert book.apply_change(change(1, 2, bids=[("delete", 0.01, 0.0)], asks=[("delete", 0.02, 0.0)])) is Applied.TOP
    assert book.top() == (0.009, 2.0, 0.03, 2.0)
    assert book.apply_change(change(2, 3, bids=[("change", 0.005, 4.0)])) is Applied.SAME
    assert book.apply_change(
        change(3, 4, bids=[("delete", 0.009, 0.0), ("delete", 0.005, 0.0)], asks=[("delete", 0.03, 0.0)])
    ) is Applied.TOP
    assert book.top() == (None, 0.0, None, 0.0)
    assert book.levels() == ([], [])


def test_a_crossed_change_makes_the_book_stale() -> None:
    book = L2Book(NAME)
    book.apply_snapshot(snapshot(1, [(0.01, 1.0)], [(0.02, 1.0)]))
    assert book.apply_change(change(1, 2, bids=[("new", 0.02, 1.0)])) is Applied.CROSSED
    assert book.stale and book.stale_reason == "crossed"


def test_every_change_chain_of_the_capture_is_continuous_and_matches_its_tickers() -> None:
    """The real capture: no gap anywhere, and wherever a book update and a ticker of the same
    instrument carry the same exchange timestamp, the book's top after that update is the
    ticker's best bid and ask (37 such pairs)."""
    decoder = FrameDecoder()
    books: dict[str, L2Book] = {}
    top_after: dict[tuple[str, int], tuple[float | None, float, float | None, float]] = {}
    tickers: list[Ticker] = []
    changes = 0
    for line in wire_lines():
        record = json.loads(line)
        if record["dir"] != "in":
            continue
        decoded = decoder.decode(record["frame"])
        if not isinstance(decoded, Notification):
            continue
        for message in decoded.messages:
            if isinstance(message, BookSnapshot):
                book = books.setdefault(message.instrument_name, L2Book(message.instrument_name))
                assert book.apply_snapshot(message) is Applied.TOP
            elif isinstance(message, BookChange):
                changes += 1
                book = books[message.instrument_name]
                assert book.apply_change(message) in (Applied.SAME, Applied.TOP), book
            elif isinstance(message, Ticker):
                tickers.append(message)
                continue
            else:
                continue
            top_after[(message.instrument_name, message.timestamp)] = book.top()
    assert len(books) == 10 and changes == 36
    pairs = 0
    for ticker in tickers:
        top = top_after.get((ticker.instrument_name, ticker.timestamp))
        if top is None:
            continue
        pairs += 1
        expected = (
            ticker.best_bid_price or None,
            ticker.best_bid_amount or 0.0,
            ticker.best_ask_price or None,
            ticker.best_ask_amount or 0.0,
        )
        assert top == expected, ticker.instrument_name
    assert pairs == 37
