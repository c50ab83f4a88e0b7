"""The audit's outcomes: every answer to its outcome, a lost answer (-2) unknown until the exchange's
order state resolves it, and texts a database refuses stored escaped and read back exactly."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import messages.commands as commands
from deribit.codec import RpcError, RpcResponse
from deribit.constants import ORDER_NOT_FOUND
from deribit.order_outcome import answer_outcome, resolution_request, resolve
from messages.account import OrderUpdate
from messages.commands import (
    ANSWER_LOST,
    AuditOutcome,
    CancelAll,
    CancelByLabel,
    CancelOrder,
    CommandFailed,
    CommandResult,
    EditOrder,
    PlaceOrder,
)
from sql.recording import FillsSeen
from sql.writers import audit_answer, escape_text, unescape_text

#: Every local refusal code messages.commands defines (the negative module constants).
LOCAL_CODES = {name: value for name, value in vars(commands).items()
               if name.isupper() and isinstance(value, int) and value < 0}


def exchange_order(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"order_id": "9001", "instrument_name": "BTC-PERPETUAL", "order_state": "open",
                              "order_type": "limit", "direction": "sell", "amount": 10.0, "price": 30000.0,
                              "filled_amount": 0.0, "label": "hedge-1", "creation_timestamp": 1}
    values.update(fields)
    return values


def order(key: str, **fields: Any) -> PlaceOrder:
    values: dict[str, Any] = {"instrument_name": "BTC-PERPETUAL", "side": "sell", "amount": 10.0, "type": "market",
                              "origin": "test", "request_key": key}
    values.update(fields)
    return PlaceOrder(**values)


def result(method: str, order_fields: dict[str, Any] | None) -> CommandResult:
    update = msgspec.convert(order_fields, OrderUpdate) if order_fields is not None else None
    return CommandResult(request_key="k", origin="hedger", method=method, result="{}", order=update)


def failed(code: int) -> CommandFailed:
    return CommandFailed(request_key="k", origin="hedger", method="private/sell", code=code, message="m")


# -- answers ------------------------------------------------------------------------------------------------
def test_the_local_codes_are_known() -> None:
    assert len(LOCAL_CODES) >= 8 and LOCAL_CODES["ANSWER_LOST"] == ANSWER_LOST


@pytest.mark.parametrize("name", sorted(LOCAL_CODES))
def test_each_local_code_is_refused_but_a_lost_answer_is_unknown(name: str) -> None:
    code = LOCAL_CODES[name]
    expected = AuditOutcome.UNKNOWN if code == ANSWER_LOST else AuditOutcome.REFUSED
    assert answer_outcome(failed(code)) is expected
    assert audit_answer(failed(code), 1.0).outcome is expected


@given(st.integers(min_value=0, max_value=2**31))
def test_every_exchange_error_is_rejected(code: int) -> None:
    assert answer_outcome(failed(code)) is AuditOutcome.REJECTED


@pytest.mark.parametrize(("method", "order_fields", "expected"), [
    ("private/sell", exchange_order(), AuditOutcome.SENT),
    ("private/sell", exchange_order(order_state="filled", filled_amount=10.0), AuditOutcome.FILLED),
    ("private/buy", exchange_order(order_state="open", filled_amount=3.0), AuditOutcome.FILLED),  # in part
    ("private/buy", exchange_order(order_state="cancelled", filled_amount=3.0), AuditOutcome.FILLED),
    ("private/buy", exchange_order(order_state="rejected"), AuditOutcome.REJECTED),
    ("private/edit", exchange_order(filled_amount=1.0), AuditOutcome.FILLED),
    ("private/cancel", exchange_order(order_state="cancelled", filled_amount=3.0), AuditOutcome.SENT),
    ("private/buy", None, AuditOutcome.SENT),  # an answer the codec could not read: taken all the same
    ("private/cancel_all", None, AuditOutcome.SENT),
])
def test_each_result_to_its_outcome(method: str, order_fields: dict[str, Any] | None,
                                    expected: AuditOutcome) -> None:
    answer = result(method, order_fields)
    assert answer_outcome(answer) is expected
    event = audit_answer(answer, 1.0)
    assert event.outcome is expected
    assert event.order_id == (order_fields["order_id"] if order_fields else None)


# -- resolving a lost answer --------------------------------------------------------------------------------
def response(value: Any) -> RpcResponse:
    return RpcResponse(id=1, result=msgspec.Raw(msgspec.json.encode(value)))


def test_what_is_asked_about_a_lost_command() -> None:
    place = order("o-1", label="hedge-7", instrument_name="ETH-PERPETUAL")
    assert resolution_request(place) == ("private/get_order_state_by_label", {"currency": "ETH", "label": "hedge-7"})
    linear = order("o-2", label="x", instrument_name="SOL_USDC-PERPETUAL")
    assert resolution_request(linear) == ("private/get_order_state_by_label", {"currency": "USDC", "label": "x"})
    cancel = CancelOrder(order_id="42", origin="c", request_key="k")
    assert resolution_request(cancel) == ("private/get_order_state", {"order_id": "42"})
    edit = EditOrder(order_id="43", amount=1.0, origin="c", request_key="k")
    assert resolution_request(edit) == ("private/get_order_state", {"order_id": "43"})
    # Nothing on the exchange tells these apart from others: they stay unknown.
    assert resolution_request(order("o-3")) is None
    assert resolution_request(CancelAll(origin="c", request_key="k")) is None
    assert resolution_request(CancelByLabel(label="x", origin="c", request_key="k")) is None


def test_a_placement_is_resolved_from_the_orders_of_its_label() -> None:
    place = order("o-1", label="hedge-1")
    filled = exchange_order(order_state="filled", filled_amount=10.0, creation_timestamp=5)
    other = exchange_order(order_id="1", label="hedge-10", filled_amount=0.0)
    elsewhere = exchange_order(order_id="2", instrument_name="BTC-29MAR24", filled_amount=0.0, creation_timestamp=9)
    resolved = resolve(place, "private/sell", response([other, filled, elsewhere]))
    assert resolved is not None and resolved.outcome is AuditOutcome.FILLED
    assert resolved.order is not None and resolved.order.order_id == "9001" and resolved.method == "private/sell"
    resting = resolve(place, "private/sell", response([exchange_order()]))
    assert resting is not None and resting.outcome is AuditOutcome.SENT
    # The exchange has no order of that label: the order never reached the book.
    missing = resolve(place, "private/sell", response([other]))
    assert missing is not None and missing.outcome is AuditOutcome.REJECTED and missing.order is None
    assert "not placed" in missing.message


def test_a_cancel_or_edit_is_resolved_from_its_orders_state() -> None:
    cancel = CancelOrder(order_id="9001", origin="hedger", request_key="k")
    done = resolve(cancel, "private/cancel", response(exchange_order(order_state="cancelled")))
    assert done is not None and done.outcome is AuditOutcome.SENT
    late = resolve(cancel, "private/cancel", response(exchange_order(order_state="filled", filled_amount=10.0)))
    assert late is not None and late.outcome is AuditOutcome.REJECTED
    gone = resolve(cancel, "private/cancel", RpcError(id=1, code=ORDER_NOT_FOUND, message="order_not_found"))
    assert gone is not None and gone.outcome is AuditOutcome.REJECTED
    # Any other error says nothing: asked again later.
    assert resolve(cancel, "private/cancel", RpcError(id=1, code=10028, message="too_many_requests")) is None
    edit = EditOrder(order_id="9001", amount=20.0, price=31000.0, origin="hedger", request_key="e")
    carried = resolve(edit, "private/edit", response(exchange_order(amount=20.0, price=31000.0)))
    assert carried is not None and carried.outcome is AuditOutcome.SENT
    missed = resolve(edit, "private/edit", response(exchange_order(amount=10.0, price=31000.0)))
    assert missed is not None and missed.outcome is AuditOutcome.REJECTED


# -- fills of resting orders ------------------------------------------------------------------------------
def test_only_a_growing_fill_is_news() -> None:
    seen = FillsSeen(keep=2)
    update = msgspec.convert(exchange_order(filled_amount=0.0), OrderUpdate)
    assert not seen.grew(update)
    assert seen.grew(msgspec.structs.replace(update, filled_amount=3.0))
    assert not seen.grew(msgspec.structs.replace(update, filled_amount=3.0))
    assert seen.grew(msgspec.structs.replace(update, filled_amount=10.0))
    assert not seen.grew(msgspec.structs.replace(update, filled_amount=float("nan")))


# -- texts ----------------------------------------------------------------------------------------------------
NASTY = st.sampled_from(["\x00", "\\", "\ud800", "\udfff", "x00", "u0041", "\\x00", "é", "\n"])


@given(st.lists(st.one_of(st.characters(), NASTY)).map("".join))
def test_any_text_is_stored_escaped_and_read_back_exactly(text: str) -> None:
    stored = escape_text(text)
    assert stored is not None
    assert "\x00" not in stored and not any(0xD800 <= ord(c) <= 0xDFFF for c in stored)
    stored.encode("utf-8")  # every driver can send it
    assert unescape_text(stored) == text


def test_plain_text_is_stored_as_it_is() -> None:
    assert escape_text("not_enough_funds: amount 10") == "not_enough_funds: amount 10"
    assert escape_text(None) is None and unescape_text(None) is None
    assert escape_text("bad\x00char") == "bad\\x00char"


#: The documented answer of ``private/get_order_state_by_label`` (Deribit API 2.1.1, as published at
#: docs.cdp.coinbase.com/api-reference/trading/private-get_order_state_by_label; request
#: ``{"currency": "ETH", "label": "fooBar"}``).
DOCS_ORDER_STATE_BY_LABEL = b"""{"jsonrpc": "2.0", "id": 4316, "result": [{"amount": 37, "api": false,
 "average_price": 118.94, "creation_timestamp": 1550219749176, "direction": "sell", "filled_amount": 37,
 "instrument_name": "ETH-PERPETUAL", "is_liquidation": false, "is_rebalance": false, "label": "fooBar",
 "last_update_timestamp": 1550219810944, "max_show": 37, "order_id": "ETH-331562", "order_state": "filled",
 "order_type": "limit", "post_only": false, "price": 118.94, "reduce_only": false,
 "time_in_force": "good_til_cancelled"}]}"""


def test_the_documented_answer_resolves_a_lost_placement() -> None:
    frame = msgspec.json.decode(DOCS_ORDER_STATE_BY_LABEL)
    place = order("o-1", label="fooBar", instrument_name="ETH-PERPETUAL", amount=37.0)
    assert resolution_request(place) == ("private/get_order_state_by_label", {"currency": "ETH", "label": "fooBar"})
    resolved = resolve(place, "private/sell", response(frame["result"]))
    assert resolved is not None and resolved.outcome is AuditOutcome.FILLED
    assert resolved.order is not None and (resolved.order.order_id, resolved.order.filled_amount) == ("ETH-331562",
                                                                                                       37.0)
