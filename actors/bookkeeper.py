"""The BookKeeper: one actor per instrument family (currency x kind), a thin shell over
:class:`desk.book_family.BookFamily`.

It receives its family's book, quote and ticker messages from the bus (the Connection
publishes them straight from its link thread; the bus keys them by family, see ``route_by``) and
would ignore another family's with one lookup.
Everything the bus brings it is handled immediately, in the publisher's thread (``@handles(...,
immediate=True)``): market data in the link thread, where under the GIL a thread of its own per
family bought no parallelism, only a queue and a thread switch per message (and those threads,
woken by every frame, kept the link thread from the CPU when a hedge was due). The link's status,
instrument changes, the minute tick and the rollover come the same way so that they stay in the
order they were published in with the data: in a replay the minute's snapshot holds exactly the
frames before the tick. Only questions (``ask``) and the Console's ``ChainViewRequest`` (a few a
second, routed to the one option keeper of its currency) are answered in its own thread: the answer
is built from an index by expiry, so the link thread waits for the state lock only that long. It
publishes top-of-book changes, one ``ChainSnapshot`` per minute tick, and a
``ResubscribeInstrument`` once per stale episode (a gap, a crossed book, a change without a
snapshot). A new link makes every book stale without asking: the Connection subscribes
everything again and the snapshots follow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import msgspec

from deribit.instruments import instrument_family
from desk.book import L2Book
from desk.book_family import BookFamily, Episode, FamilyStats
from desk.plausibility import PlausibilityLimits
from messages.commands import ResubscribeInstrument
from messages.market import BookChange, BookSnapshot, IndexPrice, InstrumentsLoaded, InstrumentState, Quote, Ticker
from messages.state import ChainViewRequest, WatchOptionTops
from messages.system import ConnectionState, ConnectionStatus, DailyRollover, MinuteTick
from runtime.actor import Actor, ActorContext, handles

#: States published when a link ends or a new one starts (by the Connection's link thread).
_LINK_DOWN = frozenset({ConnectionState.DISCONNECTED, ConnectionState.CONNECTING, ConnectionState.STOPPED})


def _option_family(request: ChainViewRequest | WatchOptionTops) -> tuple[str, str]:
    """The keeper a console's live question goes to: its currency's option family."""
    return request.currency, "option"


class GetBooks(msgspec.Struct, frozen=True):
    """Ask a BookKeeper for its books (tests, diagnostics): answered with ``{name: BookView}``."""


class BookView(msgspec.Struct, frozen=True):
    """One book as a keeper holds it: levels best first, the last change id, staleness."""

    instrument_name: str
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    change_id: int
    stale: bool
    stale_reason: str


class GetTops(msgspec.Struct, frozen=True):
    """Ask a BookKeeper for every instrument's top of book: answered with
    ``{name: (bid, bid_amount, ask, ask_amount, stale)}`` (futures without a book included)."""


class GetBookStats(msgspec.Struct, frozen=True):
    """Ask a BookKeeper for its counts and completed stale episodes: answered with a dict
    ``{"stats": FamilyStats, "episodes": [Episode], "stale": [name], "instruments": n}``."""


def book_view(book: L2Book) -> BookView:
    bids, asks = book.levels()
    return BookView(book.instrument_name, tuple(bids), tuple(asks), book.change_id, book.stale, book.stale_reason)


class BookKeeper(Actor):
    # The bus hands each keeper only its own family's books, quotes and tickers.
    route_by: ClassVar[dict[type, Callable[[Any], Any]]] = {
        BookChange: instrument_family, BookSnapshot: instrument_family, Quote: instrument_family,
        Ticker: instrument_family, ChainViewRequest: _option_family, WatchOptionTops: _option_family}

    def __init__(self, context: ActorContext, *, currency: str, kind: Literal["option", "future"]) -> None:
        super().__init__(context)
        self.route_key = (currency, kind)
        books = context.settings.books
        self.family = BookFamily(
            currency=currency,
            kind=kind,
            name=context.name,
            publish_top=kind == "future" or books.publish_option_top,
            resync_retry_s=books.resync_retry_s,
            limits=PlausibilityLimits(max_clock_ahead_s=context.settings.deribit.max_clock_ahead_s),
        )
        self._clock = context.clock
        self._publish = self.publish  # held until the handler returns (see runtime.actor)
        self._link_attempt: int | None = None

    def _send(self, messages: tuple[Any, ...]) -> None:
        for message in messages:
            if message.__class__ is ResubscribeInstrument:
                self.log.warning("book_stale", instrument=message.instrument_name, reason=message.reason)
            self._publish(message)

    # -- market data ------------------------------------------------------------------------------
    @handles(BookChange, immediate=True)
    def on_change(self, change: BookChange) -> None:
        out = self.family.on_change(change, self._clock.now())
        if out:
            self._send(out)

    @handles(BookSnapshot, immediate=True)
    def on_snapshot(self, snapshot: BookSnapshot) -> None:
        out = self.family.on_snapshot(snapshot, self._clock.now())
        if out:
            self._send(out)

    @handles(Quote, immediate=True)
    def on_quote(self, quote: Quote) -> None:
        out = self.family.on_quote(quote, self._clock.now())
        if out:
            self._send(out)

    @handles(Ticker, immediate=True)
    def on_ticker(self, ticker: Ticker) -> None:
        out = self.family.on_ticker(ticker, self._clock.now())
        if out:
            self._send(out)

    @handles(IndexPrice, immediate=True)
    def on_index(self, index: IndexPrice) -> None:
        self.family.on_index(index)

    # -- instruments ------------------------------------------------------------------------------
    @handles(InstrumentsLoaded, immediate=True)
    def on_instruments(self, loaded: InstrumentsLoaded) -> None:
        if loaded.currency != self.family.currency:
            return
        gone = self.family.listed(loaded.instruments, self._clock.now())
        if gone:
            self.log.info("books_dropped", reason="no longer listed", count=len(gone), instruments=gone[:20])

    @handles(InstrumentState, immediate=True)
    def on_instrument_state(self, event: InstrumentState) -> None:
        if self.family.instrument_state(event.instrument_name, event.state, self._clock.now()):
            self.log.info("books_dropped", reason=event.state, count=1, instruments=[event.instrument_name])

    @handles(DailyRollover, immediate=True)
    def on_rollover(self, event: DailyRollover) -> None:
        gone = self.family.drop_expired(event.at)
        self.log.info("daily_rollover", day=event.day, dropped=len(gone), books=len(self.family.entries))

    # -- the link and the clock -------------------------------------------------------------------
    @handles(ConnectionStatus, immediate=True)
    def on_status(self, status: ConnectionStatus) -> None:
        now = self._clock.now()
        if status.state in _LINK_DOWN:
            self._send(self.family.link_lost(now))
            self._link_attempt = None
        elif status.state is ConnectionState.CONNECTED:
            # The same link re-announced (a login refused) is no new link: its books stand.
            if status.attempt and status.attempt == self._link_attempt:
                return
            self._link_attempt = status.attempt
            self._send(self.family.link_lost(now))
            self.family.link_restored()
        else:
            self.family.link_restored()

    @handles(MinuteTick, immediate=True)
    def on_minute(self, tick: MinuteTick) -> None:
        now = self._clock.now()
        self._publish(self.family.chain_snapshot(tick.at, now))
        self._send(self.family.due_resyncs(now))

    # -- the console's live view ------------------------------------------------------------------
    @handles(ChainViewRequest)
    def on_chain_view_request(self, request: ChainViewRequest) -> None:
        # In the keeper's own thread, under its state lock (see runtime.actor); published after.
        if self.family.kind == "option" and request.currency == self.family.currency:
            self._publish(self.family.chain_view(request, self._clock.now()))

    @handles(WatchOptionTops)
    def on_watch_tops(self, request: WatchOptionTops) -> None:
        # An actor that works orders on a few options (the Assistant) wants their live tops.
        if self.family.kind == "option" and request.currency == self.family.currency:
            self._send(self.family.watch(request.origin, request.names, self._clock.now(), request.refresh))

    # -- inspection -------------------------------------------------------------------------------
    @handles(GetBooks)
    def on_get_books(self, _request: GetBooks) -> dict[str, BookView]:
        return {name: book_view(book) for name, book in self.family.books().items()}

    @handles(GetTops)
    def on_get_tops(self, _request: GetTops) -> dict[str, tuple[float | None, float, float | None, float, bool]]:
        return {name: (*entry.top(), entry.stale) for name, entry in self.family.entries.items()}

    @handles(GetBookStats)
    def on_get_stats(self, _request: GetBookStats) -> dict[str, Any]:
        stats: FamilyStats = dataclasses.replace(self.family.stats)  # a copy: the caller is another thread
        episodes: list[Episode] = list(self.family.episodes)
        return {
            "stats": stats,
            "episodes": episodes,
            "stale": self.family.stale_names(),
            "instruments": len(self.family.entries),
        }
