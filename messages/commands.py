"""Commands to the Connection, and its answers.

Order commands carry ``origin`` (who asked: ``"console"``, ``"hedger"``, ...) and
``request_key``, a correlation key unique per sender; the Connection answers every one of
them with exactly one :class:`CommandResult` or :class:`CommandFailed` carrying both back.
Messages are plain data; :func:`check_command` says what is wrong with an exchange command
(an order without a price, a stop without a trigger, ...). The encoder refuses such a command
before anything reaches the exchange, and a sender may call it first for an early, clear error.
"""

from __future__ import annotations

import math
from enum import StrEnum
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


class PlaceOrder(Message, frozen=True, kw_only=True):
    """Buy or sell (``private/buy`` / ``private/sell``).

    ``amount``: USD for futures and perpetuals, coins for options. ``price`` is required for
    ``limit`` and ``stop_limit`` and must be absent for market types; ``trigger`` and
    ``trigger_price`` are required exactly for ``stop_*`` types (see :func:`check_command`).
    ``post_only`` only applies to limit orders. ``label`` is Deribit's free text (at most 64
    characters) and comes back on every order update and fill."""

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


class CancelOrder(Message, frozen=True, kw_only=True):
    """Cancel one order (``private/cancel``)."""

    order_id: str
    origin: str
    request_key: str


class CancelAll(Message, frozen=True, kw_only=True):
    """Cancel every open order: of one instrument (``private/cancel_all_by_instrument``), of
    one currency optionally narrowed to a kind (``private/cancel_all_by_currency``), or of the
    whole account (``private/cancel_all``) when neither is given."""

    origin: str
    request_key: str
    currency: str | None = None
    kind: Literal["future", "option", "spot", "future_combo", "option_combo", "combo", "any"] | None = None
    instrument_name: str | None = None


class CancelByLabel(Message, frozen=True, kw_only=True):
    """Cancel every open order carrying ``label`` (``private/cancel_by_label``), optionally
    only in one currency."""

    label: str
    origin: str
    request_key: str
    currency: str | None = None


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


# Codes of CommandFailed when the Connection refused a command locally (never sent).
NOT_CONNECTED = -1  # link down or not logged in
ANSWER_LOST = -2  # sent, but the answer was lost (link dropped, timeout): state unknown until reconciled
TRADING_DISABLED = -3  # mainnet without --live
QUEUED_TOO_LONG = -4  # an order or edit waited in the local rate limiter too long to still be justified
INVALID = -5  # the command itself is wrong (check_command)
PAPER_ONLY = -6  # paper mode: logged, not sent
REPLAY_ONLY = -7  # a replay sends nothing
PLATFORM_LOCKED = -8  # Deribit locked trading on the instrument's index (platform_state, public/status)


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


class AuditOutcome(StrEnum):
    """What became of an order command, as the audit trail records it."""

    PENDING = "pending"  # seen, not answered yet
    SENT = "sent"  # the exchange took it (an order resting, cancelled unfilled, a cancel done)
    FILLED = "filled"  # the order executed, in part or in full
    REJECTED = "rejected"  # the exchange refused it, or never had it
    REFUSED = "refused"  # the Connection refused it: never sent
    UNKNOWN = "unknown"  # sent, answer lost: resolved later from the exchange's order state


class OrderResolved(Message, frozen=True, kw_only=True):
    """What the exchange says became of a command whose answer was lost (``ANSWER_LOST``),
    asked once the link is back. ``order`` is the exchange's order when it has one; ``outcome``
    is never UNKNOWN or PENDING; ``message`` says how it was found out."""

    request_key: str
    origin: str
    method: str
    outcome: AuditOutcome
    message: str
    order: OrderUpdate | None = None


#: Commands that are sent to the exchange and answered with CommandResult/CommandFailed.
ExchangeCommand = PlaceOrder | EditOrder | CancelOrder | CancelAll | CancelByLabel


class InvalidCommand(ValueError):
    """An exchange command that must not be sent; the text says why."""


def _positive_problem(name: str, value: float) -> str | None:
    if not (math.isfinite(value) and value > 0):
        return f"{name} must be a positive finite number, got {value!r}"
    return None


def _order_problems(command: PlaceOrder) -> list[str | None]:
    problems: list[str | None] = [
        None if command.instrument_name else "instrument_name is empty",
        _positive_problem("amount", command.amount),
    ]
    if command.type in PRICED_ORDER_TYPES:
        problems.append(
            f"a {command.type} order needs a price"
            if command.price is None
            else _positive_problem("price", command.price)
        )
    elif command.price is not None:
        problems.append(f"a {command.type} order takes no price, got {command.price!r}")
    if command.type in TRIGGER_ORDER_TYPES:
        if command.trigger_price is None or command.trigger is None:
            problems.append(f"a {command.type} order needs trigger and trigger_price")
        else:
            problems.append(_positive_problem("trigger_price", command.trigger_price))
    elif command.trigger_price is not None or command.trigger is not None:
        problems.append(f"a {command.type} order takes no trigger")
    if command.post_only and command.type != "limit":
        problems.append("post_only applies to limit orders only")
    if command.post_only and command.time_in_force in ("fill_or_kill", "immediate_or_cancel"):
        problems.append(f"post_only contradicts time_in_force {command.time_in_force}")
    if len(command.label) > 64:
        problems.append("label is longer than Deribit's 64 characters")
    return problems


def _command_problems(command: ExchangeCommand) -> list[str | None]:
    problems: list[str | None] = [
        None if command.request_key else "request_key must be a non-empty correlation key",
        None if command.origin else "origin must name the sender",
    ]
    match command:
        case PlaceOrder():
            problems += _order_problems(command)
        case EditOrder():
            problems.append(None if command.order_id else "order_id is empty")
            problems.append(_positive_problem("amount", command.amount))
            if command.price is not None:
                problems.append(_positive_problem("price", command.price))
            if command.trigger_price is not None:
                problems.append(_positive_problem("trigger_price", command.trigger_price))
        case CancelOrder():
            problems.append(None if command.order_id else "order_id is empty")
        case CancelAll():
            if command.instrument_name is not None and (command.currency or command.kind):
                problems.append("cancel by instrument_name or by currency/kind, not both")
            if command.kind is not None and command.currency is None:
                problems.append("kind narrows a currency: give the currency too")
        case CancelByLabel():
            problems.append(None if command.label else "label is empty: it would select no order")
    return problems


def check_command(command: ExchangeCommand) -> None:
    """Raise :class:`InvalidCommand` listing everything wrong with ``command`` (``TypeError``
    for a message that is not an exchange command)."""
    if not isinstance(command, PlaceOrder | EditOrder | CancelOrder | CancelAll | CancelByLabel):
        raise TypeError(f"{type(command).__name__} is not an exchange command")
    problems = [problem for problem in _command_problems(command) if problem]
    if problems:
        raise InvalidCommand(f"{type(command).__name__}: " + "; ".join(problems))
