"""Which channels to subscribe, in batches within the subscribe rate limit, with confirmations
tracked and failures retried (pure; the Connection actor calls it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from deribit import channels
from deribit.constants import DVOL_INDICES
from deribit.instruments import family_of
from messages.market import Instrument


def market_channels(instruments: Iterable[Instrument], book_interval: str) -> set[str]:
    """Every live option's book and ticker; futures' and perpetuals' top of book and ticker."""
    out: set[str] = set()
    for inst in instruments:
        if inst.kind == "option":
            out.add(channels.book(inst.instrument_name, book_interval))  # type: ignore[arg-type]
            out.add(channels.ticker(inst.instrument_name, "100ms"))
        elif inst.kind == "future":
            out.add(channels.quote(inst.instrument_name))
            out.add(channels.ticker(inst.instrument_name, "100ms"))
    return out


def currency_channels(currency: str, private: bool) -> set[str]:
    """A family's own channels: its index (``btc_usd``, ``sol_usdc``), its coin's DVOL where
    Deribit publishes one, the platform's locks, and the listings and expiries of its options and
    futures. A linear family's come under USDC, which every coin's
    linear instruments share: the Session keeps only the family's own notifications. Private:
    the account's orders, trades and portfolio in the family's settlement currency."""
    family = family_of(currency)
    listed_under = family.request_currency
    out = {
        channels.price_index(family.index_name),
        channels.instrument_state("option", listed_under),
        channels.instrument_state("future", listed_under),
        channels.platform_state(),  # index locks, which instrument.state does not announce
    }
    dvol = f"{family.base_currency.lower()}_usd"
    if dvol in DVOL_INDICES:
        out.add(channels.volatility_index(dvol))
    if private:
        out |= {
            channels.user_orders("any", listed_under, "raw"),
            channels.user_trades("any", listed_under, "raw"),
            # The exchange's own positions (with its PnL figures) after each of our events.
            channels.user_changes("any", listed_under, "raw"),
            channels.user_portfolio(listed_under),
        }
    return out


#: Requests a second (unsubscribes and fresh subscribes together, burst 1) that book resyncs may
#: use, beside the full subscription's ``deribit.subscribe_requests_per_s``. Deribit meters
#: subscribe requests on a pool of their own: 3,000 credits a request from 30,000, refilled at
#: 10,000 a second, about 3.3 requests a second (Deribit's "Rate Limits" support article, as
#: nautilus_trader's Deribit adapter quotes it). The default 2 a second plus this stays under it.
RESYNC_REQUESTS_PER_S = 1.0


@dataclass
class SubscriptionTracker:
    """Wanted channels, which are confirmed, which are in flight; batches to send next.

    Two lanes, each with its own requests in flight and its own failure count (for its retry
    delay; a fully confirmed batch resets it). The *full subscription* (``next_batch``): every
    wanted channel this link has not subscribed yet, a (re)connect's or a new listing's. The
    *resyncs*: a book that found a gap is unsubscribed and subscribed afresh for a new snapshot
    (``resync``, then ``forget`` once unsubscribed, then ``next_resync_batch``). A channel being
    resynced was subscribed on this link: the full subscription neither sends it nor waits for
    it (``complete``); its book is stale until the snapshot comes, which the desk respects."""

    batch_size: int
    wanted: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)
    in_flight: dict[int, tuple[str, ...]] = field(default_factory=dict)
    failures: int = 0
    resyncing: set[str] = field(default_factory=set)
    resync_in_flight: dict[int, tuple[str, ...]] = field(default_factory=dict)
    resync_failures: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"subscribe batch size must be at least 1, got {self.batch_size}")

    def want(self, chans: Iterable[str]) -> set[str]:
        """Want ``chans`` too; returns those that were not wanted before."""
        added = set(chans) - self.wanted
        self.wanted |= added
        return added

    def drop(self, chans: Iterable[str]) -> set[str]:
        """Stop wanting ``chans``; returns those that were confirmed (to unsubscribe)."""
        chans = set(chans)
        self.wanted -= chans
        self.resyncing -= chans
        gone = self.confirmed & chans
        self.confirmed -= chans
        return gone

    def forget(self, chans: Iterable[str]) -> None:
        """These were unsubscribed: no longer confirmed, still wanted. A resynced one is
        subscribed afresh by the resyncs (``next_resync_batch``), any other by the full
        subscription."""
        self.confirmed -= set(chans)

    def reset(self) -> None:
        """After a reconnect nothing is subscribed (the full subscription covers every resync)."""
        self.confirmed.clear()
        self.in_flight.clear()
        self.resyncing.clear()
        self.resync_in_flight.clear()

    def _sending(self) -> set[str]:
        return {c for batch in self.in_flight.values() for c in batch}

    def next_batch(self) -> tuple[str, ...]:
        """The full subscription's next channels (sorted for reproducible requests); empty if none."""
        missing = self.wanted - self.confirmed - self.resyncing - self._sending()
        if not missing:
            return ()
        return tuple(sorted(missing)[: self.batch_size])

    def sent(self, request_id: int, batch: tuple[str, ...]) -> None:
        self.in_flight[request_id] = batch

    def answered(self, request_id: int, subscribed: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Record a subscribe answer. Returns ``(refused, unwanted)``: the channels of the batch
        the exchange did not subscribe (to retry), and those it subscribed that are no longer
        wanted (dropped while the request was in flight: to unsubscribe)."""
        batch = self.in_flight.pop(request_id, ())
        refused, unwanted = self._confirm(batch, subscribed)
        if refused:
            self.failures += 1
        elif batch:
            self.failures = 0
        return refused, unwanted

    def _confirm(self, batch: tuple[str, ...], subscribed: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        ok = set(subscribed)
        self.confirmed |= ok & self.wanted
        self.resyncing -= ok  # a fresh subscription brings the snapshot a resync waits for
        refused = tuple(c for c in batch if c not in ok)
        unwanted = tuple(sorted(c for c in ok if c not in self.wanted))
        return refused, unwanted

    def failed(self, request_id: int) -> tuple[str, ...]:
        """A subscribe request failed or was never answered: its channels are missing again."""
        self.failures += 1
        return self.in_flight.pop(request_id, ())

    # -- resyncs ---------------------------------------------------------------------------------
    def resync(self, channel: str) -> bool:
        """A book found a gap: True if ``channel`` must be unsubscribed now (it is subscribed on
        this link and not already being resynced). One not subscribed yet gets a snapshot from
        the full subscription's answer; one being resynced, from its resync's."""
        if channel not in self.wanted or channel not in self.confirmed or channel in self.resyncing:
            return False
        self.resyncing.add(channel)
        return True

    def next_resync_batch(self) -> tuple[str, ...]:
        """Resynced channels unsubscribed and not yet asked for again (sorted); empty if none."""
        sending = {c for batch in self.resync_in_flight.values() for c in batch}
        ready = self.resyncing - self.confirmed - sending
        return tuple(sorted(ready)[: self.batch_size]) if ready else ()

    def resync_sent(self, request_id: int, batch: tuple[str, ...]) -> None:
        self.resync_in_flight[request_id] = batch

    def resync_answered(self, request_id: int, subscribed: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """As :meth:`answered`, for a resync's subscribe: refused channels stay resyncing (retried)."""
        batch = self.resync_in_flight.pop(request_id, ())
        refused, unwanted = self._confirm(batch, subscribed)
        if refused:
            self.resync_failures += 1
        elif batch:
            self.resync_failures = 0
        return refused, unwanted

    def resync_failed(self, request_id: int) -> tuple[str, ...]:
        """A resync's subscribe failed or was never answered: its channels are to be asked again."""
        self.resync_failures += 1
        return self.resync_in_flight.pop(request_id, ())

    @property
    def complete(self) -> bool:
        """The full subscription is done: every wanted channel subscribed on this link (a
        resynced one counts: it was, and its resync is under way)."""
        return not (self.wanted - self.confirmed - self.resyncing)

    def counts(self) -> tuple[int, int]:
        """(channels subscribed on this link, resyncs included; channels wanted)."""
        return len((self.confirmed | self.resyncing) & self.wanted), len(self.wanted)
