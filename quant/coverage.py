"""Which nodes of a constant-maturity grid lie inside the data and which are extrapolation.

A node (tenor tau, log-moneyness k = ln(K/F)) is *inside* when tau lies within the first..last
fitted expiry and k within the quoted strikes' k range at tau, that range interpolated linearly in
time between the two neighbouring fitted expiries (each expiry's range: the smallest and largest
ln(K/F) of its quotes that carry a vol). Everything else (short tenors before the first expiry,
long ones past the last, wings past the listed strikes) is *extrapolated*: the fit's own shape,
not the market's.

Pure numpy; years and k as the surface uses them (:mod:`quant.surface`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def quoted_k_ranges(quote_expiry_ms: ArrayLike, quote_k: ArrayLike, used: ArrayLike,
                    expiry_ms: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Per expiry of ``expiry_ms``: the (min, max) ln(K/F) of the quotes ``used`` (a mask over the
    quotes: those that carry a vol) of that expiry; NaN where it has none."""
    q_exp = np.asarray(quote_expiry_ms, dtype=np.int64).ravel()
    q_k = np.asarray(quote_k, dtype=np.float64).ravel()
    mask = np.asarray(used, dtype=bool).ravel() & np.isfinite(q_k)
    expiries = np.asarray(expiry_ms, dtype=np.int64).ravel()
    k_min = np.full(expiries.size, np.nan)
    k_max = np.full(expiries.size, np.nan)
    for i, e in enumerate(expiries.tolist()):
        ks = q_k[mask & (q_exp == e)]
        if ks.size:
            k_min[i], k_max[i] = float(ks.min()), float(ks.max())
    return k_min, k_max


def inside_data(tenor_years: ArrayLike, log_moneyness: ArrayLike, expiry_years: ArrayLike,
                k_min: ArrayLike, k_max: ArrayLike) -> BoolArray:
    """(len(tenor_years), len(log_moneyness)) booleans: True where the node lies inside the data.

    ``expiry_years``, ``k_min`` and ``k_max`` describe the fitted expiries (any order); an expiry
    with a NaN range or a non-positive time is left out. No expiry: nothing is inside."""
    tau = np.asarray(tenor_years, dtype=np.float64).ravel()
    k = np.asarray(log_moneyness, dtype=np.float64).ravel()
    t = np.asarray(expiry_years, dtype=np.float64).ravel()
    lo = np.asarray(k_min, dtype=np.float64).ravel()
    hi = np.asarray(k_max, dtype=np.float64).ravel()
    keep = np.isfinite(t) & (t > 0.0) & np.isfinite(lo) & np.isfinite(hi) & (lo <= hi)
    t, lo, hi = t[keep], lo[keep], hi[keep]
    out = np.zeros((tau.size, k.size), dtype=bool)
    if t.size == 0:
        return out
    order = np.argsort(t, kind="stable")
    t, lo, hi = t[order], lo[order], hi[order]
    within = (tau >= t[0]) & (tau <= t[-1])
    # np.interp is linear between neighbouring expiries (and exact at an expiry); outside
    # [t_first, t_last] the range does not matter: those tenors are extrapolated.
    k_lo = np.interp(tau, t, lo)
    k_hi = np.interp(tau, t, hi)
    out[:] = within[:, None] & (k[None, :] >= k_lo[:, None]) & (k[None, :] <= k_hi[:, None])
    return out


__all__ = ["inside_data", "quoted_k_ranges"]
