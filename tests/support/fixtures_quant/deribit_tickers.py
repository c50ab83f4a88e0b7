"""The ticker notifications of the real Deribit capture, as arrays for the option-maths tests.

Deliberately self-contained (a small instrument-name parser of its own) so the quant tests do not
depend on the exchange layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np

from tests.support.paths import WIRE_SAMPLE, capture


def capture_path() -> Path:
    """The wire sample; fails the calling test with the capture's message when it is missing."""
    return capture(WIRE_SAMPLE.name)

_MONTHS = {
    m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
MS_PER_YEAR = 365.0 * 86_400_000.0


def parse_option_name(name: str) -> tuple[str, int, float, bool]:
    """``BTC-24SEP21-8000-P`` -> (currency, expiry in ms at 08:00 UTC, strike, is_call)."""
    currency, date, strike, kind = name.split("-")
    day, month, year = int(date[:-5]), _MONTHS[date[-5:-2]], 2000 + int(date[-2:])
    expiry = datetime(year, month, day, 8, tzinfo=UTC)
    return currency, int(expiry.timestamp() * 1000), float(strike), kind == "C"


@dataclass(frozen=True)
class Tickers:
    name: tuple[str, ...]
    timestamp_ms: np.ndarray
    expiry_ms: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray
    underlying_price: np.ndarray
    index_price: np.ndarray
    mark_price: np.ndarray  # coin
    mark_iv: np.ndarray  # percent
    best_bid_price: np.ndarray  # coin, 0 when there is no bid
    best_ask_price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray

    @property
    def years(self) -> np.ndarray:
        return (self.expiry_ms - self.timestamp_ms) / MS_PER_YEAR

    def __len__(self) -> int:
        return len(self.name)


@cache
def load_tickers() -> Tickers:
    rows = []
    with capture_path().open() as fh:
        for line in fh:
            frame = json.loads(line).get("frame")
            if not frame or '"channel":"ticker.' not in frame:
                continue
            rows.append(json.loads(frame)["params"]["data"])
    parsed = [parse_option_name(r["instrument_name"]) for r in rows]

    def col(key: str) -> np.ndarray:
        return np.array([r[key] for r in rows], dtype=np.float64)

    def greek(key: str) -> np.ndarray:
        return np.array([r["greeks"][key] for r in rows], dtype=np.float64)

    return Tickers(
        name=tuple(r["instrument_name"] for r in rows),
        timestamp_ms=col("timestamp"),
        expiry_ms=np.array([p[1] for p in parsed], dtype=np.float64),
        strike=np.array([p[2] for p in parsed]),
        is_call=np.array([p[3] for p in parsed]),
        underlying_price=col("underlying_price"),
        index_price=col("index_price"),
        mark_price=col("mark_price"),
        mark_iv=col("mark_iv"),
        best_bid_price=col("best_bid_price"),
        best_ask_price=col("best_ask_price"),
        delta=greek("delta"),
        gamma=greek("gamma"),
        vega=greek("vega"),
        theta=greek("theta"),
    )
