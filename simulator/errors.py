"""Deribit's JSON-RPC error codes that the simulator answers with (API v2 error list)."""

from __future__ import annotations

from typing import Any

AUTHORIZATION_REQUIRED = 10000
QTY_TOO_LOW = 10002
ORDER_NOT_FOUND = 10004
PRICE_TOO_LOW = 10005
PRICE_TOO_HIGH = 10007
NOT_ENOUGH_FUNDS = 10009
ALREADY_CLOSED = 10010
LOCKED_BY_ADMIN = 10019  # trading locked (a platform lock of the instrument's price index)
INVALID_AMOUNT = 10021
TOO_MANY_REQUESTS = 10028
NOT_OWNER_OF_ORDER = 10029
INVALID_ARGUMENTS = 11029
NOT_OPEN_ORDER = 11044
BAD_REQUEST = 11050
POST_ONLY_REJECT = 11054
INVALID_CREDENTIALS = 13004
UNAUTHORIZED = 13009
NOT_FOUND = 13020
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
PARSE_ERROR = -32700

MESSAGES: dict[int, str] = {
    AUTHORIZATION_REQUIRED: "authorization_required",
    QTY_TOO_LOW: "qty_too_low",
    ORDER_NOT_FOUND: "order_not_found",
    PRICE_TOO_LOW: "price_too_low",
    PRICE_TOO_HIGH: "price_too_high",
    NOT_ENOUGH_FUNDS: "not_enough_funds",
    ALREADY_CLOSED: "already_closed",
    LOCKED_BY_ADMIN: "locked_by_admin",
    INVALID_AMOUNT: "invalid_amount",
    TOO_MANY_REQUESTS: "too_many_requests",
    NOT_OWNER_OF_ORDER: "not_owner_of_order",
    INVALID_ARGUMENTS: "invalid_arguments",
    NOT_OPEN_ORDER: "not_open_order",
    BAD_REQUEST: "bad_request",
    POST_ONLY_REJECT: "post_only_reject",
    INVALID_CREDENTIALS: "invalid_credentials",
    UNAUTHORIZED: "unauthorized",
    NOT_FOUND: "not_found",
    INVALID_PARAMS: "Invalid params",
    METHOD_NOT_FOUND: "Method not found",
    PARSE_ERROR: "Parse error",
}


class RpcError(Exception):
    """A request that Deribit would refuse: carries the JSON-RPC ``error`` object."""

    def __init__(self, code: int, data: dict[str, Any] | None = None, message: str | None = None) -> None:
        self.code = code
        self.message = message or MESSAGES.get(code, "error")
        self.data = data
        super().__init__(f"{self.code} {self.message} {data or ''}".strip())

    def to_json(self) -> dict[str, Any]:
        # Deribit sends "data" with every error, null when it has nothing to add.
        return {"message": self.message, "code": self.code, "data": self.data}


def invalid_params(param: str, reason: str) -> RpcError:
    """Deribit's answer to a parameter it cannot accept, e.g. a price off the tick grid."""
    return RpcError(INVALID_PARAMS, {"reason": reason, "param": param})
