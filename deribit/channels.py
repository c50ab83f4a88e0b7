"""Deribit subscription channel names.

Instrument names contain no dots (fractional strikes are written with ``d``), so a channel
splits unambiguously on ``.``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

Interval = Literal["raw", "100ms", "agg2"]
Kind = Literal["future", "option", "spot", "future_combo", "option_combo", "combo", "any"]

#: Prefixes that take two dot-separated words; every other prefix is the first word.
_TWO_WORD_PREFIXES: frozenset[str] = frozenset({"user", "instrument", "markprice", "block_rfq"})

#: Channels that only an authenticated connection may subscribe to (``private/subscribe``): every
#: ``user.*`` channel Deribit lists, its block trade confirmations and the block RFQ maker and taker
#: channels (``block_rfq.trades.*`` is public).
PRIVATE_PREFIXES: frozenset[str] = frozenset(
    {
        "user.orders",
        "user.trades",
        "user.portfolio",
        "user.changes",
        "user.access_log",
        "user.lock",
        "user.mmp_trigger",
        "user.isolated",
        "block_trade_confirmations",
        "block_rfq.maker",
        "block_rfq.taker",
    }
)


def book(instrument_name: str, interval: Interval = "100ms") -> str:
    """Incremental L2 book: a snapshot, then changes chained by ``prev_change_id``. ``raw``
    needs an authenticated connection."""
    return f"book.{instrument_name}.{interval}"


def ticker(instrument_name: str, interval: Interval = "100ms") -> str:
    return f"ticker.{instrument_name}.{interval}"


def quote(instrument_name: str) -> str:
    """Best bid and ask only."""
    return f"quote.{instrument_name}"


def trades(instrument_name: str, interval: Interval = "100ms") -> str:
    """Public trades of one instrument."""
    return f"trades.{instrument_name}.{interval}"


def price_index(index_name: str) -> str:
    """``index_name`` like ``btc_usd``, ``eth_usd`` (lower case, as Deribit names them)."""
    return f"deribit_price_index.{index_name.lower()}"


def instrument_state(kind: Kind, currency: str) -> str:
    """Listings and expiries of ``kind`` in ``currency`` (``any`` for all)."""
    return f"instrument.state.{kind}.{currency}"


def user_orders(kind: Kind, currency: str, interval: Interval = "raw") -> str:
    """Our order updates. ``raw`` delivers one order per notification, other intervals a list."""
    return f"user.orders.{kind}.{currency}.{interval}"


def user_trades(kind: Kind, currency: str, interval: Interval = "raw") -> str:
    return f"user.trades.{kind}.{currency}.{interval}"


def user_portfolio(currency: str) -> str:
    """``currency`` in lower or upper case, or ``any``."""
    return f"user.portfolio.{currency.lower()}"


def user_changes(kind: Kind, currency: str, interval: Interval = "raw") -> str:
    """Orders, fills and the exchange's own positions of one instrument after each event, in one
    atomic notification."""
    return f"user.changes.{kind}.{currency}.{interval}"


def platform_state(public_methods: bool = False) -> str:
    """Locks and unlocks of trading on an index (``platform_state``), or whether unauthenticated
    requests are allowed (``platform_state.public_methods_state``)."""
    return "platform_state.public_methods_state" if public_methods else "platform_state"


def volatility_index(index_name: str) -> str:
    """DVOL of ``index_name`` (``btc_usd``, ``eth_usd``; lower case, as Deribit names them)."""
    return f"deribit_volatility_index.{index_name.lower()}"


def markprice_options(index_name: str) -> str:
    """The marks and mark IVs of every option on ``index_name`` in one notification."""
    return f"markprice.options.{index_name.lower()}"


def channel_prefix(channel: str) -> str:
    """The channel's family: ``book``, ``ticker``, ``quote``, ``trades``,
    ``deribit_price_index``, ``instrument.state``, ``user.orders``, ``user.trades``,
    ``user.portfolio``, ``user.changes``, ``platform_state``, ``deribit_volatility_index``,
    ``markprice.options``, ... (the text before the first parameter)."""
    first, dot, rest = channel.partition(".")
    if first in _TWO_WORD_PREFIXES and dot:
        second = rest.partition(".")[0]
        return f"{first}.{second}"
    return first


def is_private(channel: str) -> bool:
    """True if the channel needs ``private/subscribe`` on an authenticated connection."""
    return channel_prefix(channel) in PRIVATE_PREFIXES


def instrument_of(channel: str) -> str | None:
    """The instrument a per-instrument channel is about (``book``, ``ticker``, ``quote``,
    per-instrument ``trades``), else ``None``."""
    parts = channel.split(".")
    prefix = parts[0]
    if prefix in ("book", "ticker", "quote") and len(parts) >= 2:
        return parts[1]
    if prefix == "trades" and len(parts) == 3:
        return parts[1]
    return None


def batches(channels: Iterable[str], size: int) -> Iterator[tuple[str, ...]]:
    """Split channels into subscribe requests of at most ``size`` channels each (Deribit
    limits the rate of subscribe requests, so many channels go in few requests)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    batch: list[str] = []
    for channel in channels:
        batch.append(channel)
        if len(batch) == size:
            yield tuple(batch)
            batch = []
    if batch:
        yield tuple(batch)
