"""Static-arbitrage checks of any total-variance smile w(k), in one place.

- Butterfly: Gatheral and Jacquier's density factor (Gatheral & Jacquier 2014, "Arbitrage-free SVI
  volatility surfaces", Quant. Finance 14(1), eq. 2.1 / Lemma 2.2)
  g(k) = (1 - k w'/(2w))^2 - w'^2/4 (1/w + 1/4) + w''/2 >= 0, checked on a dense range that covers
  at least |k| <= :data:`CHECK_HALF_WIDTH` and every listed strike's k.
- Calendar: total variance non-decreasing in maturity at fixed k (Gatheral & Jacquier 2014, Lemma
  2.1 / Definition 2.1), checked on a grid of (tenor, k).
- Lee's moment formula (Lee 2004): the total-variance wing slopes |dw/dk| as |k| -> infinity are at
  most 2.

The functions take arrays of w, w' and w'' so they serve every parametrisation (raw SVI, eSSVI).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

#: Lee's bound on the wing slope of total variance.
MAX_WING_SLOPE = 2.0
#: The butterfly check covers at least |k| <= this.
CHECK_HALF_WIDTH = 4.0
#: Points of the dense butterfly check range.
CHECK_POINTS = 801
#: Tolerance of the checks: round-off in w, not arbitrage.
G_TOLERANCE = -1e-9
CALENDAR_TOLERANCE = 1e-12


def density_factor(k: ArrayLike, w: ArrayLike, w1: ArrayLike, w2: ArrayLike) -> FloatArray:
    """Gatheral-Jacquier g(k) from w, dw/dk and d2w/dk2; -inf where w <= 0 (no valid smile)."""
    kk = np.asarray(k, dtype=np.float64)
    ww = np.asarray(w, dtype=np.float64)
    d1 = np.asarray(w1, dtype=np.float64)
    d2 = np.asarray(w2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (1.0 - kk * d1 / (2.0 * ww)) ** 2 - 0.25 * d1 * d1 * (1.0 / ww + 0.25) + 0.5 * d2
    return np.asarray(np.where(ww > 0.0, g, -np.inf))


def check_range(k_listed: ArrayLike | None = None, points: int = CHECK_POINTS) -> FloatArray:
    """The dense butterfly check range: at least |k| <= 4, widened to every listed k (finite ones)."""
    lo, hi = -CHECK_HALF_WIDTH, CHECK_HALF_WIDTH
    if k_listed is not None:
        kl = np.asarray(k_listed, dtype=np.float64)
        kl = kl[np.isfinite(kl)]
        if kl.size:
            lo, hi = min(lo, float(kl.min())), max(hi, float(kl.max()))
    dense = np.linspace(lo, hi, points)
    if k_listed is None:
        return dense
    kl = np.asarray(k_listed, dtype=np.float64)
    return np.unique(np.concatenate((dense, kl[np.isfinite(kl)])))


@dataclass(frozen=True, slots=True)
class ArbitrageReport:
    """What was checked and found.

    ``check_k_min``/``check_k_max``: the butterfly check range; ``min_g`` per smile (E,);
    ``wing_slope`` per smile, the steeper asymptotic |dw/dk| (E,); ``min_calendar_step``: the
    smallest w(T_{i+1}, k) - w(T_i, k) on the calendar grid (+inf with one tenor).
    """

    check_k_min: float
    check_k_max: float
    min_g: FloatArray
    wing_slope: FloatArray
    min_calendar_step: float
    #: smallest g of the smiles between the nodes (interpolated in time), +inf if not checked
    min_g_between: float = float("inf")

    @property
    def butterfly_ok(self) -> NDArray[np.bool_]:
        return np.asarray((self.min_g >= G_TOLERANCE) & (self.wing_slope <= MAX_WING_SLOPE + 1e-12))

    @property
    def calendar_ok(self) -> bool:
        return bool(self.min_calendar_step >= -CALENDAR_TOLERANCE)

    @property
    def ok(self) -> bool:
        return bool(self.butterfly_ok.all()) and self.calendar_ok and self.min_g_between >= G_TOLERANCE


def calendar_steps(w_grid: ArrayLike) -> FloatArray:
    """w(T_{i+1}, k) - w(T_i, k) of a (T, K) total-variance grid (tenors ascending); negative = arbitrage."""
    w = np.asarray(w_grid, dtype=np.float64)
    return np.diff(w, axis=0)


def report(
    k_check: FloatArray, w: FloatArray, w1: FloatArray, w2: FloatArray, wing_slope: ArrayLike, w_calendar: ArrayLike
) -> ArbitrageReport:
    """Butterfly on (E, P) smiles over ``k_check`` (P,), Lee's slopes (E,), calendar on a (T, K) grid."""
    g = density_factor(k_check, w, w1, w2)
    steps = calendar_steps(w_calendar)
    return ArbitrageReport(
        check_k_min=float(k_check.min()),
        check_k_max=float(k_check.max()),
        min_g=np.asarray(np.min(g, axis=-1), dtype=np.float64),
        wing_slope=np.asarray(wing_slope, dtype=np.float64).reshape(-1),
        min_calendar_step=float(steps.min()) if steps.size else float("inf"),
    )


def numeric_derivatives(k: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray]:
    """dw/dk and d2w/dk2 of sampled smiles (..., P) on an increasing k (P,), second-order accurate."""
    w1 = np.gradient(w, k, axis=-1)
    w2 = np.gradient(w1, k, axis=-1)
    return np.asarray(w1), np.asarray(w2)


def sampled_report(k_check: FloatArray, w: FloatArray, w_calendar: ArrayLike) -> ArbitrageReport:
    """:func:`report` for smiles known only as samples w (E, P) on ``k_check`` (dense, increasing):
    derivatives by finite differences, wing slopes from the outermost samples."""
    w1, w2 = numeric_derivatives(k_check, w)
    slope = np.maximum(np.abs(w1[..., 0]), np.abs(w1[..., -1]))
    # The end points' one-sided second differences are poor: judge g inside them.
    inner = report(k_check[1:-1], w[..., 1:-1], w1[..., 1:-1], w2[..., 1:-1], slope, w_calendar)
    return ArbitrageReport(
        check_k_min=float(k_check.min()),
        check_k_max=float(k_check.max()),
        min_g=inner.min_g,
        wing_slope=inner.wing_slope,
        min_calendar_step=inner.min_calendar_step,
    )
