"""Option maths, pure and vectorized (numpy only): Black-76 prices and greeks, implied volatility,
raw-SVI smiles, the arbitrage-free eSSVI surface and its checks, the constant-maturity volatility
surface and a 30-day variance index.

Nothing here knows the actors; the SurfaceBuilder calls :func:`build_surface` on flat arrays.
"""

from quant.arbitrage import ArbitrageReport, check_range, density_factor
from quant.black76 import Black76Greeks, black76_greeks, black76_price, usd_from_coin
from quant.essvi import ESSVIFit, ESSVISurface, essvi_total_variance, fit_essvi
from quant.implied_vol import IVReason, implied_vol, implied_vol_with_reasons
from quant.surface import (
    DEFAULT_GRID,
    DEFAULT_LOG_MONEYNESS,
    DEFAULT_TENOR_DAYS,
    SEED_GRID,
    SEED_LOG_MONEYNESS,
    SEED_MONEYNESS,
    ChainInputs,
    ExpiryFit,
    QuoteIVs,
    SurfaceGrid,
    SurfaceResult,
    build_surface,
    seed_filter,
)
from quant.svi import SVIFits, SVIParams, butterfly_g, fit_svi, fit_svi_slices, svi_total_variance
from quant.variance_index import (
    TermVariance,
    VarianceIndex,
    chain_variance_index,
    interpolate_index,
    term_variance,
)

__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_LOG_MONEYNESS",
    "DEFAULT_TENOR_DAYS",
    "SEED_GRID",
    "SEED_LOG_MONEYNESS",
    "SEED_MONEYNESS",
    "ArbitrageReport",
    "Black76Greeks",
    "ChainInputs",
    "ESSVIFit",
    "ESSVISurface",
    "ExpiryFit",
    "IVReason",
    "QuoteIVs",
    "SVIFits",
    "SVIParams",
    "SurfaceGrid",
    "SurfaceResult",
    "TermVariance",
    "VarianceIndex",
    "black76_greeks",
    "black76_price",
    "build_surface",
    "butterfly_g",
    "chain_variance_index",
    "check_range",
    "density_factor",
    "essvi_total_variance",
    "fit_essvi",
    "fit_svi",
    "fit_svi_slices",
    "implied_vol",
    "implied_vol_with_reasons",
    "interpolate_index",
    "seed_filter",
    "svi_total_variance",
    "term_variance",
    "usd_from_coin",
]
