"""Commands to the Connection, and its answers.

Order commands carry ``origin`` (who asked: ``"console"``, ``"hedger"``, ...) and
``request_key``, a correlation key unique per sender; the Connection answers every one of
them with exactly one :class:`CommandResult` or :class:`CommandFailed` carrying both back.
Order commands validate themselves on construction: an order that does not make sense raises
``ValueError`` here, before anything reaches the exchange.
"""

from __future__ import annotations

import math
from typing import Literal

from messages.account import OrderUpdate, UserTrade
from messages.base import Message

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market", "market_limit", "stop_market", "stop_limit"]
TimeInForce = Literal["good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel"]
Trigger = Literal["mark_price", "index_price", "last_price"]

#: Order types that rest until a trigger price is touched.
TRIGGER_ORDER_TYPES: frozenset[str] = frozenset({"stop_market", "stop_limit"})
#: Order types that need a limit price.
PRICED_ORDER_TYPES: frozenset[str] = frozenset({"limit", "stop_limit"})


def _require_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _require_key(request_key: str, origin: str) -> None:
    if not request_key:
        raise ValueError("request_key must be a non-empty correlation key")
    if not origin:
        raise ValueError("origin must name the sender")


class PlaceOrder(Message, frozen=True, kw_only=True):
    """Buy or sell (``private/buy`` / ``private/sell``).

    ``amount``: USD for futures and perpetuals, coins for options. ``price`` is required for
    ``limit`` and ``stop_limit`` and must be absent for market types; ``trigger`` and
    ``trigger_price`` are required exactly for ``stop_*`` types. ``post_only`` only applies to
    limit orders. ``label`` is Deribit's free text (at most 64 characters) and comes back on
    every order update and fill."""

    instrument_name: str
    side: Side
    amount: float
    origin: str
    request_key: str
    type: OrderType = "limit"
    price: float | None = None
    post_only: bool = False
    reduce_only: bool = False
    time_in_force: TimeInForce = "good_til_cancelled"
    trigger_price: float | None = None
    trigger: Trigger | None = None
    label: str = ""

    def __post_init__(self) -> None:
        _require_key(self.request_key, self.origin)
        if not self.instrument_name:
            raise ValueError("instrument_name is empty")
        _require_positive("amount", self.amount)
        if self.type in PRICED_ORDER_TYPES:
            if self.price is None:
                raise ValueError(f"a {self.type} order needs a price")
            _require_positive("price", self.price)
        elif self.price is not None:
            raise ValueError(f"a {self.type} order takes no price, got {self.price!r}")
        if self.type in TRIGGER_ORDER_TYPES:
            if self.trigger_price is None or self.trigger is None:
                raise ValueError(f"a {self.type} order needs trigger and trigger_price")
            _require_positive("trigger_price", self.trigger_price)
        elif self.trigger_price is not None or self.trigger is not None:
            raise ValueError(f"a {self.type} order takes no trigger")
        if self.post_only and self.type != "limit":
            raise ValueError("post_only applies to limit orders only")
        if self.post_only and self.time_in_force in ("fill_or_kill", "immediate_or_cancel"):
            raise ValueError(f"post_only contradicts time_in_force {self.time_in_force}")
        if len(self.label) > 64:
            raise ValueError("label is longer than Deribit's 64 characters")


class EditOrder(Message, frozen=True, kw_only=True):
    """Change an open order's amount and/or price (``private/edit``). ``amount`` is the new
    total amount, not a difference; Deribit requires it."""

    order_id: str
    amount: float
    origin: str
    request_key: str
    price: float | None = None
    post_only: bool = False
    reduce_only: bool = False
    trigger_price: float | None = None

    def __post_init__(self) -> None:
        _require_key(self.request_key, self.origin)
        if not self.order_id:
            raise ValueError("order_id is empty")
        _require_positive("amount", self.amount)
        if self.price is not None:
            _require_positive("price", self.price)
        if self.trigger_price is not None:
            _require_positive("trigger_price", self.trigger_price)


class CancelOrder(Message, frozen=True, kw_only=True):
    """Cancel one order (``private/cancel``)."""

    order_id: str
    origin: str
    request_key: str

    def __post_init__(self) -> None:
        _require_key(self.request_key, self.origin)
        if not self.order_id:
            raise ValueError("order_id is empty")


class CancelAll(Message, frozen=True, kw_only=True):
    """Cancel every open order: of one instrument (``private/cancel_all_by_instrument``), of
    one currency optionally narrowed to a kind (``private/cancel_all_by_currency``), or of the
    whole account (``private/cancel_all``) when neither is given."""

    origin: str
    request_key: str
    currency: str | None = None
    kind: Literal["future", "option", "spot", "future_combo", "option_combo", "combo", "any"] | None = None
    instrument_name: str | None = None

    def __post_init__(self) -> None:
        _require_key(self.request_key, self.origin)
        if self.instrument_name is not None and (self.currency is not None or self.kind is not None):
            raise ValueError("cancel by instrument_name or by currency/kind, not both")
        if self.kind is not None and self.currency is None:
            raise ValueError("kind narrows a currency: give the currency too")


class CancelByLabel(Message, frozen=True, kw_only=True):
    """Cancel every open order carrying ``label`` (``private/cancel_by_label``), optionally
    only in one currency."""

    label: str
    origin: str
    request_key: str
    currency: str | None = None

    def __post_init__(self) -> None:
        _require_key(self.request_key, self.origin)
        if not self.label:
            raise ValueError("label is empty: that would not select any order")


class ResubscribeInstrument(Message, frozen=True, kw_only=True):
    """Unsubscribe and subscribe again one instrument's book (a gap or crossed book was found),
    so that a fresh snapshot arrives. Handled by the Connection itself; no answer."""

    instrument_name: str
    origin: str = ""
    reason: str = ""


class RefreshInstruments(Message, frozen=True, kw_only=True):
    """Reload the instrument lists and bring subscriptions in line (daily rollover, or an
    ``instrument.state`` change). ``currencies`` empty means every configured currency."""

    origin: str = ""
    reason: str = ""
    currencies: tuple[str, ...] = ()


class ReconcilePortfolio(Message, frozen=True, kw_only=True):
    """Fetch open orders, positions and account summaries from the exchange and publish them,
    so the Portfolio can replace what it believes with what is true."""

    origin: str = ""
    reason: str = ""
    currencies: tuple[str, ...] = ()


class CommandResult(Message, frozen=True, kw_only=True):
    """The exchange accepted a command. ``result`` is the JSON text of Deribit's ``result``;
    for order methods (buy, sell, edit, cancel) the order and any immediate fills are also
    decoded into ``order`` and ``trades``."""

    request_key: str
    origin: str
    method: str
    result: str
    order: OrderUpdate | None = None
    trades: tuple[UserTrade, ...] = ()


class CommandFailed(Message, frozen=True, kw_only=True):
    """A command failed. ``code`` and ``message`` are Deribit's JSON-RPC error (``data`` its
    JSON text, often naming the offending parameter); a negative ``code`` means the Connection
    refused the command locally and did not send it (not connected, rate limited, ...)."""

    request_key: str
    origin: str
    method: str
    code: int
    message: str
    data: str = ""


#: Commands that are sent to the exchange and answered with CommandResult/CommandFailed.
ExchangeCommand = PlaceOrder | EditOrder | CancelOrder | CancelAll | CancelByLabel
