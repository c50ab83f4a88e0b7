"""Deribit's JSON-RPC frames, built as bytes: notifications, results and errors.

Encoding is on the hot path of the stream (tens of thousands of frames a second), so the fixed
parts are byte templates and only ``data`` goes through msgspec.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_NOTE_HEAD = b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"'
_NOTE_MID = b'","data":'
_NOTE_TAIL = b"}}"


def encode(obj: Any) -> bytes:
    return _encode(obj)


def notification(channel: str, data: Any) -> bytes:
    """``{"jsonrpc":"2.0","method":"subscription","params":{"channel":...,"data":...}}``."""
    return b"".join((_NOTE_HEAD, channel.encode(), _NOTE_MID, _encode(data), _NOTE_TAIL))


def notification_raw(channel_bytes: bytes, data_json: bytes) -> bytes:
    return b"".join((_NOTE_HEAD, channel_bytes, _NOTE_MID, data_json, _NOTE_TAIL))


def _timing(us_in: int, us_out: int, testnet: bool) -> bytes:
    return b',"usIn":%d,"usOut":%d,"usDiff":%d,"testnet":%s}' % (
        us_in,
        us_out,
        us_out - us_in,
        b"true" if testnet else b"false",
    )


def result(req_id: Any, value: Any, us_in: int, us_out: int, testnet: bool = False) -> bytes:
    """A successful answer with Deribit's timing fields."""
    return b"".join(
        (
            b'{"jsonrpc":"2.0","id":',
            _encode(req_id),
            b',"result":',
            _encode(value),
            _timing(us_in, us_out, testnet),
        )
    )


def error(req_id: Any, err: dict[str, Any], us_in: int, us_out: int, testnet: bool = False) -> bytes:
    """An error answer: ``{"jsonrpc":"2.0","id":..,"error":{"message":..,"code":..,"data":..},...}``."""
    return b"".join(
        (
            b'{"jsonrpc":"2.0","id":',
            _encode(req_id),
            b',"error":',
            _encode(err),
            _timing(us_in, us_out, testnet),
        )
    )


HEARTBEAT_TEST_REQUEST = b'{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}'
HEARTBEAT = b'{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}'
# What a fault sends on purpose: a notification cut in the middle of its data.
MALFORMED = b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.raw","data":{"ty'


def book_change(name: str, prev_change_id: int, change_id: int, bids: list[Any], asks: list[Any], ts_ms: int) -> bytes:
    """The ``data`` of a book change, in Deribit's field order."""
    return _encode(
        {
            "type": "change",
            "timestamp": ts_ms,
            "prev_change_id": prev_change_id,
            "instrument_name": name,
            "change_id": change_id,
            "bids": bids,
            "asks": asks,
        }
    )


def book_snapshot(name: str, change_id: int, bids: list[Any], asks: list[Any], ts_ms: int) -> bytes:
    return _encode(
        {
            "type": "snapshot",
            "timestamp": ts_ms,
            "instrument_name": name,
            "change_id": change_id,
            "bids": bids,
            "asks": asks,
        }
    )
