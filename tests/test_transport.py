"""The websocket transport's masking keys: every frame its own key, from os.urandom in blocks."""

from __future__ import annotations

import itertools

import pytest
import websocket

from deribit.transport import MaskKeys, text_frame


def test_keys_have_the_length_asked_and_do_not_repeat() -> None:
    keys = MaskKeys(pool_bytes=64)
    drawn = [keys(4) for _ in range(1000)]  # the pool is refilled many times over
    assert all(len(key) == 4 for key in drawn)
    # 1,000 random 32-bit keys: a repeat has a chance of about 1e-4; consecutive equal keys would
    # mean the pool is reused.
    assert len(set(drawn)) >= 999
    assert all(a != b for a, b in itertools.pairwise(drawn))


def test_a_key_longer_than_the_pool_is_served_whole() -> None:
    keys = MaskKeys(pool_bytes=8)
    assert len(keys(32)) == 32
    assert len(keys(4)) == 4


def test_frames_masked_with_them_unmask_to_the_payload() -> None:
    keys = MaskKeys()
    payload = b'{"jsonrpc":"2.0","id":7,"method":"private/buy","params":{"amount":10}}'
    frame = websocket.ABNF.create_frame(payload, websocket.ABNF.OPCODE_TEXT)
    frame.get_mask_key = keys
    wire = frame.format()
    # 2 header bytes (length < 126), then the key, then the masked payload.
    assert wire[1] & 0x80 and wire[1] & 0x7F == len(payload)
    key, masked = wire[2:6], wire[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == payload


@pytest.mark.parametrize("length", [0, 1, 3, 4, 125, 126, 127, 1000, 65535, 65536, 70001])
def test_our_text_frames_are_byte_for_byte_websocket_clients(length: int) -> None:
    payload = bytes((i * 7 + 3) % 256 for i in range(length))
    key = b"\x9a\x01\xf3\x5c"
    theirs = websocket.ABNF.create_frame(payload, websocket.ABNF.OPCODE_TEXT)
    theirs.get_mask_key = lambda _n: key
    assert text_frame(payload, key) == theirs.format()
