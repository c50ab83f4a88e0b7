"""Real Deribit instrument entries (tests/fixtures/public_instruments, see SOURCES.md there) and the
linear option and spot entries built from them (no whole real one was found in public sources)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from messages.market import Instrument

FIXTURES = Path(__file__).parent.parent / "fixtures" / "public_instruments"


def _result(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())["result"]


def public_entries() -> dict[str, Any]:
    """The real entries, and the linear option and spot entries built from them (see the module doc)."""
    perpetual = _result("btc_usdc_perpetual.json")
    inverse_option = _result("btc_option_26jun26_100000_c.json")
    linear = {k: perpetual[k] for k in ("instrument_type", "settlement_currency", "counter_currency",
                                        "quote_currency", "maker_commission", "taker_commission")}
    option_fields = {k: v for k, v in inverse_option.items() if k not in linear and k != "price_index"}

    def linear_option(coin: str, strike: float, strike_text: str, option_type: str) -> dict[str, Any]:
        letter = "C" if option_type == "call" else "P"
        return {**option_fields, **linear, "instrument_name": f"{coin}_USDC-26JUN26-{strike_text}-{letter}",
                "base_currency": coin, "strike": strike, "option_type": option_type,
                "price_index": f"{coin.lower()}_usdc", "tick_size": 0.01, "tick_size_steps": []}

    sol_perpetual = {**perpetual, "instrument_name": "SOL_USDC-PERPETUAL", "base_currency": "SOL",
                     "price_index": "sol_usdc", "contract_size": 0.1, "min_trade_amount": 0.1, "tick_size": 0.01}
    # Spot as the documentation describes it: no settlement_period, no settlement_currency.
    spot = {k: v for k, v in perpetual.items() if k not in ("settlement_period", "settlement_currency",
                                                            "future_type", "max_leverage")}
    spot |= {"kind": "spot", "instrument_name": "BTC_USDC", "contract_size": 0.0001, "min_trade_amount": 0.0001}
    return {
        "inverse_option": inverse_option, "btc_usdc_perpetual": perpetual, "sol_usdc_perpetual": sol_perpetual,
        "sol_call": linear_option("SOL", 150.0, "150", "call"), "sol_put": linear_option("SOL", 140.0, "140", "put"),
        "xrp_call": linear_option("XRP", 0.625, "0d625", "call"),
        "btc_usdc_call": linear_option("BTC", 110_000.0, "110000", "call"),
        "spot": spot, "option_combos": _result("btc_option_combos.json"),
        "future_combos": _result("btc_future_combos.json"),
    }


def as_instrument(entry: dict[str, Any]) -> Instrument:
    return msgspec.convert(entry, Instrument)
