"""The BookKeeper's family logic (stale episodes, resubscriptions, reconnects, top of book, the
minute's ChainSnapshot) and the actor over the bus, including a replay of the real capture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pykka
import pytest

from actors.bookkeeper import BookKeeper, GetBooks, GetBookStats
from desk.book_family import BookFamily
from messages.commands import ResubscribeInstrument
from messages.market import (
    BookChange,
    BookSnapshot,
    Greeks,
    IndexPrice,
    Instrument,
    Quote,
    Ticker,
)
from messages.state import ChainSnapshot, TopOfBook
from messages.system import ConnectionState, ConnectionStatus, MinuteTick
from runtime.actor import ActorContext
from runtime.clock import ReplayClock
from tests.support.capture import wire_sample
from tests.support.replay import replay_summary, replayed_program
from tests.support.settings import make_settings

pytestmark = pytest.mark.usefixtures("isolated_cwd")  # the program's data/ goes to a temp dir

CALL = "BTC-24SEP21-40000-C"
PUT = "BTC-24SEP21-30000-P"
T0 = 1_626_993_720.0  # 2021-07-22, before every expiry used here


def snap(name: str, change_id: int, bid: float = 0.01, ask: float = 0.02) -> BookSnapshot:
    return BookSnapshot(instrument_name=name, timestamp=change_id, change_id=change_id,
                        bids=(("new", bid, 1.0),), asks=(("new", ask, 2.0),))


def chg(name: str, prev: int, change_id: int, bids: Any = (), asks: Any = ()) -> BookChange:
    return BookChange(instrument_name=name, timestamp=change_id, change_id=change_id, prev_change_id=prev,
                      bids=tuple(bids), asks=tuple(asks))


def resubscribes(messages: tuple[Any, ...]) -> list[ResubscribeInstrument]:
    return [m for m in messages if isinstance(m, ResubscribeInstrument)]


def test_a_gap_asks_for_one_resubscription_per_episode() -> None:
    family = BookFamily("BTC", "option", name="books-BTC-option")
    family.on_snapshot(snap(CALL, 10), T0)
    out = family.on_change(chg(CALL, 11, 12), T0 + 1)
    assert [(m.instrument_name, m.reason, m.origin) for m in resubscribes(out)] == [
        (CALL, "gap", "books-BTC-option")]
    # Every later change of the episode is ignored without asking again.
    for n in range(13, 20):
        assert family.on_change(chg(CALL, n - 1, n), T0 + 2) == ()
    assert family.stale_names() == [CALL] and family.stats.ignored == 7
    family.on_snapshot(snap(CALL, 30), T0 + 3)
    assert family.stale_names() == []
    [episode] = family.episodes
    assert (episode.reason, episode.from_change_id, episode.to_change_id, episode.resubscribe_requests) == (
        "gap", 10, 30, 1)
    # A new episode asks again.
    assert resubscribes(family.on_change(chg(CALL, 29, 31), T0 + 4))


def test_crossed_books_and_changes_without_a_snapshot_are_resynced() -> None:
    family = BookFamily("BTC", "option")
    family.on_snapshot(snap(CALL, 1), T0)
    out = family.on_change(chg(CALL, 1, 2, bids=[("new", 0.03, 1.0)]), T0)
    assert [m.reason for m in resubscribes(out)] == ["crossed"]
    # A keeper that restarted sees changes of books it never had a snapshot of.
    out = family.on_change(chg(PUT, 5, 6), T0)
    assert [m.reason for m in resubscribes(out)] == ["no snapshot"]
    assert family.on_change(chg(PUT, 6, 7), T0) == ()


def test_a_new_link_makes_every_book_stale_without_asking_and_retries_later() -> None:
    family = BookFamily("BTC", "option", resync_retry_s=30.0)
    family.on_snapshot(snap(CALL, 1), T0)
    family.on_snapshot(snap(PUT, 1), T0)
    assert resubscribes(family.link_lost(T0 + 1)) == []
    family.link_restored()
    assert family.stale_names() == [PUT, CALL]
    assert family.due_resyncs(T0 + 10) == ()  # the reconnect's own resubscription is on its way
    family.on_snapshot(snap(CALL, 5), T0 + 12)
    late = resubscribes(family.due_resyncs(T0 + 40))
    assert [(m.instrument_name, m.reason) for m in late] == [(PUT, "retry")]
    assert family.due_resyncs(T0 + 41) == ()
    # While the link is down nothing is asked: the Connection could not act on it.
    family.link_lost(T0 + 50)
    assert family.due_resyncs(T0 + 200) == ()


def test_other_families_are_ignored_after_one_lookup() -> None:
    family = BookFamily("BTC", "option")
    for name in ("ETH-24SEP21-3000-C", "BTC-PERPETUAL", "BTC-24SEP21", "BTC_USDC-PERPETUAL", "not-a-name"):
        assert family.on_snapshot(snap(name, 1), T0) == ()
        assert family.on_change(chg(name, 1, 2), T0) == ()
    assert family.entries == {}
    with pytest.raises(ValueError, match="option or future"):
        BookFamily("BTC", "spot")  # type: ignore[arg-type]


def test_futures_take_their_top_from_quotes_and_publish_every_change() -> None:
    family = BookFamily("BTC", "future", publish_top=True)
    quote = Quote(instrument_name="BTC-PERPETUAL", timestamp=5, best_bid_price=40_000.0, best_bid_amount=100.0,
                  best_ask_price=40_000.5, best_ask_amount=200.0)
    [top] = family.on_quote(quote, T0)
    assert isinstance(top, TopOfBook) and (top.bid, top.ask, top.kind, top.stale) == (
        40_000.0, 40_000.5, "future", False)
    assert family.on_quote(quote, T0 + 1) == ()  # nothing changed
    [stale] = family.link_lost(T0 + 2)
    assert stale.stale and stale.instrument_name == "BTC-PERPETUAL"
    [fresh] = family.on_quote(quote, T0 + 3)
    assert not fresh.stale
    # After a reconnect a ticker newer than the last quote may bring the top first.
    family.link_lost(T0 + 4)
    ticker = Ticker(instrument_name="BTC-PERPETUAL", timestamp=6, state="open", mark_price=40_000.2,
                    best_bid_price=40_000.0, best_bid_amount=100.0, best_ask_price=40_000.5, best_ask_amount=200.0)
    [fresh] = family.on_ticker(ticker, T0 + 3)
    assert not fresh.stale and fresh.mark_price == 40_000.2
    assert family.on_ticker(ticker, T0 + 3) == ()
    chain = family.chain_snapshot(T0 + 60, T0 + 63)
    [future] = chain.futures
    assert (future.bid, future.bid_amount, future.ask, future.age_s, future.stale) == (
        40_000.0, 100.0, 40_000.5, 60.0, False)
    assert future.expiry_ms == 32_503_708_800_000 and chain.options == ()


@pytest.mark.parametrize(("bid", "ask"), [(61_000.0, 59_000.0), (60_000.0, 60_000.0), (-1.0, 60_000.0)])
def test_a_crossed_locked_or_broken_futures_quote_is_stale_and_resynced(bid: float, ask: float) -> None:
    # Futures take their top from quote.*: nothing else checks it, so the family does (the console
    # trades on this top and the hedger on this and the quote itself).
    family = BookFamily("BTC", "future", publish_top=True)
    sane = Quote(instrument_name="BTC-PERPETUAL", timestamp=5, best_bid_price=60_000.0, best_bid_amount=1.0,
                 best_ask_price=60_000.5, best_ask_amount=1.0)
    family.on_quote(sane, T0)
    bad = Quote(instrument_name="BTC-PERPETUAL", timestamp=6, best_bid_price=bid, best_bid_amount=1.0,
                best_ask_price=ask, best_ask_amount=1.0)
    out = family.on_quote(bad, T0 + 1)
    [top] = [m for m in out if isinstance(m, TopOfBook)]
    assert top.stale and (top.bid, top.ask) == (60_000.0, 60_000.5)  # the last sane top, marked stale
    assert [r.instrument_name for r in resubscribes(out)] == ["BTC-PERPETUAL"]
    assert family.on_quote(bad, T0 + 2) == ()  # asked once per episode
    [fresh] = family.on_quote(msgspec.structs.replace(sane, timestamp=7), T0 + 3)
    assert not fresh.stale
    [episode] = family.episodes
    assert episode.instrument_name == "BTC-PERPETUAL" and episode.ended_at == T0 + 3


def test_a_quote_stamped_ahead_of_our_clock_is_refused_and_later_quotes_still_count() -> None:
    family = BookFamily("BTC", "future", publish_top=True)
    ahead = Quote(instrument_name="BTC-PERPETUAL", timestamp=int((T0 + 3600) * 1000), best_bid_price=60_000.0,
                  best_bid_amount=1.0, best_ask_price=60_000.5, best_ask_amount=1.0)
    assert family.on_quote(ahead, T0) == () and family.stats.refused == 1
    now = Quote(instrument_name="BTC-PERPETUAL", timestamp=int(T0 * 1000), best_bid_price=60_001.0,
                best_bid_amount=1.0, best_ask_price=60_001.5, best_ask_amount=1.0)
    [top] = family.on_quote(now, T0)
    assert (top.bid, top.stale) == (60_001.0, False)
    ticker = Ticker(instrument_name="BTC-PERPETUAL", timestamp=int(T0 * 1000) + 5, state="open",
                    mark_price=60_001.2, best_bid_price=60_002.0, best_ask_price=60_002.5)
    [newer] = family.on_ticker(ticker, T0 + 0.1)  # newer than the last sane quote: taken
    assert newer.bid == 60_002.0


def test_the_chain_snapshot_carries_book_ticker_and_age_per_option() -> None:
    family = BookFamily("BTC", "option")
    family.on_snapshot(snap(PUT, 1, 0.05, 0.06), T0)
    family.on_snapshot(snap(CALL, 1, 0.01, 0.015), T0 + 5)
    family.on_change(chg(CALL, 1, 2, asks=[("delete", 0.015, 0.0), ("new", 0.016, 3.0)]), T0 + 6)
    family.on_ticker(Ticker(instrument_name=CALL, timestamp=2, state="open", mark_price=0.0125, mark_iv=71.5,
                            underlying_price=32_500.0, index_price=32_400.0, open_interest=12.0,
                            greeks=Greeks(delta=0.2, gamma=0.0001, vega=30.0, theta=-20.0)), T0 + 8)
    family.on_index(IndexPrice(index_name="btc_usd", price=32_401.0, timestamp=3))
    family.on_index(IndexPrice(index_name="eth_usd", price=2_000.0, timestamp=3))
    family.on_change(chg(PUT, 5, 6), T0 + 9)  # a gap: the put is stale
    chain = family.chain_snapshot(T0 + 60, T0 + 60)
    assert isinstance(chain, ChainSnapshot) and chain.index_price == 32_401.0 and chain.kind == "option"
    assert [q.instrument_name for q in chain.options] == [PUT, CALL]  # same expiry: by strike
    put, call = chain.options
    assert (call.bid, call.bid_amount, call.ask, call.ask_amount) == (0.01, 1.0, 0.016, 3.0)
    assert (call.mark_price, call.mark_iv, call.underlying_price, call.index_price, call.open_interest) == (
        0.0125, 71.5, 32_500.0, 32_400.0, 12.0)
    assert (call.delta, call.gamma, call.vega, call.theta) == (0.2, 0.0001, 30.0, -20.0)
    assert (call.strike, call.option_type, call.age_s, call.stale) == (40_000.0, "call", 52.0, False)
    assert call.expiry_ms == 1_632_470_400_000  # 24 Sep 2021 08:00 UTC
    assert put.stale and put.mark_price is None and put.index_price == 32_401.0 and put.age_s == 51.0


def test_instruments_loaded_learns_new_listings_and_drops_unlisted_books() -> None:
    family = BookFamily("BTC", "option")
    family.on_snapshot(snap(CALL, 1), T0)
    family.on_snapshot(snap(PUT, 1), T0)

    def listed(name: str, kind: str = "option") -> Instrument:
        return Instrument(instrument_name=name, kind=kind, base_currency="BTC", quote_currency="BTC",
                          settlement_period="month", tick_size=0.0005, contract_size=1.0, min_trade_amount=0.1,
                          expiration_timestamp=1_632_470_400_000, creation_timestamp=1)

    new = "BTC-24SEP21-50000-C"
    gone = family.listed((listed(CALL), listed(new), listed("BTC-PERPETUAL", "future")), T0 + 1)
    assert gone == [PUT]
    assert set(family.entries) == {CALL, new}
    assert family.stale_names() == [new]  # until its snapshot
    assert family.on_snapshot(snap(PUT, 2), T0 + 2) == ()  # gone for good


# -- the actor ------------------------------------------------------------------------------------


class Published:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def __call__(self, message: Any) -> None:
        self.messages.append(message)


def start_keeper(published: Published, **books: Any) -> pykka.ActorRef:
    settings = make_settings({f"books.{k}": v for k, v in books.items()})
    context = ActorContext(name="books-BTC-option", clock=ReplayClock(T0), settings=settings, publish=published)
    return BookKeeper.start(context, currency="BTC", kind="option")


def test_the_actor_publishes_resyncs_tops_and_chains() -> None:
    published = Published()
    ref = start_keeper(published, publish_option_top=True)
    try:
        ref.tell(ConnectionStatus(state=ConnectionState.CONNECTED, venue="test", at=T0, attempt=1))
        ref.tell(snap(CALL, 1))
        ref.tell(chg(CALL, 1, 2, bids=[("change", 0.01, 5.0)]))
        # A login refused re-announces the same link: not a new link, the book stays fresh.
        ref.tell(ConnectionStatus(state=ConnectionState.CONNECTED, venue="test", at=T0, attempt=1,
                                  detail="login rejected"))
        ref.tell(chg(CALL, 3, 4))
        ref.tell(chg(CALL, 4, 5))
        ref.tell(MinuteTick(at=T0 + 60))
        books = ref.ask(GetBooks(), timeout=5)
        stats = ref.ask(GetBookStats(), timeout=5)
    finally:
        ref.stop()
    kinds = [type(m).__name__ for m in published.messages]
    assert kinds == ["TopOfBook", "TopOfBook", "TopOfBook", "ResubscribeInstrument", "ChainSnapshot"]
    assert published.messages[1].bid_amount == 5.0 and published.messages[2].stale
    assert books[CALL].stale and books[CALL].stale_reason == "gap" and books[CALL].bids == ((0.01, 5.0),)
    assert stats["stats"].gaps == 1 and stats["stale"] == [CALL]


def test_option_tops_are_not_published_unless_configured() -> None:
    published = Published()
    ref = start_keeper(published, publish_option_top=False)
    try:
        ref.tell(snap(CALL, 1))
        ref.tell(chg(CALL, 1, 2, bids=[("change", 0.01, 5.0)]))
        ref.ask(GetBookStats(), timeout=5)
    finally:
        ref.stop()
    assert published.messages == []


def test_replay_of_the_capture_has_no_resync(tmp_path: Path) -> None:
    """The real capture through the program's actors: every change chain is continuous."""
    settings = make_settings(currencies=["BTC", "ETH"])
    with replayed_program(settings, wire_sample(), tmp_path / "logs", start_at=T0) as supervisor:
        summary = replay_summary(supervisor, timeout_s=60)
        assert summary["resyncs"] == 0 and summary["notifications"]["book"] == 46
        btc = supervisor.refs()["books-BTC-option"].ask(GetBookStats(), timeout=10)
        eth = supervisor.refs()["books-ETH-option"].ask(GetBookStats(), timeout=10)
        assert (btc["instruments"], eth["instruments"]) == (7, 3)
        assert btc["stats"].gaps == eth["stats"].gaps == 0
        assert btc["stats"].changes + eth["stats"].changes == 36


# --- prev_change_id 0: a subscription's first notification (Deribit: "every message except the first
# also contains prev_change_id") -----------------------------------------------------------------------


def test_a_first_notification_with_prev_change_id_0_is_the_whole_book_not_a_gap() -> None:
    family = BookFamily("BTC", "option", name="books-BTC-option")
    # Subscribed, nothing yet: the first notification names no predecessor and holds the book.
    out = family.on_change(chg(CALL, 0, 500, bids=[("new", 0.01, 1.0)], asks=[("new", 0.02, 2.0)]), T0)
    assert resubscribes(out) == [] and family.stats.gaps == 0
    book = family.entries[CALL].book
    assert book is not None and not book.stale and book.change_id == 500
    assert book.top() == (0.01, 1.0, 0.02, 2.0)
    # The chain goes on from it.
    family.on_change(chg(CALL, 500, 501, bids=[("change", 0.01, 3.0)]), T0 + 1)
    assert book.top() == (0.01, 3.0, 0.02, 2.0) and not book.stale


def test_prev_change_id_0_after_a_gap_is_the_resubscription_s_book() -> None:
    family = BookFamily("BTC", "option", name="books-BTC-option")
    family.on_snapshot(snap(CALL, 10), T0)
    assert resubscribes(family.on_change(chg(CALL, 11, 12), T0 + 1))  # a real gap: resync asked
    family.on_change(chg(CALL, 0, 40, bids=[("new", 0.015, 1.0)], asks=[("new", 0.018, 1.0)]), T0 + 2)
    book = family.entries[CALL].book
    assert book is not None and not book.stale and book.top() == (0.015, 1.0, 0.018, 1.0)
    assert family.stats.gaps == 1 and [e.reason for e in family.episodes] == ["gap"]


def test_prev_change_id_0_on_a_fresh_book_is_still_a_gap() -> None:
    family = BookFamily("BTC", "option", name="books-BTC-option")
    family.on_snapshot(snap(CALL, 10), T0)
    out = family.on_change(chg(CALL, 0, 11, bids=[("new", 0.5, 1.0)]), T0 + 1)
    assert [m.reason for m in resubscribes(out)] == ["gap"]
    book = family.entries[CALL].book
    assert book is not None and book.stale and book.top() == (0.01, 1.0, 0.02, 2.0)  # nothing applied


def test_a_book_whose_chain_starts_at_0_continues_it() -> None:
    family = BookFamily("BTC", "option", name="books-BTC-option")
    family.on_snapshot(snap(CALL, 0), T0)  # a new listing's first book: change_id 0
    family.on_change(chg(CALL, 0, 1, bids=[("change", 0.01, 5.0)]), T0 + 1)
    book = family.entries[CALL].book
    assert book is not None and not book.stale and book.top() == (0.01, 5.0, 0.02, 2.0)
    assert family.stats.gaps == 0
