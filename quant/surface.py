"""The implied-volatility surface of one option chain: ``build_surface(chain, now) -> SurfaceResult``.

Steps, all on flat numpy arrays (one element per quote):

1. Implied vols of every quote's bid, ask, mid and mark (coin prices x the expiry's
   ``underlying_price`` = USD; Black-76 with F = underlying_price, r = 0), with reason codes.
2. The seed program's filter (:func:`seed_filter`): no bid and no ask, dropped; the in-the-money
   side dropped (puts below the forward, calls at and above it are kept).
3. Per expiry a smile:
   - ``method="svi"``: a raw-SVI fit (:mod:`quant.svi`) to the two-sided out-of-the-money mid
     vols, weighted by vega / bid-ask spread (each quote's error counts in units of its spread
     measured in vol). A fit with butterfly arbitrage (Gatheral-Jacquier g(k) < 0, or wings
     steeper than Lee's bound) is replaced by the best arbitrage-free candidate; if there is none,
     or the expiry has fewer than 6 two-sided quotes, that expiry falls back to the linear smile.
   - ``method="linear"`` (the seed program's): vols linear in moneyness K/F between quotes,
     flat beyond the outermost ones (mid vol where two-sided, mark vol otherwise).
4. Calendar order: total variance must not decrease with maturity at fixed log-moneyness; checked
   on the grid's log-moneyness, reported, and (``svi``) repaired by taking the running maximum
   over expiries.
5. The constant-maturity grid: ``svi`` interpolates total variance linearly in time at fixed
   log-forward-moneyness k = ln(K/F); ``linear`` interpolates the vols linearly in time, as the
   seed did. Both are flat in vol before the first and after the last expiry.
6. Per tenor: ATM vol (k = 0), 25-delta risk reversal (call minus put vol) and butterfly (their
   mean minus ATM), with the 25-delta strikes solved on the tenor's smile (plain forward Black
   delta, as Deribit's); per expiry the fit RMSE in vol points.
7. The 30-day variance index of :mod:`quant.variance_index` (Cboe VIX method) on the same quotes.

Volatilities are decimals (0.55 = 55 vol points) except ``rmse_vol_points``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from quant._special import ONE_OVER_SQRT_TWO_PI
from quant.implied_vol import IVReason, implied_vol_with_reasons
from quant.svi import SVIParams, fit_svi_slices, svi_total_variance
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
Method = Literal["svi", "linear"]


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
    check_k_min: float | None = None  # the ln(K/F) range the butterfly check covered (None: not said)
    check_k_max: float | None = None


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
    method: Method = "svi",
    *,
    variance_index_days: float = 30.0,
) -> SurfaceResult:
    """Implied vols, per-expiry smiles, the constant-maturity grid and derived figures of a chain.

    ``now`` is a timezone-aware datetime or milliseconds since the epoch (Deribit's unit).
    """
    if method not in ("svi", "linear"):
        raise ValueError(f"method must be 'svi' or 'linear', not {method!r}")
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

    svi_params = np.full((n_live, 5), np.nan)
    use_svi = np.zeros(n_live, dtype=bool)
    rmse = np.full(n_live, np.nan)
    min_g = np.full(n_live, np.nan)
    slope = np.full(n_live, np.nan)
    bfly_ok = np.zeros(n_live, dtype=bool)
    exp_notes: list[list[str]] = [[] for _ in range(n_live)]
    fitted = np.zeros(n, dtype=bool)
    if method == "svi" and n_live:
        counts = np.bincount(g_live[fit_mask], minlength=n_live)
        enough = counts >= MIN_SVI_QUOTES
        for pos in np.nonzero(~enough)[0].tolist():
            exp_notes[pos].append(f"{counts[pos]} two-sided quotes (< {MIN_SVI_QUOTES}): linear smile")
        rows = np.nonzero(fit_mask & enough[np.maximum(g_live, 0)] & (g_live >= 0))[0]
        if rows.size:
            fit_groups = g_live[rows]
            order_f, slot, width = _group_rows(fit_groups, n_live)
            kk = np.zeros((n_live, width))
            ww = np.zeros((n_live, width))
            om = np.zeros((n_live, width))
            r_sorted = rows[order_f]
            gpos = fit_groups[order_f]
            kk[gpos, slot] = k_log[r_sorted]
            ww[gpos, slot] = mid_iv[r_sorted] ** 2 * years[r_sorted]
            om[gpos, slot] = weight[r_sorted]
            k_check = np.linspace(min(-1.5, float(np.min(k_log[rows]))), max(1.5, float(np.max(k_log[rows]))), 301)
            fits = fit_svi_slices(kk, ww, om, t_e, k_check=k_check)
            use_svi = enough & fits.butterfly_ok
            svi_params = fits.params
            rmse, min_g, slope, bfly_ok = fits.rmse_vol_points, fits.min_g, fits.wing_slope, fits.butterfly_ok
            for pos in np.nonzero(enough)[0].tolist():
                if fits.repaired[pos] and fits.butterfly_ok[pos]:
                    exp_notes[pos].append("butterfly arbitrage in the best fit: repaired")
                elif not fits.butterfly_ok[pos]:
                    exp_notes[pos].append(f"butterfly arbitrage (min g {fits.min_g[pos]:.3g}): linear smile")
            fitted[rows] = use_svi[fit_groups]

    smiles = _Smiles(t_e, svi_params, use_svi, nodes, method)
    k_grid = np.asarray(grid.log_moneyness, dtype=np.float64)
    tenors = np.asarray(grid.tenor_days, dtype=np.float64)
    tau = tenors / 365.0

    # 4. Calendar order on the grid's moneyness.
    calendar_ok = np.ones(n_live, dtype=bool)
    if n_live > 1 and k_grid.size:
        w_nodes = smiles.total_variance(k_grid)
        drop = w_nodes[:-1] - w_nodes[1:]
        bad = drop > 1e-10 + 1e-6 * np.abs(w_nodes[:-1])
        for pos in (np.nonzero(bad.any(axis=1))[0] + 1).tolist():
            ks = k_grid[bad[pos - 1]]
            what = "repaired on the grid" if method == "svi" else "kept (seed method)"
            msg = (
                f"calendar: total variance below the previous expiry's at k {ks.min():.2f}..{ks.max():.2f} "
                f"(by up to {drop[pos - 1].max():.3g}); {what}"
            )
            exp_notes[pos].append(msg)
            calendar_ok[pos] = False
        if not calendar_ok.all():
            notes.append(f"calendar arbitrage between {int((~calendar_ok).sum())} expiry pair(s)")

    # 5. The grid, and 6. ATM, RR25, BF25.
    repair = method == "svi"
    if n_live:
        tt, kk_g = np.meshgrid(tau, k_grid, indexing="ij")
        iv_grid = smiles.iv(tt.ravel(), kk_g.ravel(), repair).reshape(tt.shape)
        atm = smiles.iv(tau, np.zeros_like(tau), repair)
        vol_c = atm.copy()
        vol_p = atm.copy()
        sq = np.sqrt(tau)
        for _ in range(50):
            k_c = 0.5 * vol_c * vol_c * tau + _Z25 * vol_c * sq
            k_p = 0.5 * vol_p * vol_p * tau - _Z25 * vol_p * sq
            new_c = smiles.iv(tau, k_c, repair)
            new_p = smiles.iv(tau, k_p, repair)
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
            method="svi" if use_svi[pos] else "linear",
            params=SVIParams.from_array(svi_params[pos]) if use_svi[pos] else None,
            rmse_vol_points=float(rmse[pos]) if use_svi[pos] else float("nan"),
            n_quotes=int(n_quotes[pos]),
            butterfly_ok=bool(bfly_ok[pos]),
            min_g=float(min_g[pos]),
            wing_slope=float(slope[pos]),
            calendar_ok=bool(calendar_ok[pos]),
            notes=tuple(exp_notes[pos]),
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
    )
