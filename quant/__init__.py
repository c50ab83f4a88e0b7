"""Option maths: Black-76, implied volatility, volatility surface, variance index (pure numpy)."""

from quant.black76 import Black76Greeks, black76_greeks, black76_price, usd_from_coin
from quant.implied_vol import IVReason, implied_vol, implied_vol_with_reasons

__all__ = [
    "Black76Greeks",
    "IVReason",
    "black76_greeks",
    "black76_price",
    "implied_vol",
    "implied_vol_with_reasons",
    "usd_from_coin",
]
