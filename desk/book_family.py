"""The books of one instrument family (currency x kind), as one BookKeeper actor keeps them.

:class:`BookFamily` is the BookKeeper's whole logic, free of actors and threads: it takes the
market messages the Connection publishes (every family's: it ignores other families' cheaply),
applies them to :class:`~desk.book.L2Book` s, and returns the messages to publish
(:class:`~messages.state.TopOfBook`, :class:`~messages.commands.ResubscribeInstrument`). It
builds the minute's :class:`~messages.state.ChainSnapshot` and the console's live
:class:`~messages.state.ChainView` (several a second: from an index of its entries by expiry, not a
sort of the family), tracks every stale episode from its
start (gap, crossed, reconnect, missing snapshot) to the snapshot that ends it, and drops
instruments when they expire.

Options always have an L2 book. Futures and perpetuals have one when their ``book`` channel is
subscribed (generated wire logs do); otherwise their top of book comes from the ``quote``
channel, which has no continuity to check: such a future is stale from a reconnect until its
next quote, and a crossed, locked or non-finite quote makes it stale (and asks for a
resubscription) like a crossed book. A quote stamped ahead of our clock is refused: it would
make every later quote look older.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Literal

from deribit.constants import GONE_STATES, LIVE_STATES, PERPETUAL_EXPIRY_MS
from deribit.instruments import InstrumentNameError, family_name_of, family_of, identity_of, parse_instrument_name
from desk.book import Applied, L2Book, as_snapshot, opens_chain
from desk.plausibility import PlausibilityLimits, timestamp_fault, top_fault
from messages.base import Message
from messages.commands import ResubscribeInstrument
from messages.market import BookChange, BookSnapshot, IndexPrice, Instrument, Quote, Ticker
from messages.state import ChainSnapshot, ChainView, ChainViewRequest, FutureQuote, OptionQuote, TopOfBook

Kind = Literal["option", "future"]
#: Completed stale episodes kept for inspection (tests, the status table).
EPISODE_HISTORY = 10_000

_NOTHING: tuple[Message, ...] = ()


@dataclass(frozen=True, slots=True)
class Episode:
    """One period during which an instrument's book was not known to be the exchange's.

    ``from_change_id`` is the last change id applied before it (0: none); ``to_change_id`` the
    change id of the snapshot that ended it (0 while it lasts). Every notification lost in
    between is covered by it."""

    instrument_name: str
    reason: str
    from_change_id: int
    started_at: float
    to_change_id: int = 0
    ended_at: float = 0.0
    resubscribe_requests: int = 0


@dataclass(slots=True)
class Entry:
    """What the family knows about one instrument."""

    name: str
    kind: Kind
    expiry_ms: int
    strike: float | None
    option_type: Literal["call", "put"] | None
    book: L2Book | None
    # Futures without a book take their top from quotes.
    quote: Quote | None = None
    quote_stale: bool = True
    ticker: Ticker | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    # The stale episode in progress, and when a resubscribe was last asked for (None: not yet).
    episode: Episode | None = None
    asked_at: float | None = None
    last_top: tuple[float | None, float, float | None, float, bool] | None = None
    # Its top changes are published even when the family's are not (WatchOptionTops).
    watched: bool = False

    @property
    def stale(self) -> bool:
        if self.book is not None:
            return self.book.stale
        return self.quote_stale

    def top(self) -> tuple[float | None, float, float | None, float]:
        if self.book is not None:
            return self.book.top()
        quote = self.quote
        if quote is None:
            return None, 0.0, None, 0.0
        return (
            quote.best_bid_price or None,
            quote.best_bid_amount or 0.0,
            quote.best_ask_price or None,
            quote.best_ask_amount or 0.0,
        )


@dataclass(slots=True)
class FamilyStats:
    snapshots: int = 0
    changes: int = 0
    ignored: int = 0
    gaps: int = 0
    crossed: int = 0
    resubscribes: int = 0
    reconnects: int = 0
    dropped: int = 0
    added: int = 0
    refused: int = 0  # quotes stamped ahead of our clock


@dataclass
class BookFamily:
    """Every book of ``currency`` x ``kind``.

    ``publish_top``: publish :class:`TopOfBook` for every top change (always for futures; for
    options as configured). ``resync_retry_s``: ask again for a resubscription of a book still
    stale after this long (the first request may have been lost with the link)."""

    currency: str
    kind: Kind
    name: str = ""
    publish_top: bool = True
    resync_retry_s: float = 30.0
    limits: PlausibilityLimits = field(default_factory=PlausibilityLimits)
    entries: dict[str, Entry] = field(default_factory=dict)
    # What each watcher (WatchOptionTops' origin) wants the tops of.
    watchers: dict[str, frozenset[str]] = field(default_factory=dict)
    index_price: float | None = None
    link_up: bool = True
    stats: FamilyStats = field(default_factory=FamilyStats)
    episodes: collections.deque[Episode] = field(
        default_factory=lambda: collections.deque(maxlen=EPISODE_HISTORY)
    )

    def __post_init__(self) -> None:
        if self.kind not in ("option", "future"):
            raise ValueError(f"a book family's kind is option or future, got {self.kind!r}")
        self.name = self.name or f"books-{self.currency}-{self.kind}"
        family = family_of(self.currency)
        self._index_name = family.index_name
        #: What its options' prices are in: the coin (inverse) or USDC (linear), said in each ChainSnapshot.
        self.price_currency = family.option_price_currency
        # Names of other families and of expired instruments: ignored after one lookup.
        self._ignored: set[str] = set()
        # The entries by expiry, each sorted by strike and type, rebuilt after an instrument came
        # or went (None): the live views read it several times a second.
        self._by_expiry: dict[int, tuple[Entry, ...]] | None = None

    # -- instruments -----------------------------------------------------------------------------
    def _entry_for(self, name: str, now: float) -> Entry | None:
        """The entry of a name not seen before, created if it belongs to this family and has
        not expired; ``None`` (and remembered as ignored) otherwise."""
        if name in self._ignored:
            return None
        try:
            parsed = parse_instrument_name(name)
        except InstrumentNameError:
            self._ignored.add(name)
            return None
        kind = "option" if parsed.kind == "option" else "future"
        # The family is the name's first segment (BTC, SOL_USDC), as the bus keys it: inverse and
        # linear books never mix. Which instruments are listed at all comes from metadata (listed()).
        if name.partition("-")[0] != self.currency or kind != self.kind:
            self._ignored.add(name)
            return None
        expiry = parsed.expiry_ms if parsed.expiry_ms is not None else PERPETUAL_EXPIRY_MS
        if expiry <= now * 1000:
            self._ignored.add(name)
            return None
        entry = Entry(
            name=name,
            kind=kind,
            expiry_ms=expiry,
            strike=parsed.strike,
            option_type=parsed.option_type,
            book=L2Book(name) if kind == "option" else None,
            created_at=now,
            updated_at=now,
            watched=any(name in names for names in self.watchers.values()),
        )
        self.entries[name] = entry
        self.stats.added += 1
        self._by_expiry = None
        return entry

    def listed(self, instruments: tuple[Instrument, ...], now: float) -> list[str]:
        """The exchange's complete list for this currency (``InstrumentsLoaded``): learn the new
        ones, drop ours that are no longer listed. Returns the dropped names."""
        names = set()
        for instrument in instruments:
            identity = identity_of(instrument)
            kind = "option" if identity.is_option else "future" if identity.is_future else None
            if kind != self.kind or family_name_of(identity) != self.currency:
                continue
            name = instrument.instrument_name
            names.add(name)
            if name not in self.entries:
                self._ignored.discard(name)
                entry = self._entry_for(name, now)
                if entry is not None:
                    # The metadata's figures where it has them (the name's are the same, rounded).
                    if identity.expiration_timestamp:
                        entry.expiry_ms = identity.expiration_timestamp
                    if identity.is_option and identity.strike:
                        entry.strike = identity.strike
        gone = [name for name in self.entries if name not in names]
        for name in gone:
            self._drop(name)
        self._by_expiry = None  # the metadata may have moved an expiry or a strike
        return gone

    def instrument_state(self, name: str, state: str, now: float) -> bool:
        """An ``instrument.state`` notification; True if it dropped one of our books."""
        if state in GONE_STATES:
            if name in self.entries:
                self._drop(name)
                return True
            if name not in self._ignored:
                self._ignored.add(name)  # settled before we ever saw it: never create it
            return False
        if state in LIVE_STATES and name not in self.entries:
            self._entry_for(name, now)
        return False

    def drop_expired(self, now: float) -> list[str]:
        """Drop every instrument that expired by ``now`` (the daily rollover)."""
        now_ms = now * 1000
        gone = [name for name, entry in self.entries.items() if entry.expiry_ms <= now_ms]
        for name in gone:
            self._drop(name)
        return gone

    def _drop(self, name: str) -> None:
        self.entries.pop(name, None)
        self._ignored.add(name)
        self.stats.dropped += 1
        self._by_expiry = None

    # -- the link --------------------------------------------------------------------------------
    def link_lost(self, now: float) -> tuple[Message, ...]:
        """A new link (or none): every book is stale until its snapshot arrives. No resubscribe
        is asked for: the Connection subscribes everything again after a reconnect."""
        if self.link_up:
            self.stats.reconnects += 1
        self.link_up = False
        out: list[Message] = []
        for entry in self.entries.values():
            if entry.book is not None:
                if entry.episode is None:
                    entry.episode = Episode(entry.name, "reconnect", entry.book.change_id, now)
                entry.book.mark_stale("reconnect")
                # Counts as asked: the reconnect's full resubscription is the request.
                entry.asked_at = now
            else:
                entry.quote_stale = True
            if (self.publish_top or entry.watched) and entry.last_top is not None and not entry.last_top[4]:
                out.append(self._top_message(entry, now))
        return tuple(out)

    def link_restored(self) -> None:
        self.link_up = True

    # -- market data (the hot path) ---------------------------------------------------------------
    def on_change(self, change: BookChange, now: float) -> tuple[Message, ...]:
        entry = self.entries.get(change.instrument_name) or self._entry_for(change.instrument_name, now)
        if entry is None:
            return _NOTHING
        book = entry.book
        if book is None:
            # A future's first book notification is a change: its snapshot was missed.
            book = entry.book = L2Book(entry.name)
        if change.prev_change_id == 0 and opens_chain(change, book.stale):
            return self.on_snapshot(as_snapshot(change), now)
        self.stats.changes += 1
        result = book.apply_change(change)
        if result is Applied.SAME:
            entry.updated_at = now
            return _NOTHING
        if result is Applied.TOP:
            entry.updated_at = now
            return (self._top_message(entry, now),) if self.publish_top or entry.watched else _NOTHING
        if result is Applied.IGNORED:
            self.stats.ignored += 1
            if entry.episode is None:
                # A change for a book that never had a snapshot (a restarted keeper).
                return self._stale_episode(entry, "no snapshot", now)
            return _NOTHING
        entry.updated_at = now
        if result is Applied.GAP:
            self.stats.gaps += 1
            return self._stale_episode(entry, "gap", now)
        self.stats.crossed += 1
        return self._stale_episode(entry, "crossed", now)

    def on_snapshot(self, snapshot: BookSnapshot, now: float) -> tuple[Message, ...]:
        entry = self.entries.get(snapshot.instrument_name) or self._entry_for(snapshot.instrument_name, now)
        if entry is None:
            return _NOTHING
        if entry.book is None:
            entry.book = L2Book(entry.name)
        self.stats.snapshots += 1
        entry.updated_at = now
        result = entry.book.apply_snapshot(snapshot)
        if result is Applied.CROSSED:
            self.stats.crossed += 1
            return self._stale_episode(entry, "crossed", now)
        self._end_episode(entry, snapshot.change_id, now)
        return (self._top_message(entry, now),) if self.publish_top or entry.watched else _NOTHING

    def _end_episode(self, entry: Entry, change_id: int, now: float) -> None:
        episode = entry.episode
        if episode is not None:
            self.episodes.append(
                Episode(
                    episode.instrument_name,
                    episode.reason,
                    episode.from_change_id,
                    episode.started_at,
                    change_id,
                    now,
                    episode.resubscribe_requests,
                )
            )
            entry.episode = None
        entry.asked_at = None

    def on_quote(self, quote: Quote, now: float) -> tuple[Message, ...]:
        entry = self.entries.get(quote.instrument_name) or self._entry_for(quote.instrument_name, now)
        if entry is None:
            return _NOTHING
        if entry.book is not None:
            return _NOTHING  # the L2 book is the authority where there is one
        if timestamp_fault(entry.name, quote.timestamp, now, self.limits) is not None:
            self.stats.refused += 1
            return _NOTHING
        fault = top_fault(entry.name, quote.best_bid_price or None, quote.best_ask_price or None, None, None,
                          self.limits)
        entry.updated_at = now
        if fault is not None:
            self.stats.crossed += 1
            return self._stale_quote(entry, fault.fault.value, now)
        entry.quote = quote
        entry.quote_stale = False
        if entry.episode is not None:
            self._end_episode(entry, 0, now)
        if not (self.publish_top or entry.watched):
            return _NOTHING
        top = (*entry.top(), False)
        if top == entry.last_top:
            return _NOTHING
        return (self._top_message(entry, now),)

    def on_ticker(self, ticker: Ticker, now: float) -> tuple[Message, ...]:
        entry = self.entries.get(ticker.instrument_name) or self._entry_for(ticker.instrument_name, now)
        if entry is None:
            return _NOTHING
        entry.ticker = ticker
        entry.updated_at = now
        if ticker.index_price is not None:
            self.index_price = ticker.index_price
        if entry.book is None and (entry.quote is None or ticker.timestamp > entry.quote.timestamp):
            # A book-less future: a ticker newer than the last quote carries the newer top
            # (after a reconnect it may come before the first quote).
            return self.on_quote(
                Quote(
                    instrument_name=ticker.instrument_name,
                    timestamp=ticker.timestamp,
                    best_bid_price=ticker.best_bid_price,
                    best_bid_amount=ticker.best_bid_amount,
                    best_ask_price=ticker.best_ask_price,
                    best_ask_amount=ticker.best_ask_amount,
                ),
                now,
            )
        return _NOTHING

    def on_index(self, index: IndexPrice) -> None:
        if index.index_name == self._index_name:
            self.index_price = index.price

    # -- staleness ---------------------------------------------------------------------------------
    def _stale_quote(self, entry: Entry, reason: str, now: float) -> tuple[Message, ...]:
        """A book-less future's quote cannot be right (crossed, locked, not finite): its top is
        stale until a sane quote comes; a resubscription brings a fresh one sooner."""
        entry.quote_stale = True
        return self._stale_episode(entry, reason, now)

    def _stale_episode(self, entry: Entry, reason: str, now: float) -> tuple[Message, ...]:
        """The book (or a book-less future's quote) just went stale: start an episode and ask
        for a resubscription, once."""
        book = entry.book
        out: list[Message] = []
        if entry.episode is None:
            from_id = book.change_id if book is not None and reason != "no snapshot" else 0
            entry.episode = Episode(entry.name, reason, from_id, now)
        if (self.publish_top or entry.watched) and entry.last_top is not None and not entry.last_top[4]:
            out.append(self._top_message(entry, now))
        if entry.asked_at is None and self.link_up:
            out.append(self._ask_resubscribe(entry, reason, now))
        return tuple(out)

    def _ask_resubscribe(self, entry: Entry, reason: str, now: float) -> ResubscribeInstrument:
        entry.asked_at = now
        if entry.episode is not None:
            episode = entry.episode
            entry.episode = Episode(
                episode.instrument_name,
                episode.reason,
                episode.from_change_id,
                episode.started_at,
                resubscribe_requests=episode.resubscribe_requests + 1,
            )
        self.stats.resubscribes += 1
        return ResubscribeInstrument(instrument_name=entry.name, origin=self.name, reason=reason)

    def due_resyncs(self, now: float) -> tuple[Message, ...]:
        """Books stale longer than ``resync_retry_s`` since the last request: ask again (the
        request or its snapshot may have been lost)."""
        if not self.link_up:
            return _NOTHING
        out: list[Message] = []
        for entry in self.entries.values():
            if entry.book is None or not entry.book.stale:
                continue
            if entry.asked_at is None:
                if entry.episode is None:
                    continue  # listed, its first snapshot not yet due
                out.append(self._ask_resubscribe(entry, entry.episode.reason, now))
            elif now - entry.asked_at >= self.resync_retry_s:
                out.append(self._ask_resubscribe(entry, "retry", now))
        return tuple(out)

    def watch(self, origin: str, names: tuple[str, ...], now: float, refresh: bool = False) -> tuple[TopOfBook, ...]:
        """``origin`` watches the tops of ``names`` (replacing what it watched): each top change of
        a watched instrument is published. Returns the current tops of those newly watched (with
        ``refresh``, of all of ``names``) that have a book or quote (the watcher need not wait for
        their next change)."""
        before = {name for name, entry in self.entries.items() if entry.watched}
        if names:
            self.watchers[origin] = frozenset(names)
        else:
            self.watchers.pop(origin, None)
        wanted = frozenset().union(*self.watchers.values()) if self.watchers else frozenset()
        out: list[TopOfBook] = []
        for name, entry in self.entries.items():
            entry.watched = name in wanted
            if entry.watched and (name not in before or (refresh and name in names)) and (
                    entry.book is not None or entry.quote is not None):
                out.append(self._top_message(entry, now))
        return tuple(out)

    # -- outputs -----------------------------------------------------------------------------------
    def _top_message(self, entry: Entry, now: float) -> TopOfBook:
        bid, bid_amount, ask, ask_amount = entry.top()
        stale = entry.stale
        entry.last_top = (bid, bid_amount, ask, ask_amount, stale)
        ticker = entry.ticker
        if entry.book is not None:
            timestamp = entry.book.timestamp
        else:
            timestamp = entry.quote.timestamp if entry.quote is not None else 0
        return TopOfBook(
            instrument_name=entry.name,
            kind=entry.kind,
            bid=bid,
            bid_amount=bid_amount,
            ask=ask,
            ask_amount=ask_amount,
            timestamp=timestamp,
            at=now,
            stale=stale,
            mark_price=ticker.mark_price if ticker is not None else None,
            index_price=ticker.index_price if ticker is not None and ticker.index_price else self.index_price,
        )

    def chain_snapshot(self, at: float, now: float) -> ChainSnapshot:
        """The whole family as of minute ``at`` (ages measured at ``now``)."""
        if self.kind == "option":
            options = tuple(
                self._option_quote(entry, now) for entries in self._expiry_index().values() for entry in entries
            )
            return ChainSnapshot(
                currency=self.currency, kind="option", at=at, index_price=self.index_price, options=options,
                price_currency=self.price_currency,
            )
        futures = tuple(
            self._future_quote(entry, now) for entry in sorted(self.entries.values(), key=lambda e: e.expiry_ms)
        )
        return ChainSnapshot(
            currency=self.currency, kind="future", at=at, index_price=self.index_price, futures=futures
        )

    def _expiry_index(self) -> dict[int, tuple[Entry, ...]]:
        index = self._by_expiry
        if index is None:
            grouped: dict[int, list[Entry]] = {}
            for entry in sorted(self.entries.values(), key=_chain_order):
                grouped.setdefault(entry.expiry_ms, []).append(entry)
            index = self._by_expiry = {expiry: tuple(entries) for expiry, entries in grouped.items()}
        return index

    def chain_view(self, request: ChainViewRequest, now: float) -> ChainView:
        """The console's live answer: every option of ``request.expiry_ms`` and those of
        ``request.names`` that are this family's (sorted by expiry, strike, type), every expiry
        listed, and how many books are known to be the exchange's."""
        index = self._expiry_index()
        expiry = request.expiry_ms
        chosen: tuple[Entry, ...] | list[Entry] = index.get(expiry, ()) if expiry is not None else ()
        if request.names:
            entries = self.entries
            extra = {entry.name: entry for name in request.names
                     if (entry := entries.get(name)) is not None and entry.expiry_ms != expiry}
            if extra:
                chosen = sorted((*chosen, *extra.values()), key=_chain_order)
        books = synced = 0
        for entry in self.entries.values():
            book = entry.book
            if book is not None:
                books += 1
                if not book.stale:
                    synced += 1
        return ChainView(
            currency=self.currency, at=now, request_id=request.request_id, index_price=self.index_price,
            options=tuple(self._option_quote(entry, now) for entry in chosen), expiries=tuple(index),
            books=books, synced=synced, price_currency=self.price_currency,
        )

    def _option_quote(self, entry: Entry, now: float) -> OptionQuote:
        bid, bid_amount, ask, ask_amount = entry.top()
        ticker = entry.ticker
        greeks = ticker.greeks if ticker is not None else None
        return OptionQuote(
            instrument_name=entry.name,
            expiry_ms=entry.expiry_ms,
            strike=entry.strike or 0.0,
            option_type=entry.option_type or "call",
            bid=bid,
            bid_amount=bid_amount,
            ask=ask,
            ask_amount=ask_amount,
            mark_price=ticker.mark_price if ticker is not None else None,
            mark_iv=ticker.mark_iv if ticker is not None else None,
            underlying_price=ticker.underlying_price if ticker is not None else None,
            index_price=(ticker.index_price if ticker is not None else None) or self.index_price,
            open_interest=ticker.open_interest if ticker is not None else None,
            delta=greeks.delta if greeks is not None else None,
            gamma=greeks.gamma if greeks is not None else None,
            vega=greeks.vega if greeks is not None else None,
            theta=greeks.theta if greeks is not None else None,
            age_s=_age(now, entry.updated_at),
            stale=entry.stale,
            bid_iv=ticker.bid_iv if ticker is not None else None,
            ask_iv=ticker.ask_iv if ticker is not None else None,
            volume_24h=ticker.stats.volume if ticker is not None and ticker.stats is not None else None,
        )

    def _future_quote(self, entry: Entry, now: float) -> FutureQuote:
        bid, bid_amount, ask, ask_amount = entry.top()
        ticker = entry.ticker
        return FutureQuote(
            instrument_name=entry.name,
            expiry_ms=entry.expiry_ms,
            bid=bid,
            ask=ask,
            mark_price=ticker.mark_price if ticker is not None else None,
            index_price=(ticker.index_price if ticker is not None else None) or self.index_price,
            age_s=_age(now, entry.updated_at),
            stale=entry.stale,
            bid_amount=bid_amount,
            ask_amount=ask_amount,
        )

    # -- inspection --------------------------------------------------------------------------------
    def books(self) -> dict[str, L2Book]:
        return {name: entry.book for name, entry in self.entries.items() if entry.book is not None}

    def stale_names(self) -> list[str]:
        return sorted(name for name, entry in self.entries.items() if entry.stale)


def _chain_order(entry: Entry) -> tuple[int, float, str]:
    return entry.expiry_ms, entry.strike or 0.0, entry.option_type or ""


def _age(now: float, then: float) -> float:
    age = now - then
    return round(age, 3) if math.isfinite(age) and age > 0 else 0.0
