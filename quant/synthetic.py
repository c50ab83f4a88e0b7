"""Synthetic Deribit-like option chains on a known arbitrage-free surface (tests, benchmarks).

The surface is Gatheral and Jacquier's SSVI with the power-law curvature
phi(theta) = eta / (theta^gamma (1 + theta)^(1 - gamma)): with gamma in (0, 1/2] and
eta (1 + |rho|) <= 2 it has no butterfly arbitrage, and with an increasing ATM total variance
theta(T) no calendar arbitrage. Each expiry's slice is exactly a raw SVI smile
(:func:`ssvi_raw_params`), so fits can be checked against the truth.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from quant.black76 import black76_price
from quant.essvi import ESSVISurface, essvi_total_variance, psi_bound
from quant.surface import MS_PER_YEAR, ChainInputs
from quant.svi import svi_total_variance

FloatArray = NDArray[np.float64]


def ssvi_raw_params(theta: FloatArray, rho: float, eta: float, gamma: float) -> FloatArray:
    """Raw SVI (a, b, rho, m, sigma) of SSVI slices with ATM total variance ``theta``: (E, 5)."""
    theta = np.asarray(theta, dtype=np.float64)
    phi = eta / (theta**gamma * (1.0 + theta) ** (1.0 - gamma))
    r2 = np.sqrt(1.0 - rho * rho)
    return np.stack(
        (0.5 * theta * (1.0 - rho * rho), 0.5 * theta * phi, np.full_like(theta, rho), -rho / phi, r2 / phi),
        axis=-1,
    )


def synthetic_chain(
    *,
    now_ms: int = 1_626_993_723_000,
    n_expiries: int = 20,
    n_quotes: int = 1500,
    forward: float = 32_000.0,
    atm_vol: tuple[float, float] = (0.95, 0.75),
    rho: float = -0.25,
    eta: float = 1.2,
    gamma: float = 0.4,
    tick: float = 0.0005,
    spread_fraction: float = 0.04,
    seed: int = 0,
) -> tuple[ChainInputs, FloatArray, FloatArray]:
    """A chain of ``n_quotes`` options (calls and puts on every strike) over ``n_expiries`` expiries.

    Expiries run from 1 day to 1 year at 08:00 UTC, ATM vol interpolates ``atm_vol`` from the
    first to the last, strikes are rounded like Deribit's. Quotes are the SSVI price in coin plus
    or minus half a spread of ``spread_fraction`` of the price (at least one tick), rounded out to
    the tick; a price below one tick has no bid. Returns (chain, expiry years, raw SVI params).
    """
    rng = np.random.default_rng(seed)
    days = np.unique(np.round(np.geomspace(1.0, 365.0, n_expiries)))
    while days.size < n_expiries:
        days = np.unique(np.concatenate((days, [days.max() + days.size])))
    day_ms = 86_400_000
    midnight = now_ms - now_ms % day_ms
    expiry = (midnight + days * day_ms + 8 * 3_600_000).astype(np.int64)
    years = (expiry - now_ms) / MS_PER_YEAR
    vol = np.interp(np.log(years), np.log(years[[0, -1]]), atm_vol)
    theta = np.maximum.accumulate(vol * vol * years)
    params = ssvi_raw_params(theta, rho, eta, gamma)
    per_expiry = np.full(n_expiries, n_quotes // (2 * n_expiries))
    per_expiry[: (n_quotes // 2) % n_expiries] += 1
    rows: list[tuple[np.ndarray, ...]] = []
    for e in range(n_expiries):
        fwd = forward * np.exp(0.02 * years[e]) * (1.0 + 0.001 * rng.standard_normal())
        width = 4.0 * np.sqrt(theta[e]) + 0.05
        k = np.linspace(-1.2 * width, width, per_expiry[e])
        step = 1000.0 if years[e] > 0.1 else 500.0
        strikes = np.unique(np.maximum(np.round(fwd * np.exp(k) / step) * step, step))
        while strikes.size < per_expiry[e]:  # rounding merged some: fill in between
            gaps = np.argmax(np.diff(strikes))
            strikes = np.sort(np.append(strikes, 0.5 * (strikes[gaps] + strikes[gaps + 1])))
        strikes = strikes[: per_expiry[e]]
        iv = np.sqrt(svi_total_variance(params[e], np.log(strikes / fwd)) / years[e])
        for is_call in (True, False):
            rows.append(
                (
                    np.full(strikes.size, expiry[e]),
                    strikes,
                    np.full(strikes.size, is_call),
                    np.asarray(black76_price(fwd, strikes, years[e], iv, is_call)) / fwd,
                    np.full(strikes.size, fwd),
                )
            )
    exp_ms, strike, call, mark, under = (np.concatenate([r[i] for r in rows]) for i in range(5))
    half = np.maximum(0.5 * spread_fraction * mark, 0.5 * tick)
    bid = np.floor((mark - half) / tick) * tick
    ask = np.ceil((mark + half) / tick) * tick
    bid = np.where(bid >= tick, bid, 0.0)
    chain = ChainInputs(
        expiry_ms=exp_ms,
        strike=strike,
        is_call=call,
        bid=bid,
        ask=ask,
        mark=mark,
        underlying_price=under,
        index_price=forward,
    )
    return chain, years, params


def essvi_test_surface(years: FloatArray, *, atm_vol: tuple[float, float] = (0.95, 0.7), rho: tuple[float, float] = (
        -0.35, -0.15), psi_scale: float = 0.9) -> ESSVISurface:
    """An arbitrage-free eSSVI surface on the expiries ``years``: ATM vol from ``atm_vol[0]`` to
    ``atm_vol[1]``, rho from ``rho[0]`` to ``rho[1]`` (p and q non-decreasing), psi = psi_scale
    sqrt(theta) capped by the butterfly bound (phi = psi / theta then falls with theta)."""
    years = np.asarray(years, dtype=np.float64)
    frac = np.log(years / years[0]) / max(float(np.log(years[-1] / years[0])), 1e-12)
    vol = atm_vol[0] + (atm_vol[1] - atm_vol[0]) * frac
    theta = np.maximum.accumulate(vol * vol * years)
    r = rho[0] + (rho[1] - rho[0]) * frac
    psi = np.minimum(psi_scale * np.sqrt(theta), psi_bound(theta, r) * 0.99)
    surface = ESSVISurface(years=years, theta=theta, rho=r, psi=psi)
    return surface


def essvi_chain(
    surface: ESSVISurface,
    *,
    now_ms: int,
    expiry_ms: NDArray[np.int64],
    n_quotes: int = 1500,
    forward: float = 32_000.0,
    tick: float = 0.0005,
    spread_fraction: float = 0.04,
    noise: float = 0.25,
    seed: int = 0,
) -> ChainInputs:
    """Quotes of calls and puts on every strike from a known eSSVI ``surface`` (nodes = expiries).

    Each side sits half a spread (``spread_fraction`` of the price, at least a tick) from the true
    price, shifted by ``noise`` x a uniform draw in [-1, 1] of that half-spread, rounded out to the
    tick; a bid below one tick is empty.
    """
    rng = np.random.default_rng(seed)
    n_e = surface.years.size
    per = np.full(n_e, n_quotes // (2 * n_e))
    per[: (n_quotes // 2) % n_e] += 1
    cols: list[tuple[np.ndarray, ...]] = []
    for e in range(n_e):
        t = float(surface.years[e])
        width = 4.0 * np.sqrt(surface.theta[e]) + 0.05
        k = np.linspace(-1.2 * width, width, per[e])
        strikes = forward * np.exp(k)
        iv = np.sqrt(essvi_total_variance(surface.theta[e], surface.rho[e], surface.psi[e], k) / t)
        for is_call in (True, False):
            price = np.asarray(black76_price(forward, strikes, t, iv, is_call)) / forward
            cols.append((np.full(strikes.size, expiry_ms[e]), strikes, np.full(strikes.size, is_call), price))
    exp_ms, strike, call, mark = (np.concatenate([c[i] for c in cols]) for i in range(4))
    half = np.maximum(0.5 * spread_fraction * mark, 0.5 * tick)
    shift = noise * half * rng.uniform(-1.0, 1.0, mark.size)
    bid = np.floor((mark + shift - half) / tick) * tick
    ask = np.ceil((mark + shift + half) / tick) * tick
    return ChainInputs(
        expiry_ms=exp_ms,
        strike=strike,
        is_call=call,
        bid=np.where(bid >= tick, bid, 0.0),
        ask=ask,
        mark=mark,
        underlying_price=np.full(mark.size, forward),
        index_price=forward,
    )


def expiries_ms(now_ms: int, n_expiries: int) -> NDArray[np.int64]:
    """``n_expiries`` 08:00 UTC expiries from 1 day to 1 year ahead (geometric in days)."""
    days = np.unique(np.round(np.geomspace(1.0, 365.0, n_expiries)))
    while days.size < n_expiries:
        days = np.unique(np.concatenate((days, [days.max() + days.size])))
    day_ms = 86_400_000
    midnight = now_ms - now_ms % day_ms
    return (midnight + days * day_ms + 8 * 3_600_000).astype(np.int64)
