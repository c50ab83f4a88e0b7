"""What became of an order command: the one set of rules the audit trail and the resolution of
lost answers share.

- :func:`answer_outcome`: an answer's outcome. A negative code is the Connection's own, and
  means never sent, except ``ANSWER_LOST`` (sent, answer lost): that is UNKNOWN until resolved.
- :func:`resolution_request`: how to ask Deribit about a command whose answer was lost: an edit
  or cancel by its order id (``private/get_order_state``), a placement by its label
  (``private/get_order_state_by_label``, which lists open and closed orders of that label).
  A placement without a label, or a mass cancel, cannot be told apart on the exchange: None.
- :func:`resolve`: the exchange's answer to that request turned into an :class:`OrderResolved`
  (None: the answer says nothing yet; ask again later).
"""

from __future__ import annotations

from deribit.codec import Request, RpcError, RpcResponse, decode_open_orders, decode_order_result
from deribit.constants import ORDER_NOT_FOUND
from deribit.instruments import currency_of, request_currency_of
from messages.account import OrderUpdate
from messages.commands import (
    ANSWER_LOST,
    AuditOutcome,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    ExchangeCommand,
    OrderResolved,
    PlaceOrder,
)

#: Methods whose outcome follows the order they act on (filled once it executed).
ORDER_PLACING_METHODS = frozenset({"private/buy", "private/sell", "private/edit"})


def order_outcome(order: OrderUpdate) -> AuditOutcome:
    """A placed (or edited) order's outcome from its state: filled once anything executed."""
    if order.filled_amount > 0:
        return AuditOutcome.FILLED
    return AuditOutcome.REJECTED if order.order_state == "rejected" else AuditOutcome.SENT


def answer_outcome(answer: CommandResult | CommandFailed) -> AuditOutcome:
    if isinstance(answer, CommandResult):
        if answer.order is not None and answer.method in ORDER_PLACING_METHODS:
            return order_outcome(answer.order)
        return AuditOutcome.SENT
    if answer.code == ANSWER_LOST:
        return AuditOutcome.UNKNOWN
    return AuditOutcome.REFUSED if answer.code < 0 else AuditOutcome.REJECTED


def resolution_request(command: ExchangeCommand) -> Request | None:
    match command:
        case PlaceOrder(label=label) if label:
            currency = request_currency_of(currency_of(command.instrument_name))
            return "private/get_order_state_by_label", {"currency": currency, "label": label}
        case EditOrder(order_id=order_id) | CancelOrder(order_id=order_id):
            return "private/get_order_state", {"order_id": order_id}
    return None


def _resolved(command: ExchangeCommand, method: str, outcome: AuditOutcome, message: str,
              order: OrderUpdate | None = None) -> OrderResolved:
    return OrderResolved(request_key=command.request_key, origin=command.origin, method=method, outcome=outcome,
                         message=message, order=order)


def resolve(command: ExchangeCommand, method: str, answer: RpcResponse | RpcError) -> OrderResolved | None:
    """``method``: the lost command's own method (private/buy, ...). Raises ``msgspec`` errors for
    an answer of the wrong shape (the caller asks again)."""
    if isinstance(answer, RpcError):
        if answer.code == ORDER_NOT_FOUND and isinstance(command, EditOrder | CancelOrder):
            return _resolved(command, method, AuditOutcome.REJECTED,
                             f"the exchange has no order {command.order_id}: the command had no effect")
        return None
    if isinstance(command, PlaceOrder):
        orders, _defects = decode_open_orders(answer.result)
        ours = [o for o in orders if o.label == command.label and o.instrument_name == command.instrument_name]
        if not ours:
            return _resolved(command, method, AuditOutcome.REJECTED,
                             f"the exchange has no order labelled {command.label!r}: it was not placed")
        order = max(ours, key=lambda o: (o.creation_timestamp, o.filled_amount))
        return _resolved(command, method, order_outcome(order),
                         f"order {order.order_id} is {order.order_state}, {order.filled_amount:g} filled", order)
    order, _trades = decode_order_result(answer.result)
    if isinstance(command, CancelOrder):
        if order.order_state == "cancelled":
            return _resolved(command, method, AuditOutcome.SENT, f"order {order.order_id} is cancelled", order)
        return _resolved(command, method, AuditOutcome.REJECTED,
                         f"order {order.order_id} is {order.order_state}: the cancel did not take effect", order)
    if isinstance(command, EditOrder):
        applied = order.amount == command.amount and (command.price is None or order.price == command.price)
        if applied:
            return _resolved(command, method, order_outcome(order),
                             f"order {order.order_id} carries the edit ({order.order_state})", order)
        return _resolved(command, method, AuditOutcome.REJECTED,
                         f"order {order.order_id} does not carry the edit ({order.order_state})", order)
    return None

