"""The safe shutdown's check of the account, pure: what a cancel-and-check found, and what the
program says about it.

After a fatal failure the program sends ``private/cancel_all`` (it covers the whole account)
and then asks ``private/get_open_orders_by_currency`` for each currency the desk trades, through
the Connection if it can, else through a last connection made for it (``deribit/last_link.py``).
:func:`report` turns what was found into the message the program exits with: it says exactly
what is still open, or that nothing is open on the currencies checked, or that the state is
UNKNOWN and where to look; it never says more than was checked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgspec

from config.settings import Settings
from deribit.codec import RpcError, RpcResponse, decode_cancelled, decode_open_orders
from deribit.constants import VENUE_WEB_UI
from messages.account import OrderUpdate


class Reach(enum.Enum):
    """What orders this program could have sent to the exchange."""

    ORDERS = "orders"  # logged in with credentials, trading allowed: cancel and check
    PAPER = "paper"  # --paper: orders printed, none sent
    REPLAY = "replay"  # a replay sends nothing
    READ_ONLY = "read_only"  # mainnet without --live: no order may be sent
    NO_CREDENTIALS = "no_credentials"  # no private method without a login


def reach_of(settings: Settings, *, replay: bool) -> Reach:
    if replay:
        return Reach.REPLAY
    if settings.paper:
        return Reach.PAPER
    if not settings.can_trade:
        return Reach.READ_ONLY
    if not (settings.deribit.client_id and settings.deribit.client_secret):
        return Reach.NO_CREDENTIALS
    return Reach.ORDERS


@dataclass(frozen=True)
class Findings:
    """What one cancel-and-check found. ``via`` says through what it went; ``cancelled`` is
    cancel_all's answer (how many it cancelled; None: no answer), ``cancel_error`` the
    exchange's error to it (or an unreadable answer); ``checked`` holds each answered currency's open orders after the
    cancel; ``failed`` says why the rest could not be done."""

    via: str
    currencies: tuple[str, ...]
    cancel_sent: bool = False
    cancelled: int | None = None
    cancel_error: str = ""
    checked: tuple[tuple[str, tuple[OrderUpdate, ...]], ...] = ()
    failed: str = ""

    @property
    def unchecked(self) -> tuple[str, ...]:
        answered = {currency for currency, _ in self.checked}
        return tuple(c for c in self.currencies if c not in answered)

    @property
    def still_open(self) -> tuple[OrderUpdate, ...]:
        return tuple(order for _, orders in self.checked for order in orders)


def settled(found: Findings | None) -> bool:
    """Every currency checked after the cancel, and nothing open: no further try is needed."""
    return found is not None and not found.unchecked and not found.still_open


@dataclass
class CheckUnderWay:
    """A cancel-and-check in progress (the Connection's session, or the last link): filled in as
    the answers come, :attr:`done` once every currency answered or something failed."""

    via: str
    currencies: tuple[str, ...]
    cancel_sent: bool = False
    cancelled: int | None = None
    cancel_error: str = ""
    checked: dict[str, tuple[OrderUpdate, ...]] = field(default_factory=dict)
    failed: str = ""

    @property
    def done(self) -> bool:
        return bool(self.failed) or all(c in self.checked for c in self.currencies)

    def fail(self, why: str) -> None:
        """The rest cannot be done (the first reason is kept)."""
        if not self.failed:
            self.failed = why

    def take_cancel(self, answer: RpcResponse | RpcError) -> None:
        """cancel_all's answer: how many it cancelled, or why it did not (the check goes on)."""
        if isinstance(answer, RpcError):
            self.cancel_error = f"{answer.message} (code {answer.code})"
            return
        try:
            self.cancelled = decode_cancelled(answer.result)
        except msgspec.MsgspecError:
            self.cancel_error = f"an unreadable answer ({answer.result_text[:100]})"

    def take_open_orders(self, currency: str, method: str, answer: RpcResponse | RpcError) -> bool:
        """One currency's open orders after the cancel; False when the answer says nothing (failed)."""
        if isinstance(answer, RpcError):
            self.fail(f"{method} {currency}: {answer.message} (code {answer.code})")
            return False
        try:
            orders, defects = decode_open_orders(answer.result)
        except msgspec.MsgspecError as exc:
            self.fail(f"{method} {currency}: an unreadable answer ({exc})")
            return False
        if defects:  # an order it could not read may be open: the check cannot say none is
            self.fail(f"{method} {currency}: an unreadable order ({defects[0]})")
            return False
        self.checked[currency] = orders
        return True

    def findings(self) -> Findings:
        return Findings(via=self.via, currencies=self.currencies, cancel_sent=self.cancel_sent,
                        cancelled=self.cancelled, cancel_error=self.cancel_error,
                        checked=tuple((c, self.checked[c]) for c in self.currencies if c in self.checked),
                        failed=self.failed)


def last_link_via(connection: Findings | None, *, running: bool, waited_s: float) -> str:
    """How the report names a last connection: made for what the Connection could not do."""
    if not running:
        why = "the Connection is not running"
    elif connection is None:
        why = f"the Connection did not finish within {waited_s:g} s"
    elif connection.failed:
        why = f"the Connection could not: {connection.failed}"
    elif connection.still_open:
        why = "orders were still open after the Connection's cancel_all"
    else:
        why = "the Connection's check was incomplete"
    return f"a last connection made for it ({why})"


def describe_order(order: OrderUpdate) -> str:
    """One open order as the report lists it: instrument, side, amount, price, label, order id."""
    price = f"at {_number(order.price)}" if isinstance(order.price, int | float) else "at market"
    parts = [f"{order.instrument_name} {order.direction} {_number(order.amount)} {price}"]
    if order.filled_amount:
        parts.append(f"filled {_number(order.filled_amount)}")
    if order.trigger is not None and order.trigger_price is not None:
        parts.append(f"{order.order_state}, {order.trigger} trigger at {_number(order.trigger_price)}")
    parts.append(f"label {order.label!r}" if order.label else "no label")
    parts.append(f"order id {order.order_id}")
    return ", ".join(parts)


def report(reach: Reach, found: Findings | None, *, venue: str) -> str:
    """What the program says about the account's open orders after a safe shutdown (see the module)."""
    match reach:
        case Reach.REPLAY:
            return "Open orders: a replay sends nothing to an exchange; nothing was cancelled or checked."
        case Reach.PAPER:
            return ("Open orders: paper mode sent no order to the exchange (orders were printed, not sent); "
                    "nothing was cancelled or checked.")
        case Reach.READ_ONLY:
            return ("Open orders: on mainnet without --live this program could send no order; "
                    "nothing was cancelled or checked.")
        case Reach.NO_CREDENTIALS:
            return ("Open orders: no credentials are configured, so this program could place no order "
                    "(private methods need a login); nothing was cancelled or checked.")
    where = _where_to_check(venue)
    if found is None:
        return (f"Open orders: UNKNOWN. Nothing could cancel or check them; check the open orders in {where} "
                "now.")
    lines = [f"Open orders: {_cancel_outcome(found)}"]
    open_orders = found.still_open
    answered = [currency for currency, _ in found.checked]
    if open_orders:
        lines.append(f"STILL OPEN after it on {', '.join(answered)} ({len(open_orders)}):")
        lines.extend(f"  - {describe_order(order)}" for order in open_orders)
        lines.append(f"Cancel them in {where} now.")
    elif answered:
        scope = "the currencies this desk trades" if not found.unchecked else "the currencies that answered"
        lines.append(f"Verified: no open orders on {', '.join(answered)} (checked after the cancel: {scope}; "
                     "cancel_all covers the whole account, other currencies were not checked).")
    if found.unchecked:
        why = found.failed or "no answer"
        lines.append(f"The state of open orders on {', '.join(found.unchecked)} is UNKNOWN ({why}); "
                     f"check them in {where} now.")
    return "\n".join(lines)


def _cancel_outcome(found: Findings) -> str:
    if not found.cancel_sent:
        return f"cancel_all could not be sent through {found.via}: {found.failed or 'not sent'}."
    if found.cancel_error:
        return f"cancel_all through {found.via} failed: {found.cancel_error}."
    if found.cancelled is None:
        return f"cancel_all was sent through {found.via} but not answered."
    return (f"cancel_all (every order of the account) went through {found.via}; the exchange answered that it "
            f"cancelled {found.cancelled}.")


def _where_to_check(venue: str) -> str:
    url = VENUE_WEB_UI.get(venue)
    if url is None:
        return "the exchange (the simulator has no web UI: ask it with private/get_open_orders_by_currency)"
    return f"the exchange's web UI ({url})"


def _number(value: float) -> str:
    return f"{value:.10g}"
