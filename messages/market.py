"""Market data messages, decoded straight from Deribit's wire format.

Field names are Deribit's own (see docs.deribit.com), so ``deribit.codec`` decodes a
notification's ``data`` object directly into these types. Fields Deribit sends only for some
instruments or some intervals are optional with a default; a field of the wrong type fails
decoding. Timestamps are Deribit's: integer milliseconds since the epoch.

High-volume types are declared ``gc=False``: they hold no reference cycles, and skipping the
garbage collector's tracking makes decoding them measurably cheaper.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import msgspec

from messages.base import Message

#: One order book level as Deribit sends it: ``[action, price, amount]``; in a snapshot the
#: action is always ``"new"``; ``"delete"`` levels carry amount 0.
BookLevel = tuple[Literal["new", "change", "delete"], float, float]

OptionType = Literal["call", "put"]


class BookSnapshot(Message, frozen=True, kw_only=True, gc=False, tag_field="type", tag="snapshot"):
    """The full book of one instrument (``book.{instrument}.{interval}``, first notification
    after a subscribe). Later notifications are :class:`BookChange` chained by change ids."""

    instrument_name: str
    timestamp: int
    change_id: int
    bids: tuple[BookLevel, ...] = ()
    asks: tuple[BookLevel, ...] = ()


class BookChange(Message, frozen=True, kw_only=True, gc=False, tag_field="type", tag="change"):
    """Changed levels of one instrument's book. ``prev_change_id`` must equal the previous
    notification's ``change_id``; otherwise a message was lost and the book is stale."""

    instrument_name: str
    timestamp: int
    change_id: int
    prev_change_id: int
    bids: tuple[BookLevel, ...] = ()
    asks: tuple[BookLevel, ...] = ()


class Greeks(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Deribit's option greeks (Black-76 at ``mark_iv``; vega and theta per 1 vol point and
    per day, in USD)."""

    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float | None = None


class TickerStats(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """24-hour statistics; every figure is ``None`` while the instrument has not traded."""

    volume: float | None = None
    price_change: float | None = None
    low: float | None = None
    high: float | None = None
    volume_usd: float | None = None
    volume_notional: float | None = None


class Ticker(Message, frozen=True, kw_only=True, gc=False):
    """``ticker.{instrument}.{interval}`` for options, futures and perpetuals.

    Option-only fields (``underlying_*``, ``*_iv``, ``greeks``, ``interest_rate``) and
    future-only fields (``current_funding``, ``funding_8h``, ``interest_value``,
    ``delivery_price``) are ``None`` where Deribit omits them. Best bid/ask and last price are
    ``None`` (or 0) when the book side is empty or nothing traded."""

    instrument_name: str
    timestamp: int
    state: str
    mark_price: float
    index_price: float | None = None
    best_bid_price: float | None = None
    best_bid_amount: float | None = None
    best_ask_price: float | None = None
    best_ask_amount: float | None = None
    last_price: float | None = None
    settlement_price: float | None = None
    # "expired" on the last ticker of an expiring instrument (state "closed"), whose
    # ``delivery_price`` is then the price it settled at.
    estimated_delivery_price: float | Literal["expired"] | None = None
    delivery_price: float | None = None
    open_interest: float | None = None
    min_price: float | None = None
    max_price: float | None = None
    stats: TickerStats | None = None
    # Options.
    underlying_price: float | None = None
    underlying_index: str | None = None
    interest_rate: float | None = None
    mark_iv: float | None = None
    bid_iv: float | None = None
    ask_iv: float | None = None
    greeks: Greeks | None = None
    # Futures and perpetuals.
    current_funding: float | None = None
    funding_8h: float | None = None
    interest_value: float | None = None


class Quote(Message, frozen=True, kw_only=True, gc=False):
    """``quote.{instrument}``: best bid and ask. A price is ``None`` when that side is empty."""

    instrument_name: str
    timestamp: int
    best_bid_price: float | None = None
    best_bid_amount: float | None = None
    best_ask_price: float | None = None
    best_ask_amount: float | None = None


class IndexPrice(Message, frozen=True, kw_only=True, gc=False):
    """``deribit_price_index.{index_name}``, e.g. ``btc_usd``."""

    index_name: str
    price: float
    timestamp: int


class InstrumentState(Message, frozen=True, kw_only=True):
    """``instrument.state.{kind}.{currency}``: an instrument's lifecycle changed.

    ``state`` is one of Deribit's ``created``, ``started``, ``settled``, ``closed``,
    ``deactivated``, ``terminated``; ``created``/``started`` mean a new listing,
    ``settled``/``terminated`` that it expired."""

    instrument_name: str
    state: str
    timestamp: int


class Trade(Message, frozen=True, kw_only=True, gc=False):
    """One public trade (``trades.{instrument}.{interval}``; the data is a list of these).

    ``direction`` is the taker's side; ``iv`` is present for options only."""

    trade_id: str
    trade_seq: int
    instrument_name: str
    timestamp: int
    price: float
    amount: float
    direction: Literal["buy", "sell"]
    tick_direction: int
    index_price: float
    mark_price: float | None = None  # absent on old trades
    iv: float | None = None
    contracts: float | None = None
    liquidation: str | None = None
    block_trade_id: str | None = None
    combo_id: str | None = None


class TickSizeStep(msgspec.Struct, frozen=True, kw_only=True):
    """Above ``above_price`` the instrument's tick size is ``tick_size``."""

    above_price: float
    tick_size: float


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of ``public/get_instruments``.

    Expiry and creation are milliseconds since the epoch (perpetuals carry a far-future
    expiry). ``strike`` and ``option_type`` are set for options only; ``max_leverage`` and
    ``max_liquidation_commission`` for futures only."""

    instrument_name: str
    kind: str
    base_currency: str
    quote_currency: str
    settlement_period: str | None = None  # Deribit sends none for spot
    tick_size: float
    contract_size: float
    min_trade_amount: float
    expiration_timestamp: int
    creation_timestamp: int
    is_active: bool = True
    maker_commission: float = 0.0
    taker_commission: float = 0.0
    block_trade_commission: float | None = None
    strike: float | None = None
    option_type: OptionType | None = None
    settlement_currency: str | None = None
    counter_currency: str | None = None
    price_index: str | None = None
    instrument_id: int | None = None
    instrument_type: str | None = None
    future_type: str | None = None
    max_leverage: int | None = None
    max_liquidation_commission: float | None = None
    tick_size_steps: tuple[TickSizeStep, ...] = ()


class InstrumentsLoaded(Message, frozen=True, kw_only=True):
    """The Connection loaded the live instrument list of one currency (after connect and on
    each daily rollover). ``instruments`` is the complete list: anything not in it is gone.
    ``at`` is when it was received (unix seconds)."""

    currency: str
    instruments: tuple[Instrument, ...]
    at: float = 0.0


class DataFault(StrEnum):
    """What is wrong with a piece of market data that nothing may be computed from
    (``desk.plausibility`` finds them)."""

    NOT_FINITE = "not_finite"  # NaN or infinite
    NOT_POSITIVE = "not_positive"  # a price that must be above zero is not
    CROSSED = "crossed"  # bid above ask
    LOCKED = "locked"  # bid equal to ask: no exchange leaves such a book
    OFF_INDEX = "off_index"  # a price too far from the index
    MARK_OUTSIDE_BOOK = "mark_outside_book"  # the mark too far outside the bid-ask
    DELTA_OUT_OF_RANGE = "delta_out_of_range"  # a call's delta outside [0, 1], a put's outside [-1, 0]
    GREEK_OUT_OF_RANGE = "greek_out_of_range"  # negative or absurd gamma or vega
    IV_OUT_OF_RANGE = "iv_out_of_range"  # an implied volatility at or below 0 or absurdly high
    FROM_THE_FUTURE = "from_the_future"  # stamped further ahead of our clock than allowed


class VolatilityIndex(Message, frozen=True, kw_only=True):
    """``deribit_volatility_index.{index_name}``: Deribit's DVOL (30-day implied volatility index,
    in vol points) of ``index_name`` (``btc_usd``, ``eth_usd``)."""

    index_name: str
    volatility: float
    timestamp: int


class OptionMark(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One option of ``markprice.options.{index_name}``: its mark price (in the coin for inverse
    options) and mark implied volatility (a fraction: 0.9 is 90%)."""

    instrument_name: str
    mark_price: float
    iv: float
    timestamp: int


class OptionMarks(Message, frozen=True, kw_only=True):
    """``markprice.options.{index_name}``: the marks and mark IVs of every option on one index in
    one notification (the channel names the index; the data is a list of :class:`OptionMark`)."""

    index_name: str
    marks: tuple[OptionMark, ...]


class PlatformState(Message, frozen=True, kw_only=True):
    """``platform_state``: Deribit locked or unlocked trading on an index (``price_index`` like
    ``sol_usdc``, ``btc_usd``), or (``platform_state.public_methods_state``) allowed or refused
    unauthenticated requests. A field Deribit did not send is ``None``."""

    price_index: str | None = None
    locked: bool | None = None
    allow_unauthenticated_public_requests: bool | None = None
