"""Instrument metadata for the contract-maths tests, shaped as ``public/get_instruments`` sends
it, and real positions Deribit sent (each with its source).

Metadata: the inverse ones as in the real capture (``../shared/fixtures/deribit``: BTC options
``quote_currency`` BTC, the perpetual ``quote_currency`` USD, neither with a settlement currency);
the linear ones with the fields Deribit's current lists carry (``instrument_type`` "linear",
``settlement_currency`` USDC).
"""

from __future__ import annotations

import datetime as dt

from deribit.instruments import InstrumentIdentity, expiry_ms, identity_of
from messages.account import Position
from messages.market import Instrument

PERPETUAL_EXPIRY_MS = 32_503_708_800_000


def inverse_perpetual(coin: str = "BTC") -> Instrument:
    return Instrument(instrument_name=f"{coin}-PERPETUAL", kind="future", base_currency=coin, quote_currency="USD",
                      settlement_period="perpetual", tick_size=0.5, contract_size=10.0 if coin == "BTC" else 1.0,
                      min_trade_amount=10.0 if coin == "BTC" else 1.0, expiration_timestamp=PERPETUAL_EXPIRY_MS,
                      creation_timestamp=1_534_242_287_000)


def inverse_option(name: str, expiry: dt.date, strike: float, option_type: str = "call") -> Instrument:
    coin = name.partition("-")[0]
    return Instrument(instrument_name=name, kind="option", base_currency=coin, quote_currency=coin,
                      settlement_period="month", tick_size=0.0005, contract_size=1.0, min_trade_amount=0.1,
                      expiration_timestamp=expiry_ms(expiry), creation_timestamp=1_606_129_458_000, strike=strike,
                      option_type=option_type)  # type: ignore[arg-type]


def linear_perpetual(coin: str = "ETH") -> Instrument:
    return Instrument(instrument_name=f"{coin}_USDC-PERPETUAL", kind="future", base_currency=coin,
                      quote_currency="USDC", settlement_currency="USDC", counter_currency="USDC",
                      instrument_type="linear", settlement_period="perpetual", tick_size=0.05, contract_size=0.001,
                      min_trade_amount=0.001, expiration_timestamp=PERPETUAL_EXPIRY_MS,
                      creation_timestamp=1_650_000_000_000)


def linear_option(name: str, expiry: dt.date, strike: float, option_type: str = "call") -> Instrument:
    coin = name.partition("_")[0]
    return Instrument(instrument_name=name, kind="option", base_currency=coin, quote_currency="USDC",
                      settlement_currency="USDC", counter_currency="USDC", instrument_type="linear",
                      settlement_period="week", tick_size=0.0001, contract_size=1.0, min_trade_amount=1.0,
                      expiration_timestamp=expiry_ms(expiry), creation_timestamp=1_700_000_000_000, strike=strike,
                      option_type=option_type)  # type: ignore[arg-type]


def identity(instrument: Instrument) -> InstrumentIdentity:
    return identity_of(instrument)


# -- positions Deribit sent ----------------------------------------------------------------------
# Each: (source, the position as decoded, its instrument's metadata).

#: docs.deribit.com, subscriptions/user/userchangeskindcurrencyinterval (the example notification):
#: after selling 10 USD at 17,391 (that trade's profit_loss 0.00004898 BTC).
DOCS_USER_CHANGES = Position(
    instrument_name="BTC-PERPETUAL", kind="future", direction="buy", size=185160.0, average_price=15000.0,
    mark_price=17391.0, index_price=17501.88, settlement_price=16025.83, size_currency=10.646886321,
    delta=10.646886321, floating_profit_loss=0.906961435, realized_profit_loss=0.012454598,
    total_profit_loss=1.69711368, realized_funding=0.01235663, interest_value=1.7362511643080387, leverage=33.0,
    initial_margin=0.319750953, maintenance_margin=0.234575865)

#: nautechsystems/nautilus_trader crates/adapters/deribit/test_data/http_get_positions.json (the
#: docs' private/get_positions example): marked at its settlement price.
NAUTILUS_GET_POSITIONS = Position(
    instrument_name="BTC-PERPETUAL", kind="future", direction="buy", size=50.0, average_price=7440.18,
    mark_price=7476.65, index_price=7466.79, settlement_price=7476.65, size_currency=0.006687487, delta=0.006687487,
    floating_profit_loss=0.0, realized_profit_loss=-9e-9, realized_funding=-1e-8, total_profit_loss=0.000032781,
    leverage=35.639422)

#: Issue 16's BTC-PERPETUAL (a real get_positions answer quoted in the issue).
ISSUE_16_PERPETUAL = Position(
    instrument_name="BTC-PERPETUAL", kind="future", direction="buy", size=40.0, average_price=112585.87,
    mark_price=109266.97, settlement_price=109351.31, floating_profit_loss=-2.82e-7, total_profit_loss=-1.079e-5)

#: Inverse option positions from public client code (ccxt-shaped test data; field values as Deribit
#: sent them): eightballer/... protocols/positions tests (ETH-25AUG23-2100-C); an FMZ strategy's
#: comment (BTC-25JUN21-28000-P); a JS strategy's comment (ETH-29DEC23-1500-P); a ccxt-based
#: bot's testData (BTC-22APR22-38000-P).
OPTION_POSITIONS = (
    Position(instrument_name="ETH-25AUG23-2100-C", kind="option", direction="sell", size=-1.0, average_price=0.037,
             mark_price=0.017497, index_price=1882.4, settlement_price=0.015945, floating_profit_loss=-0.001552855,
             realized_profit_loss=0.0, total_profit_loss=0.019502577, average_price_usd=67.90573,
             floating_profit_loss_usd=34.968581, delta=-0.23791),
    Position(instrument_name="BTC-25JUN21-28000-P", kind="option", direction="buy", size=0.1, average_price=0.0175,
             mark_price=0.1401105, index_price=54151.77, settlement_price=0.13975074,
             floating_profit_loss=0.000035976, realized_profit_loss=0.0, total_profit_loss=0.01226105,
             average_price_usd=947.22, floating_profit_loss_usd=664.0, delta=-0.01166),
    Position(instrument_name="ETH-29DEC23-1500-P", kind="option", direction="buy", size=1.0, average_price=0.421,
             mark_price=0.051529, index_price=1558.11, settlement_price=0.051924,
             floating_profit_loss=-0.000394576, realized_profit_loss=0.0, total_profit_loss=-0.369470928,
             average_price_usd=656.76, floating_profit_loss_usd=-576.472038, delta=-0.3743),
    Position(instrument_name="BTC-22APR22-38000-P", kind="option", direction="sell", size=-0.3,
             average_price=0.00966667, mark_price=0.0003993, index_price=41590.34, settlement_price=0.00094622,
             floating_profit_loss=0.000164078, realized_profit_loss=0.0, total_profit_loss=0.002780211,
             average_price_usd=380.67, floating_profit_loss_usd=109.22, delta=0.00689),
)
