"""An eSSVI volatility surface across expiries, free of static arbitrage by construction.

Slice i (Hendriks & Martini 2019, "The extended SSVI volatility surface", J. Comput. Finance 22(5);
the SSVI form of Gatheral & Jacquier 2014, Quant. Finance 14(1)), with psi = theta phi:

    w(k) = 1/2 (theta + rho psi k + sqrt((psi k + theta rho)^2 + theta^2 (1 - rho^2)))

theta = ATM total variance, rho = skew, psi = theta phi (the ATM curvature scale). It is exactly a
raw SVI smile (:meth:`ESSVISurface.raw_svi`).

Conditions enforced (per slice, and between consecutive slices i-1 -> i):

- Butterfly (Gatheral & Jacquier 2014, Theorem 4.2: theta phi (1 + |rho|) < 4 and
  theta phi^2 (1 + |rho|) <= 4, written in psi as in Corbetta, Cohort, Laachir & Martini 2019,
  "Robust calibration and arbitrage-free interpolation of SSVI slices", Decisions in Economics and
  Finance 42): psi (1 + |rho|) < 4 and psi^2 (1 + |rho|) <= 4 theta. The
  first is also Lee's bound: the wing slopes of w are psi (1 +- rho) / 2 <= 2.
- Calendar: theta_i >= theta_{i-1} and |rho_i psi_i - rho_{i-1} psi_{i-1}| <= psi_i - psi_{i-1}
  (the condition on consecutive eSSVI slices of Hendriks & Martini 2019 as used by Corbetta et al.
  2019), i.e. both wing slopes p = psi (1 + rho) and q = psi (1 - rho) non-decreasing, which is
  necessary (the wings must not cross). It is not sufficient on its own: random pairs meeting it
  cross inside (see tests/unit/test_essvi.py; Pasquazzi 2023, "A note about characterization of
  calendar spread arbitrage in eSSVI surfaces", Theor. Econ. Lett. 13, corrects Hendriks and
  Martini's statement). So the fit also keeps phi = psi / theta non-increasing (as the SSVI
  curvature functions of Gatheral & Jacquier 2014 are). That addition is this module's, not a
  published theorem: with it no crossing was found in 150,000 random pairs, and every surface is
  checked densely afterwards (:meth:`ESSVISurface.check`, :mod:`quant.arbitrage`).

Interpolation in time (after Corbetta et al. 2019): theta linear in T between expiries, and
psi and rho psi linear in theta (the same weight a). Along it theta, p and q are linear and
non-decreasing, phi = psi / theta is a ratio of linear functions hence monotone (non-increasing),
and psi max(p, q) is a product of non-negative non-decreasing linear functions, hence convex, so
psi^2 (1 + |rho|) <= 4 theta holds between the nodes when it holds at them. Before the first expiry
theta = theta_1 T / T_1 and psi = psi_1 sqrt(T / T_1) (rho fixed): psi^2 / theta constant, p, q
increasing, phi decreasing. Past the last expiry theta grows linearly with the slope theta_N / T_N
(flat ATM vol, non-negative) and psi and rho stay fixed: psi^2 (1 + |rho|) <= 4 theta_N <= 4 theta,
wing slopes unchanged (Lee's bound), phi decreasing.

The fit (:func:`fit_essvi`) works slice by slice in maturity order: for fixed (rho, phi) w is
linear in theta, so every candidate's best theta is closed-form; a (rho, phi) grid, zoomed once,
is evaluated for all expiries at once, and the choice among the candidates of each expiry is made
in maturity order under the constraints above against the previous slice's choice; a few
Gauss-Newton steps (all expiries at once) then refine each slice, kept only where they stay
feasible. The previous slice's (rho, psi) with theta >= theta_{i-1} is always feasible, so every
expiry gets an arbitrage-free slice. Thin expiries are pulled towards the previous minute's
parameters of the same expiry (``previous``) or, without one, towards their neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from quant.arbitrage import ArbitrageReport, check_range, report

FloatArray = NDArray[np.float64]

#: Safety factor on the butterfly bounds (GJ's first one is strict).
_MARGIN = 0.999
_RHO_MAX = 0.98
#: Flat-smile fallback's psi relative to sqrt(theta) (a hint of curvature, far inside the bounds).
FLAT_PSI = 0.02
#: Below this many quotes an expiry is "thin": regularised in proportion (n_thin / n)^2.
N_THIN = 12
#: Fewer quotes than this: no fit, the fallback slice.
MIN_QUOTES = 3
_REG_SCALE = 4e-3  # penalty unit: a relative fit error of 6%, squared
_REG_RHO = 0.1
_REG_LOG_PSI = 0.15
_REG_LOG_THETA = 0.05
_FIVE = np.linspace(0.0, 1.0, 5)
_UNIT24 = np.linspace(0.0, 1.0, 24)


def essvi_total_variance(theta: ArrayLike, rho: ArrayLike, psi: ArrayLike, k: ArrayLike) -> FloatArray:
    """w(k) of eSSVI slices; parameters broadcast against k."""
    th = np.asarray(theta, dtype=np.float64)
    r = np.asarray(rho, dtype=np.float64)
    p = np.asarray(psi, dtype=np.float64)
    kk = np.asarray(k, dtype=np.float64)
    return np.asarray(0.5 * (th + r * p * kk + np.sqrt((p * kk + th * r) ** 2 + th * th * (1.0 - r * r))))


def essvi_derivatives(
    theta: ArrayLike, rho: ArrayLike, psi: ArrayLike, k: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """w, dw/dk and d2w/dk2 of eSSVI slices."""
    th = np.asarray(theta, dtype=np.float64)
    r = np.asarray(rho, dtype=np.float64)
    p = np.asarray(psi, dtype=np.float64)
    kk = np.asarray(k, dtype=np.float64)
    u = p * kk + th * r
    c2 = th * th * (1.0 - r * r)
    s = np.sqrt(u * u + c2)
    w = 0.5 * (th + r * p * kk + s)
    w1 = 0.5 * (r * p + p * u / s)
    w2 = 0.5 * p * p * c2 / (s * s * s)
    return np.asarray(w), np.asarray(w1), np.asarray(w2)


def essvi_from_raw_svi(a: float, b: float, rho: float, m: float, sigma: float) -> tuple[float, float, float]:
    """(theta, rho, psi) of a raw-SVI smile that is an eSSVI slice (:meth:`ESSVISurface.raw_svi`'s
    inverse): theta = w(0), psi = 2 b."""
    return a + b * (-rho * m + float(np.sqrt(m * m + sigma * sigma))), rho, 2.0 * b


def psi_bound(theta: ArrayLike, rho: ArrayLike) -> FloatArray:
    """Largest psi with no butterfly arbitrage (GJ 2014 Thm 4.2) and Lee's bound, with a margin."""
    a = 1.0 + np.abs(np.asarray(rho, dtype=np.float64))
    th = np.maximum(np.asarray(theta, dtype=np.float64), 0.0)
    return np.asarray(_MARGIN * np.minimum(4.0 / a, np.sqrt(4.0 * th / a)))


def calendar_pair_ok(
    theta0: ArrayLike, rho0: ArrayLike, psi0: ArrayLike, theta1: ArrayLike, rho1: ArrayLike, psi1: ArrayLike
) -> NDArray[np.bool_]:
    """The conditions of the module docstring between slice 0 and the later slice 1."""
    t0, r0, p0 = (np.asarray(x, dtype=np.float64) for x in (theta0, rho0, psi0))
    t1, r1, p1 = (np.asarray(x, dtype=np.float64) for x in (theta1, rho1, psi1))
    tol = 1e-12
    return np.asarray(
        (t1 >= t0 * (1.0 - tol))
        & (p1 * (1.0 + r1) >= p0 * (1.0 + r0) * (1.0 - tol))
        & (p1 * (1.0 - r1) >= p0 * (1.0 - r0) * (1.0 - tol))
        & (p1 * t0 <= p0 * t1 * (1.0 + tol))
    )


def butterfly_params_ok(theta: ArrayLike, rho: ArrayLike, psi: ArrayLike) -> NDArray[np.bool_]:
    th, r, p = (np.asarray(x, dtype=np.float64) for x in (theta, rho, psi))
    a = 1.0 + np.abs(r)
    return np.asarray(
        (th > 0.0) & (p >= 0.0) & (np.abs(r) < 1.0) & (p * a < 4.0) & (p * p * a <= 4.0 * th * (1 + 1e-12))
    )


@dataclass(frozen=True, slots=True)
class ESSVISurface:
    """eSSVI nodes (one per expiry, maturity order) and their arbitrage-free interpolation in time."""

    years: FloatArray
    theta: FloatArray
    rho: FloatArray
    psi: FloatArray

    def params_at(self, tau: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(theta, rho, psi) at maturities ``tau`` (years, > 0): see the module docstring."""
        t = np.asarray(tau, dtype=np.float64)
        ty, th, r, p = self.years, self.theta, self.rho, self.psi
        m = r * p
        if ty.size == 1:
            hi = np.zeros(t.shape, dtype=int)
            lo = hi
        else:
            hi = np.clip(np.searchsorted(ty, t, side="left"), 1, ty.size - 1)
            lo = hi - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(ty[hi] > ty[lo], (t - ty[lo]) / np.where(ty[hi] > ty[lo], ty[hi] - ty[lo], 1.0), 0.0)
            theta_in = th[lo] + (th[hi] - th[lo]) * frac
            a = np.where(th[hi] > th[lo], (theta_in - th[lo]) / np.where(th[hi] > th[lo], th[hi] - th[lo], 1.0), frac)
        psi_in = p[lo] + (p[hi] - p[lo]) * a
        m_in = m[lo] + (m[hi] - m[lo]) * a
        # Before the first expiry: theta ~ T, psi ~ sqrt(T).
        ratio = np.maximum(t / ty[0], 0.0)
        theta_lo, psi_lo, m_lo = th[0] * ratio, p[0] * np.sqrt(ratio), m[0] * np.sqrt(ratio)
        # Past the last: theta grows with the last expiry's ATM variance rate, psi and rho fixed.
        theta_hi = th[-1] + (th[-1] / ty[-1]) * np.maximum(t - ty[-1], 0.0)
        before, after = t <= ty[0], t >= ty[-1]
        theta_t = np.where(before, theta_lo, np.where(after, theta_hi, theta_in))
        psi_t = np.where(before, psi_lo, np.where(after, p[-1], psi_in))
        m_t = np.where(before, m_lo, np.where(after, m[-1], m_in))
        with np.errstate(invalid="ignore", divide="ignore"):
            rho_t = np.where(psi_t > 0.0, m_t / np.where(psi_t > 0.0, psi_t, 1.0), np.where(before, r[0], r[-1]))
        return theta_t, np.clip(rho_t, -1.0, 1.0), psi_t

    def total_variance(self, tau: ArrayLike, k: ArrayLike) -> FloatArray:
        """w(tau, k); tau and k broadcast."""
        th, r, p = self.params_at(tau)
        return essvi_total_variance(th, r, p, k)

    def implied_vol(self, tau: ArrayLike, k: ArrayLike) -> FloatArray:
        t = np.asarray(tau, dtype=np.float64)
        return np.asarray(np.sqrt(np.maximum(self.total_variance(t, k), 0.0) / t))

    def raw_svi(self) -> FloatArray:
        """(E, 5) raw SVI (a, b, rho, m, sigma) of the nodes (Gatheral & Jacquier 2014, Lemma 3.2)."""
        th, r, p = self.theta, self.rho, self.psi
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = p / th
            out = np.stack(
                (0.5 * th * (1.0 - r * r), 0.5 * p, r, -r / phi, np.sqrt(1.0 - r * r) / phi), axis=-1
            )
        return np.asarray(out)

    def wing_slopes(self) -> FloatArray:
        """Steeper asymptotic |dw/dk| per node: psi (1 + |rho|) / 2."""
        return np.asarray(0.5 * self.psi * (1.0 + np.abs(self.rho)))

    def check(self, k_listed: ArrayLike | None = None, tau: ArrayLike | None = None) -> ArbitrageReport:
        """Butterfly on every node over the check range, calendar on a (tau, k) grid, Lee's bound.

        ``tau`` defaults to a dense maturity grid from 1 hour to twice the last expiry plus the nodes.
        """
        k_chk = check_range(k_listed)
        w, w1, w2 = essvi_derivatives(self.theta[:, None], self.rho[:, None], self.psi[:, None], k_chk[None, :])
        if tau is None:
            tau_c = np.unique(np.concatenate((np.geomspace(1.0 / 8760.0, 2.0 * float(self.years[-1]) + 1.0, 60),
                                              self.years)))
        else:
            tau_c = np.sort(np.asarray(tau, dtype=np.float64))
        th, r, p = self.params_at(tau_c)
        k_cal = np.linspace(k_chk.min(), k_chk.max(), 161)
        w_cal = essvi_total_variance(th[:, None], r[:, None], p[:, None], k_cal[None, :])
        rep = report(k_chk, w, w1, w2, self.wing_slopes(), w_cal)
        # Butterfly between nodes too: the interpolated slices on the calendar grid.
        wi, wi1, wi2 = essvi_derivatives(th[:, None], r[:, None], p[:, None], k_chk[None, :])
        between = report(k_chk, wi, wi1, wi2, 0.5 * p * (1.0 + np.abs(r)), w_cal[:1])
        return ArbitrageReport(
            check_k_min=rep.check_k_min,
            check_k_max=rep.check_k_max,
            min_g=rep.min_g,
            wing_slope=rep.wing_slope,
            min_calendar_step=rep.min_calendar_step,
            min_g_between=float(np.min(between.min_g)) if between.min_g.size else float("inf"),
        )


@dataclass(frozen=True, slots=True)
class ESSVIFit:
    """:func:`fit_essvi`'s result: the surface (nodes = the expiries given, in order), per expiry the
    weighted RMSE of w relative to the level (``rel_rmse``), the quotes used, and what was done
    (``fallback``: too few quotes, the flat or previous-shape slice; ``constrained``: the best free
    candidate broke a calendar condition; ``regularised``: a pull towards the previous minute or the
    neighbours applied)."""

    surface: ESSVISurface
    rel_rmse: FloatArray
    n_quotes: NDArray[np.int64]
    fallback: NDArray[np.bool_]
    constrained: NDArray[np.bool_]
    regularised: NDArray[np.bool_]


def flat_slice(theta: float) -> tuple[float, float, float]:
    """The fallback: a flat smile at ATM total variance theta (rho = 0, a small psi)."""
    th = max(float(theta), 1e-10)
    return th, 0.0, float(min(FLAT_PSI * np.sqrt(th), psi_bound(th, 0.0)))


def fit_essvi(
    k: ArrayLike,
    total_variance: ArrayLike,
    weight: ArrayLike,
    years: ArrayLike,
    *,
    previous: ArrayLike | None = None,
    zooms: int = 1,
    n_thin: int = N_THIN,
) -> ESSVIFit:
    """Fit E eSSVI slices (E, N padded with weight 0; ``years`` (E,) ascending) under the conditions.

    ``previous``: (E, 3) (theta, rho, psi) of the same expiries a minute ago, NaN rows where unknown.
    An expiry with n < ``n_thin`` quotes is pulled towards it (or, without one, towards the slices
    its thick neighbours would interpolate) with weight (n_thin / n)^2; ``n_thin=0`` turns that off.
    Every returned slice satisfies the butterfly conditions and every consecutive pair the calendar
    conditions of the module docstring (checked exactly after the fit by :meth:`ESSVISurface.check`).
    """
    kk = np.atleast_2d(np.asarray(k, dtype=np.float64))
    ww = np.atleast_2d(np.asarray(total_variance, dtype=np.float64))
    om = np.atleast_2d(np.asarray(weight, dtype=np.float64))
    tt = np.atleast_1d(np.asarray(years, dtype=np.float64))
    e_all = tt.size
    om = np.where(np.isfinite(kk) & np.isfinite(ww) & (ww > 0.0) & (om > 0.0), om, 0.0)
    kk = np.where(om > 0.0, kk, 0.0)
    ww = np.where(om > 0.0, ww, 0.0)
    n_used = (om > 0.0).sum(axis=1).astype(np.int64)
    tot = om.sum(axis=1, keepdims=True)
    om = np.where(tot > 0.0, om / np.where(tot > 0.0, tot, 1.0), 0.0)
    # ATM guess: w at the quote nearest k = 0 (weighted mean of the two nearest where possible).
    near = np.where(om > 0.0, np.abs(kk), np.inf)
    j = np.argmin(near, axis=1)
    rows = np.arange(e_all)
    theta_guess = np.where(n_used > 0, ww[rows, j], np.nan)
    scale = np.sum(om * ww, axis=1)
    scale = np.where(scale > 0.0, scale, 1.0)
    w_s = ww / scale[:, None]  # relative units: slices weigh alike
    prev = np.full((e_all, 3), np.nan) if previous is None else np.asarray(previous, dtype=np.float64).reshape(e_all, 3)

    # Regularisation strength: (N_THIN / n)^2, zero for thick expiries' neighbour pull.
    strength = np.where(n_used > 0, (n_thin / np.maximum(n_used, 1)) ** 2, 0.0)

    # The candidate grid: rho x phi sqrt(theta_guess) (psi / sqrt(theta) spans the admissible range).
    sq = np.sqrt(np.where(np.isfinite(theta_guess) & (theta_guess > 0.0), theta_guess, 1.0))
    lq = np.log(np.array([0.02, 1.9]))  # psi / sqrt(theta): the admissible range, roughly
    centre_r = np.zeros(e_all)
    centre_l = np.full(e_all, 0.5 * (lq[0] + lq[1]))  # log(psi / sqrt(theta_guess))
    span_r = np.full(e_all, 0.9)
    span_l = np.full(e_all, 0.5 * (lq[1] - lq[0]))
    # Each expiry's used quotes only (no padding in the inner loop).
    used = [np.nonzero(om[e] > 0.0)[0] for e in range(e_all)]
    k_e = [kk[e, u] for e, u in enumerate(used)]
    w_e = [w_s[e, u] for e, u in enumerate(used)]
    om_e = [om[e, u] for e, u in enumerate(used)]

    ref = prev.copy()
    theta_f = np.zeros(e_all)
    rho_f = np.zeros(e_all)
    psi_f = np.zeros(e_all)
    sse_f = np.zeros(e_all)
    fallback = n_used < MIN_QUOTES
    constrained = np.zeros(e_all, dtype=bool)
    regularised = np.zeros(e_all, dtype=bool)
    cost_f = np.full(e_all, np.inf)
    live = ~fallback
    for level in range(zooms + 1):
        n_g = 15 if level == 0 else 9
        lin = np.linspace(-1.0, 1.0, n_g)
        if level == 1 and previous is None:
            # Neighbours' reference for thin expiries: the free choice of the thick ones around.
            thick = live & (n_used >= n_thin)
            if thick.any():
                x = np.sqrt(tt)
                xs = x[thick]
                ref[:, 1] = np.interp(x, xs, rho_f[thick])
                ref[:, 2] = np.exp(np.interp(x, xs, np.log(np.maximum(psi_f[thick], 1e-12))))
                ref[thick] = np.nan
        # All expiries' grids at once: for fixed (rho, phi) w = theta f(k), so the weighted SSE is
        # quadratic in theta: A theta^2 - 2 B theta + C0, minimised at B / A (relative units).
        r_all = np.repeat(np.clip(centre_r[:, None] + span_r[:, None] * lin, -_RHO_MAX, _RHO_MAX), n_g, axis=1)
        phi_all = np.tile(np.exp(centre_l[:, None] + span_l[:, None] * lin), (1, n_g)) / sq[:, None]
        x3 = phi_all[..., None] * kk[:, None, :]
        r3 = r_all[..., None]
        f3 = 0.5 * (1.0 + r3 * x3 + np.sqrt((x3 + r3) ** 2 + 1.0 - r3 * r3))
        omf3 = om[:, None, :] * f3
        a_all = np.sum(omf3 * f3, axis=-1)
        b_all = np.sum(omf3 * w_s[:, None, :], axis=-1)
        c_all = np.sum(om * w_s * w_s, axis=-1)
        # The sequential choice under the calendar conditions.
        p0 = -1
        for e in range(e_all):
            if not live[e]:
                continue
            has_prev = p0 >= 0
            # Last candidate, always feasible: the previous slice's shape (theta >= its theta), or flat.
            if has_prev:
                r_last, phi_last = rho_f[p0], psi_f[p0] / theta_f[p0]
            else:
                th0, r_last, ps0 = flat_slice(theta_guess[e])
                phi_last = ps0 / th0
            x1 = phi_last * k_e[e]
            f1 = 0.5 * (1.0 + r_last * x1 + np.sqrt((x1 + r_last) ** 2 + 1.0 - r_last * r_last))
            r_c = np.append(r_all[e], r_last)
            phi_c = np.append(phi_all[e], phi_last)
            a_c = np.append(a_all[e], np.sum(om_e[e] * f1 * f1))
            b_c = np.append(b_all[e], np.sum(om_e[e] * f1 * w_e[e]))
            with np.errstate(divide="ignore", invalid="ignore"):
                theta_ls = b_c / a_c
            theta_raw = np.where(np.isfinite(theta_ls), theta_ls, 0.0)
            floor = theta_f[p0] / scale[e] if has_prev else 1e-12 / scale[e]
            theta_rel = np.maximum(theta_raw, floor)
            sse = np.maximum(a_c * theta_rel * theta_rel - 2.0 * b_c * theta_rel + c_all[e], 0.0)
            # The best the grid does without the calendar conditions (theta not floored).
            sse_raw = np.maximum(a_c * theta_raw * theta_raw - 2.0 * b_c * theta_raw + c_all[e], 0.0)
            free_ok = butterfly_params_ok(theta_raw * scale[e], r_c, phi_c * theta_raw * scale[e])
            sse_free = float(np.min(np.where(free_ok[:-1], sse_raw[:-1], np.inf), initial=np.inf))
            theta_c = theta_rel * scale[e]
            psi_c = phi_c * theta_c
            # Explicit candidates the (rho, phi) grid with least-squares theta can miss when the
            # quotes disagree with the conditions: the reference slice (previous minute or
            # neighbours) and the previous slice's rho with psi between its psi and phi_prev theta.
            extra: list[tuple[float, float, float]] = []
            if np.isfinite(ref[e, 1]):
                th_ref = ref[e, 0] if np.isfinite(ref[e, 0]) else max(float(theta_guess[e]), 1e-12)
                extra.append((max(th_ref, theta_f[p0] if has_prev else 0.0), ref[e, 1], ref[e, 2]))
            if has_prev:
                th_x = max(float(theta_guess[e]), theta_f[p0])
                hi_psi = psi_f[p0] / theta_f[p0] * th_x
                lo_psi = max(psi_f[p0], 1e-12)
                for ps_x in lo_psi * (max(hi_psi, lo_psi) / lo_psi) ** _FIVE:
                    extra.append((th_x, rho_f[p0], float(ps_x)))
            if extra:
                ex = np.array(extra)
                res_x = essvi_total_variance(ex[:, :1], ex[:, 1:2], ex[:, 2:3], k_e[e][None, :]) / scale[e] - w_e[e]
                sse_x = np.sum(om_e[e] * res_x * res_x, axis=1)
                theta_c = np.concatenate((theta_c[:-1], ex[:, 0], theta_c[-1:]))
                r_c = np.concatenate((r_c[:-1], ex[:, 1], r_c[-1:]))
                psi_c = np.concatenate((psi_c[:-1], ex[:, 2], psi_c[-1:]))
                sse = np.concatenate((sse[:-1], sse_x, sse[-1:]))
                theta_raw = np.concatenate((theta_raw[:-1], ex[:, 0] / scale[e], theta_raw[-1:]))
            ok = butterfly_params_ok(theta_c, r_c, psi_c) & np.isfinite(sse)
            if has_prev:
                ok &= calendar_pair_ok(theta_f[p0], rho_f[p0], psi_f[p0], theta_c, r_c, psi_c)
                # The previous shape keeps its psi (phi then falls as theta grows): p, q unchanged.
                # Costlier to score (w is not linear in theta then): only when the grid needs it.
                psi_c[-1] = psi_f[p0]
                ok[-1] = True
                if not ok[:-1].any() or level == zooms:
                    theta_c[-1] = _best_theta_fixed_psi(k_e[e], w_e[e] * scale[e], om_e[e], rho_f[p0], psi_f[p0],
                                                        theta_f[p0])
                    r_last = essvi_total_variance(theta_c[-1], rho_f[p0], psi_f[p0], k_e[e]) / scale[e] - w_e[e]
                    sse[-1] = np.sum(om_e[e] * r_last * r_last)
                else:
                    sse[-1] = np.inf
            pen = np.zeros_like(sse)
            if np.isfinite(ref[e, 1]) and strength[e] > 0.0 and level >= 1:
                dr = (r_c - ref[e, 1]) / _REG_RHO
                dp = np.log(np.maximum(psi_c, 1e-12) / ref[e, 2]) / _REG_LOG_PSI
                pen = dr * dr + dp * dp
                if np.isfinite(ref[e, 0]):
                    dt = np.log(theta_c / ref[e, 0]) / _REG_LOG_THETA
                    pen = pen + dt * dt
                pen = _REG_SCALE * strength[e] * np.where(np.isfinite(pen), pen, 1e6)
                regularised[e] = bool(n_used[e] < n_thin)
            cost = np.where(ok, sse + pen, np.inf)
            pick = int(np.argmin(cost))
            if not np.isfinite(cost[pick]):
                pick = cost.size - 1  # the always-feasible last candidate
                if not has_prev:  # the flat smile at the ATM variance itself
                    theta_c[-1], r_c[-1], psi_c[-1] = flat_slice(theta_guess[e])
                    sse[-1] = np.nan
            # Binding: the arbitrage-free choice fits clearly worse than the grid without calendar.
            constrained[e] = bool(sse[pick] > 1.01 * sse_free + 1e-12)
            theta_f[e], rho_f[e], psi_f[e], sse_f[e] = theta_c[pick], r_c[pick], psi_c[pick], sse[pick]
            centre_r[e] = r_c[pick]
            centre_l[e] = np.log(max(psi_c[pick], 1e-12 * sq[e]) / sq[e])
            cost_f[e] = cost[pick]
            p0 = e
        # Zoom: the next grid spans two of this grid's steps around the choice.
        span_r = span_r * 2.0 / (n_g - 1)
        span_l = span_l * 2.0 / (n_g - 1)
    # Polish off the grid's resolution (all expiries at once), then keep each polished slice only
    # if it is feasible against the final previous slice, in maturity order.
    if live.any():
        reg_w = np.where(np.isfinite(ref[:, 1]) & (strength > 0.0), _REG_SCALE * strength, 0.0)
        pol = _polish_batch(kk, w_s, om, scale, theta_f, rho_f, psi_f, cost_f, ref, reg_w, live)
        p0 = -1
        for e in np.nonzero(live)[0].tolist():
            sse_pol = pol[3][e] if np.isfinite(pol[3][e]) else sse_f[e]
            options = [(pol[0][e], pol[1][e], pol[2][e], sse_pol), (theta_f[e], rho_f[e], psi_f[e], sse_f[e])]
            chosen = None
            for th_o, r_o, p_o, s_o in options:
                if butterfly_params_ok(th_o, r_o, p_o) and (
                        p0 < 0 or calendar_pair_ok(theta_f[p0], rho_f[p0], psi_f[p0], th_o, r_o, p_o)):
                    chosen = (th_o, r_o, p_o, s_o)
                    break
            if chosen is None:  # the previous slice's shape, theta no lower: always feasible
                th_o = max(theta_f[e], theta_f[p0])
                res = essvi_total_variance(th_o, rho_f[p0], psi_f[p0], k_e[e]) / scale[e] - w_e[e]
                chosen = (th_o, rho_f[p0], psi_f[p0], float(np.sum(om_e[e] * res * res)))
                constrained[e] = True
            theta_f[e], rho_f[e], psi_f[e], sse_f[e] = chosen
            p0 = e
    # Fallback slices (too few quotes), in order, against the slices around them.
    if fallback.any():
        theta_f, rho_f, psi_f = _fill_fallbacks(tt, theta_f, rho_f, psi_f, fallback, theta_guess)
    surface = ESSVISurface(years=tt.copy(), theta=theta_f, rho=rho_f, psi=psi_f)
    return ESSVIFit(
        surface=surface,
        rel_rmse=np.where(n_used > 0, np.sqrt(np.maximum(sse_f, 0.0)), np.nan),
        n_quotes=n_used,
        fallback=fallback,
        constrained=constrained,
        regularised=regularised,
    )


def _polish_batch(
    k: FloatArray, w_rel: FloatArray, om: FloatArray, scale: FloatArray, theta: FloatArray, rho: FloatArray,
    psi: FloatArray, cost: FloatArray, ref: FloatArray, reg_w: FloatArray, live: NDArray[np.bool_], steps: int = 3,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Damped Gauss-Newton steps on (theta, rho, log psi) of every slice at once (k, w_rel, om
    padded (E, N), relative units); a step is kept where it meets the butterfly conditions and
    lowers the penalised cost. Returns (theta, rho, psi, sse); the calendar conditions are the
    caller's."""
    th, r, ps = theta.copy(), rho.copy(), psi.copy()
    best = cost.copy()
    sse_best = np.full(th.size, np.nan)
    lam = np.full(th.size, 1e-3)
    active = live & (th > 0.0) & (ps > 0.0) & np.isfinite(best)
    sw = np.sqrt(om)
    sc = scale[:, None]
    eye = np.eye(3)
    for _ in range(steps):
        if not active.any():
            break
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            t2, r2, p2 = th[:, None], r[:, None], ps[:, None]
            sq_ = np.sqrt(p2 * p2 * k * k + 2.0 * r2 * p2 * t2 * k + t2 * t2)
            base = 0.5 * (t2 + r2 * p2 * k + sq_) / sc - w_rel
            jac = np.stack((
                0.5 * (1.0 + (r2 * p2 * k + t2) / sq_) / sc,
                0.5 * (p2 * k + p2 * t2 * k / sq_) / sc,
                0.5 * p2 * (r2 * k + (p2 * k * k + r2 * t2 * k) / sq_) / sc,
            ), axis=-1) * sw[..., None]
        # Inactive (unfitted) rows: theta = 0 gives 0/0; they take no step anyway.
        jac = np.where(np.isfinite(jac), jac, 0.0)
        base = np.where(np.isfinite(base), base, 0.0)
        jtj = np.einsum("eni,enj->eij", jac, jac)
        g = np.einsum("eni,en->ei", jac, base * sw)
        damp = lam[:, None, None] * (jtj * eye) + 1e-18 * eye
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            step = np.linalg.solve(jtj + damp, -g[..., None])[..., 0]
            step = np.where(np.isfinite(step), step, 0.0)
            nth = th + step[:, 0]
            nr = np.clip(r + step[:, 1], -_RHO_MAX, _RHO_MAX)
            nps = ps * np.exp(np.minimum(step[:, 2], 1.0))
            res = essvi_total_variance(nth[:, None], nr[:, None], nps[:, None], k) / sc - w_rel
            sse = np.sum(om * res * res, axis=1)
            pen = ((nr - ref[:, 1]) / _REG_RHO) ** 2 + (np.log(nps / ref[:, 2]) / _REG_LOG_PSI) ** 2
            pen = pen + np.where(np.isfinite(ref[:, 0]), (np.log(nth / ref[:, 0]) / _REG_LOG_THETA) ** 2, 0.0)
            new_cost = sse + np.where(reg_w > 0.0, reg_w * pen, 0.0)
        better = active & butterfly_params_ok(nth, nr, nps) & np.isfinite(new_cost) & (new_cost < best)
        th, r, ps = np.where(better, nth, th), np.where(better, nr, r), np.where(better, nps, ps)
        best = np.where(better, new_cost, best)
        sse_best = np.where(better, sse, sse_best)
        lam = np.where(better, np.maximum(lam / 4.0, 1e-9), lam * 8.0)
    # Unimproved slices: their sse as it was (NaN tells the caller to keep its own).
    return th, r, ps, sse_best


def _best_theta_fixed_psi(k: FloatArray, w: FloatArray, om: FloatArray, rho: float, psi: float, theta0: float) -> float:
    """theta >= theta0 (near-)minimising the weighted SSE with rho and psi fixed: the best of a
    geometric grid on [theta0, 4 theta0 + max w]."""
    lo = max(theta0, 1e-12)
    hi = 4.0 * theta0 + float(np.max(w, initial=0.0)) + 1e-12
    grid = lo * (hi / lo) ** _UNIT24
    wm = essvi_total_variance(grid[:, None], rho, psi, k[None, :])
    sse = np.sum(om[None, :] * (wm - w[None, :]) ** 2, axis=1)
    return float(grid[int(np.argmin(sse))])


def _fill_fallbacks(
    tt: FloatArray, theta: FloatArray, rho: FloatArray, psi: FloatArray, fallback: NDArray[np.bool_],
    theta_guess: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Arbitrage-free slices for the expiries with too few quotes.

    Between fitted expiries: the interpolated slice (module docstring); before the first fitted
    one: its rho and phi at min(own ATM variance, its theta); past the last: its rho and psi at
    max(own ATM variance, its theta); with nothing fitted: flat smiles (rho = 0, one small psi) on
    the running maximum of the ATM variances.
    """
    theta, rho, psi = theta.copy(), rho.copy(), psi.copy()
    fitted = ~fallback
    guess = np.where(np.isfinite(theta_guess) & (theta_guess > 0.0), theta_guess, np.nan)
    if not fitted.any():
        known = np.isfinite(guess)
        base = np.interp(tt, tt[known], guess[known]) if known.any() else np.full(tt.size, 1e-4)
        th = np.maximum.accumulate(np.maximum(base, 1e-10))
        p = flat_slice(float(th[0]))[2]
        return th, np.zeros(tt.size), np.full(tt.size, p)
    nodes = ESSVISurface(years=tt[fitted], theta=theta[fitted], rho=rho[fitted], psi=psi[fitted])
    first, last = np.nonzero(fitted)[0][[0, -1]]
    for e in np.nonzero(fallback)[0].tolist():
        if e < first:
            th1, r1, p1 = theta[first], rho[first], psi[first]
            g = guess[e] if np.isfinite(guess[e]) else th1 * tt[e] / tt[first]
            theta[e], rho[e], psi[e] = _below(min(float(g), float(th1)), th1, r1, p1)
        elif e > last:
            # In order: theta no lower than the slice before (fitted or a fallback itself).
            g = guess[e] if np.isfinite(guess[e]) else theta[e - 1]
            theta[e], rho[e], psi[e] = max(float(g), float(theta[e - 1])), rho[last], psi[last]
        else:
            th_i, r_i, p_i = nodes.params_at(np.array([tt[e]]))
            theta[e], rho[e], psi[e] = float(th_i[0]), float(r_i[0]), float(p_i[0])
    # Fallbacks before the first fitted expiry, in order: keep theta non-decreasing among them.
    if first > 0:
        head = np.arange(first)
        theta[head] = np.maximum.accumulate(theta[head])
        for e in head.tolist():
            theta[e], rho[e], psi[e] = _below(
                float(theta[e]), float(theta[first]), float(rho[first]), float(psi[first])
            )
    return theta, rho, psi


def _below(theta: float, theta1: float, rho1: float, psi1: float) -> tuple[float, float, float]:
    """A slice at theta <= theta1 below the slice (theta1, rho1, psi1) satisfying the conditions: the
    same rho and phi (psi scaled by theta / theta1): p and q smaller, psi^2 (1+|rho|) <= 4 theta."""
    c = min(theta / theta1, 1.0) if theta1 > 0.0 else 0.0
    return theta, rho1, psi1 * c
