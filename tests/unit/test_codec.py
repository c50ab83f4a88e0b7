"""The frame codec: every frame of the real capture, Deribit's documented frames, bad frames,
request encoding and redaction."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from deribit import channels
from deribit.codec import (
    EXCERPT_CHARS,
    REDACTED,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Notification,
    RequestEncoder,
    RpcError,
    RpcResponse,
    TestRequest,
    UnknownChannel,
    answer_test_request,
    auth_client_credentials_request,
    auth_client_signature_request,
    auth_refresh_request,
    client_signature,
    command_failed,
    command_request,
    command_result,
    decode_account_summary,
    decode_auth_result,
    decode_entries,
    decode_open_orders,
    decode_order_result,
    decode_positions,
    decode_result,
    decode_settlement_history,
    decode_subscribed,
    excerpt,
    get_instruments_request,
    get_settlement_history_request,
    redact_frame,
    set_heartbeat_request,
    subscribe_request,
    unsubscribe_request,
)
from messages.account import (
    AccountLimits,
    AccountSummary,
    OrderUpdate,
    PortfolioUpdate,
    Position,
    RateLimit,
    UserChanges,
    UserTrade,
)
from messages.commands import (
    CancelAll,
    CancelByLabel,
    CancelOrder,
    EditOrder,
    InvalidCommand,
    PlaceOrder,
    RefreshInstruments,
)
from messages.market import (
    BookChange,
    BookSnapshot,
    IndexPrice,
    InstrumentState,
    OptionMarks,
    PlatformState,
    Quote,
    Ticker,
    Trade,
)
from tests.support.capture import inbound_frames


@pytest.fixture
def decoder() -> FrameDecoder:
    return FrameDecoder()


def assert_same(decoded: Any, raw: Any, path: str = "$", every_key_is_a_field: bool = True) -> None:
    """``decoded`` (structs, tuples, scalars) holds exactly what the JSON ``raw`` holds; fields
    that the JSON lacks keep their defaults."""
    if isinstance(raw, dict):
        assert isinstance(decoded, msgspec.Struct), f"{path}: {decoded!r} is not a struct"
        config = decoded.__struct_config__
        by_wire_name = dict(zip(decoded.__struct_encode_fields__, decoded.__struct_fields__, strict=True))
        for key, value in raw.items():
            if key == config.tag_field:
                assert value == config.tag, f"{path}.{key}"
                continue
            if key not in by_wire_name:
                assert not every_key_is_a_field, f"{path}.{key} is not a field of {type(decoded).__name__}"
                continue
            assert_same(getattr(decoded, by_wire_name[key]), value, f"{path}.{key}", every_key_is_a_field)
        for field in msgspec.structs.fields(decoded):
            if field.encode_name not in raw:
                assert field.required is False, f"{path}.{field.encode_name} is required but absent"
                assert getattr(decoded, field.name) == field.default, f"{path}.{field.name} not default"
    elif isinstance(raw, list):
        assert isinstance(decoded, tuple), f"{path}: {decoded!r} is not a tuple"
        assert len(decoded) == len(raw), path
        for index, (item, raw_item) in enumerate(zip(decoded, raw, strict=True)):
            assert_same(item, raw_item, f"{path}[{index}]", every_key_is_a_field)
    else:
        assert decoded == raw, f"{path}: {decoded!r} != {raw!r}"
        assert type(decoded) is type(raw) or {type(decoded), type(raw)} == {int, float}, path


# --- the real capture ------------------------------------------------------------------------


def test_every_inbound_frame_of_the_capture_decodes(decoder: FrameDecoder) -> None:
    frames = inbound_frames()
    assert len(frames) == 136
    kinds: Counter[str] = Counter()
    for frame in frames:
        decoded = decoder.decode(frame)
        if isinstance(decoded, Notification):
            assert len(decoded.messages) == 1
            kinds[type(decoded.messages[0]).__name__] += 1
        else:
            kinds[type(decoded).__name__] += 1
    assert kinds == {"RpcResponse": 1, "BookSnapshot": 10, "BookChange": 36, "Ticker": 89}


def test_bytes_decode_like_text(decoder: FrameDecoder) -> None:
    for frame in inbound_frames():
        assert decoder.decode(frame.encode()) == decoder.decode(frame)


@pytest.mark.parametrize(
    ("message_type", "expected_count"), [(BookSnapshot, 10), (BookChange, 36), (Ticker, 89)]
)
def test_capture_fields_equal_the_json(
    decoder: FrameDecoder, message_type: type, expected_count: int
) -> None:
    seen = 0
    for frame in inbound_frames():
        decoded = decoder.decode(frame)
        if not (isinstance(decoded, Notification) and type(decoded.messages[0]) is message_type):
            continue
        params = json.loads(frame)["params"]
        assert decoded.channel == params["channel"]
        assert_same(decoded.messages[0], params["data"])
        seen += 1
    assert seen == expected_count


def test_capture_subscribe_response(decoder: FrameDecoder) -> None:
    frame = inbound_frames()[0]
    decoded = decoder.decode(frame)
    raw = json.loads(frame)
    assert isinstance(decoded, RpcResponse)
    assert (decoded.id, decoded.us_in, decoded.us_out, decoded.us_diff, decoded.testnet) == (
        raw["id"],
        raw["usIn"],
        raw["usOut"],
        raw["usDiff"],
        raw["testnet"],
    )
    assert list(decode_subscribed(decoded.result)) == raw["result"]
    assert json.loads(decoded.result_text) == raw["result"]


def test_capture_books_chain_by_change_id(decoder: FrameDecoder) -> None:
    last_change: dict[str, int] = {}
    for frame in inbound_frames():
        decoded = decoder.decode(frame)
        if not isinstance(decoded, Notification):
            continue
        message = decoded.messages[0]
        if isinstance(message, BookSnapshot):
            last_change[message.instrument_name] = message.change_id
        elif isinstance(message, BookChange):
            assert last_change[message.instrument_name] == message.prev_change_id
            last_change[message.instrument_name] = message.change_id


# --- Deribit's documented frames -------------------------------------------------------------


def notification(channel: str, data: Any) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}
    )


ORDER = {
    "time_in_force": "good_til_cancelled",
    "replaced": False,
    "reduce_only": False,
    "price": 10502.52,
    "post_only": False,
    "original_order_type": "market",
    "order_type": "limit",
    "order_state": "open",
    "order_id": "5",
    "max_show": 200,
    "last_update_timestamp": 1581507423789,
    "label": "",
    "is_rebalance": False,
    "is_liquidation": False,
    "instrument_name": "BTC-PERPETUAL",
    "filled_amount": 0,
    "direction": "buy",
    "creation_timestamp": 1581507423789,
    "average_price": 0,
    "api": False,
    "amount": 200,
}
USER_TRADE = {
    "trade_seq": 30289432,
    "trade_id": "48079254",
    "timestamp": 1590484156350,
    "tick_direction": 0,
    "state": "filled",
    "reduce_only": False,
    "price": 8954,
    "post_only": False,
    "order_type": "market",
    "order_id": "4008965646",
    "matching_id": None,
    "mark_price": 8952.86,
    "liquidity": "T",
    "instrument_name": "BTC-PERPETUAL",
    "index_price": 8956.73,
    "fee_currency": "BTC",
    "fee": 0.00000168,
    "direction": "sell",
    "amount": 10,
}
PORTFOLIO = {
    "total_pl": 0.00000425,
    "session_upl": 0.00000425,
    "session_rpl": -2e-8,
    "projected_maintenance_margin": 0.00009141,
    "projected_initial_margin": 0.00012542,
    "projected_delta_total": 0.0043,
    "portfolio_margining_enabled": False,
    "options_vega": 0,
    "options_value": 0,
    "options_theta": 0,
    "options_session_upl": 0,
    "options_session_rpl": 0,
    "options_pl": 0,
    "options_gamma": 0,
    "options_delta": 0,
    "margin_balance": 0.2340038,
    "maintenance_margin": 0.00009141,
    "initial_margin": 0.00012542,
    "futures_session_upl": 0.00000425,
    "futures_session_rpl": -2e-8,
    "futures_pl": 0.00000425,
    "fee_balance": 0,
    "estimated_liquidation_ratio": 0.01822795,
    "equity": 0.2340038,
    "delta_total": 0.0043,
    "currency": "BTC",
    "balance": 0.23399957,
    "available_withdrawal_funds": 0.23387415,
    "available_funds": 0.23387838,
}
PERPETUAL_TICKER = {
    "timestamp": 1623060194301,
    "stats": {
        "volume_usd": 284061480,
        "volume": 7871.02139035,
        "price_change": 0.7229,
        "low": 35213.5,
        "high": 36824.5,
    },
    "state": "open",
    "settlement_price": 36169.49,
    "open_interest": 502097590,
    "min_price": 35898.37,
    "max_price": 36991.72,
    "mark_price": 36446.51,
    "last_price": 36457.5,
    "interest_value": 1.7362511643080387,
    "instrument_name": "BTC-PERPETUAL",
    "index_price": 36441.64,
    "funding_8h": 0.0000211,
    "estimated_delivery_price": 36441.64,
    "current_funding": 0,
    "best_bid_price": 36442.5,
    "best_bid_amount": 5000,
    "best_ask_price": 36443,
    "best_ask_amount": 100,
}
PUBLIC_TRADE = {
    "trade_seq": 1966031,
    "trade_id": "ETH-2696097",
    "timestamp": 1590484512188,
    "tick_direction": 2,
    "price": 0.0005,
    "mark_price": 0.00047,
    "iv": 119.5,
    "instrument_name": "BTC-24SEP21-8000-P",
    "index_price": 32200.1,
    "direction": "sell",
    "amount": 1.5,
}

DOCUMENTED = [
    pytest.param(
        "quote.BTC-PERPETUAL",
        {
            "timestamp": 1550658624149,
            "instrument_name": "BTC-PERPETUAL",
            "best_bid_price": 3914.97,
            "best_bid_amount": 40,
            "best_ask_price": 3996.61,
            "best_ask_amount": 50,
        },
        Quote,
        id="quote",
    ),
    pytest.param(
        "deribit_price_index.btc_usd",
        {"timestamp": 1550588002899, "price": 3937.89, "index_name": "btc_usd"},
        IndexPrice,
        id="index",
    ),
    pytest.param(
        "instrument.state.any.any",
        {"timestamp": 1553080940000, "state": "created", "instrument_name": "BTC-22MAR19"},
        InstrumentState,
        id="instrument-state",
    ),
    pytest.param("ticker.BTC-PERPETUAL.raw", PERPETUAL_TICKER, Ticker, id="perpetual-ticker"),
    pytest.param("trades.BTC-24SEP21-8000-P.raw", [PUBLIC_TRADE, PUBLIC_TRADE], Trade, id="trades"),
    pytest.param("user.orders.BTC-PERPETUAL.raw", ORDER, OrderUpdate, id="user-orders-single"),
    pytest.param(
        "user.orders.future.BTC.100ms",
        [
            ORDER,
            {
                **ORDER,
                "order_id": "6",
                "order_state": "filled",
                "filled_amount": 200,
                "average_price": 10502.5,
            },
        ],
        OrderUpdate,
        id="user-orders-list",
    ),
    pytest.param("user.trades.future.BTC.100ms", [USER_TRADE], UserTrade, id="user-trades"),
    pytest.param("user.portfolio.btc", PORTFOLIO, PortfolioUpdate, id="user-portfolio"),
]


@pytest.mark.parametrize(("channel", "data", "message_type"), DOCUMENTED)
def test_documented_notifications(decoder: FrameDecoder, channel: str, data: Any, message_type: type) -> None:
    decoded = decoder.decode(notification(channel, data))
    assert isinstance(decoded, Notification)
    assert decoded.channel == channel
    assert all(type(message) is message_type for message in decoded.messages)
    # A list is decoded item by item; a single object is one message.
    assert_same(
        decoded.messages if isinstance(data, list) else decoded.messages[0], data, every_key_is_a_field=False
    )


def test_trigger_market_order_price_is_a_word(decoder: FrameDecoder) -> None:
    data = {**ORDER, "order_type": "stop_market", "order_state": "untriggered", "price": "market_price"}
    data.update(trigger="mark_price", trigger_price=9000)
    decoded = decoder.decode(notification("user.orders.BTC-PERPETUAL.raw", data))
    assert isinstance(decoded, Notification)
    order = decoded.messages[0]
    assert isinstance(order, OrderUpdate)
    assert (order.price, order.trigger, order.trigger_price) == ("market_price", "mark_price", 9000.0)


def test_book_without_type_field_falls_back_on_prev_change_id(decoder: FrameDecoder) -> None:
    snapshot = {
        "timestamp": 1,
        "instrument_name": "BTC-PERPETUAL",
        "change_id": 5,
        "bids": [["new", 1.0, 2.0]],
        "asks": [],
    }
    change = {**snapshot, "prev_change_id": 5, "change_id": 6, "bids": [["delete", 1.0, 0.0]]}
    first = decoder.decode(notification("book.BTC-PERPETUAL.100ms", snapshot))
    second = decoder.decode(notification("book.BTC-PERPETUAL.100ms", change))
    assert isinstance(first, Notification) and isinstance(second, Notification)
    assert isinstance(first.messages[0], BookSnapshot)
    assert isinstance(second.messages[0], BookChange)
    assert second.messages[0].bids == (("delete", 1.0, 0.0),)


def test_heartbeats(decoder: FrameDecoder) -> None:
    test_request = '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}'
    assert isinstance(decoder.decode(test_request), TestRequest)
    assert isinstance(
        decoder.decode('{"params":{"type":"heartbeat"},"method":"heartbeat","jsonrpc":"2.0"}'), Heartbeat
    )
    assert answer_test_request() == ("public/test", {})


def test_rpc_error(decoder: FrameDecoder) -> None:
    frame = (
        '{"jsonrpc":"2.0","id":8163,"error":{"code":11050,"message":"bad_request",'
        '"data":{"reason":"must be a multiple of 10","param":"amount"}},"testnet":false,'
        '"usIn":1535037392434763,"usOut":1535037392448119,"usDiff":13356}'
    )
    decoded = decoder.decode(frame)
    assert isinstance(decoded, RpcError)
    assert (decoded.id, decoded.code, decoded.message) == (8163, 11050, "bad_request")
    assert json.loads(decoded.data) == {"reason": "must be a multiple of 10", "param": "amount"}
    bare = decoder.decode('{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse_error"}}')
    assert bare == RpcError(id=None, code=-32700, message="parse_error")


@pytest.mark.parametrize(
    "channel",
    [
        "book.BTC-PERPETUAL.none.10.100ms",
        "deribit_price_statistics.btc_usd",
        "user.access_log",
        "markprice",
    ],
)
def test_unknown_channel(decoder: FrameDecoder, channel: str) -> None:
    data = {"volatility": 58.2, "timestamp": 1}
    decoded = decoder.decode(notification(channel, data))
    assert isinstance(decoded, UnknownChannel)
    assert decoded.channel == channel
    assert json.loads(bytes(decoded.data)) == data
    assert isinstance(decoder.decode(notification(channel, data)), UnknownChannel)  # cached the same way


# --- bad frames ------------------------------------------------------------------------------

def ticker_frame() -> str:
    return next(f for f in inbound_frames() if '"channel":"ticker.' in f)


def book_frame() -> str:
    return next(f for f in inbound_frames() if '"type":"change"' in f)


# A frame, or how to make one from a real ticker and book change of the capture (read when the test runs).
BadFrame = str | bytes | Callable[[], str]

BAD_FRAMES = [
    pytest.param("", id="empty"),
    pytest.param("{", id="truncated-object"),
    pytest.param(lambda: ticker_frame()[:150], id="truncated-ticker"),
    pytest.param("not json at all", id="not-json"),
    pytest.param("[1, 2, 3]", id="array"),
    pytest.param('"subscription"', id="string"),
    pytest.param(b"\xff\xfe{}", id="bad-utf8"),
    pytest.param('{"jsonrpc":"2.0","id":"seven","result":[]}', id="id-not-int"),
    pytest.param('{"jsonrpc":"2.0","id":7}', id="response-without-result"),
    pytest.param('{"jsonrpc":"2.0","method":"public/hello","params":{}}', id="unknown-method"),
    pytest.param('{"jsonrpc":"2.0","method":"subscription","params":{"data":{}}}', id="no-channel"),
    pytest.param(
        '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.X.raw"}}', id="no-data"
    ),
    pytest.param('{"jsonrpc":"2.0","method":"subscription","params":[]}', id="params-array"),
    pytest.param('{"jsonrpc":"2.0","id":1,"error":{"code":"11050","message":"x"}}', id="error-code-str"),
    pytest.param(
        lambda: ticker_frame().replace('"mark_price":', '"mark_price":"1"+', 1).replace('"1"+', '"'),
        id="ticker-bad-json",
    ),
    pytest.param(
        lambda: ticker_frame().replace('"timestamp":', '"timestamp":"', 1).replace(',"stats"', '","stats"', 1),
        id="ticker-str-ts",
    ),
    pytest.param(
        lambda: ticker_frame().replace('"greeks":{', '"greeks":{"delta":"high","x":{', 1), id="greeks-wrong-type"
    ),
    pytest.param(
        lambda: book_frame().replace('"prev_change_id":', '"prev_change_id":"', 1).replace(
            ',"instrument_name"', '","instrument_name"', 1
        ),
        id="book-str-prev",
    ),
    pytest.param(lambda: book_frame().replace('"type":"change"', '"type":"delta"'), id="book-unknown-type"),
    pytest.param(lambda: book_frame().replace('["new",', '["add",', 1), id="book-unknown-action"),
    pytest.param(lambda: book_frame().replace('["new",0.001,2.6]', '["new","0.001",2.6]'), id="book-str-price"),
    pytest.param(lambda: book_frame().replace('["new",0.001,2.6]', '["new",0.001]'), id="book-short-level"),
    pytest.param(notification("user.trades.any.BTC.raw", USER_TRADE), id="user-trades-not-list"),
    pytest.param(notification("user.orders.any.BTC.raw", {**ORDER, "amount": "200"}), id="order-str-amount"),
    pytest.param(
        notification("quote.BTC-PERPETUAL", {"instrument_name": "BTC-PERPETUAL"}), id="quote-missing-ts"
    ),
    pytest.param('{"params":' * 10_000, id="nested-too-deep"),
    pytest.param(
        notification(
            "ticker.X.raw", {"instrument_name": "X", "timestamp": 1, "state": "open", "mark_price": 0}
        ).replace('"mark_price": 0', '"mark_price": 1e999'),
        id="float-out-of-range",
    ),
]


@pytest.mark.parametrize("bad", BAD_FRAMES)
def test_bad_frames_raise_frame_error_with_an_excerpt(decoder: FrameDecoder, bad: BadFrame) -> None:
    frame = bad() if callable(bad) else bad
    with pytest.raises(FrameError) as raised:
        decoder.decode(frame)
    error = raised.value
    assert isinstance(error, ValueError)
    assert len(error.excerpt) <= EXCERPT_CHARS
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    assert error.excerpt == text[: len(error.excerpt)] or error.excerpt.endswith("...")
    assert error.excerpt in str(error)
    # The decoder is still usable afterwards.
    assert isinstance(decoder.decode(ticker_frame()), Notification)


def test_excerpt_is_bounded_and_marks_the_cut() -> None:
    long_frame = '{"a":"' + "x" * 10_000 + '"}'
    assert len(excerpt(long_frame)) == EXCERPT_CHARS
    assert excerpt(long_frame).endswith("...")
    assert excerpt(long_frame.encode()) == excerpt(long_frame)
    assert excerpt("{}") == "{}"


# --- results of requests ---------------------------------------------------------------------

BUY_RESPONSE = {
    "jsonrpc": "2.0",
    "id": 5275,
    "result": {
        "trades": [
            {
                **USER_TRADE,
                "trade_id": "ETH-2696083",
                "order_id": "ETH-584849853",
                "label": "market0000234",
                "instrument_name": "ETH-PERPETUAL",
                "fee_currency": "ETH",
                "direction": "buy",
                "amount": 40,
            }
        ],
        "order": {
            **ORDER,
            "order_id": "ETH-584849853",
            "order_state": "filled",
            "order_type": "market",
            "label": "market0000234",
            "instrument_name": "ETH-PERPETUAL",
            "filled_amount": 40,
            "average_price": 203.3,
            "commission": 0.00014757,
            "api": True,
            "amount": 40,
            "web": False,
        },
    },
    "usIn": 1590483938456312,
    "usOut": 1590483938460000,
    "usDiff": 3688,
    "testnet": True,
}


def test_order_results_and_command_answers(decoder: FrameDecoder) -> None:
    response = decoder.decode(json.dumps(BUY_RESPONSE))
    assert isinstance(response, RpcResponse)
    order, trades = decode_order_result(response.result)
    assert_same(order, BUY_RESPONSE["result"]["order"], every_key_is_a_field=False)
    assert_same(trades, BUY_RESPONSE["result"]["trades"], every_key_is_a_field=False)
    cancelled, no_trades = decode_order_result(json.dumps({**ORDER, "order_state": "cancelled"}))
    assert cancelled.order_state == "cancelled" and no_trades == ()

    command = PlaceOrder(
        instrument_name="ETH-PERPETUAL",
        side="buy",
        amount=40,
        type="market",
        origin="hedger",
        request_key="h-1",
    )
    answer = command_result(command, "private/buy", response)
    assert (answer.request_key, answer.origin, answer.method) == ("h-1", "hedger", "private/buy")
    assert answer.order == order and answer.trades == trades
    assert json.loads(answer.result) == BUY_RESPONSE["result"]
    # An order result that cannot be decoded still answers the sender, with the text.
    odd = RpcResponse(id=1, result=msgspec.Raw(b'{"order":{"weird":true}}'))
    assert command_result(command, "private/buy", odd).order is None
    error = RpcError(id=1, code=10009, message="not_enough_funds", data='{"x":1}')
    failed = command_failed(command, "private/buy", error)
    assert (failed.request_key, failed.origin, failed.code, failed.message, failed.data) == (
        "h-1",
        "hedger",
        10009,
        "not_enough_funds",
        '{"x":1}',
    )


def test_positions_open_orders_and_account_summary() -> None:
    positions = [
        {
            "vega": 0,
            "total_profit_loss": 1.2e-7,
            "size_currency": -0.01,
            "size": -10,
            "settlement_price": 27760.75,
            "realized_profit_loss": -1.0e-8,
            "realized_funding": -1.0e-8,
            "open_orders_margin": 0,
            "mark_price": 27760.74,
            "maintenance_margin": 0.00015,
            "leverage": 50,
            "kind": "future",
            "interest_value": 1.7362511643080387,
            "instrument_name": "BTC-PERPETUAL",
            "initial_margin": 0.00016,
            "index_price": 27757.98,
            "floating_profit_loss": 1.3e-7,
            "estimated_liquidation_price": None,
            "direction": "sell",
            "delta": -0.01,
            "average_price": 27751.55,
        }
    ]
    decoded, defects = decode_positions(json.dumps(positions))
    assert defects == () and all(isinstance(p, Position) for p in decoded)
    assert_same(decoded, positions)
    assert decode_open_orders(json.dumps([ORDER])) == ((decode_result(json.dumps(ORDER), OrderUpdate),), ())
    summary_data = {
        **PORTFOLIO,
        "username": "desk",
        "type": "main",
        "system_name": "desk",
        "id": 10,
        "email": "desk@example.com",
        "creation_timestamp": 1594388820315,
        "limits": {"non_matching_engine": {"rate": 20, "burst": 100}},
    }
    summary, defects = decode_account_summary(json.dumps(summary_data))
    assert isinstance(summary, AccountSummary) and defects == ()
    assert_same(summary, summary_data, every_key_is_a_field=False)
    with pytest.raises(msgspec.ValidationError):
        decode_account_summary(json.dumps({**summary_data, "equity": "302"}))


# --- requests --------------------------------------------------------------------------------


def test_request_encoder_numbers_and_encodes() -> None:
    encoder = RequestEncoder(first_id=41)
    request_id, frame = encoder.encode("public/get_time")
    assert request_id == 41
    assert json.loads(frame) == {"jsonrpc": "2.0", "id": 41, "method": "public/get_time", "params": {}}
    request_id, frame = encoder.encode_request(get_instruments_request("BTC", kind=None))
    assert request_id == 42
    assert json.loads(frame)["params"] == {"currency": "BTC", "expired": False}
    assert encoder.next_id() == 43
    assert encoder.encode("public/test", {"a": None}, request_id=7) == (
        7,
        b'{"jsonrpc":"2.0","id":7,"method":"public/test","params":{}}',
    )


def test_private_requests_carry_the_access_token_once_set() -> None:
    encoder = RequestEncoder()
    encoder.set_access_token(ACCESS_TOKEN)
    _, private = encoder.encode_request(
        command_request(CancelOrder(order_id="1", origin="c", request_key="k"))
    )
    assert json.loads(private)["params"] == {"order_id": "1", "access_token": ACCESS_TOKEN}
    assert ACCESS_TOKEN not in redact_frame(private)
    _, public = encoder.encode_request(answer_test_request())
    assert "access_token" not in json.loads(public)["params"]
    encoder.set_access_token(None)
    assert "access_token" not in json.loads(encoder.encode("private/cancel_all")[1])["params"]


def test_place_order_requests() -> None:
    limit = PlaceOrder(
        instrument_name="BTC-24SEP21-8000-P",
        side="sell",
        amount=1.5,
        price=0.0015,
        post_only=True,
        label="console-7",
        origin="console",
        request_key="c-7",
    )
    assert command_request(limit) == (
        "private/sell",
        {
            "instrument_name": "BTC-24SEP21-8000-P",
            "amount": 1.5,
            "type": "limit",
            "price": 0.0015,
            "time_in_force": "good_til_cancelled",
            "post_only": True,
            "reduce_only": False,
            "label": "console-7",
        },
    )
    stop = PlaceOrder(
        instrument_name="BTC-PERPETUAL",
        side="buy",
        amount=100,
        type="stop_market",
        trigger="mark_price",
        trigger_price=40000,
        reduce_only=True,
        origin="hedger",
        request_key="h-9",
    )
    method, params = command_request(stop)
    assert method == "private/buy"
    assert params["trigger"] == "mark_price" and params["trigger_price"] == 40000
    assert "price" not in params and "label" not in params


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"price": None}, "needs a price"),
        ({"amount": 0}, "amount must be a positive"),
        ({"amount": float("nan")}, "amount must be a positive"),
        ({"type": "market"}, "takes no price"),
        ({"type": "stop_limit"}, "needs trigger and trigger_price"),
        ({"trigger": "index_price", "trigger_price": 1.0}, "takes no trigger"),
        ({"post_only": True, "time_in_force": "immediate_or_cancel"}, "post_only contradicts"),
        ({"label": "x" * 65}, "64 characters"),
        ({"request_key": ""}, "request_key"),
        ({"origin": ""}, "origin"),
        ({"instrument_name": ""}, "instrument_name is empty"),
    ],
)
def test_invalid_orders_are_refused_before_encoding(changes: dict[str, Any], fragment: str) -> None:
    fields = {
        "instrument_name": "BTC-PERPETUAL",
        "side": "buy",
        "amount": 10,
        "price": 30000.0,
        "origin": "console",
        "request_key": "c-1",
    }
    with pytest.raises(InvalidCommand, match=fragment):
        command_request(PlaceOrder(**{**fields, **changes}))


def test_edit_cancel_requests() -> None:
    edit = EditOrder(order_id="ETH-1", amount=20, price=0.05, origin="console", request_key="c-2")
    assert command_request(edit) == (
        "private/edit",
        {"order_id": "ETH-1", "amount": 20, "price": 0.05, "post_only": False, "reduce_only": False},
    )
    assert command_request(CancelOrder(order_id="ETH-1", origin="console", request_key="c-3")) == (
        "private/cancel",
        {"order_id": "ETH-1"},
    )
    assert command_request(CancelAll(origin="console", request_key="c-4")) == ("private/cancel_all", {})
    assert command_request(CancelAll(currency="BTC", kind="option", origin="console", request_key="c-5")) == (
        "private/cancel_all_by_currency",
        {"currency": "BTC", "kind": "option"},
    )
    by_instrument = CancelAll(instrument_name="BTC-PERPETUAL", origin="hedger", request_key="h-1")
    assert command_request(by_instrument) == (
        "private/cancel_all_by_instrument",
        {"instrument_name": "BTC-PERPETUAL"},
    )
    assert command_request(CancelByLabel(label="hedge", origin="hedger", request_key="h-2")) == (
        "private/cancel_by_label",
        {"label": "hedge"},
    )
    with pytest.raises(InvalidCommand, match="not both"):
        command_request(
            CancelAll(currency="BTC", instrument_name="BTC-PERPETUAL", origin="c", request_key="k")
        )
    with pytest.raises(InvalidCommand, match="label is empty"):
        command_request(CancelByLabel(label="", origin="c", request_key="k"))
    with pytest.raises(InvalidCommand, match="order_id"):
        command_request(EditOrder(order_id="", amount=1, origin="c", request_key="k"))
    with pytest.raises(TypeError):
        command_request(RefreshInstruments())  # type: ignore[arg-type]


def test_subscription_and_session_requests() -> None:
    public = [
        channels.book("BTC-PERPETUAL"),
        channels.ticker("BTC-PERPETUAL"),
        channels.price_index("BTC_USD"),
    ]
    assert subscribe_request(public) == (
        "public/subscribe",
        {
            "channels": [
                "book.BTC-PERPETUAL.100ms",
                "ticker.BTC-PERPETUAL.100ms",
                "deribit_price_index.btc_usd",
            ]
        },
    )
    private = [*public, channels.user_orders("any", "BTC")]
    assert subscribe_request(private)[0] == "private/subscribe"
    assert subscribe_request(public, private=True)[0] == "private/subscribe"
    assert unsubscribe_request(["quote.BTC-PERPETUAL"]) == (
        "public/unsubscribe",
        {"channels": ["quote.BTC-PERPETUAL"]},
    )
    assert set_heartbeat_request(30) == ("public/set_heartbeat", {"interval": 30})
    with pytest.raises(ValueError):
        set_heartbeat_request(5)


def test_channel_names_and_prefixes() -> None:
    assert channels.user_orders("option", "BTC") == "user.orders.option.BTC.raw"
    assert channels.user_trades("future", "ETH", "100ms") == "user.trades.future.ETH.100ms"
    assert channels.user_portfolio("BTC") == "user.portfolio.btc"
    assert channels.instrument_state("option", "any") == "instrument.state.option.any"
    assert channels.quote("ETH-PERPETUAL") == "quote.ETH-PERPETUAL"
    prefixes = {
        "book.BTC-24SEP21-8000-P.raw": "book",
        "ticker.BTC-PERPETUAL.100ms": "ticker",
        "quote.BTC-PERPETUAL": "quote",
        "deribit_price_index.btc_usd": "deribit_price_index",
        "instrument.state.option.BTC": "instrument.state",
        "trades.option.BTC.raw": "trades",
        "user.orders.any.any.raw": "user.orders",
        "user.trades.BTC-PERPETUAL.raw": "user.trades",
        "user.portfolio.btc": "user.portfolio",
        "platform_state": "platform_state",
    }
    assert {channel: channels.channel_prefix(channel) for channel in prefixes} == prefixes
    assert channels.instrument_of("book.BTC-24SEP21-8000-P.raw") == "BTC-24SEP21-8000-P"
    assert channels.instrument_of("trades.option.BTC.raw") is None
    assert channels.is_private("user.portfolio.btc") and not channels.is_private("ticker.BTC-PERPETUAL.raw")
    assert list(channels.batches(["a", "b", "c"], 2)) == [("a", "b"), ("c",)]


# --- auth and redaction ----------------------------------------------------------------------

CLIENT_ID = "AbCdEf12"
CLIENT_SECRET = "s3cr3t-Zq9vXy_81kLmNoPq"
ACCESS_TOKEN = "1582628593469.1MbQ-J_4.CBP-OqOwm_FBdMYj4cRK2dMXyHPfBtXGpzLxhWg31nHu3H_Q60FpE5_vqUBEQGSiMr"
REFRESH_TOKEN = "1582628593469.1GP4rQd0.A9Qsm1bHFfW8CPVmjkqMN1xP07vcN4Ujr8uiE8p2YKrLjhmXdJqCBnS6mKHgsLqM"
AUTH_RESPONSE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 9929,
        "result": {
            "access_token": ACCESS_TOKEN,
            "expires_in": 31536000,
            "refresh_token": REFRESH_TOKEN,
            "scope": "session:apiconsole-c5i26ds6dsr expires:1621718296 trade:read_write",
            "token_type": "bearer",
        },
        "usIn": 1,
        "usOut": 2,
        "usDiff": 1,
        "testnet": True,
    }
)


def test_client_signature_follows_deribits_recipe() -> None:
    expected = hmac.new(CLIENT_SECRET.encode(), b"1576074319000\nxyz123\n", hashlib.sha256).hexdigest()
    assert client_signature(CLIENT_SECRET, 1576074319000, "xyz123") == expected
    method, params = auth_client_signature_request(CLIENT_ID, CLIENT_SECRET, 1576074319000, nonce="xyz123")
    assert method == "public/auth"
    assert params == {
        "grant_type": "client_signature",
        "client_id": CLIENT_ID,
        "timestamp": 1576074319000,
        "signature": expected,
        "nonce": "xyz123",
        "data": "",
    }
    assert CLIENT_SECRET not in json.dumps(params)
    assert auth_client_credentials_request(CLIENT_ID, CLIENT_SECRET) == (
        "public/auth",
        {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    )
    assert auth_refresh_request(REFRESH_TOKEN) == (
        "public/auth",
        {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN},
    )


def test_auth_result_never_shows_its_tokens(decoder: FrameDecoder) -> None:
    response = decoder.decode(AUTH_RESPONSE)
    assert isinstance(response, RpcResponse)
    auth = decode_auth_result(response.result)
    assert (auth.access_token, auth.refresh_token, auth.expires_in) == (ACCESS_TOKEN, REFRESH_TOKEN, 31536000)
    for text in (repr(auth), str(auth), f"{auth}"):
        assert ACCESS_TOKEN not in text and REFRESH_TOKEN not in text


def secret_frames() -> list[str]:
    encoder = RequestEncoder()
    requests = [
        auth_client_credentials_request(CLIENT_ID, CLIENT_SECRET),
        auth_client_signature_request(CLIENT_ID, CLIENT_SECRET, 1576074319000, nonce="n1"),
        auth_refresh_request(REFRESH_TOKEN),
    ]
    frames = [encoder.encode_request(request)[1].decode() for request in requests]
    pretty = json.dumps(json.loads(frames[0]), indent=2)  # whitespace around the colon
    return [*frames, pretty, AUTH_RESPONSE]


SECRETS = (
    CLIENT_SECRET,
    ACCESS_TOKEN,
    REFRESH_TOKEN,
    client_signature(CLIENT_SECRET, 1576074319000, "n1"),
)


def test_redaction_leaves_no_secret() -> None:
    for frame in secret_frames():
        redacted = redact_frame(frame)
        assert not any(secret in redacted for secret in SECRETS), redacted
        assert REDACTED in redacted
        # Everything else survives: the redacted frame is still the same JSON but for secrets.
        assert json.loads(redacted).keys() == json.loads(frame).keys()
        assert redact_frame(frame.encode()) == redacted
        # A wire-log line holds the frame as an escaped JSON string; a cut frame ends mid-secret.
        line = json.dumps({"t": 1.0, "dir": "out", "frame": frame})
        assert not any(secret in redact_frame(line) for secret in SECRETS)
        for cut in range(0, len(frame), 7):
            truncated = redact_frame(frame[:cut])
            assert not any(secret[:12] in truncated for secret in SECRETS), truncated


def test_bad_auth_frames_do_not_leak_through_frame_errors(decoder: FrameDecoder) -> None:
    for frame in secret_frames():
        for broken in (frame[:-1], frame.replace('"id":', '"id":"', 1), frame + "}"):
            with pytest.raises(FrameError) as raised:
                decoder.decode(broken)
            message = str(raised.value)
            assert not any(secret[:12] in message for secret in SECRETS), message


def test_frames_without_secrets_are_untouched() -> None:
    for frame in inbound_frames()[:20]:
        assert redact_frame(frame) == frame
    harmless = '{"params":{"grant_type":"client_credentials","client_id":"AbC"}}'
    assert redact_frame(harmless) == harmless


# --- issue 16: new channels, lists decoded entry by entry, settlements, the account's limits ------


def test_new_channel_names_prefixes_and_privacy() -> None:
    assert channels.user_changes("any", "any") == "user.changes.any.any.raw"
    assert channels.user_changes("option", "BTC", "100ms") == "user.changes.option.BTC.100ms"
    assert channels.platform_state() == "platform_state"
    assert channels.platform_state(public_methods=True) == "platform_state.public_methods_state"
    assert channels.volatility_index("BTC_USD") == "deribit_volatility_index.btc_usd"
    assert channels.markprice_options("eth_usd") == "markprice.options.eth_usd"
    prefixes = {
        channels.user_changes("future", "ETH"): "user.changes",
        channels.platform_state(): "platform_state",
        channels.platform_state(public_methods=True): "platform_state",
        channels.volatility_index("btc_usd"): "deribit_volatility_index",
        channels.markprice_options("btc_usd"): "markprice.options",
        "block_rfq.maker.any": "block_rfq.maker",
    }
    assert {channel: channels.channel_prefix(channel) for channel in prefixes} == prefixes
    private = [channels.user_changes("any", "any"), "user.mmp_trigger.btc_usd", "user.access_log", "user.lock",
               "block_rfq.taker.any", "block_trade_confirmations"]
    public = [channels.platform_state(), channels.volatility_index("btc_usd"), channels.markprice_options("btc_usd"),
              "block_rfq.trades.BTC", channels.price_index("btc_usd")]
    assert all(channels.is_private(c) for c in private) and not any(channels.is_private(c) for c in public)
    assert subscribe_request([channels.user_changes("any", "any")])[0] == "private/subscribe"


def test_markprice_options_takes_its_index_from_the_channel(decoder: FrameDecoder) -> None:
    marks = [{"timestamp": 1622470378005, "mark_price": 0.0333, "iv": 0.9, "instrument_name": "BTC-2JUN21-37000-P"},
             {"timestamp": 1622470378005, "mark_price": 0.117, "iv": 0.9, "instrument_name": "BTC-4JUN21-40500-P"}]
    for index in ("btc_usd", "eth_usd"):
        decoded = decoder.decode(notification(f"markprice.options.{index}", marks))
        assert isinstance(decoded, Notification) and decoded.defects == ()
        (message,) = decoded.messages
        assert isinstance(message, OptionMarks) and message.index_name == index
        assert_same(message.marks, marks)


def test_platform_state_both_channels(decoder: FrameDecoder) -> None:
    locked = decoder.decode(notification("platform_state", {"price_index": "sol_usdc", "locked": True}))
    assert isinstance(locked, Notification)
    assert locked.messages == (PlatformState(price_index="sol_usdc", locked=True),)
    methods = decoder.decode(notification("platform_state.public_methods_state",
                                          {"allow_unauthenticated_public_requests": False}))
    assert isinstance(methods, Notification)
    assert methods.messages == (PlatformState(allow_unauthenticated_public_requests=False),)


def _bad(entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**entry, **changes}


@pytest.mark.parametrize(
    ("channel", "entries", "bad_index", "field", "message_type"),
    [
        ("trades.BTC-PERPETUAL.100ms", [PUBLIC_TRADE, _bad(PUBLIC_TRADE, price="x"), PUBLIC_TRADE], 1, "price", Trade),
        ("user.trades.any.any.raw", [_bad(USER_TRADE, direction="up"), USER_TRADE], 0, "direction", UserTrade),
        ("user.orders.any.any.100ms", [ORDER, {k: v for k, v in ORDER.items() if k != "amount"}], 1, "amount",
         OrderUpdate),
    ],
)
def test_a_bad_entry_of_a_list_is_left_out_and_named(
    decoder: FrameDecoder, channel: str, entries: list[dict[str, Any]], bad_index: int, field: str,
    message_type: type,
) -> None:
    decoded = decoder.decode(notification(channel, entries))
    assert isinstance(decoded, Notification)
    good = [entry for i, entry in enumerate(entries) if i != bad_index]
    assert all(type(m) is message_type for m in decoded.messages)
    assert_same(decoded.messages, good, every_key_is_a_field=False)
    (defect,) = decoded.defects
    assert defect.where == f"{channel}[{bad_index}]" and defect.field == field
    bad = entries[bad_index]
    assert defect.name == f"{bad['instrument_name']} {bad.get('order_id', bad.get('trade_id'))}"
    assert defect.value == (json.dumps(entries[bad_index][field]) if field in entries[bad_index] else "(none)")
    assert defect.problem and "$" not in defect.problem  # msgspec's text, its path given as the field
    assert channel in str(defect)


def test_a_bad_single_order_is_still_a_bad_frame(decoder: FrameDecoder) -> None:
    with pytest.raises(FrameError):
        decoder.decode(notification("user.orders.BTC-PERPETUAL.raw", _bad(ORDER, amount="ten")))


def test_user_changes_keeps_what_decodes_of_each_list(decoder: FrameDecoder) -> None:
    position = {"instrument_name": "BTC-PERPETUAL", "kind": "future", "direction": "buy", "size": 10.0,
                "average_price": 17391.0, "leverage": 33.5, "floating_profit_loss": 0.1}
    data = {"instrument_name": "BTC-PERPETUAL", "orders": [ORDER, _bad(ORDER, order_state=None)],
            "trades": [USER_TRADE], "positions": [position, _bad(position, size="big")]}
    decoded = decoder.decode(notification("user.changes.any.any.raw", data))
    assert isinstance(decoded, Notification)
    (changes,) = decoded.messages
    assert isinstance(changes, UserChanges)
    assert_same(changes, {**data, "orders": [ORDER], "positions": [position]}, every_key_is_a_field=False)
    assert [(d.where, d.field) for d in decoded.defects] == [
        ("user.changes.any.any.raw orders[1]", "order_state"), ("user.changes.any.any.raw positions[1]", "size")]
    whole = decoder.decode(notification("user.changes.any.any.raw", {**data, "orders": [ORDER],
                                                                        "positions": [position]}))
    assert isinstance(whole, Notification) and whole.defects == () and whole.messages[0] == changes


def test_not_a_list_is_a_bad_frame(decoder: FrameDecoder) -> None:
    with pytest.raises(FrameError):
        decoder.decode(notification("trades.BTC-PERPETUAL.100ms", {"trade_id": "1"}))


def test_decode_entries_names_nested_fields() -> None:
    bad = {**PUBLIC_TRADE, "price": [1, 2]}
    items, defects = decode_entries(json.dumps([PUBLIC_TRADE, bad, 7]), Trade, "x")
    assert len(items) == 1
    assert [(d.where, d.field, d.value, d.name) for d in defects] == [
        ("x[1]", "price", "[1,2]", f"{PUBLIC_TRADE['instrument_name']} {PUBLIC_TRADE['trade_id']}"),
        ("x[2]", "(the entry)", "(none)", "(no name)")]


def test_positions_and_open_orders_leave_a_bad_entry_out() -> None:
    position = {"instrument_name": "ETH-PERPETUAL", "kind": "future", "direction": "sell", "size": -3.0,
                "leverage": 12.5}
    positions, defects = decode_positions(json.dumps([position, _bad(position, direction="long")]))
    assert len(positions) == 1 and positions[0].leverage == 12.5
    assert [(d.where, d.field) for d in defects] == [("private/get_positions[1]", "direction")]
    orders, defects = decode_open_orders(json.dumps([_bad(ORDER, amount=None), ORDER]))
    assert [o.order_id for o in orders] == [ORDER["order_id"]] and defects[0].field == "amount"


SETTLEMENTS = {
    "settlements": [
        {"type": "settlement", "timestamp": 1550475692526, "session_profit_loss": 0.038358299,
         "profit_loss": -0.001783937, "position": -66, "mark_price": 121.67, "instrument_name": "ETH-22FEB19",
         "index_price": 119.8},
        {"type": "delivery", "timestamp": 1550475692526, "session_profit_loss": 0.1, "profit_loss": 0.2,
         "position": 1.5, "mark_price": 0.02, "instrument_name": "ETH-22FEB19-140-C", "index_price": 119.8},
    ],
    "continuation": "xY7T6cusbMBNpH9SNmKb94jXSBxUPojJEdCPL4YociHBUgAhWQvEP",
}


def test_settlement_history() -> None:
    history, defects = decode_settlement_history(json.dumps(SETTLEMENTS), "ETH", 12.5)
    assert defects == () and (history.currency, history.at) == ("ETH", 12.5)
    assert history.continuation == SETTLEMENTS["continuation"]
    assert_same(history.settlements, SETTLEMENTS["settlements"])
    odd = {**SETTLEMENTS, "settlements": [{**SETTLEMENTS["settlements"][0], "type": "haircut"},
                                          SETTLEMENTS["settlements"][1]]}
    history, defects = decode_settlement_history(json.dumps(odd))
    assert [s.type for s in history.settlements] == ["delivery"] and defects[0].field == "type"
    assert get_settlement_history_request("BTC") == ("private/get_settlement_history_by_currency",
                                                     {"currency": "BTC"})
    assert get_settlement_history_request("BTC", "delivery", 1) == (
        "private/get_settlement_history_by_currency", {"currency": "BTC", "type": "delivery", "count": 1})


NESTED_LIMITS = {
    "limits_per_currency": False,
    "non_matching_engine": {"burst": 1500, "rate": 1000},
    "matching_engine": {
        "trading": {"total": {"burst": 250, "rate": 200}},
        "spot": {"burst": 250, "rate": 200},
        "quotes": {"burst": 500, "rate": 500},
        "max_quotes": {"burst": 10, "rate": 10},
        "guaranteed_quotes": {"burst": 2, "rate": 2},
        "cancel_all": {"burst": 250, "rate": 200},
    },
}


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (NESTED_LIMITS, AccountLimits(matching_engine=RateLimit(rate=200, burst=250),
                                      non_matching_engine=RateLimit(rate=1000, burst=1500))),
        ({"limits_per_currency": True, "matching_engine": {"rate": 5, "burst": 20},
          "non_matching_engine": {"rate": 20, "burst": 100}},
         AccountLimits(limits_per_currency=True, matching_engine=RateLimit(rate=5, burst=20),
                       non_matching_engine=RateLimit(rate=20, burst=100))),
        ({"matching_engine": 5, "matching_engine_burst": 20, "non_matching_engine": 20,
          "non_matching_engine_burst": 100},
         AccountLimits(matching_engine=RateLimit(rate=5, burst=20), non_matching_engine=RateLimit(rate=20, burst=100))),
        ({}, AccountLimits()),
    ],
)
def test_account_limits_in_every_shape_deribit_sent(limits: dict[str, Any], expected: AccountLimits) -> None:
    summary, defects = decode_account_summary(json.dumps({**PORTFOLIO, "limits": limits}))
    assert defects == () and summary.limits == expected
    assert summary.equity == PORTFOLIO["equity"]


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"matching_engine": {"orders": {"per_second": 5}}}, "matching_engine"),
        ({"matching_engine": {"rate": "fast", "burst": 1}}, "matching_engine"),
        ({"non_matching_engine": [1, 2]}, "non_matching_engine"),
        ({"limits_per_currency": "yes"}, "limits_per_currency"),
        ([1, 2], "(the entry)"),
    ],
)
def test_limits_of_an_unknown_shape_never_fail_the_summary(limits: Any, field: str) -> None:
    summary, defects = decode_account_summary(json.dumps({**PORTFOLIO, "limits": limits}))
    assert summary.limits is None and summary.balance == PORTFOLIO["balance"]
    (defect,) = defects
    assert defect.field == field and "limits" in defect.where


def test_summary_without_limits_has_none() -> None:
    summary, defects = decode_account_summary(json.dumps(PORTFOLIO))
    assert summary.limits is None and defects == ()


@pytest.mark.parametrize("prev", [None, 0, "absent"])
def test_untyped_first_book_notification_is_a_snapshot(decoder: FrameDecoder, prev: Any) -> None:
    data: dict[str, Any] = {"timestamp": 1, "instrument_name": "BTC-PERPETUAL", "change_id": 7,
                            "bids": [["new", 100.0, 10.0]], "asks": []}
    if prev != "absent":
        data["prev_change_id"] = prev
    decoded = decoder.decode(notification("book.BTC-PERPETUAL.raw", data))
    assert isinstance(decoded, Notification) and isinstance(decoded.messages[0], BookSnapshot)
    changed = decoder.decode(notification("book.BTC-PERPETUAL.raw", {**data, "prev_change_id": 6}))
    assert isinstance(changed, Notification) and isinstance(changed.messages[0], BookChange)
    assert changed.messages[0].prev_change_id == 6
