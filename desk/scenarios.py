"""Scenarios: full Black-76 revaluation of every position over a grid of underlying moves and
vol shifts after a time step (pure, vectorised over moves x shifts x options).

Each option is repriced at forward ``F * (1 + move)``, after ``days`` (at or past expiry: its
intrinsic value at the moved forward), at a vol of either its own mark IV (sticky strike) or, sticky
moneyness, its mark IV moved as the surface's smile of its expiry moves from today's log-moneyness
``ln(K / F)`` to the new one ``ln(K / F')`` (the raw-SVI fit of ``SurfaceSnapshot.fits``, total
variance over the fit's years; anchored at the mark IV so that no move is no change, whatever the
fit's error at the option), plus the shift in vol points, floored at :data:`MIN_VOL`. An expiry
without a usable SVI fit is revalued sticky strike and named in ``notes``. Futures move with the
underlying (their contract maths). PnL is in USD against today's model value of the same
positions at their mark IVs (coin amounts are valued at the moved index).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from deribit import contracts
from desk.risk import DAYS_PER_YEAR, BookLegs, FutureLeg, OptionArrays, OptionMark, book_legs, expiry_label
from messages.market import Instrument
from messages.state import PortfolioChanged
from messages.surface import SmileFit, SurfaceSnapshot
from quant.svi import svi_total_variance

FloatArray = NDArray[np.float64]

#: The lowest vol a shifted or smile-read vol is floored at (a fraction: 1 vol point).
MIN_VOL = 0.01
#: The issue's default grid: underlying -20% to +20% by 1% (41) and vol -20 to +20 points by 5 (9).
DEFAULT_SPOT_MOVES_PCT: tuple[float, ...] = tuple(float(m) for m in range(-20, 21))
DEFAULT_VOL_SHIFTS: tuple[float, ...] = tuple(float(v) for v in range(-20, 21, 5))


class Sticky(StrEnum):
    MONEYNESS = "moneyness"
    STRIKE = "strike"


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """The grid: underlying moves in percent (-20 for -20%), vol shifts in vol points, the time
    step in days (``None``: to the next expiry of a held option) and how vols move."""

    spot_moves_pct: tuple[float, ...]
    vol_shifts: tuple[float, ...]
    days: float | None = 1.0
    sticky: Sticky = Sticky.MONEYNESS


@dataclass(frozen=True, slots=True)
class ScenarioGrid:
    """``pnl_usd[i][j]``: PnL at ``vol_shifts[i]`` and ``spot_moves_pct[j]``; ``days`` the step
    used; ``missing`` positions left out (no usable mark), named with why."""

    currency: str
    at: float
    spec: ScenarioSpec
    days: float
    pnl_usd: tuple[tuple[float, ...], ...]
    value_usd: float
    missing: tuple[str, ...] = ()
    #: What was done differently from the spec, e.g. an expiry without an SVI fit revalued sticky
    #: strike under a sticky-moneyness spec.
    notes: tuple[str, ...] = ()


def _check(spec: ScenarioSpec, index_price: float) -> None:
    if not (math.isfinite(index_price) and index_price > 0):
        raise ValueError(f"index price {index_price!r} is not a positive number")
    if not spec.spot_moves_pct or not spec.vol_shifts:
        raise ValueError("a scenario needs at least one spot move and one vol shift")
    for move in spec.spot_moves_pct:
        if not (math.isfinite(move) and move > -100.0):
            raise ValueError(f"spot move {move!r}% is not a number above -100")
    for shift in spec.vol_shifts:
        if not math.isfinite(shift):
            raise ValueError(f"vol shift {shift!r} is not a number")
    if spec.days is not None and not (math.isfinite(spec.days) and spec.days >= 0):
        raise ValueError(f"time step {spec.days!r} days is not a number of days at or above 0")


def _usable_fit(fit: SmileFit) -> bool:
    p = fit.parameters
    return (fit.method == "svi" and len(p) == 5 and all(math.isfinite(x) for x in p)
            and math.isfinite(fit.years) and fit.years > 0 and p[1] >= 0 and p[4] > 0 and abs(p[2]) < 1)


def smile_offsets(options: OptionArrays, forwards: FloatArray, surface: SurfaceSnapshot | None
                  ) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Sticky moneyness: for each moved forward (rows of ``forwards``, one column per option) how
    far the smile of the option's expiry moves its vol, ``smile(ln(K/F')) - smile(ln(K/F))``, and
    which options had a usable raw-SVI fit (the others: 0, sticky strike)."""
    n = options.size.size
    params = np.full((n, 5), np.nan)
    years = np.full(n, np.nan)
    fits = {f.expiry_ms: f for f in surface.fits if _usable_fit(f)} if surface is not None else {}
    for i, expiry in enumerate(options.expiry_ms.tolist()):
        fit = fits.get(expiry)
        if fit is not None:
            params[i] = fit.parameters
            years[i] = fit.years
    has = np.isfinite(years)
    offsets = np.zeros_like(forwards)
    if not has.any():
        return offsets, has
    p = params[has]
    k0 = np.log(options.strike[has] / options.forward[has])
    k1 = np.log(options.strike[has] / forwards[:, has])

    def vol(k: FloatArray) -> FloatArray:  # k (N', M) -> vols (M, N')
        w = svi_total_variance(p, k)
        return np.asarray(np.sqrt(np.maximum(w, 0.0) / years[has][:, None]), dtype=np.float64).T

    with np.errstate(invalid="ignore", over="ignore"):
        moved = vol(k1.T) - vol(k0[:, None])
    good = np.isfinite(moved).all(axis=0)
    idx = np.nonzero(has)[0]
    offsets[:, idx[good]] = moved[:, good]
    has[idx[~good]] = False
    return offsets, has


def _future_pnl_usd(leg: FutureLeg, moves: FloatArray, index_price: float) -> FloatArray:
    """A future's PnL in USD for each move: the contract maths of its identity
    (:func:`deribit.contracts.pnl`, a coin PnL at the moved index); without its identity or mark,
    its coin delta at the index, ``delta * move * index``."""
    if leg.money is not None and math.isfinite(leg.mark_price) and leg.mark_price > 0:
        moved = leg.mark_price * (1.0 + moves)
        pnl = np.asarray(contracts.pnl(leg.money, leg.size, leg.mark_price, moved), dtype=np.float64)  # type: ignore[arg-type]
        return pnl * index_price * (1.0 + moves) if leg.money.pnl_in_coin else pnl
    return leg.delta * moves * index_price


def black76_usd(f: FloatArray, k: FloatArray, years: FloatArray, vol: FloatArray, call: NDArray[np.bool_]
                ) -> FloatArray:
    """Plain Black-76 (r = 0) over broadcast arrays, for revaluation: ``w (F N(w d1) - K N(w d2))``
    with ``w`` +1 for calls and -1 for puts; at or past expiry (or zero vol) the intrinsic value.
    Exact to rounding in absolute terms (USD), which is what a PnL needs; the implied-vol solver's
    far-out-of-the-money relative accuracy (:func:`quant.black76.black76_price`) is not needed
    here and costs five times as much over a 41 x 9 x 200 grid."""
    w = np.where(call, 1.0, -1.0)
    s = vol * np.sqrt(np.maximum(years, 0.0))
    live = s > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        safe = np.where(live, s, 1.0)
        d1 = np.log(f / k) / safe + 0.5 * safe
        price = w * (f * ndtr(w * d1) - k * ndtr(w * (d1 - safe)))
    intrinsic = np.maximum(w * (f - k), 0.0)
    return np.asarray(np.where(live, np.maximum(price, 0.0), intrinsic), dtype=np.float64)


def _step_days(spec: ScenarioSpec, options: OptionArrays, now: float) -> float:
    if spec.days is not None:
        return float(spec.days)
    if options.size.size == 0:
        return 0.0
    return max(float(options.expiry_ms.min()) / 1000.0 - now, 0.0) / 86_400.0


def scenario_grid(portfolio: PortfolioChanged, marks: Mapping[str, OptionMark], index_price: float,
                  surface: SurfaceSnapshot | None, spec: ScenarioSpec, now: float,
                  instruments: Mapping[str, Instrument] | None = None) -> ScenarioGrid:
    """The PnL grid (USD) of the currency's positions. Raises ``ValueError`` for a spec or index
    that is no scenario (a move at or below -100%, a NaN shift, a negative step, a non-positive
    index). Positions without a usable mark are left out and named in ``missing``."""
    _check(spec, index_price)
    legs: BookLegs = book_legs(portfolio, marks, index_price, now, instruments)
    o = legs.options
    days = _step_days(spec, o, now)
    moves = np.asarray(spec.spot_moves_pct, dtype=np.float64) / 100.0
    shifts = np.asarray(spec.vol_shifts, dtype=np.float64) / 100.0
    notes: list[str] = []
    missing = list(legs.missing)
    n = o.size.size
    pnl = np.zeros((shifts.size, moves.size), dtype=np.float64)
    value = 0.0
    if n:
        years = o.years(now)
        later = years - days / DAYS_PER_YEAR
        forwards = o.forward[None, :] * (1.0 + moves[:, None])  # (M, N)
        base_vol = np.broadcast_to(o.iv, forwards.shape)
        if spec.sticky is Sticky.MONEYNESS:
            offsets, has = smile_offsets(o, forwards, surface)
            base_vol = base_vol + offsets
            for expiry in sorted({int(e) for e in o.expiry_ms[~has]}):
                notes.append(f"{expiry_label(expiry)}: no SVI fit, sticky strike")
        vols = np.maximum(base_vol[None, :, :] + shifts[:, None, None], MIN_VOL)  # (V, M, N)
        # Coin amounts are valued at the moved index: (price / F') * index (1 + move) = price * index / F.
        usd_per_usd = np.where(o.linear, 1.0, o.index / o.forward)
        weight = o.size * usd_per_usd
        today = black76_usd(o.forward, o.strike, years, o.iv, o.is_call)
        moved = black76_usd(forwards[None, :, :], o.strike, later, vols, o.is_call)
        contrib = (moved - today) * weight  # (V, M, N)
        bad = ~np.isfinite(contrib).all(axis=(0, 1)) | ~np.isfinite(today * weight)
        missing += [f"{o.names[j]}: its revaluation is not finite" for j in np.nonzero(bad)[0]]
        pnl += contrib[:, :, ~bad].sum(axis=2)
        value = float((today * weight)[~bad].sum())
    for leg in legs.futures:
        fut = _future_pnl_usd(leg, moves, index_price)
        if np.isfinite(fut).all():
            pnl += fut[None, :]
        else:
            missing.append(f"{leg.instrument_name}: its revaluation is not finite")
    return ScenarioGrid(currency=portfolio.currency, at=now, spec=spec, days=days,
                        pnl_usd=tuple(tuple(float(x) for x in row) for row in pnl), value_usd=value,
                        missing=tuple(missing), notes=tuple(notes))
