"""Real Deribit messages the Recorder's tests store, with their sources.

- ``DOCS_DVOL``: Deribit API documentation, channel ``deribit_volatility_index.{index_name}``, the
  notification example's ``data``.
- ``DOCS_SETTLEMENTS``: Deribit API documentation, the ``result.settlements`` of the response example
  of ``private/get_settlement_history_by_currency`` (ETH-22FEB19, a settlement) and of
  ``public/get_last_settlements_by_currency`` (BTC-15FEB19-4000-P, a delivery), entries of the
  same shape.
"""

from __future__ import annotations

import msgspec

from messages.account import Settlement
from messages.market import VolatilityIndex

DOCS_DVOL = b'{"volatility": 129.36, "timestamp": 1619777946007, "index_name": "btc_usd"}'
DOCS_SETTLEMENTS = b"""[
  {"type": "settlement", "timestamp": 1550475692526, "session_profit_loss": 0.038358299,
   "profit_loss": -0.001783937, "position": -66, "mark_price": 121.67, "instrument_name": "ETH-22FEB19",
   "index_price": 119.8},
  {"type": "delivery", "timestamp": 1550242800013, "session_profit_loss": 4.703907906,
   "profit_loss": -0.427669766, "position": 64, "mark_price": 0.121679828,
   "instrument_name": "BTC-15FEB19-4000-P", "index_price": 3566.08}
]"""


def docs_dvol() -> VolatilityIndex:
    return msgspec.json.decode(DOCS_DVOL, type=VolatilityIndex)


def docs_settlements() -> tuple[Settlement, ...]:
    return msgspec.json.decode(DOCS_SETTLEMENTS, type=tuple[Settlement, ...])
