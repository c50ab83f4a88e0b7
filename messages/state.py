"""What the BookKeepers and the Portfolio publish: the program's picture of market and account."""

from __future__ import annotations

from typing import Literal

from messages.account import OrderUpdate, Position, Settlement
from messages.base import Message


class TopOfBook(Message, frozen=True, kw_only=True):
    """Best bid and ask of one instrument changed (or its book became stale or fresh again).

    Prices are the exchange's (coin for options, USD for futures); ``None`` where that side is
    empty. ``timestamp`` is the exchange's (ms); ``at`` the local clock when it was applied
    (unix seconds). A ``stale`` book must not be traded on."""

    instrument_name: str
    kind: Literal["option", "future"]
    bid: float | None
    bid_amount: float
    ask: float | None
    ask_amount: float
    timestamp: int
    at: float
    stale: bool = False
    mark_price: float | None = None
    index_price: float | None = None


class OptionQuote(Message, frozen=True, kw_only=True):
    """One option in a :class:`ChainSnapshot`: its book's top and its latest ticker's figures.

    Prices in the chain's ``price_currency`` (the coin, or USDC in a linear family); ``mark_iv``
    in percent as Deribit quotes it; greeks from the ticker;
    ``age_s`` seconds since its book or ticker last changed; ``stale`` when its book is not
    known to be the exchange's (gap, crossed, or not yet snapshotted since a reconnect)."""

    instrument_name: str
    expiry_ms: int
    strike: float
    option_type: Literal["call", "put"]
    bid: float | None
    bid_amount: float
    ask: float | None
    ask_amount: float
    mark_price: float | None
    mark_iv: float | None
    underlying_price: float | None
    index_price: float | None
    open_interest: float | None
    delta: float | None
    gamma: float | None
    vega: float | None
    theta: float | None
    age_s: float
    stale: bool
    #: The ticker's IVs of the best bid and ask (percent; ``None`` when that side is empty) and
    #: its 24-hour volume in contracts; absent from producers that predate them.
    bid_iv: float | None = None
    ask_iv: float | None = None
    volume_24h: float | None = None


class FutureQuote(Message, frozen=True, kw_only=True):
    """A future or perpetual in a :class:`ChainSnapshot` (prices in USD, amounts in USD).

    Perpetuals carry Deribit's far-future expiry (year 3000). ``stale`` as for options; a future
    whose top comes from the ``quote`` channel is stale from a reconnect until its next quote."""

    instrument_name: str
    expiry_ms: int
    bid: float | None
    ask: float | None
    mark_price: float | None
    index_price: float | None
    age_s: float
    stale: bool
    bid_amount: float = 0.0
    ask_amount: float = 0.0


class ChainSnapshot(Message, frozen=True, kw_only=True):
    """A BookKeeper's whole family at one minute tick: ``at`` is the tick (unix seconds, a
    multiple of 60). One per family (currency x kind) per tick. An option family fills
    ``options`` (sorted by expiry, strike, type), a future family ``futures`` (by expiry, the
    perpetual last); every instrument the keeper knows is in it, stale or not."""

    currency: str
    kind: Literal["option", "future"]
    at: float
    index_price: float | None
    options: tuple[OptionQuote, ...] = ()
    futures: tuple[FutureQuote, ...] = ()
    #: What the options' prices (bid, ask, mark) are in: the coin (``BTC``) in an inverse family,
    #: ``USDC`` in a linear one (``SOL_USDC``); empty from producers that predate it: the coin.
    price_currency: str = ""


class ChainViewRequest(Message, frozen=True, kw_only=True):
    """The Console asks one option family's BookKeeper for what it shows live: every option of
    ``expiry_ms`` (None: none) and the options ``names`` (the traded option, option positions),
    those of other families ignored. Answered with a :class:`ChainView` carrying ``request_id``."""

    currency: str
    expiry_ms: int | None
    names: tuple[str, ...] = ()
    request_id: int = 0


class ChainView(Message, frozen=True, kw_only=True):
    """A BookKeeper's live answer to a :class:`ChainViewRequest`, as of ``at`` (local clock):
    the options asked for (sorted by expiry, strike, type), every expiry the family lists
    (``expiries``, ms, ascending) and how many of its ``books`` are known to be the exchange's
    (``synced``: a snapshot since the last (re)connect, no gap)."""

    currency: str
    at: float
    request_id: int
    index_price: float | None
    options: tuple[OptionQuote, ...] = ()
    expiries: tuple[int, ...] = ()
    books: int = 0
    synced: int = 0
    price_currency: str = ""


class WatchOptionTops(Message, frozen=True, kw_only=True):
    """Ask the option BookKeeper of ``currency`` to publish :class:`TopOfBook` for every top
    change of the options ``names`` (and their current tops at once), also when option tops are
    not published (``books.publish_option_top`` off). Replaces what ``origin`` watched before;
    empty ``names``: nothing any more. ``refresh``: the current tops of all of ``names`` are sent
    again (a watcher whose tops of a quiet book have grown old has them confirmed)."""

    currency: str
    names: tuple[str, ...]
    origin: str
    refresh: bool = False


class PortfolioChanged(Message, frozen=True, kw_only=True):
    """The Portfolio's whole picture of one currency after any change.

    ``reconciled`` is false from a (re)connect until the exchange's own figures were taken in:
    no one may hedge on an unreconciled portfolio, nor while ``reconciling``."""

    currency: str
    at: float
    positions: tuple[Position, ...]
    open_orders: tuple[OrderUpdate, ...]
    equity: float | None = None
    balance: float | None = None
    available_funds: float | None = None
    initial_margin: float | None = None
    maintenance_margin: float | None = None
    delta_total: float | None = None
    options_delta: float | None = None
    options_gamma: float | None = None
    options_vega: float | None = None
    options_theta: float | None = None
    reconciled: bool = False
    # A reconcile is under way: the picture may be about to change under the Hedger's feet.
    reconciling: bool = False
    # When the snapshot in use arrived and when its requests went out (the program's clock): every
    # fill known before the latter is in these positions. None: none yet.
    reconciled_at: float | None = None
    reconcile_requested_at: float | None = None
    # The ids of the latest fills these positions reflect, oldest first (at most a few hundred).
    recent_trade_ids: tuple[str, ...] = ()
    # Held instruments whose PnL figures are the exchange's as last sent, not recomputed: no
    # instrument metadata yet, so their contract maths (inverse or linear) is not known.
    unmodelled: tuple[str, ...] = ()
    # Positions that left at expiry, newest first (``type`` "delivery": size, delivery price and the
    # session's PnL at it); the exchange's own entry replaces the desk's once it lists it.
    deliveries: tuple[Settlement, ...] = ()
    # The exchange's settlement history (settlements and deliveries) of this currency's
    # instruments, newest first, as far as it was fetched.
    settlements: tuple[Settlement, ...] = ()
