"""30-day variance index by the Cboe VIX method, on any option chain (a DVOL-like figure on Deribit).

Per expiry (Cboe VIX white paper, steps 1 and 2):

- mid quotes Q = (bid + ask)/2; the forward from put-call parity at the strike where the call and
  put mids are closest, F = K + e^{RT} (C - P);
- K0, the strike at or immediately below F;
- out-of-the-money puts below K0 and calls above it, walking away from K0, skipping zero bids and
  stopping at the second consecutive zero bid; at K0 the average of the put and call mids;
- each strike contributes dK/K^2 e^{RT} Q(K), dK half the distance between its selected
  neighbours (the distance to the one neighbour at the ends);
- sigma^2 = 2/T sum(contributions) - 1/T (F/K0 - 1)^2.

Then (step 3) the two expiries bracketing the target maturity are interpolated in total variance,
index = 100 sqrt((T1 s1^2 w1 + T2 s2^2 w2) 365/target_days) with w1 = (T2 - T30)/(T2 - T1) and
w2 = 1 - w1. Times are years of 365 days (the white paper's minutes / 525,600).

On Deribit the quotes are in coin: times the expiry's underlying price they are USD prices and the
method applies as is with R = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

MS_PER_YEAR = 365.0 * 86_400_000.0

#: ``TermVariance.kinds``: which option priced each selected strike.
PUT, CALL, BOTH = -1, 1, 0


@dataclass(frozen=True, slots=True)
class TermVariance:
    """One expiry's model-free variance and every intermediate figure of the white paper.

    ``variance`` is NaN when the chain cannot support the calculation; ``note`` says why.
    """

    years: float
    rate: float
    forward: float
    parity_strike: float
    k0: float
    strikes: FloatArray
    kinds: NDArray[np.int8]
    mid: FloatArray
    delta_k: FloatArray
    contribution: FloatArray
    sum_contribution: float
    forward_adjustment: float
    variance: float
    note: str = ""

    @property
    def scaled_sum(self) -> float:
        """2/T sum(contributions): the variance before the forward adjustment."""
        return 2.0 / self.years * self.sum_contribution


def _failed(years: float, rate: float, note: str, **known: float) -> TermVariance:
    empty = np.empty(0)
    values = {"forward": np.nan, "parity_strike": np.nan, "k0": np.nan} | known
    return TermVariance(
        years=years,
        rate=rate,
        strikes=empty,
        kinds=np.empty(0, dtype=np.int8),
        mid=empty,
        delta_k=empty,
        contribution=empty,
        sum_contribution=np.nan,
        forward_adjustment=np.nan,
        variance=np.nan,
        note=note,
        **values,
    )


def _walk(bids: FloatArray) -> NDArray[np.bool_]:
    """Which strikes of a walk away from K0 are used: nonzero bids up to two zero bids in a row."""
    zero = ~(bids > 0.0)
    pair = zero[:-1] & zero[1:]
    stop = int(np.argmax(pair)) if pair.any() else bids.size
    used = ~zero
    used[stop:] = False
    return used


def term_variance(
    strikes: ArrayLike,
    call_bid: ArrayLike,
    call_ask: ArrayLike,
    put_bid: ArrayLike,
    put_ask: ArrayLike,
    years: float,
    rate: float = 0.0,
) -> TermVariance:
    """sigma^2 of one expiry from its quotes, one row per strike (NaN or 0 bid: no bid)."""
    k = np.asarray(strikes, dtype=np.float64)
    order = np.argsort(k, kind="stable")
    k = k[order]
    cb, ca, pb, pa = (np.asarray(a, dtype=np.float64)[order] for a in (call_bid, call_ask, put_bid, put_ask))
    if not years > 0.0:
        return _failed(years, rate, "no time to expiry")
    if k.size and np.any(np.diff(k) <= 0.0):
        return _failed(years, rate, "strikes must be unique")
    growth = float(np.exp(rate * years))
    with np.errstate(invalid="ignore"):
        call_mid = np.where((cb > 0.0) & (ca >= cb), 0.5 * (cb + ca), np.nan)
        put_mid = np.where((pb > 0.0) & (pa >= pb), 0.5 * (pb + pa), np.nan)
    gap = np.abs(call_mid - put_mid)
    if not np.isfinite(gap).any():
        return _failed(years, rate, "no strike with both a call and a put quoted")
    i_par = int(np.nanargmin(gap))
    forward = float(k[i_par] + growth * (call_mid[i_par] - put_mid[i_par]))
    below = np.nonzero(k <= forward)[0]
    if below.size == 0:
        return _failed(years, rate, "no strike at or below the forward", forward=forward, parity_strike=k[i_par])
    i0 = int(below[-1])
    k0 = float(k[i0])
    q0 = 0.5 * (call_mid[i0] + put_mid[i0])
    if not np.isfinite(q0):
        return _failed(years, rate, "K0 lacks a two-sided call or put", forward=forward, parity_strike=k[i_par], k0=k0)

    put_used = _walk(pb[:i0][::-1])[::-1]
    call_used = _walk(cb[i0 + 1 :])
    sel = np.concatenate((np.nonzero(put_used)[0], [i0], i0 + 1 + np.nonzero(call_used)[0]))
    ks = k[sel]
    kinds = np.where(sel < i0, PUT, np.where(sel > i0, CALL, BOTH)).astype(np.int8)
    mid = np.where(kinds == PUT, 0.5 * (pb[sel] + pa[sel]), 0.5 * (cb[sel] + ca[sel]))
    mid[kinds == BOTH] = q0
    if ks.size < 2:
        return _failed(years, rate, "fewer than two strikes selected", forward=forward, parity_strike=k[i_par], k0=k0)
    dk = np.empty_like(ks)
    dk[1:-1] = 0.5 * (ks[2:] - ks[:-2])
    dk[0] = ks[1] - ks[0]
    dk[-1] = ks[-1] - ks[-2]
    contribution = dk / (ks * ks) * growth * mid
    total = float(contribution.sum())
    adjustment = (forward / k0 - 1.0) ** 2 / years
    return TermVariance(
        years=float(years),
        rate=float(rate),
        forward=forward,
        parity_strike=float(k[i_par]),
        k0=k0,
        strikes=ks,
        kinds=kinds,
        mid=mid,
        delta_k=dk,
        contribution=contribution,
        sum_contribution=total,
        forward_adjustment=float(adjustment),
        variance=float(2.0 / years * total - adjustment),
    )


@dataclass(frozen=True, slots=True)
class VarianceIndex:
    """The interpolated index (annualised vol in percent, 13.69 = 13.69%) and its two terms."""

    value: float
    target_days: float
    near: TermVariance | None
    next: TermVariance | None
    near_weight: float
    note: str = ""


def interpolate_index(near: TermVariance, next_: TermVariance, target_days: float = 30.0) -> VarianceIndex:
    """Step 3 of the white paper: 30-day (``target_days``) total-variance interpolation."""
    t1, t2 = near.years, next_.years
    target = target_days / 365.0
    if not (t1 <= target <= t2 and t1 < t2):
        return VarianceIndex(np.nan, target_days, near, next_, np.nan, "the two terms do not bracket the target")
    w1 = (t2 - target) / (t2 - t1)
    total = t1 * near.variance * w1 + t2 * next_.variance * (1.0 - w1)
    value = 100.0 * float(np.sqrt(total * 365.0 / target_days)) if total >= 0.0 else np.nan
    note = "" if np.isfinite(value) else "negative or undefined variance"
    return VarianceIndex(value, target_days, near, next_, float(w1), note)


def chain_variance_index(
    expiry_ms: ArrayLike,
    strike: ArrayLike,
    is_call: ArrayLike,
    bid: ArrayLike,
    ask: ArrayLike,
    underlying_price: ArrayLike,
    now_ms: float,
    *,
    target_days: float = 30.0,
    rate: float = 0.0,
) -> VarianceIndex:
    """The index of a whole chain quoted in coin (Deribit): USD = coin x the expiry's underlying.

    Picks the last expiry at or before the target and the first after it; without both there is
    no index (NaN, no extrapolation).
    """
    exp = np.asarray(expiry_ms, dtype=np.float64)
    k = np.asarray(strike, dtype=np.float64)
    call = np.asarray(is_call, dtype=bool)
    under = np.asarray(underlying_price, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bid_usd = np.where(np.asarray(bid, dtype=np.float64) > 0.0, np.asarray(bid, dtype=np.float64) * under, 0.0)
        ask_usd = np.where(np.asarray(ask, dtype=np.float64) > 0.0, np.asarray(ask, dtype=np.float64) * under, np.nan)
    years = (exp - now_ms) / MS_PER_YEAR
    expiries = np.unique(exp[years > 0.0])
    t_exp = (expiries - now_ms) / MS_PER_YEAR
    target = target_days / 365.0
    before = np.nonzero(t_exp <= target)[0]
    after = np.nonzero(t_exp > target)[0]
    if before.size == 0 or after.size == 0:
        return VarianceIndex(np.nan, target_days, None, None, np.nan, "no pair of expiries brackets the target")

    def term(e: float) -> TermVariance:
        sel = exp == e
        ks = np.unique(k[sel])
        cols = np.full((4, ks.size), np.nan)
        pos = np.searchsorted(ks, k[sel])
        for row, (side, prices) in enumerate(((call, bid_usd), (call, ask_usd), (~call, bid_usd), (~call, ask_usd))):
            m = side[sel]
            cols[row, pos[m]] = prices[sel][m]
        return term_variance(ks, cols[0], cols[1], cols[2], cols[3], float((e - now_ms) / MS_PER_YEAR), rate)

    near = term(float(expiries[before[-1]]))
    nxt = term(float(expiries[after[0]]))
    result = interpolate_index(near, nxt, target_days)
    if not np.isfinite(result.value):
        notes = "; ".join(n for n in (result.note, near.note, nxt.note) if n)
        return VarianceIndex(np.nan, target_days, near, nxt, result.near_weight, notes)
    return result
