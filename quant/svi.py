"""Raw SVI smiles: evaluation, no-arbitrage checks and a vectorized weighted least-squares fit.

Raw SVI (Gatheral 2004) gives the total implied variance w = vol^2 T at log-forward-moneyness
k = ln(K/F) as

    w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)),   b >= 0, |rho| < 1, sigma > 0,

with a + b sigma sqrt(1 - rho^2) >= 0 (the minimum of w is not negative).

No butterfly arbitrage holds where Gatheral and Jacquier's density factor

    g(k) = (1 - k w'/(2w))^2 - (w'^2/4)(1/w + 1/4) + w''/2

is non-negative (the risk-neutral density is g/sqrt(2 pi w) exp(-d2^2/2)); Lee's moment formula
adds that the wings may not be steeper than 2 in total variance, b (1 + |rho|) <= 2.

The fit is a variable projection: for fixed (m, sigma) the model is linear in (a, b rho, b) and the
weighted least-squares optimum is a 3x3 solve, so a grid over (m, sigma) for every expiry at once
finds the basin, and a batched Levenberg-Marquardt on all five parameters polishes it. Every step
is an array operation over all expiries together; there is no per-expiry Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

#: Lee's bound on the wing slope of total variance.
MAX_WING_SLOPE = 2.0
_RHO_MAX = 0.999
_SIGMA_MIN = 1e-4
_MIN_VARIANCE = 1e-10  # floor on w: keeps g(k) finite


@dataclass(frozen=True, slots=True)
class SVIParams:
    """Raw SVI parameters of one expiry (total variance in years x vol^2)."""

    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def as_array(self) -> FloatArray:
        return np.array([self.a, self.b, self.rho, self.m, self.sigma])

    @classmethod
    def from_array(cls, values: ArrayLike) -> SVIParams:
        a, b, rho, m, sigma = (float(v) for v in np.asarray(values, dtype=np.float64))
        return cls(a=a, b=b, rho=rho, m=m, sigma=sigma)

    def total_variance(self, k: ArrayLike) -> FloatArray:
        return svi_total_variance(self.as_array(), k)

    def implied_vol(self, k: ArrayLike, years: float) -> FloatArray:
        return np.sqrt(np.maximum(self.total_variance(k), 0.0) / years)


def _split(params: ArrayLike) -> tuple[FloatArray, ...]:
    p = np.asarray(params, dtype=np.float64)
    return tuple(p[..., i, None] if p.ndim > 1 else p[i] for i in range(5))


def svi_total_variance(params: ArrayLike, k: ArrayLike) -> FloatArray:
    """w(k). ``params`` is (5,) or (E, 5); with (E, 5), ``k`` is (N,) or (E, N) and w is (E, N)."""
    a, b, rho, m, sigma = _split(params)
    y = np.asarray(k, dtype=np.float64) - m
    return a + b * (rho * y + np.sqrt(y * y + sigma * sigma))


def svi_derivatives(params: ArrayLike, k: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """w, dw/dk and d2w/dk2, shaped as :func:`svi_total_variance`."""
    a, b, rho, m, sigma = _split(params)
    y = np.asarray(k, dtype=np.float64) - m
    r = np.sqrt(y * y + sigma * sigma)
    w = a + b * (rho * y + r)
    return w, b * (rho + y / r), b * sigma * sigma / (r * r * r)


def butterfly_g(params: ArrayLike, k: ArrayLike) -> FloatArray:
    """Gatheral-Jacquier density factor g(k); negative values are butterfly arbitrage."""
    w, w1, w2 = svi_derivatives(params, k)
    kk = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (1.0 - kk * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    return np.where(w > 0.0, g, -np.inf)


def wing_slope(params: ArrayLike) -> FloatArray:
    """Steeper of the two asymptotic slopes of w, b (1 + |rho|); Lee's bound is 2."""
    _, b, rho, _, _ = _split(params)
    return np.squeeze(b * (1.0 + np.abs(rho)))


def _project(p: FloatArray) -> FloatArray:
    """Nearest admissible parameters: b >= 0, |rho| <= 0.999, sigma >= 1e-4, min w >= 0."""
    out = p.copy()
    out[..., 1] = np.maximum(out[..., 1], 0.0)
    out[..., 2] = np.clip(out[..., 2], -_RHO_MAX, _RHO_MAX)
    out[..., 4] = np.maximum(out[..., 4], _SIGMA_MIN)
    floor = _MIN_VARIANCE - out[..., 1] * out[..., 4] * np.sqrt(1.0 - out[..., 2] ** 2)
    out[..., 0] = np.maximum(out[..., 0], floor)
    return out


def _weighted_sse(params: FloatArray, k: FloatArray, w: FloatArray, weight: FloatArray) -> FloatArray:
    r = svi_total_variance(params, k) - w
    return np.sum(weight * r * r, axis=-1)


def _linear_fit(
    m: FloatArray, sigma: FloatArray, k: FloatArray, w: FloatArray, weight: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Best admissible (a, b, rho) for each (m, sigma): shapes (E, G) in, params (E, G, 5) and sse.

    w = a + d y + c z with y = k - m, z = sqrt(y^2 + sigma^2) is linear in (a, d, c) = (a, b rho, b):
    solve the 3x3 weighted normal equations (sums by batched matrix products), project onto the
    admissible set, and score the projection with the exact quadratic form of the sse.
    """
    y = k[:, None, :] - m[..., None]
    y2 = y * y
    s2 = sigma * sigma
    z = np.sqrt(y2 + s2[..., None])
    cols = np.stack((weight, weight * w), axis=-1)  # (E, N, 2)
    sy = y @ cols  # sum(om y), sum(om y w)
    sz = z @ cols
    om = weight[..., None]
    syy = (y2 @ om)[..., 0]
    syz = ((y * z) @ om)[..., 0]
    s1 = weight.sum(axis=-1)[:, None] * np.ones_like(m)
    sw = (weight * w).sum(axis=-1)[:, None] * np.ones_like(m)
    sww = (weight * w * w).sum(axis=-1)[:, None]
    szz = syy + s2 * s1
    normal = np.stack(
        (
            np.stack((s1, sy[..., 0], sz[..., 0]), axis=-1),
            np.stack((sy[..., 0], syy, syz), axis=-1),
            np.stack((sz[..., 0], syz, szz), axis=-1),
        ),
        axis=-2,
    )
    rhs = np.stack((sw, sy[..., 1], sz[..., 1]), axis=-1)
    ridge = 1e-13 * np.trace(normal, axis1=-2, axis2=-1)[..., None, None] * np.eye(3)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        coef = np.linalg.solve(normal + ridge, rhs[..., None])[..., 0]
        b = np.maximum(coef[..., 2], 0.0)
        rho = np.where(b > 0.0, coef[..., 1] / b, 0.0)
        params = _project(np.stack((coef[..., 0], b, rho, m, sigma), axis=-1))
        lin = np.stack((params[..., 0], params[..., 1] * params[..., 2], params[..., 1]), axis=-1)
        sse = sww - 2.0 * np.sum(lin * rhs, axis=-1) + np.einsum("...i,...ij,...j->...", lin, normal, lin)
    return params, np.where(np.isfinite(sse), np.maximum(sse, 0.0), np.inf)


def _jacobian(params: FloatArray, k: FloatArray) -> FloatArray:
    _, b, rho, m, sigma = _split(params)
    y = k - m
    r = np.sqrt(y * y + sigma * sigma)
    ones = np.ones_like(y)
    return np.stack((ones, rho * y + r, b * y, -b * (rho + y / r), b * sigma / r), axis=-1)


def _levenberg_marquardt(
    params: FloatArray, k: FloatArray, w: FloatArray, weight: FloatArray, max_iterations: int
) -> tuple[FloatArray, FloatArray]:
    """Batched LM on all five parameters, each step projected onto the admissible set.

    Works on the expiries still improving only; one stops when a step gains less than 1e-6 of
    its objective, when the objective is at round-off level, or when the damping blows up.
    """
    params = params.copy()
    sse = _weighted_sse(params, k, w, weight)
    lam = np.full(params.shape[0], 1e-3)
    active = np.arange(params.shape[0])
    eye = np.eye(5)
    for _ in range(max_iterations):
        if active.size == 0:
            break
        p, kk, ww, om, s0, la = params[active], k[active], w[active], weight[active], sse[active], lam[active]
        sq = np.sqrt(om)
        r = sq * (svi_total_variance(p, kk) - ww)
        jac = sq[..., None] * _jacobian(p, kk)
        jtj = np.einsum("eni,enj->eij", jac, jac)
        jtr = np.einsum("eni,en->ei", jac, r)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            step = np.linalg.solve(jtj + la[:, None, None] * (jtj * eye + 1e-12 * eye), -jtr[..., None])[..., 0]
        trial = _project(p + np.where(np.isfinite(step), step, 0.0))
        trial_sse = _weighted_sse(trial, kk, ww, om)
        better = trial_sse < s0
        gain = np.where(better, (s0 - trial_sse) / np.maximum(s0, 1e-300), 0.0)
        params[active] = np.where(better[:, None], trial, p)
        sse[active] = np.where(better, trial_sse, s0)
        la = np.where(better, la / 4.0, la * 8.0)
        lam[active] = la
        done = (better & (gain < 1e-6)) | (sse[active] < 1e-28) | (la > 1e8)
        active = active[~done]
    return params, sse


@dataclass(frozen=True, slots=True)
class SVIFits:
    """Fits of several expiries at once (row e is expiry e).

    - ``params``: (E, 5) raw SVI (a, b, rho, m, sigma); NaN rows for expiries without data.
    - ``rmse_vol_points``: unweighted RMSE of the fitted implied vols over the fitted quotes, in
      vol points (0.01 = 1 point).
    - ``min_g``: smallest Gatheral-Jacquier g(k) on the check grid (< 0: butterfly arbitrage).
    - ``wing_slope``: b (1 + |rho|), Lee's bound is 2.
    - ``butterfly_ok``: g >= 0 on the check grid and the wing slope within Lee's bound.
    - ``repaired``: the unconstrained best fit violated the butterfly condition and the returned
      parameters are the best arbitrage-free candidate instead.
    """

    params: FloatArray
    rmse_vol_points: FloatArray
    min_g: FloatArray
    wing_slope: FloatArray
    butterfly_ok: NDArray[np.bool_]
    repaired: NDArray[np.bool_]


def _grid_candidates(k: FloatArray, weight: FloatArray, n_m: int, n_sigma: int) -> tuple[FloatArray, FloatArray]:
    used = weight > 0.0
    lo = np.min(np.where(used, k, np.inf), axis=1)
    hi = np.max(np.where(used, k, -np.inf), axis=1)
    span = np.maximum(hi - lo, 0.05)
    m = lo[:, None] + span[:, None] * np.linspace(-0.5, 1.5, n_m)[None, :]
    sigma = span[:, None] * np.geomspace(0.005, 2.0, n_sigma)[None, :]
    mm = np.repeat(m, n_sigma, axis=1)
    ss = np.tile(sigma, (1, n_m))
    return mm, ss


def _butterfly_min(params: FloatArray, k_check: FloatArray) -> FloatArray:
    """Smallest g over k_check for params (..., 5), with Lee's wing bound folded in as -1."""
    flat = params.reshape(-1, 5)
    g = butterfly_g(flat, k_check).min(axis=-1)
    g = np.where(wing_slope(flat).reshape(g.shape) > MAX_WING_SLOPE + 1e-12, np.minimum(g, -1.0), g)
    return g.reshape(params.shape[:-1])


def fit_svi_slices(
    k: ArrayLike,
    total_variance: ArrayLike,
    weight: ArrayLike,
    years: ArrayLike,
    *,
    k_check: ArrayLike | None = None,
    grid: tuple[int, int] = (13, 12),
    iterations: int = 50,
) -> SVIFits:
    """Weighted least-squares raw SVI fits of E smiles at once.

    ``k``, ``total_variance`` and ``weight`` are (E, N) (pad short smiles with weight 0); ``years``
    is (E,). The objective is sum(weight (w_model - w)^2) per expiry. The butterfly condition is
    checked on ``k_check`` (default: -1.5 to 1.5 and the data range, 301 points). Where the best
    fit violates it, the best arbitrage-free candidate of the (m, sigma) grid, polished and
    re-checked, replaces it (``repaired``); if there is none, ``butterfly_ok`` stays False and the
    caller decides (the surface falls back to linear interpolation for that expiry).
    """
    kk = np.atleast_2d(np.asarray(k, dtype=np.float64))
    ww = np.atleast_2d(np.asarray(total_variance, dtype=np.float64))
    om = np.atleast_2d(np.asarray(weight, dtype=np.float64))
    tt = np.atleast_1d(np.asarray(years, dtype=np.float64))
    om = np.where(np.isfinite(kk) & np.isfinite(ww) & (om > 0.0), om, 0.0)
    kk = np.where(om > 0.0, kk, 0.0)
    ww = np.where(om > 0.0, ww, 0.0)
    n_used = (om > 0.0).sum(axis=1)
    live = n_used >= 5  # five parameters
    e_all = kk.shape[0]
    params = np.full((e_all, 5), np.nan)
    rmse = np.full(e_all, np.nan)
    min_g = np.full(e_all, np.nan)
    slope = np.full(e_all, np.nan)
    ok = np.zeros(e_all, dtype=bool)
    repaired = np.zeros(e_all, dtype=bool)
    if not live.any():
        return SVIFits(params, rmse, min_g, slope, ok, repaired)

    idx = np.nonzero(live)[0]
    k_, w_, om_, t_ = kk[idx], ww[idx], om[idx], tt[idx]
    om_ = om_ / om_.sum(axis=1, keepdims=True)
    # Scale-free objective: relative to the level of the smile, so expiries weigh alike in the
    # tolerances below.
    scale = np.sum(om_ * w_, axis=1, keepdims=True)
    scale = np.where(scale > 0.0, scale, 1.0)
    w_s = w_ / scale

    m_grid, s_grid = _grid_candidates(k_, om_, *grid)
    cand, cand_sse = _linear_fit(m_grid, s_grid, k_, w_s, om_)
    rows = np.arange(idx.size)
    best = cand[rows, np.argmin(cand_sse, axis=1)]
    # Two zooms of the (m, sigma) grid around the best point, a third of the spacing each.
    dm = (m_grid[:, grid[1]] - m_grid[:, 0]) if grid[0] > 1 else np.full(idx.size, 0.1)
    dls = np.full(idx.size, np.log(s_grid[0, 1] / s_grid[0, 0]) if grid[1] > 1 else 0.5)
    stencil = np.linspace(-1.0, 1.0, 7)
    for _ in range(2):
        mz = (best[:, 3:4] + dm[:, None] * stencil)[:, :, None] * np.ones(7)
        sz = (best[:, 4:5] * np.exp(dls[:, None] * stencil))[:, None, :] * np.ones((7, 1))
        zc, zs = _linear_fit(mz.reshape(idx.size, -1), sz.reshape(idx.size, -1), k_, w_s, om_)
        best = zc[rows, np.argmin(zs, axis=1)]
        dm, dls = dm / 3.0, dls / 3.0
    fitted, _ = _levenberg_marquardt(best, k_, w_s, om_, iterations)

    if k_check is None:
        lo = np.minimum(np.min(np.where(om_ > 0.0, k_, np.inf)), -1.5)
        hi = np.maximum(np.max(np.where(om_ > 0.0, k_, -np.inf)), 1.5)
        k_chk = np.linspace(lo, hi, 301)
    else:
        k_chk = np.asarray(k_check, dtype=np.float64)
    unscale = np.array([1.0, 1.0, 0.0, 0.0, 0.0])

    def to_w(p: FloatArray, sc: FloatArray) -> FloatArray:
        # a and b carry the scale of w; rho, m and sigma do not.
        return p * (sc[..., None] * unscale + (1.0 - unscale))

    fitted_w = to_w(fitted, scale[:, 0])
    g_min = _butterfly_min(fitted_w, k_chk)
    bad = g_min < 0.0
    if bad.any():
        # Repair: among all grid candidates of the offending expiries, keep the arbitrage-free
        # ones, polish the best, and keep the polish only if it is still arbitrage-free.
        b_idx = np.nonzero(bad)[0]
        cand_w = to_w(cand[b_idx], scale[b_idx])
        cand_g = _butterfly_min(cand_w, k_chk)
        cand_cost = np.where(cand_g >= 0.0, cand_sse[b_idx], np.inf)
        pick = np.argmin(cand_cost, axis=1)
        found = np.isfinite(cand_cost[np.arange(b_idx.size), pick])
        if found.any():
            f_idx = b_idx[found]
            safe = cand[f_idx, pick[found]]
            polished, _ = _levenberg_marquardt(safe, k_[f_idx], w_s[f_idx], om_[f_idx], iterations)
            pol_g = _butterfly_min(to_w(polished, scale[f_idx, 0]), k_chk)
            chosen = np.where((pol_g >= 0.0)[:, None], polished, safe)
            fitted[f_idx] = chosen
            fitted_w[f_idx] = to_w(chosen, scale[f_idx, 0])
            g_min[f_idx] = _butterfly_min(fitted_w[f_idx], k_chk)
            repaired[idx[f_idx]] = True

    model_w = svi_total_variance(fitted_w, k_)
    used = om_ > 0.0
    with np.errstate(invalid="ignore"):
        iv_model = np.sqrt(np.maximum(model_w, 0.0) / t_[:, None])
        iv_market = np.sqrt(np.maximum(w_, 0.0) / t_[:, None])
    sq = np.where(used, (iv_model - iv_market) ** 2, 0.0)
    params[idx] = fitted_w
    rmse[idx] = 100.0 * np.sqrt(sq.sum(axis=1) / n_used[idx])
    min_g[idx] = g_min
    slope[idx] = wing_slope(fitted_w)
    ok[idx] = g_min >= 0.0
    return SVIFits(params, rmse, min_g, slope, ok, repaired)


def fit_svi(
    k: ArrayLike, implied_vol: ArrayLike, years: float, weight: ArrayLike | None = None
) -> tuple[SVIParams, float, bool]:
    """Fit one smile given implied vols: (params, RMSE in vol points, arbitrage-free)."""
    kk = np.asarray(k, dtype=np.float64)
    iv = np.asarray(implied_vol, dtype=np.float64)
    om = np.ones_like(kk) if weight is None else np.asarray(weight, dtype=np.float64)
    fits = fit_svi_slices(kk[None, :], (iv * iv * years)[None, :], om[None, :], np.array([years]))
    return SVIParams.from_array(fits.params[0]), float(fits.rmse_vol_points[0]), bool(fits.butterfly_ok[0])
