"""Black-76 prices and greeks over numpy arrays, undiscounted (Deribit: r = 0, F = underlying_price).

Prices are in the quote currency of ``forward`` and ``strike`` (USD on Deribit). A Deribit option
price quoted in coin converts with :func:`usd_from_coin` (price_in_coin x underlying_price).

The price is evaluated the way Peter Jaeckel's "Let's Be Rational" does it: intrinsic value plus
sqrt(F K) times the normalised out-of-the-money price b(x, s), x = ln(F/K), s = vol sqrt(T), with
b taken from an asymptotic expansion, a small-s expansion, the plain normal cdf or the scaled
complementary error function depending on the region, so that far out-of-the-money prices keep
their relative accuracy (the implied-vol solver depends on it).

    Copyright (c) 2013-2014 Peter Jaeckel.
    Permission to use, copy, modify, and distribute this software is freely granted,
    provided that this notice is preserved.
    (The region formulas below follow LetsBeRational; this is a vectorized re-implementation.)
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
from numpy.typing import ArrayLike, NDArray

from quant._special import (
    ONE_OVER_SQRT_TWO,
    ONE_OVER_SQRT_TWO_PI,
    SQRT_TWO_PI,
    erfcx_nonneg,
    norm_cdf,
    powers,
)

FloatArray = NDArray[np.float64]

DAYS_PER_YEAR = 365.0
_EPS = float(np.finfo(np.float64).eps)
_ASYMPTOTIC_THRESHOLD = -10.0  # eta: h = x/s below this uses the asymptotic expansion
_SMALL_T_THRESHOLD = 2.0 * _EPS**0.0625  # tau: t = s/2 below this uses the small-t expansion

# The 17th-order asymptotic expansion of (r/t)[Y(h+t) - Y(h-t)], Y = Phi/phi, for h < -10 (LBR):
# sum_j (-1)^j (2j-1)!! q^j P_j(e) with P_j(e) = 2 sum_i C(2j+1, 2i+1) e^i. Row j of the matrix
# holds P_j's coefficients, highest power of e first, padded with leading zeros.
_ASYMPTOTIC_ORDER = 17


def _double_factorial_odd(j: int) -> int:
    out = 1
    for k in range(1, 2 * j, 2):
        out *= k
    return out


_ASYMPTOTIC = np.array(
    [
        [0.0] * (_ASYMPTOTIC_ORDER - j)
        + [float((-1) ** j * _double_factorial_odd(j) * 2 * comb(2 * j + 1, 2 * i + 1)) for i in range(j, -1, -1)]
        for j in range(_ASYMPTOTIC_ORDER + 1)
    ]
)

# The small-t expansion (LBR): b = phi-prefactor * 2t sum_k w^k c_k, w = t^2, with
# c_k = (P_k(h^2) + a Q_k(h^2))/D_k and a = 1 + h Y(h). Rows k = 0..6, written highest power of
# h^2 first as in LBR's nested form.
_SMALL_T_P = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, -1],
        [0, 0, 0, 0, 0, -1, -7],
        [0, 0, 0, 0, -1, -18, -57],
        [0, 0, 0, -1, -33, -285, -561],
        [0, 0, -1, -52, -840, -4680, -6555],
        [0, -1, -75, -1926, -20370, -82845, -89055],
    ],
    dtype=np.float64,
)
_SMALL_T_Q = np.array(
    [
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 1, 3],
        [0, 0, 0, 0, 1, 10, 15],
        [0, 0, 0, 1, 21, 105, 105],
        [0, 0, 1, 36, 378, 1260, 945],
        [0, 1, 55, 990, 6930, 17325, 10395],
        [1, 78, 2145, 25740, 135135, 270270, 135135],
    ],
    dtype=np.float64,
)
_SMALL_T_D = np.array([1.0, 6.0, 120.0, 5040.0, 362880.0, 39916800.0, 6227020800.0])[:, None]
_SMALL_T_P = np.ascontiguousarray(_SMALL_T_P[:, ::-1])  # lowest power first, for powers()
_SMALL_T_Q = np.ascontiguousarray(_SMALL_T_Q[:, ::-1])


def usd_from_coin(price_in_coin: ArrayLike, underlying_price: ArrayLike) -> FloatArray:
    """Deribit option price in coin -> quote currency (USD): price_in_coin x underlying_price."""
    return np.multiply(price_in_coin, underlying_price, dtype=np.float64)


def _horner_rows(coeffs: FloatArray, y: FloatArray) -> FloatArray:
    """Evaluate one polynomial per row of ``coeffs`` (highest power first) at every y: (rows, n)."""
    acc = np.repeat(coeffs[:, :1], y.size, axis=1)
    for j in range(1, coeffs.shape[1]):
        acc *= y
        acc += coeffs[:, j : j + 1]
    return acc


def _horner(acc_rows: FloatArray, y: FloatArray) -> FloatArray:
    """sum_k y^k row_k by Horner, rows lowest power first."""
    acc = acc_rows[-1].copy()
    for k in range(acc_rows.shape[0] - 2, -1, -1):
        acc *= y
        acc += acc_rows[k]
    return acc


def _asymptotic_expansion(h: FloatArray, t: FloatArray) -> FloatArray:
    e = (t / h) ** 2
    r = (h + t) * (h - t)
    q = (h / r) ** 2
    total = _horner(_horner_rows(_ASYMPTOTIC, e), q)
    b = ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * (h * h + t * t)) * (t / r) * total
    return np.abs(np.maximum(b, 0.0))


def _small_t_expansion(h: FloatArray, t: FloatArray, erfcx_minus_h: FloatArray) -> FloatArray:
    """b for small t = s/2: a 12th-order expansion of Y(h+t) - Y(h-t), Y = Phi/phi, in t."""
    # a := 1 + h Y(h) with Y(h) = Phi(h)/phi(h) = sqrt(pi/2) erfcx(-h/sqrt(2)); a > 0 for h <= 0.
    a = 1.0 + h * (0.5 * SQRT_TWO_PI) * erfcx_minus_h
    # c_k = (P_k(h^2) + a Q_k(h^2))/D_k for k = 0..6 as two small matrix products.
    hp = powers(h * h, 7)
    c = (_SMALL_T_P @ hp + a * (_SMALL_T_Q @ hp)) / _SMALL_T_D
    expansion = 2.0 * t * _horner(c, t * t)
    b = ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * (h * h + t * t)) * expansion
    return np.abs(np.maximum(b, 0.0))


def normalised_black_otm(x: ArrayLike, s: ArrayLike) -> FloatArray:
    """Normalised out-of-the-money Black price b(x, s) = Phi(x/s + s/2) e^{x/2} - Phi(x/s - s/2) e^{-x/2}.

    Requires x <= 0 (the out-of-the-money call; a put with x >= 0 is b(-x, s)) and s >= 0; arrays
    broadcast. The Black price is sqrt(F K) b(-|ln(F/K)|, vol sqrt(T)) plus intrinsic value.
    """
    x, s = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(s, dtype=np.float64))
    shape = x.shape
    x = x.ravel()
    s = s.ravel()
    n = x.size
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        h = x / s
        t = 0.5 * s
        # Regions as in LBR: asymptotic expansion for h < -10 (and t not too large), small-t
        # expansion for t < tau, otherwise erfcx or, above about 85% of b_max, the normal cdf.
        asym = (h < _ASYMPTOTIC_THRESHOLD) & (h + t < _SMALL_T_THRESHOLD + _ASYMPTOTIC_THRESHOLD)
        i_small = np.nonzero(~asym & (t < _SMALL_T_THRESHOLD))[0]
        h_small = h[i_small]
        u_plus = -ONE_OVER_SQRT_TWO * (h + t)
        u_minus = -ONE_OVER_SQRT_TWO * (h - t)  # > 0 since h <= 0 < t
        # One erfcx evaluation serves every region.
        ex = erfcx_nonneg(np.concatenate((np.abs(u_plus), u_minus, -ONE_OVER_SQRT_TWO * h_small)))
        e_abs_plus, e_minus = ex[:n], ex[n : 2 * n]
        # With Phi(z) = exp(-z^2/2) erfcx(-z/sqrt 2)/2 the price is one exponential times a
        # difference of two rationals, exact far out of the money:
        #     b = exp(-(h^2+t^2)/2)/2 [erfcx(u+) - erfcx(u-)],  u+- = -(h +- t)/sqrt 2.
        e_plus = np.where(u_plus < 0.0, 2.0 * np.exp(u_plus * u_plus) - e_abs_plus, e_abs_plus)
        b_erfcx = 0.5 * np.exp(-0.5 * (h * h + t * t)) * (e_plus - e_minus)
        # Near b_max the two cdfs are kept apart: b = Phi(h+t) e^{x/2} - Phi(h-t) e^{-x/2}.
        b_max = np.exp(0.5 * x)
        cdf_plus = 1.0 - 0.5 * e_abs_plus * np.exp(-u_plus * u_plus)
        cdf_minus = 0.5 * e_minus * np.exp(-u_minus * u_minus)
        out = np.where(x + 0.5 * s * s > 0.85 * s, cdf_plus * b_max - cdf_minus / b_max, b_erfcx)
        if asym.any():
            out[asym] = _asymptotic_expansion(h[asym], t[asym])
        if i_small.size:
            out[i_small] = _small_t_expansion(h_small, t[i_small], ex[2 * n :])
        out = np.abs(np.maximum(out, 0.0))
        out[~(s > 0.0)] = 0.0
    out[np.isnan(x) | np.isnan(s)] = np.nan
    return out.reshape(shape)


def normalised_vega(x: ArrayLike, s: ArrayLike) -> FloatArray:
    """db/ds = phi(x/s + s/2) e^{x/2} = exp(-(x^2/s^2 + s^2/4)/2)/sqrt(2 pi)."""
    x = np.asarray(x, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        h = np.where(x == 0.0, 0.0, x / s)
        return ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * (h * h + 0.25 * s * s))


def _prepare(
    forward: ArrayLike, strike: ArrayLike, years: ArrayLike, vol: ArrayLike, is_call: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]:
    f, k, t, v, c = np.broadcast_arrays(
        np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(years, dtype=np.float64),
        np.asarray(vol, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
    )
    return f, k, t, v, c


def black76_price(
    forward: ArrayLike, strike: ArrayLike, years: ArrayLike, vol: ArrayLike, is_call: ArrayLike
) -> FloatArray:
    """Undiscounted Black-76 price in the currency of ``forward``/``strike``.

    ``years`` <= 0 or ``vol`` <= 0 give the intrinsic value; a non-positive or NaN forward or strike,
    or a NaN vol or time, gives NaN. Scalars in, numpy scalar out.
    """
    f, k, t, v, c = _prepare(forward, strike, years, vol, is_call)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(f / k)
        s = np.sqrt(np.maximum(t, 0.0)) * np.maximum(v, 0.0)
        intrinsic = np.maximum(np.where(c, f - k, k - f), 0.0)
        price = intrinsic + np.sqrt(f) * np.sqrt(k) * normalised_black_otm(-np.abs(x), s)
    bad = ~((f > 0.0) & (k > 0.0) & np.isfinite(f) & np.isfinite(k)) | np.isnan(t) | np.isnan(v)
    price = np.where(bad, np.nan, price)
    return price[()]


@dataclass(frozen=True, slots=True)
class Black76Greeks:
    """Black-76 price and sensitivities, all in the currency of the forward (USD on Deribit).

    - ``price``: undiscounted option value.
    - ``delta``: dV/dF (call in [0, 1], put in [-1, 0]); Deribit's ticker ``delta``.
    - ``gamma``: d2V/dF2 per unit of forward.
    - ``vega``: value change for a +1 vol point move (vol + 0.01), Deribit's convention.
    - ``theta``: value change over one calendar day (365-day year) with the forward unchanged:
      Deribit's convention, the instantaneous rate -dV/dT / 365 while at least a day is left and,
      in the last day, what is left of the option above its intrinsic value, negated
      (``intrinsic - price``: a day later it has expired). See :func:`black76_greeks`.
    - ``delta_premium_adjusted``: delta - price/forward, the delta of a coin-settled option
      measured in coin (the premium itself is a coin exposure).
    """

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    delta_premium_adjusted: FloatArray


def black76_greeks(
    forward: ArrayLike, strike: ArrayLike, years: ArrayLike, vol: ArrayLike, is_call: ArrayLike
) -> Black76Greeks:
    """Price, delta, gamma, vega (per vol point), theta (per day) and premium-adjusted delta.

    At or past expiry (or zero vol) delta is the intrinsic step (1/0 or 0/-1; 0.5 at the money),
    gamma, vega and theta are 0.

    Theta follows Deribit's ticker: the instantaneous -dV/dT per 365-day day while T >= 1 day;
    within the last day (0 < T < 1/365) it is ``intrinsic - price``, the value the option loses by
    expiring before a day has passed (checked on every last-day ticker of the real capture:
    ETH-23JUL21-2300-C at 0.39 days, Deribit -0.00152 USD/day where the instantaneous rate is
    -0.0333; tickers further from expiry keep the instantaneous rate).
    """
    f, k, t, v, c = _prepare(forward, strike, years, vol, is_call)
    price = np.asarray(black76_price(f, k, t, v, c))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        sqrt_t = np.sqrt(np.maximum(t, 0.0))
        s = sqrt_t * np.maximum(v, 0.0)
        live = s > 0.0
        safe_s = np.where(live, s, 1.0)
        d1 = np.log(f / k) / safe_s + 0.5 * safe_s
        pdf = ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * d1 * d1)
        # Phi(d1) for calls and Phi(d1) - 1 = -Phi(-d1) for puts, each without cancellation.
        live_delta = np.where(c, norm_cdf(d1), -norm_cdf(-d1))
        step = np.where(f > k, 1.0, np.where(f < k, 0.0, 0.5))
        dead_delta = np.where(c, step, step - 1.0)
        delta = np.where(live, live_delta, dead_delta)
        gamma = np.where(live, pdf / (f * safe_s), 0.0)
        vega = np.where(live, f * pdf * sqrt_t, 0.0) * 0.01
        theta = np.where(live, -f * pdf * v / (2.0 * np.where(live, sqrt_t, 1.0)), 0.0) / DAYS_PER_YEAR
        # Deribit's last day: the whole time value goes within the day (see the docstring).
        intrinsic = np.maximum(np.where(c, f - k, k - f), 0.0)
        theta = np.where(live & (t < 1.0 / DAYS_PER_YEAR), intrinsic - price, theta)
        delta_pa = delta - price / f
    bad = np.isnan(price)
    nan = np.nan

    def fin(a: FloatArray) -> FloatArray:
        return np.where(bad, nan, a)[()]

    return Black76Greeks(
        price=price[()],
        delta=fin(delta),
        gamma=fin(gamma),
        vega=fin(vega),
        theta=fin(theta),
        delta_premium_adjusted=fin(delta_pa),
    )


__all__ = [
    "DAYS_PER_YEAR",
    "Black76Greeks",
    "black76_greeks",
    "black76_price",
    "normalised_black_otm",
    "normalised_vega",
    "usd_from_coin",
]
