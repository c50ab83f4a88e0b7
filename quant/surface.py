"""The implied-volatility surface of one option chain: ``build_surface(chain, now) -> SurfaceResult``.

Steps, all on flat numpy arrays (one element per quote):

1. Implied vols of every quote's bid, ask, mid and mark (coin prices x the expiry's
   ``underlying_price`` = USD; Black-76 with F = underlying_price, r = 0), with reason codes.
2. The seed program's filter (:func:`seed_filter`): no bid and no ask, dropped; the in-the-money
   side dropped (puts below the forward, calls at and above it are kept).
3. The smiles (``method``):
   - ``"essvi"`` (the default): one eSSVI surface across expiries (:mod:`quant.essvi`), fitted to
     the two-sided out-of-the-money mid vols weighted by vega / bid-ask spread, under the published
     no-butterfly and no-calendar conditions, interpolated and extrapolated in time so that they hold
     at every maturity (Lee's wing bound included). An expiry with fewer than 3 two-sided quotes gets
     an arbitrage-free slice from its neighbours (a flat smile if it has none); a thin expiry is
     regularised towards ``previous`` (the last minute's result) or its neighbours.
   - ``"svi"``: a raw-SVI fit per expiry (:mod:`quant.svi`) held to the same guarantees: a slice
     failing the butterfly check on the dense range, or with fewer than 6 quotes, is replaced by the
     eSSVI slice, and the first and last expiry are eSSVI's (their extrapolation); total variance is
     linear in time between expiries, eSSVI outside them; if the whole surface fails the checks it
     is the eSSVI surface.
   - ``"linear"`` (the seed program's, kept for comparison): vols linear in moneyness K/F between
     quotes, flat beyond them, linear in time, flat before the first and after the last expiry.
     NOT arbitrage-free: its checks are reported, never enforced.
4. Checks (:mod:`quant.arbitrage`): butterfly g(k) >= 0 on a dense range covering |k| <= 4 and every
   listed strike (``ExpiryFit.check_k_min``/``check_k_max``), calendar on the grid and between the
   expiries, Lee's bound; ``SurfaceResult.arbitrage_free`` says all passed.
5. The constant-maturity grid read off the surface at the tenors and log-moneyness k = ln(K/F).
6. Per tenor: ATM vol (k = 0), 25-delta risk reversal (call minus put vol) and butterfly (their
   mean minus ATM), with the 25-delta strikes solved on the tenor's smile (plain forward Black
   delta, as Deribit's); per expiry the fit RMSE in vol points.
7. The 30-day variance index of :mod:`quant.variance_index` (Cboe VIX method) on the same quotes.

Volatilities are decimals (0.55 = 55 vol points) except ``rmse_vol_points``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from quant._special import ONE_OVER_SQRT_TWO_PI
from quant.arbitrage import G_TOLERANCE, check_range, density_factor, sampled_report
from quant.essvi import MIN_QUOTES as ESSVI_MIN_QUOTES
from quant.essvi import (
    ESSVIFit,
    ESSVISurface,
    calendar_pair_ok,
    essvi_from_raw_svi,
    essvi_total_variance,
    fit_essvi,
)
from quant.implied_vol import IVReason, implied_vol_with_reasons
from quant.svi import SVIParams, fit_svi_slices, svi_derivatives, svi_total_variance, wing_slope
from quant.variance_index import VarianceIndex, chain_variance_index

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
ReasonArray = NDArray[np.int8]

MS_PER_YEAR = 365.0 * 86_400_000.0
DEFAULT_TENOR_DAYS: tuple[float, ...] = (1, 3, 7, 14, 21, 30, 60, 90, 180, 365)
DEFAULT_LOG_MONEYNESS: tuple[float, ...] = tuple(float(x) for x in np.round(np.linspace(-0.5, 0.5, 21), 12))
#: The seed program's moneyness list, K/F.
SEED_MONEYNESS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 2.0)
SEED_LOG_MONEYNESS: tuple[float, ...] = tuple(float(np.log(m)) for m in SEED_MONEYNESS)
MIN_SVI_QUOTES = 6
_Z25 = 0.6744897501960817  # Phi^-1(0.75): |d1| of a 25-delta option
Method = Literal["essvi", "svi", "linear"]
METHODS: tuple[str, ...] = ("essvi", "svi", "linear")
#: What ``previous`` may be: the last minute's result, or (theta, rho, psi) by expiry_ms.


@dataclass(frozen=True, slots=True)
class SurfaceGrid:
    """Constant-maturity grid: tenors in calendar days, log-forward-moneyness ln(K/F)."""

    tenor_days: tuple[float, ...] = DEFAULT_TENOR_DAYS
    log_moneyness: tuple[float, ...] = DEFAULT_LOG_MONEYNESS

    @classmethod
    def seed(cls, tenor_days: tuple[float, ...] = DEFAULT_TENOR_DAYS) -> SurfaceGrid:
        """The seed program's moneyness list (K/F 0.5 ... 2.0) as log-moneyness."""
        return cls(tenor_days=tenor_days, log_moneyness=SEED_LOG_MONEYNESS)


DEFAULT_GRID = SurfaceGrid()
SEED_GRID = SurfaceGrid.seed()


def _array(values: ArrayLike, dtype: type) -> NDArray:
    out: NDArray = np.array(values, dtype=dtype).ravel()
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class ChainInputs:
    """One currency's option quotes at one instant, one element per option.

    Prices are Deribit's, in coin; a bid or ask that is NaN or <= 0 is an empty side. The
    arrays are copied and made read-only.
    """

    expiry_ms: NDArray[np.int64]
    strike: FloatArray
    is_call: BoolArray
    bid: FloatArray
    ask: FloatArray
    mark: FloatArray
    underlying_price: FloatArray
    index_price: float = float("nan")

    def __post_init__(self) -> None:
        object.__setattr__(self, "expiry_ms", _array(self.expiry_ms, np.int64))
        for name in ("strike", "bid", "ask", "mark", "underlying_price"):
            object.__setattr__(self, name, _array(getattr(self, name), np.float64))
        object.__setattr__(self, "is_call", _array(self.is_call, bool))
        object.__setattr__(self, "index_price", float(self.index_price))
        n = self.strike.size
        for name in ("expiry_ms", "is_call", "bid", "ask", "mark", "underlying_price"):
            if getattr(self, name).size != n:
                raise ValueError(f"ChainInputs.{name} has {getattr(self, name).size} elements, strike has {n}")

    def __len__(self) -> int:
        return int(self.strike.size)


def seed_filter(strike: ArrayLike, is_call: ArrayLike, bid: ArrayLike, ask: ArrayLike, forward: ArrayLike) -> BoolArray:
    """The seed program's quote filter: True for quotes to use.

    Drops quotes with neither a bid nor an ask and the in-the-money side: keeps puts with strike
    below the forward and calls with strike at or above it.
    """
    k = np.asarray(strike, dtype=np.float64)
    c = np.asarray(is_call, dtype=bool)
    f = np.asarray(forward, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        quoted = (np.asarray(bid, dtype=np.float64) > 0.0) | (np.asarray(ask, dtype=np.float64) > 0.0)
    return quoted & np.where(c, k >= f, k < f)


@dataclass(frozen=True, slots=True)
class QuoteIVs:
    """Per input quote, in the order of :class:`ChainInputs` (NaN where not available)."""

    years: FloatArray
    forward: FloatArray
    log_moneyness: FloatArray
    bid_iv: FloatArray
    ask_iv: FloatArray
    mid_iv: FloatArray
    mark_iv: FloatArray
    #: IVReason codes; ``NO_QUOTE`` where that side of the book (or the mark) is empty
    bid_reason: ReasonArray
    ask_reason: ReasonArray
    mid_reason: ReasonArray
    mark_reason: ReasonArray
    #: kept by :func:`seed_filter` (and not expired)
    kept: BoolArray
    #: used in its expiry's SVI fit
    fitted: BoolArray
    #: the fit weight, vega / spread (0 where not fitted)
    weight: FloatArray


@dataclass(frozen=True, slots=True)
class ExpiryFit:
    """One expiry's smile.

    ``method`` is the one actually used ("svi", or "linear" by request or as the fallback);
    ``params`` is the SVI fit when ``method == "svi"``. ``rmse_vol_points`` is the fit's RMSE
    over its quotes in vol points (NaN for linear smiles, which pass through their quotes).
    ``butterfly_ok``, ``min_g`` and ``wing_slope`` (b(1+|rho|)) describe the SVI fit, also one
    that was rejected for arbitrage; ``calendar_ok`` is False when its total variance dips below the
    previous expiry's somewhere on the grid. ``notes`` say what was found and done.
    """

    expiry_ms: int
    years: float
    forward: float
    method: str
    params: SVIParams | None
    rmse_vol_points: float
    n_quotes: int
    butterfly_ok: bool
    min_g: float
    wing_slope: float
    calendar_ok: bool
    notes: tuple[str, ...] = ()
    #: the butterfly check range of ln(K/F): at least [-4, 4] and every listed strike
    check_k_min: float = float("nan")
    check_k_max: float = float("nan")
    #: the eSSVI slice (theta, rho, psi) when ``method == "essvi"``: ``previous`` of the next minute
    essvi: tuple[float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class SurfaceResult:
    """Everything :func:`build_surface` computes; see the module docstring.

    ``iv`` is (len(tenor_days), len(log_moneyness)); ``atm_iv``, ``rr25`` and ``bf25`` are per
    tenor. ``variance_index.value`` is the 30-day index in percent.
    """

    timestamp_ms: int
    method: str
    quotes: QuoteIVs
    expiries: tuple[ExpiryFit, ...]
    tenor_days: FloatArray
    log_moneyness: FloatArray
    iv: FloatArray
    atm_iv: FloatArray
    rr25: FloatArray
    bf25: FloatArray
    variance_index: VarianceIndex
    notes: tuple[str, ...] = field(default=())
    #: every check passed (butterfly on the check range, calendar, Lee); False for "linear"
    arbitrage_free: bool = False

    def grid_points(self) -> list[tuple[float, float, float]]:
        """The grid as rows (tenor_days, log_moneyness, iv), tenor-major."""
        t, k = np.meshgrid(self.tenor_days, self.log_moneyness, indexing="ij")
        return list(zip(t.ravel().tolist(), k.ravel().tolist(), self.iv.ravel().tolist(), strict=True))


def _now_ms(now: datetime | float) -> float:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.timestamp() * 1000.0
    return float(now)


class _Smiles:
    """Per-expiry smiles evaluated as total variance, and their interpolation in time."""

    def __init__(
        self,
        years: FloatArray,
        svi_params: FloatArray,
        use_svi: BoolArray,
        nodes: list[tuple[FloatArray, FloatArray]],
        method: Method,
    ) -> None:
        self.years = years
        self.svi_params = svi_params
        self.use_svi = use_svi
        self.nodes = nodes  # per expiry: (moneyness K/F ascending, iv)
        self.method = method

    def total_variance(self, k: FloatArray) -> FloatArray:
        """(E, P) total variance of every expiry at log-moneyness k (P,)."""
        out = np.empty((self.years.size, k.size))
        if self.use_svi.any():
            out[self.use_svi] = svi_total_variance(self.svi_params[self.use_svi], k)
        # Far wings (|k| > 50) are flat beyond the last node anyway; clipping keeps exp finite.
        moneyness = np.exp(np.clip(k, -50.0, 50.0))
        for e in np.nonzero(~self.use_svi)[0]:
            m, iv = self.nodes[e]
            out[e] = np.interp(moneyness, m, iv) ** 2 * self.years[e]
        return out

    def iv(self, tau: FloatArray, k: FloatArray, repair_calendar: bool) -> FloatArray:
        """Vol at (tau_p, k_p) pairs, both (P,)."""
        w = self.total_variance(k)
        if repair_calendar:
            w = np.maximum.accumulate(w, axis=0)
        t = self.years
        cols = np.arange(k.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            node_iv = np.sqrt(np.maximum(w, 0.0) / t[:, None])
        if t.size == 1:
            return node_iv[0]
        hi = np.clip(np.searchsorted(t, tau, side="left"), 1, t.size - 1)
        lo = hi - 1
        frac = (tau - t[lo]) / (t[hi] - t[lo])
        if self.method == "linear":
            inside = node_iv[lo, cols] + (node_iv[hi, cols] - node_iv[lo, cols]) * frac
        else:
            w_in = w[lo, cols] + (w[hi, cols] - w[lo, cols]) * frac
            with np.errstate(invalid="ignore", divide="ignore"):
                inside = np.sqrt(np.maximum(w_in, 0.0) / tau)
        # Flat in vol outside the listed expiries.
        return np.where(tau <= t[0], node_iv[0], np.where(tau >= t[-1], node_iv[-1], inside))


def _group_rows(groups: NDArray[np.int64], n_groups: int) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Row-major (group, slot) positions of sorted elements for padded (n_groups, width) arrays."""
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slot = np.arange(order.size) - starts[groups[order]]
    return order, slot, int(counts.max()) if counts.size else 0


def build_surface(
    chain: ChainInputs,
    now: datetime | float,
    grid: SurfaceGrid = DEFAULT_GRID,
    method: Method = "essvi",
    *,
    variance_index_days: float = 30.0,
    previous: SurfaceResult | Mapping[int, tuple[float, ...]] | None = None,
) -> SurfaceResult:
    """Implied vols, per-expiry smiles, the constant-maturity grid and derived figures of a chain.

    ``now`` is a timezone-aware datetime or milliseconds since the epoch (Deribit's unit).
    ``previous`` (eSSVI): the last minute's :class:`SurfaceResult`, or by expiry_ms either
    (theta, rho, psi) or the raw-SVI parameters of an eSSVI fit (as ``SmileFit.parameters`` records
    them); thin expiries are held towards it.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    now_ms = _now_ms(now)
    n = len(chain)
    notes: list[str] = []
    years = (chain.expiry_ms.astype(np.float64) - now_ms) / MS_PER_YEAR
    forward = chain.underlying_price.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k_log = np.log(chain.strike / forward)

    # 1. Implied vols of bid, ask, mid and mark in one solver call.
    with np.errstate(invalid="ignore"):
        has_bid = chain.bid > 0.0
        has_ask = chain.ask > 0.0
        two_sided = has_bid & has_ask & (chain.ask >= chain.bid)
        mid = np.where(two_sided, 0.5 * (chain.bid + chain.ask), np.nan)
        has_mark = chain.mark > 0.0
    prices = np.concatenate(
        (np.where(has_bid, chain.bid, np.nan), np.where(has_ask, chain.ask, np.nan), mid, chain.mark)
    ) * np.tile(forward, 4)
    present = np.concatenate((has_bid, has_ask, two_sided, has_mark))
    vols, reasons = implied_vol_with_reasons(
        prices, np.tile(forward, 4), np.tile(chain.strike, 4), np.tile(years, 4), np.tile(chain.is_call, 4)
    )
    reasons = np.where(present, reasons, np.int8(IVReason.NO_QUOTE)).astype(np.int8)
    vols = np.where(present, vols, np.nan)
    bid_iv, ask_iv, mid_iv, mark_iv = np.split(vols, 4)
    bid_r, ask_r, mid_r, mark_r = np.split(reasons, 4)

    # 2. The seed filter, and the quote vol used by linear smiles.
    kept = seed_filter(chain.strike, chain.is_call, chain.bid, chain.ask, forward) & (years > 0.0)
    quote_iv = np.where(np.isfinite(mid_iv), mid_iv, mark_iv)
    expiries, group = np.unique(chain.expiry_ms, return_inverse=True)
    group = group.ravel()
    usable = kept & np.isfinite(quote_iv) & np.isfinite(k_log)
    live = np.bincount(group[usable], minlength=expiries.size) > 0
    for e in np.nonzero(~live & (expiries > now_ms))[0]:
        notes.append(f"expiry {int(expiries[e])}: no usable quote, left out of the surface")

    # 3a. SVI inputs: two-sided out-of-the-money mids, weight vega/spread in vol-error units.
    fit_mask = usable & np.isfinite(mid_iv) & two_sided
    sqrt_t = np.sqrt(np.maximum(years, 0.0))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s = mid_iv * sqrt_t
        d1 = -k_log / s + 0.5 * s
        vega = forward * ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * d1 * d1) * sqrt_t
        spread = (chain.ask - chain.bid) * forward
        base = vega / np.maximum(spread, 1e-12 * forward)
        # Residuals are fitted in total variance: dw = 2 vol T dvol.
        weight = np.where(fit_mask, base / (2.0 * mid_iv * np.maximum(years, 1e-12)) ** 2, 0.0)
    fit_mask &= weight > 0.0
    weight = np.where(fit_mask, weight, 0.0)

    e_idx = np.nonzero(live)[0]
    n_live = e_idx.size
    t_e = (expiries[e_idx].astype(np.float64) - now_ms) / MS_PER_YEAR
    remap = np.full(expiries.size, -1)
    remap[e_idx] = np.arange(n_live)
    g_live = remap[group]

    # 3b. Linear nodes per expiry (moneyness K/F ascending, vol), forward = median underlying.
    nodes: list[tuple[FloatArray, FloatArray]] = []
    fwd_e = np.full(n_live, np.nan)
    n_quotes = np.zeros(n_live, dtype=int)
    order = np.lexsort((chain.strike, g_live))
    for pos in range(n_live):
        sel = order[(g_live[order] == pos) & usable[order]]
        m = chain.strike[sel] / forward[sel]
        m_u, inv = np.unique(m, return_inverse=True)
        iv_u = np.bincount(inv.ravel(), weights=quote_iv[sel]) / np.bincount(inv.ravel())
        nodes.append((m_u, iv_u))
        fwd_e[pos] = float(np.median(forward[sel]))
        n_quotes[pos] = sel.size

    k_grid = np.asarray(grid.log_moneyness, dtype=np.float64)
    tenors = np.asarray(grid.tenor_days, dtype=np.float64)
    tau = tenors / 365.0
    # Every listed strike's k (live expiries) widens the butterfly check range beyond |k| <= 4.
    listed = (g_live >= 0) & np.isfinite(k_log) & (years > 0.0)
    k_chk = check_range(k_log[listed])
    exp_notes: list[list[str]] = [[] for _ in range(n_live)]
    fitted = np.zeros(n, dtype=bool)
    counts = np.bincount(g_live[fit_mask & (g_live >= 0)], minlength=n_live) if n_live else np.zeros(0, int)
    kk, ww, om = _padded(fit_mask & (g_live >= 0), g_live, n_live, k_log, mid_iv**2 * years, weight)

    # 3c. eSSVI across expiries (the method, and the replacement of any failing SVI slice).
    ess: ESSVISurface | None = None
    ess_fit: ESSVIFit | None = None
    if method in ("essvi", "svi") and n_live:
        ess_fit = fit_essvi(kk, ww, om, t_e, previous=_previous_params(previous, expiries[e_idx]))
        ess = ess_fit.surface

    node_w: FloatArray  # (E, P) node smiles on k_chk, for the per-expiry checks
    min_g = np.full(n_live, np.nan)
    slope = np.full(n_live, np.nan)
    bfly_ok = np.zeros(n_live, dtype=bool)
    calendar_ok = np.ones(n_live, dtype=bool)
    use_svi = np.zeros(n_live, dtype=bool)
    svi_params = np.full((n_live, 5), np.nan)
    rmse = np.full(n_live, np.nan)
    vol_at: Callable[[FloatArray, FloatArray], FloatArray]
    surface_ok = True
    if n_live and ess is not None and ess_fit is not None:
        rep = ess.check(k_log[listed], tau=np.concatenate((tau, t_e)))
        min_g, slope, bfly_ok = rep.min_g, rep.wing_slope, rep.butterfly_ok
        pair = calendar_pair_ok(ess.theta[:-1], ess.rho[:-1], ess.psi[:-1], ess.theta[1:], ess.rho[1:], ess.psi[1:])
        calendar_ok[1:] = pair
        surface_ok = rep.ok and bool(pair.all())
        svi_params = ess.raw_svi()
        surf = ess
        tenor_params = surf.params_at(tau)  # the 25-delta search asks at these tenors many times

        def essvi_vol(t_: FloatArray, k_: FloatArray) -> FloatArray:
            if t_ is tau:
                w = essvi_total_variance(*tenor_params, k_)
                return np.asarray(np.sqrt(np.maximum(w, 0.0) / tau))
            return surf.implied_vol(t_, k_)

        vol_at = essvi_vol
        for pos in range(n_live):
            if ess_fit.fallback[pos]:
                exp_notes[pos].append(f"{counts[pos]} two-sided quotes (< {ESSVI_MIN_QUOTES}): arbitrage-free "
                                      "slice from the neighbouring expiries (flat smile if none)")
            if ess_fit.constrained[pos]:
                exp_notes[pos].append("calendar conditions bind: best arbitrage-free slice")
            if ess_fit.regularised[pos]:
                exp_notes[pos].append(f"thin ({counts[pos]} quotes): regularised towards "
                                      + ("the previous minute" if previous is not None else "its neighbours"))
        if ess_fit.constrained.any():
            notes.append(f"calendar conditions bind on {int(ess_fit.constrained.sum())} expiry(ies): "
                         "the quotes alone would give calendar or butterfly arbitrage")
        if not surface_ok:  # cannot happen by construction; said if it does
            notes.append(f"eSSVI check failed: min g {float(rep.min_g.min()):.3g}, between nodes "
                         f"{rep.min_g_between:.3g}, calendar {rep.min_calendar_step:.3g}")
        rmse = _rmse_vol_points(svi_params, kk, ww, om, t_e)
        fitted_e = ~ess_fit.fallback
        if method == "svi":
            vol_at, use_svi, svi_params, rmse, min_g, slope, bfly_ok, calendar_ok = _svi_on_essvi(
                kk, ww, om, t_e, ess, k_chk, tau, counts, exp_notes, notes)
            fitted_e = fitted_e | use_svi
        fitted = fit_mask & (g_live >= 0) & fitted_e[np.maximum(g_live, 0)]
    elif n_live:
        smiles = _Smiles(t_e, np.full((n_live, 5), np.nan), np.zeros(n_live, dtype=bool), nodes, "linear")
        node_w = smiles.total_variance(k_chk)
        tau_chk = np.unique(np.concatenate((tau, t_e)))
        w_cal = smiles.iv(np.repeat(tau_chk, k_grid.size), np.tile(k_grid, tau_chk.size), False) ** 2
        w_cal = w_cal.reshape(tau_chk.size, k_grid.size) * tau_chk[:, None]
        rep = sampled_report(k_chk, node_w, w_cal)
        min_g, slope, bfly_ok = rep.min_g, rep.wing_slope, rep.butterfly_ok
        w_nodes = smiles.total_variance(k_grid)
        drop = w_nodes[:-1] - w_nodes[1:]
        bad = drop > 1e-10 + 1e-6 * np.abs(w_nodes[:-1])
        for pos in (np.nonzero(bad.any(axis=1))[0] + 1).tolist():
            ks = k_grid[bad[pos - 1]]
            exp_notes[pos].append(
                f"calendar: total variance below the previous expiry's at k {ks.min():.2f}..{ks.max():.2f} "
                f"(by up to {drop[pos - 1].max():.3g}); kept (seed method)"
            )
            calendar_ok[pos] = False
        if not calendar_ok.all():
            notes.append(f"calendar arbitrage between {int((~calendar_ok).sum())} expiry pair(s)")
        surface_ok = False  # the seed's smile: not arbitrage-free by construction
        notes.append("linear smiles (the seed's method): not arbitrage-free")
        vol_at = lambda t_, k_: smiles.iv(t_, k_, False)  # noqa: E731
    check_lo, check_hi = float(k_chk.min()), float(k_chk.max())

    # 5. The grid, and 6. ATM, RR25, BF25.
    if n_live:
        tt, kk_g = np.meshgrid(tau, k_grid, indexing="ij")
        iv_grid = vol_at(tt.ravel(), kk_g.ravel()).reshape(tt.shape)
        atm = vol_at(tau, np.zeros_like(tau))
        vol_c = atm.copy()
        vol_p = atm.copy()
        sq = np.sqrt(tau)
        for _ in range(50):
            k_c = 0.5 * vol_c * vol_c * tau + _Z25 * vol_c * sq
            k_p = 0.5 * vol_p * vol_p * tau - _Z25 * vol_p * sq
            new_c = vol_at(tau, k_c)
            new_p = vol_at(tau, k_p)
            done = np.nanmax(np.abs(np.concatenate((new_c - vol_c, new_p - vol_p))), initial=0.0) < 1e-12
            vol_c, vol_p = new_c, new_p
            if done:
                break
        rr25 = vol_c - vol_p
        bf25 = 0.5 * (vol_c + vol_p) - atm
    else:
        notes.append("no usable quotes")
        iv_grid = np.full((tau.size, k_grid.size), np.nan)
        atm = rr25 = bf25 = np.full(tau.size, np.nan)

    # 7. The variance index.
    vix = chain_variance_index(
        chain.expiry_ms,
        chain.strike,
        chain.is_call,
        chain.bid,
        chain.ask,
        forward,
        now_ms,
        target_days=variance_index_days,
    )

    expiry_fits = tuple(
        ExpiryFit(
            expiry_ms=int(expiries[e_idx[pos]]),
            years=float(t_e[pos]),
            forward=float(fwd_e[pos]),
            method=_label(method, bool(use_svi[pos])),
            params=SVIParams.from_array(svi_params[pos]) if method != "linear" else None,
            rmse_vol_points=float(rmse[pos]),
            n_quotes=int(n_quotes[pos]),
            butterfly_ok=bool(bfly_ok[pos]),
            min_g=float(min_g[pos]),
            wing_slope=float(slope[pos]),
            calendar_ok=bool(calendar_ok[pos]),
            notes=tuple(exp_notes[pos]),
            check_k_min=check_lo,
            check_k_max=check_hi,
            essvi=(float(ess.theta[pos]), float(ess.rho[pos]), float(ess.psi[pos]))
            if ess is not None and method == "essvi" else None,
        )
        for pos in range(n_live)
    )
    quotes = QuoteIVs(
        years=years,
        forward=forward,
        log_moneyness=k_log,
        bid_iv=bid_iv,
        ask_iv=ask_iv,
        mid_iv=mid_iv,
        mark_iv=mark_iv,
        bid_reason=bid_r,
        ask_reason=ask_r,
        mid_reason=mid_r,
        mark_reason=mark_r,
        kept=kept,
        fitted=fitted,
        weight=np.where(fitted, weight, 0.0),
    )
    return SurfaceResult(
        timestamp_ms=int(now_ms),
        method=method,
        quotes=quotes,
        expiries=expiry_fits,
        tenor_days=tenors,
        log_moneyness=k_grid,
        iv=iv_grid,
        atm_iv=atm,
        rr25=rr25,
        bf25=bf25,
        variance_index=vix,
        notes=tuple(notes),
        arbitrage_free=bool(n_live) and surface_ok,
    )


def _label(method: str, svi_used: bool) -> str:
    if method == "svi":
        return "svi" if svi_used else "essvi"
    return method


def _padded(
    mask: BoolArray, group: NDArray[np.int64], n_groups: int, *columns: FloatArray
) -> tuple[FloatArray, ...]:
    """Per group (expiry) rows of the masked quotes, padded with zeros to (n_groups, width)."""
    rows = np.nonzero(mask)[0]
    if not rows.size or not n_groups:
        return tuple(np.zeros((n_groups, 1)) for _ in columns)
    groups = group[rows]
    order, slot, width = _group_rows(groups, n_groups)
    out = []
    for col in columns:
        arr = np.zeros((n_groups, width))
        arr[groups[order], slot] = col[rows[order]]
        out.append(arr)
    return tuple(out)


def _previous_params(
    previous: SurfaceResult | Mapping[int, tuple[float, ...]] | None, expiry_ms: NDArray[np.int64]
) -> FloatArray | None:
    """(E, 3) (theta, rho, psi) of the previous minute by expiry, NaN rows where unknown."""
    if previous is None:
        return None
    known: dict[int, tuple[float, ...]]
    if isinstance(previous, SurfaceResult):
        known = {e.expiry_ms: e.essvi for e in previous.expiries if e.essvi is not None}
    else:
        # (theta, rho, psi), or an eSSVI fit's raw-SVI (a, b, rho, m, sigma) as recorded in SmileFit.
        known = {ms: essvi_from_raw_svi(*p) if len(p) == 5 else p for ms, p in previous.items()}
    out = np.full((expiry_ms.size, 3), np.nan)
    for i, ms in enumerate(expiry_ms.tolist()):
        got = known.get(int(ms))
        if got is not None and len(got) == 3 and all(np.isfinite(got)) and got[0] > 0.0 and got[2] > 0.0:
            out[i] = got
    return out


def _rmse_vol_points(params: FloatArray, k: FloatArray, w: FloatArray, om: FloatArray, years: FloatArray) -> FloatArray:
    """Unweighted RMSE of the fitted vols over each expiry's fitted quotes, in vol points."""
    used = om > 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        model = svi_total_variance(params, k)
        d = np.sqrt(np.maximum(model, 0.0) / years[:, None]) - np.sqrt(np.maximum(w, 0.0) / years[:, None])
        sq = np.where(used, d * d, 0.0)
        n = used.sum(axis=1)
        return np.where(n > 0, 100.0 * np.sqrt(sq.sum(axis=1) / np.maximum(n, 1)), np.nan)


def _svi_on_essvi(
    kk: FloatArray, ww: FloatArray, om: FloatArray, t_e: FloatArray, ess: ESSVISurface, k_chk: FloatArray,
    tau: FloatArray, counts: NDArray[np.int64], exp_notes: list[list[str]], notes: list[str],
) -> tuple[Callable[[FloatArray, FloatArray], FloatArray], BoolArray, FloatArray, FloatArray, FloatArray, FloatArray,
           BoolArray, BoolArray]:
    """The ``svi`` method held to the eSSVI's guarantees.

    Per expiry a raw-SVI fit, checked on the dense range (butterfly and Lee); a failing one, one with
    too few quotes, and the first and last expiry (whose smiles anchor the arbitrage-free eSSVI
    extrapolation) take the eSSVI slice. Between expiries total variance is linear in time, outside
    them the eSSVI surface. The resulting surface is checked on the dense range at every grid tenor,
    every expiry and the midpoints between expiries (butterfly, calendar, Lee); if any check fails,
    the whole surface is the eSSVI one.
    """
    e_n = t_e.size
    ess_raw = ess.raw_svi()
    enough = counts >= MIN_SVI_QUOTES
    fits = fit_svi_slices(kk, ww, om, t_e, k_check=k_chk)
    use = enough & fits.butterfly_ok & np.isfinite(fits.params).all(axis=1)
    use[[0, -1]] = False
    for pos in range(e_n):
        if not enough[pos]:
            exp_notes[pos].append(f"{counts[pos]} two-sided quotes (< {MIN_SVI_QUOTES}): eSSVI slice")
        elif not fits.butterfly_ok[pos]:
            exp_notes[pos].append(f"SVI butterfly arbitrage (min g {fits.min_g[pos]:.3g}): eSSVI slice")
        elif pos in (0, e_n - 1) and e_n > 1:
            exp_notes[pos].append("first/last expiry: eSSVI slice (anchors the extrapolation)")

    def build(use_: BoolArray) -> tuple[FloatArray, Callable[[FloatArray, FloatArray], FloatArray]]:
        params = np.where(use_[:, None], fits.params, ess_raw)

        def w_at(tau_: FloatArray, k_: FloatArray) -> FloatArray:
            tau_, k_ = np.broadcast_arrays(np.asarray(tau_, dtype=np.float64), np.asarray(k_, dtype=np.float64))
            out = ess.total_variance(tau_, k_)
            if e_n > 1 and use_.any():
                hi = np.clip(np.searchsorted(t_e, tau_, side="left"), 1, e_n - 1)
                lo = hi - 1
                frac = (tau_ - t_e[lo]) / (t_e[hi] - t_e[lo])
                w_lo = svi_total_variance(params[lo.ravel()], k_.ravel()[:, None])[:, 0].reshape(k_.shape)
                w_hi = svi_total_variance(params[hi.ravel()], k_.ravel()[:, None])[:, 0].reshape(k_.shape)
                inside = (tau_ > t_e[0]) & (tau_ < t_e[-1])
                out = np.where(inside, w_lo + (w_hi - w_lo) * frac, out)
            return np.asarray(out)

        return params, w_at

    params, w_at = build(use)
    if use.any():
        mids = 0.5 * (t_e[1:] + t_e[:-1])
        tau_chk = np.unique(np.concatenate((tau, t_e, mids)))
        samples = w_at(tau_chk[:, None], k_chk[None, :])
        rep = sampled_report(k_chk, samples, samples)
        slopes = params[:, 1] * (1.0 + params[:, 2]), params[:, 1] * (1.0 - params[:, 2])
        wings_ok = all(bool((np.diff(s_) >= -1e-12).all()) for s_ in slopes)
        if not (rep.ok and wings_ok):
            notes.append(f"svi surface failed the checks (min g {float(rep.min_g.min()):.3g}, calendar "
                         f"{rep.min_calendar_step:.3g}): the eSSVI surface is used")
            use = np.zeros(e_n, dtype=bool)
            params, w_at = build(use)
    w, w1, w2 = svi_derivatives(params, k_chk)
    min_g = density_factor(k_chk, w, w1, w2).min(axis=1)
    slope = np.asarray(wing_slope(params)).reshape(-1)
    bfly_ok = (min_g >= G_TOLERANCE) & (slope <= 2.0 + 1e-12)
    calendar_ok = np.ones(e_n, dtype=bool)
    calendar_ok[1:] = (np.diff(w, axis=0) >= -1e-12).all(axis=1)
    rmse = _rmse_vol_points(params, kk, ww, om, t_e)

    def vol_at(tau_: FloatArray, k_: FloatArray) -> FloatArray:
        t_ = np.asarray(tau_, dtype=np.float64)
        return np.asarray(np.sqrt(np.maximum(w_at(t_, k_), 0.0) / t_))

    return vol_at, use, params, rmse, min_g, slope, bfly_ok, calendar_ok
