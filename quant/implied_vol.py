"""Black-76 implied volatility over numpy arrays: Jaeckel's "Let's Be Rational", vectorized.

The algorithm is the one of P. Jaeckel, "Let's Be Rational", Wilmott (2015): map the option to an
out-of-the-money call in normalised form b(x, s) with x = ln(F/K) <= 0 and s = vol sqrt(T); pick
one of four segments of the price axis from three anchor points (the inflection point s_c and
its two tangent intersections); take the initial guess from a shape-preserving rational cubic
interpolation (in transformed coordinates in the two outer segments); then take third-order
Householder steps on a segment-specific objective (1/ln b in the lowest segment, ln(b_max - b) in
the highest, b elsewhere). As in LBR two steps reach machine precision; an element stops after
one already when that step was below 5e-4 of s (the error left is then about 0.1 (5e-4)^4 s), and a
third step is allowed as a safety net. Every step is a handful of array operations over all the
options still moving; there is no per-element Python loop. The guess uses a rough inverse normal
(4.5e-4) where LBR uses AS241: the guess only has to land in the basin of the steps.

    Copyright (c) 2013-2014 Peter Jaeckel.
    Permission to use, copy, modify, and distribute this software is freely granted,
    provided that this notice is preserved.
    (This module is a vectorized numpy re-implementation of that algorithm.)

Where no volatility exists the result is NaN and a reason code (:class:`IVReason`) says why.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from quant._special import erfcx_nonneg, inverse_norm_cdf_rough
from quant.black76 import normalised_black_otm, normalised_vega

FloatArray = NDArray[np.float64]
ReasonArray = NDArray[np.int8]

_DBL_MIN = float(np.finfo(np.float64).tiny)
_DBL_MAX = float(np.finfo(np.float64).max)
_DBL_EPS = float(np.finfo(np.float64).eps)
_R_MIN = -(1.0 - np.sqrt(_DBL_EPS))  # rational cubic control parameter bounds
_R_MAX = 2.0 / (_DBL_EPS * _DBL_EPS)
_SQRT_THREE = 1.732050807568877293527446341505872366942805253810
_TWO_PI = 2.0 * np.pi
_TWO_PI_OVER_SQRT_27 = 1.209199576156145233729385505094770488189377498728
_PI_OVER_SIX = np.pi / 6.0
_SQRT_PI_OVER_TWO = 1.253314137315500251207882642405522626503493370305
_ONE_OVER_SQRT_TWO = 0.7071067811865475244008443621048490392848359376887
_ONE_OVER_SQRT_TWO_PI = 0.3989422804014326779399460599343818684758586311649
_MAX_ITERATIONS = 3
_STEP_TOLERANCE = 5e-4  # after a step of relative size d the error is below about 0.1 d^4: round-off


class IVReason(IntEnum):
    """Why an implied volatility is (or is not) available."""

    OK = 0
    #: a NaN or infinite input (an infinite time too), a non-positive forward or strike, or a
    #: negative price
    BAD_INPUT = 1
    #: no time left: years <= 0
    NO_TIME = 2
    #: price at or below intrinsic value: no time value left to explain with a volatility; also a
    #: time value too small to be a number (normalised below the smallest normal double: the
    #: subnormals have lost their digits, and the solver's logarithms with them)
    BELOW_INTRINSIC = 3
    #: price at or above the upper bound (the forward for a call, the strike for a put)
    ABOVE_MAXIMUM = 4
    #: no price to invert: that side of the book is empty (set by the surface, not the solver)
    NO_QUOTE = 5


# -- shape-preserving rational cubic interpolation (Delbourgo and Gregory 1985, as in LBR) ---------


def _rational_cubic(
    x: FloatArray,
    x_l: FloatArray,
    x_r: FloatArray,
    y_l: FloatArray,
    y_r: FloatArray,
    d_l: FloatArray,
    d_r: FloatArray,
    r: FloatArray,
) -> FloatArray:
    h = x_r - x_l
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (x - x_l) / h
        omt = 1.0 - t
        t2 = t * t
        omt2 = omt * omt
        cubic = (y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2 + y_l * omt2 * omt) / (
            1.0 + (r - 3.0) * t * omt
        )
        linear = y_r * t + y_l * omt
    out = np.where(r >= _R_MAX, linear, cubic)
    return np.where(np.abs(h) <= 0.0, 0.5 * (y_l + y_r), out)


def _minimum_control(d_l: FloatArray, d_r: FloatArray, s: FloatArray, prefer_shape: bool) -> FloatArray:
    """Smallest control parameter that keeps a monotone or convex/concave interpolant so.

    Delbourgo and Gregory (1985) eqs. (3.8) and (3.18), as in LBR; degenerate slopes (a division
    by zero) give the linear limit.
    """
    monotonic = (d_l * s >= 0.0) & (d_r * s >= 0.0)
    convex_or_concave = (d_l - s) * (d_r - s) <= 0.0  # secant slope between the end slopes
    with np.errstate(divide="ignore", invalid="ignore"):
        r1 = np.where(monotonic, (d_r + d_l) / s, -np.inf)
        dd = d_r - d_l
        r2 = np.where(convex_or_concave, np.maximum(np.abs(dd / (d_r - s)), np.abs(dd / (s - d_l))), -np.inf)
        r = np.minimum(np.fmax(r1, r2), _R_MAX)
    r = np.where(monotonic | convex_or_concave, np.maximum(r, _R_MIN), _R_MIN)
    if prefer_shape:
        r = np.where(monotonic & ~convex_or_concave, _R_MAX, r)
    return r


def _control_fit(
    b_left: FloatArray,
    b_right: FloatArray,
    s_left: FloatArray,
    s_right: FloatArray,
    d_left: FloatArray,
    d_right: FloatArray,
    second: FloatArray,
    at_right: NDArray[np.bool_] | bool,
    prefer_shape: bool,
) -> FloatArray:
    """Control parameter matching a second derivative at the right (or left) end, made convex."""
    h = b_right - b_left
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (s_right - s_left) / h
        num = 0.5 * h * second + (d_right - d_left)
        den = np.where(at_right, d_right - slope, slope - d_left)
        r = np.where(
            np.abs(num) < _DBL_MIN,
            0.0,
            np.where(np.abs(den) < _DBL_MIN, np.where(num > 0.0, _R_MAX, _R_MIN), num / den),
        )
    return np.maximum(r, _minimum_control(d_left, d_right, slope, prefer_shape))


# -- transformed coordinates of the outer segments -----------------------------------------------


def _f_lower_map(x: FloatArray, s: FloatArray, erfcx_z: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """f(s) = 2pi/sqrt(27) |x| Phi(-z)^3, z = |x|/(sqrt(3) s), and df/db, d2f/db2 (LBR eq. 4.7ff).

    ``erfcx_z`` is erfcx(z/sqrt 2): Phi(-z) = erfcx(z/sqrt 2) exp(-z^2/2)/2, and the ratio
    Phi(-z)/phi(z) = sqrt(pi/2) erfcx(z/sqrt 2) stays finite where phi(z) underflows.
    """
    ax = np.abs(x)
    z = ax / (_SQRT_THREE * s)
    y = z * z
    s2 = s * s
    phi_lower = 0.5 * erfcx_z * np.exp(-0.5 * y)
    mills = _SQRT_PI_OVER_TWO * erfcx_z
    with np.errstate(over="ignore", invalid="ignore"):
        fpp = (
            _PI_OVER_SIX
            * y
            / (s2 * s)
            * phi_lower
            * (8.0 * _SQRT_THREE * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * x * x) * mills)
            * np.exp(2.0 * y + 0.25 * s2)
        )
        phi2 = phi_lower * phi_lower
        fp = _TWO_PI * y * phi2 * np.exp(y + 0.125 * s2)
        f = _TWO_PI_OVER_SQRT_27 * ax * (phi2 * phi_lower)
    return f, fp, fpp


def _f_upper_map(x: FloatArray, s: FloatArray, erfcx_half_s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """f(s) = Phi(-s/2) and its first two derivatives with respect to b (LBR eq. 4.13ff).

    ``erfcx_half_s`` is erfcx(s/(2 sqrt 2)).
    """
    f = 0.5 * erfcx_half_s * np.exp(-0.125 * s * s)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        w = (x / s) ** 2
        fp = np.where(x == 0.0, -0.5, -0.5 * np.exp(0.5 * w))
        fpp = np.where(x == 0.0, 0.0, _SQRT_PI_OVER_TWO * np.exp(w + 0.125 * s * s) * w / s)
    return f, fp, fpp


# -- the solver ------------------------------------------------------------------------------------

_OBJ_LOG, _OBJ_PLAIN, _OBJ_UPPER = 0, 1, 2


def _householder_factor(newton: FloatArray, halley: FloatArray, hh3: FloatArray) -> FloatArray:
    return (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))


def _initial_guess(beta: FloatArray, x: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.int8]]:
    """Initial s, bracket (s_left, s_right) and objective kind for b(x, s) = beta, x <= 0 (1-d)."""
    n = beta.size
    b_max = np.exp(0.5 * x)
    # At the inflection point s_c = sqrt(2|x|) of b(s), h + t = 0 and the price has the closed
    # form b_c = b_max (1 - erfcx(sqrt|x|))/2, vega v_c = b_max/sqrt(2 pi).
    sqrt_ax = np.sqrt(-x)
    s_c = np.sqrt(2.0) * sqrt_ax
    b_c = 0.5 * b_max * (1.0 - erfcx_nonneg(sqrt_ax))
    v_c = b_max * _ONE_OVER_SQRT_TWO_PI
    lower = beta < b_c
    with np.errstate(divide="ignore", invalid="ignore"):
        # The tangent at the inflection point s_c meets b = 0 at s_l and b = b_max at s_h; both
        # anchors are evaluated in one pass, s_l where beta is below b_c, s_h elsewhere.
        s_h = np.where(v_c > _DBL_MIN, s_c + (b_max - b_c) / v_c, s_c)
        s_a = np.where(lower, s_c - b_c / v_c, s_h)
    b_a = normalised_black_otm(x, s_a)
    v_a = normalised_vega(x, s_a)
    lowest = lower & (beta < b_a)
    highest = ~lower & (beta > b_a)

    # The two middle segments: rational cubic in (b, s) between the anchor and (b_c, s_c), with
    # slopes 1/vega and zero second derivative at s_c.
    b_left = np.where(lower, b_a, b_c)
    b_right = np.where(lower, b_c, b_a)
    s_left = np.where(lower, s_a, s_c)
    s_right = np.where(lower, s_c, s_a)
    with np.errstate(divide="ignore"):
        d_left = 1.0 / np.where(lower, v_a, v_c)
        d_right = 1.0 / np.where(lower, v_c, v_a)
    r = _control_fit(b_left, b_right, s_left, s_right, d_left, d_right, np.zeros(n), lower, False)
    s = _rational_cubic(beta, b_left, b_right, s_left, s_right, d_left, d_right, r)
    kind = np.full(n, _OBJ_PLAIN, dtype=np.int8)

    i_lo = np.nonzero(lowest)[0]
    i_hi = np.nonzero(highest)[0]
    if i_lo.size or i_hi.size:
        x_lo, beta_lo, s_l, b_l = x[i_lo], beta[i_lo], s_a[i_lo], b_a[i_lo]
        x_hi, beta_hi, s_hh, b_h, bmax_hi = x[i_hi], beta[i_hi], s_a[i_hi], b_a[i_hi], b_max[i_hi]
        n_lo = i_lo.size
        z_lo = np.abs(x_lo) / (_SQRT_THREE * s_l)
        ex = erfcx_nonneg(np.concatenate((_ONE_OVER_SQRT_TWO * z_lo, (0.5 * _ONE_OVER_SQRT_TWO) * s_hh)))

        # Lowest segment: interpolate f = 2pi/sqrt(27)|x| Phi(-|x|/(sqrt 3 s))^3 over [0, b_l]
        # (f(0) = 0, f'(0) = 1), then invert f in closed form.
        f_l, df_l, d2f_l = _f_lower_map(x_lo, s_l, ex[:n_lo])
        zero, one = np.zeros(n_lo), np.ones(n_lo)
        r_ll = _control_fit(zero, b_l, zero, f_l, one, df_l, d2f_l, True, True)
        f_lo = _rational_cubic(beta_lo, zero, b_l, zero, f_l, one, df_l, r_ll)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Round-off can make f non-positive for extreme |x|: quadratic through f(0)=0, f'(0)=1, f(b_l).
            t = beta_lo / b_l
            f_lo = np.where(f_lo > 0.0, f_lo, (f_l * t + b_l * (1.0 - t)) * t)
            u_lo = np.cbrt(f_lo / (_TWO_PI_OVER_SQRT_27 * np.abs(x_lo)))

        # Highest segment: interpolate f = Phi(-s/2) over [b_h, b_max] (f(b_max) = 0,
        # f'(b_max) = -1/2), then s = -2 Phi^-1(f).
        f_h, df_h, d2f_h = _f_upper_map(x_hi, s_hh, ex[n_lo:])
        zero = np.zeros(i_hi.size)
        half = np.full(i_hi.size, -0.5)
        finite = np.abs(d2f_h) < np.sqrt(_DBL_MAX)
        r_hh = _control_fit(b_h, bmax_hi, f_h, zero, df_h, half, d2f_h, False, True)
        f_hi = np.where(finite, _rational_cubic(beta_hi, b_h, bmax_hi, f_h, zero, df_h, half, r_hh), -1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Fallback: quadratic through f(b_h), f(b_max) = 0 and f'(b_max) = -1/2.
            gap = bmax_hi - b_h
            t = (beta_hi - b_h) / gap
            f_hi = np.where(f_hi > 0.0, f_hi, (f_h * (1.0 - t) + 0.5 * gap * t) * (1.0 - t))

        inv = inverse_norm_cdf_rough(np.concatenate((u_lo, f_hi)))
        with np.errstate(divide="ignore", invalid="ignore"):
            s[i_lo] = np.where(f_lo > 0.0, np.abs(x_lo / (_SQRT_THREE * inv[:n_lo])), 0.0)
        s[i_hi] = -2.0 * inv[n_lo:]
        s_left[i_lo] = _DBL_MIN
        s_right[i_lo] = s_l
        kind[i_lo] = _OBJ_LOG
        s_left[i_hi] = s_hh
        s_right[i_hi] = _DBL_MAX
        # Below half of b_max the plain objective b - beta is the better-conditioned one.
        kind[i_hi] = np.where(beta_hi > 0.5 * bmax_hi, _OBJ_UPPER, _OBJ_PLAIN).astype(np.int8)
    return s, s_left, s_right, kind


def _householder_steps(
    beta: FloatArray,
    x: FloatArray,
    s: FloatArray,
    s_left: FloatArray,
    s_right: FloatArray,
    kind: NDArray[np.int8],
    max_iterations: int,
    tolerance: float,
) -> FloatArray:
    """Third-order Householder steps on the segment's objective until |ds| <= tolerance * s.

    Each step works on the elements still moving only; the bracket from the initial guess is
    tightened as LBR does and a step that leaves it falls back to bisection (extreme |x| only).
    """
    s = s.copy()
    s_left = s_left.copy()
    s_right = s_right.copy()
    idx = np.arange(s.size)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for it in range(max_iterations):
            if idx.size == 0:
                break
            xi, bt, si, sl, sr, ki = x[idx], beta[idx], s[idx], s_left[idx], s_right[idx], kind[idx]
            if it > 0:
                outside = (si < sl) | (si > sr)
                si = np.where(outside, 0.5 * (sl + sr), si)
            b = normalised_black_otm(xi, si)
            bp = normalised_vega(xi, si)
            sr = np.where((b > bt) & (si < sr), si, sr)
            sl = np.where((b < bt) & (si > sl), si, sl)
            h = xi / si
            # Objective b(s) - beta, with b2 := b''/b' = x^2/s^3 - s/4 and b3 := b'''/b' = b2^2 - 3 x^2/s^4 - 1/4.
            b2 = h * h / si - 0.25 * si
            b3 = b2 * b2 - 3.0 * (h / si) ** 2 - 0.25
            newton = (bt - b) / bp
            ds = newton * _householder_factor(newton, b2, b3)
            j = np.nonzero(ki == _OBJ_LOG)[0]
            if j.size:
                # 1/ln(b) - 1/ln(beta): nearly linear in s where b is tiny.
                bj, bpj, b2j, b3j = b[j], bp[j], b2[j], b3[j]
                ln_b = np.log(bj)
                ln_beta = np.log(bt[j])
                bpob = bpj / bj
                nt = (ln_beta - ln_b) * ln_b / ln_beta / bpob
                c = 1.0 + 2.0 / ln_b
                hl = b2j - bpob * c
                h3 = b3j + 2.0 * bpob * bpob * (1.0 + 3.0 / ln_b * (1.0 + 1.0 / ln_b)) - 3.0 * b2j * bpob * c
                ds_log = nt * _householder_factor(nt, hl, h3)
                # Underflow of b or b': bisect instead.
                ds[j] = np.where((bj <= 0.0) | (bpj <= 0.0), 0.5 * (sl[j] + sr[j]) - si[j], ds_log)
            j = np.nonzero(ki == _OBJ_UPPER)[0]
            if j.size:
                # ln((b_max - beta)/(b_max - b)): nearly linear in s where b approaches b_max.
                bj, bpj, b2j = b[j], bp[j], b2[j]
                b_max = np.exp(0.5 * xi[j])
                gap = b_max - bj
                gp = bpj / gap
                nt = -np.log((b_max - bt[j]) / gap) / gp
                hl = b2j + gp
                h3 = b3[j] + gp * (2.0 * gp + 3.0 * b2j)
                ds_up = nt * _householder_factor(nt, hl, h3)
                ds[j] = np.where((bj >= b_max) | (bpj <= _DBL_MIN), 0.5 * (sl[j] + sr[j]) - si[j], ds_up)
            ds = np.maximum(-0.5 * si, ds)
            ds = np.where(np.isfinite(ds), ds, 0.0)
            si = si + ds
            s[idx] = si
            s_left[idx] = sl
            s_right[idx] = sr
            idx = idx[np.abs(ds) > tolerance * si]
    return s


def normalised_implied_vol(beta: ArrayLike, x: ArrayLike) -> FloatArray:
    """Total implied volatility s with b(x, s) = beta for an out-of-the-money call (x <= 0).

    Requires 0 < beta < exp(x/2); 1-d arrays. The building block of :func:`implied_vol`.
    """
    beta_a = np.asarray(beta, dtype=np.float64).ravel()
    x_a = np.asarray(x, dtype=np.float64).ravel()
    s, s_left, s_right, kind = _initial_guess(beta_a, x_a)
    return _householder_steps(beta_a, x_a, s, s_left, s_right, kind, _MAX_ITERATIONS, _STEP_TOLERANCE)


def implied_vol_with_reasons(
    price: ArrayLike, forward: ArrayLike, strike: ArrayLike, years: ArrayLike, is_call: ArrayLike
) -> tuple[FloatArray, ReasonArray]:
    """Black-76 implied volatility and an :class:`IVReason` code per element.

    ``price`` is the undiscounted option price in the currency of ``forward`` and ``strike``
    (for a Deribit quote: price_in_coin x underlying_price). Inputs broadcast; the volatility is
    NaN wherever the reason is not ``IVReason.OK``. Scalars in, numpy scalars out.
    """
    p, f, k, t, c = np.broadcast_arrays(
        np.asarray(price, dtype=np.float64),
        np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(years, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
    )
    shape = p.shape
    p, f, k, t, c = (a.ravel() for a in (p, f, k, t, c))
    with np.errstate(invalid="ignore", divide="ignore"):
        # An infinite time is bad input, not "no time" nor a vol of 0: s / sqrt(inf) would be 0 with OK.
        bad = ~(np.isfinite(p) & np.isfinite(f) & np.isfinite(k) & np.isfinite(t) & (f > 0.0) & (k > 0.0)
                & (p >= 0.0))
        # Same arithmetic as LetsBeRational: intrinsic value and the in-to-out-of-the-money switch
        # in price units, so both agree on the time value of a deep in-the-money quote to the bit.
        time_value = p - np.maximum(np.where(c, f - k, k - f), 0.0)
        # A normalised time value below the smallest normal double (a price of 1e-323) has no
        # digits left: the solver's ln(b) is then garbage (it returned 14.85 with OK). No vol.
        beta = time_value / (np.sqrt(f) * np.sqrt(k))
        reason = np.select(
            [bad, ~(t > 0.0), p >= np.where(c, f, k), ~(time_value > 0.0) | ~(beta >= _DBL_MIN)],
            [IVReason.BAD_INPUT, IVReason.NO_TIME, IVReason.ABOVE_MAXIMUM, IVReason.BELOW_INTRINSIC],
            IVReason.OK,
        ).astype(np.int8)
    ok = reason == IVReason.OK
    if ok.all():
        # Both an in-the-money call and an out-of-the-money put have x >= 0: as a call they are b(-x).
        s = normalised_implied_vol(beta, -np.abs(np.log(f / k)))
        vol = s / np.sqrt(t)
    else:
        vol = np.full(p.shape, np.nan)
        idx = np.nonzero(ok)[0]
        if idx.size:
            fi, ki = f[idx], k[idx]
            s = normalised_implied_vol(beta[idx], -np.abs(np.log(fi / ki)))
            vol[idx] = s / np.sqrt(t[idx])
    return vol.reshape(shape)[()], reason.reshape(shape)[()]


def implied_vol(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    years: ArrayLike,
    is_call: ArrayLike,
    *,
    return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, ReasonArray]:
    """Black-76 implied volatility (decimal, 0.55 = 55 vol points); NaN where none exists.

    With ``return_reason=True`` also returns the :class:`IVReason` codes (int8).
    """
    vol, reason = implied_vol_with_reasons(price, forward, strike, years, is_call)
    return (vol, reason) if return_reason else vol


__all__ = [
    "IVReason",
    "implied_vol",
    "implied_vol_with_reasons",
    "normalised_implied_vol",
]
