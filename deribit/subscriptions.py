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


@dataclass
class SubscriptionTracker:
    """Wanted channels, which are confirmed, which are in flight; batches to send next.

    ``failures`` counts consecutive failed or partly refused subscribe requests (for the retry
    delay); a fully confirmed batch resets it."""

    batch_size: int
    wanted: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)
    in_flight: dict[int, tuple[str, ...]] = field(default_factory=dict)
    failures: int = 0

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
        gone = self.confirmed & chans
        self.confirmed -= chans
        return gone

    def forget(self, chans: Iterable[str]) -> None:
        """Resubscribe these (e.g. a book found a gap): no longer confirmed, still wanted."""
        self.confirmed -= set(chans)

    def reset(self) -> None:
        """After a reconnect nothing is subscribed."""
        self.confirmed.clear()
        self.in_flight.clear()

    def _sending(self) -> set[str]:
        return {c for batch in self.in_flight.values() for c in batch}

    def next_batch(self) -> tuple[str, ...]:
        """The next channels to subscribe (sorted for reproducible requests); empty if none."""
        missing = self.wanted - self.confirmed - self._sending()
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
        ok = set(subscribed)
        self.confirmed |= ok & self.wanted
        refused = tuple(c for c in batch if c not in ok)
        unwanted = tuple(sorted(c for c in ok if c not in self.wanted))
        if refused:
            self.failures += 1
        elif batch:
            self.failures = 0
        return refused, unwanted

    def failed(self, request_id: int) -> tuple[str, ...]:
        """A subscribe request failed or was never answered: its channels are missing again."""
        self.failures += 1
        return self.in_flight.pop(request_id, ())

    @property
    def complete(self) -> bool:
        return not (self.wanted - self.confirmed)

    def counts(self) -> tuple[int, int]:
        return len(self.confirmed & self.wanted), len(self.wanted)
