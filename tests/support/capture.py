"""The real Deribit capture (``../shared/fixtures/deribit``), read on first use and kept.

Every loader goes through :func:`tests.support.paths.capture`, so a test that needs a missing
file fails with the message saying what is missing; modules that import these never fail to load.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from deribit.codec import FrameDecoder, Notification
from deribit.instruments import decode_instruments
from messages.market import Instrument, Ticker
from tests.support.paths import capture

WIRE_SAMPLE_NAME = "wire-2021-07-22-options-sample.jsonl"


def instruments_file(currency: str) -> str:
    return f"instruments-{currency}-2021-07-22.json"


@cache
def instruments_bytes(currency: str) -> bytes:
    """The raw ``public/get_instruments`` answer of ``currency`` (BTC or ETH)."""
    return instruments_path(currency).read_bytes()


@cache
def instruments(currency: str) -> tuple[Instrument, ...]:
    return decode_instruments(instruments_bytes(currency))


@cache
def instruments_by_name(currency: str) -> dict[str, Instrument]:
    return {i.instrument_name: i for i in instruments(currency)}


@cache
def wire_lines() -> tuple[str, ...]:
    """The wire sample's lines, as written."""
    return tuple(capture(WIRE_SAMPLE_NAME).read_text().splitlines())


@cache
def wire_records() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(line) for line in wire_lines() if line.strip())


@cache
def inbound_frames() -> tuple[str, ...]:
    """The frames the exchange sent, in order."""
    return tuple(record["frame"] for record in wire_records() if record["dir"] == "in")


def wire_sample() -> Path:
    """The wire sample's path, for code that reads the file itself (a replay)."""
    return capture(WIRE_SAMPLE_NAME)


def instruments_path(currency: str) -> Path:
    return capture(instruments_file(currency))


@cache
def tickers() -> tuple[Ticker, ...]:
    """Every ticker the capture holds, decoded as the desk decodes them."""
    decoder = FrameDecoder()
    found: list[Ticker] = []
    for frame in inbound_frames():
        decoded = decoder.decode(frame)
        if isinstance(decoded, Notification):
            found.extend(m for m in decoded.messages if isinstance(m, Ticker))
    return tuple(found)
